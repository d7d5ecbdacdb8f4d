"""Reading changes over REST: one `ReadPage` per response page, with a safe watermark.

Watermarks are normalized to UTC ISO 8601 (`2026-11-24T02:00:00+00:00`) whatever offset the
server speaks: they compare correctly across servers and survive a server changing its time
zone. A page's watermark is the highest `updated_field` value seen so far in this read (never
lower than the watermark the read started from), so persisting it after publishing the page
is safe. Records the API returns at or below the watermark are still yielded: the routes'
idempotency drops re-reads. Without a `since_param` the filter is client-side:
`updated >= watermark` (>= so that a change sharing the watermark's instant is not lost).

With a `since_param` and page or offset pagination, the next page is asked for by moving
the since value to the highest updated value read so far (first page again), not by
counting on: a record that changes during the read moves to the end of the list and would
shift the following records past a page boundary, unseen. Records at exactly that moment
that were already yielded are skipped; plain page/offset counting is used only while a
whole page shares one moment.

A `since_param` with `since_format: date` sends the watermark's day (in `since_timezone`):
the API returns that whole day, the records older than the watermark are dropped here (as
with a client-side filter) and the watermark stays the exact newest change read.

Three incremental modes (`incremental:`): `server_filter` (the API filters by `since_param`),
`client_filter` (every page is read, records older than the watermark are dropped here) and
`snapshot` (no change time at all: every record is read and only those whose content hash
changed are yielded; the hashes travel in the watermark — see `adapters.rest.snapshot`).
A snapshot read fetches one page ahead in a thread (`_read_ahead`) while its caller
publishes the page before; `snapshot_every` limits it to one complete pass per interval.
Pagination by page, offset, cursor or RFC 8288 `Link: <...>; rel="next"` headers; the records
sit at each endpoint's own `records_path` (one dotted path, or a list of them). Every
request takes one unit of the system's request budget first and carries the current
credentials; a 401 with renewable credentials (OAuth2, login) renews them and repeats the
request once.

`read_one` (replay, reconciliation) GETs the entity's `item_path` (`/api/customers/{id}`;
404 means no such record) or, without one, reads the whole list and picks the record.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote, urljoin
from zoneinfo import ZoneInfo

import requests
import structlog
from requests.structures import CaseInsensitiveDict

from adapters.rest import snapshot
from adapters.rest.auth import Credentials, same_origin
from adapters.rest.budget import RequestBudget
from adapters.rest.config import (
    CursorPagination,
    LinkPagination,
    OffsetPagination,
    PagePagination,
    ReadSpec,
    RestSystemConfig,
)
from adapters.rest.transport import (
    classify_exception,
    classify_status,
    parse_retry_after,
    response_text,
)
from adapters.shared.documents import dig, parse_moment, utc_iso
from adapters.shared.incremental import WatermarkBoundary, changed_record, read_spec
from adapters.shared.scrubber import Scrubber
from middleware.adapter import ReadPage, SourceRecord
from middleware.errors import PermanentError, TransientError

log = structlog.get_logger("isthmus.adapters.rest")

RATE_LIMITED_STATUSES = frozenset({429, 503})


class RestReader:
    """Reads the entities of one REST system that have `read:` settings.

    A Polling Consumer (enterprise integration patterns): the poller asks it for the changes
    since the last watermark, on its interval or schedule; nothing is pushed to it.
    """

    def __init__(
        self,
        system: str,
        config: RestSystemConfig,
        session: requests.Session,
        scrubber: Scrubber,
        sleep: Callable[[float], None] = time.sleep,
        credentials: Credentials | None = None,
        budget: RequestBudget | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.system = system
        self.clock = clock  # unix seconds: when a snapshot pass ran (snapshot_every)
        self.config = config
        self.session = session
        self.scrubber = scrubber
        self.sleep = sleep
        self.credentials = credentials or Credentials()
        self.budget = budget

    def _spec(self, entity: str) -> ReadSpec:
        return read_spec(self.system, self.config.entities, entity)

    def read_changes(self, entity: str, watermark: str | None) -> Iterator[ReadPage]:
        spec = self._spec(entity)
        if spec.mode == "snapshot":
            yield from self._read_snapshot(spec, watermark)
            return
        since = _watermark_moment(watermark)
        by_day = spec.since_format == "date"
        base_params: dict[str, str] = dict(spec.params)
        if spec.since_param and watermark:
            base_params[spec.since_param] = self._since_value(spec, since, watermark)
        pagination = spec.pagination
        resume_by_since = (
            spec.since_param is not None and not by_day and isinstance(pagination, PagePagination | OffsetPagination)
        )
        # a day filter returns the watermark's whole day: what is older than the watermark is dropped here
        boundary = WatermarkBoundary(since, client_filter=spec.since_param is None or by_day)
        pager = _Pager(self, spec)
        while True:
            url, params = pager.request(base_params)
            body, headers = self._get(url, params, spec)
            raw = self._records_of(body, spec)
            records: list[SourceRecord] = []
            for index, item in enumerate(raw):
                record, updated = self._record(spec, item, index)
                if boundary.admit(record.record_id, updated):
                    records.append(record)
            yield ReadPage(records=records, watermark=boundary.watermark(watermark))

            if not pager.more(body, raw, headers):
                return
            if resume_by_since and pager.full(len(raw)) and boundary.can_reanchor():
                assert spec.since_param is not None
                base_params[spec.since_param] = utc_iso(boundary.reanchor())
                pager.restart()
                continue
            if not pager.advance(body, len(raw)):
                return

    @staticmethod
    def _since_value(spec: ReadSpec, since: datetime | None, watermark: str) -> str:
        """What `since_param` carries: the watermark (UTC ISO 8601), or its day in the API's time zone."""
        if since is None:
            return watermark  # an opaque watermark goes as it is
        if spec.since_format == "date":
            return since.astimezone(ZoneInfo(spec.since_timezone)).date().isoformat()
        return utc_iso(since)

    def read_one(self, entity: str, record_id: str) -> SourceRecord | None:
        """One record by id: GET `item_path` when configured (404: None), else a full read filtered by id.

        The record is built as a list read builds it (same id, version and change time), so a
        replayed or reconciled record looks exactly like one a poller published.
        """
        spec = self._spec(entity)
        if spec.item_path is None:
            found: SourceRecord | None = None
            for page in self.read_changes(entity, None):
                found = next((r for r in page.records if r.record_id == record_id), found)
            return found
        return self.read_item(entity, record_id, spec.item_path)

    def read_item(self, entity: str, record_id: str, path: str) -> SourceRecord | None:
        """GET one record at `path` (`{id}` → the record id, quoted); None on 404.

        Built with the entity's read settings (id, version, change time; in snapshot mode the
        content hash is the version), so the record a webhook trigger fetches and the one the
        snapshot poll reads have the same version when their content is the same.
        """
        spec = self._spec(entity)
        url = self.config.base_url + path.format(id=quote(record_id, safe=""))
        try:
            body, _headers = self._get(url, {}, spec)
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise
        item = dig(body, spec.item_record_path)
        if item is None:
            return None
        record, _updated = self._record(spec, item, 0)
        if spec.mode == "snapshot" and (spec.version_field is None or record.version is None):
            record.version = snapshot.content_hash(item, frozenset(spec.hash_exclude))
        return record

    def _read_snapshot(self, spec: ReadSpec, watermark: str | None) -> Iterator[ReadPage]:
        """Every page of the list; only records whose content hash changed; the new hashes last.

        Pages are fetched one ahead of the caller (`_read_ahead`), so the next request is on
        the wire while the caller publishes this page: an initial load runs at the API's
        pace, not at the pace of request + publish in turn. With `snapshot_every`, a poll
        before the interval since the last complete pass has run out sends nothing.
        """
        previous = snapshot.decode_snapshot(watermark)
        interval = spec.snapshot_interval_s
        if interval is not None and previous.taken_at is not None and self.clock() - previous.taken_at < interval:
            yield ReadPage(records=[], watermark=watermark)
            return
        current: snapshot.Hashes = {}
        exclude = frozenset(spec.hash_exclude)
        for raw in _read_ahead(self._list_pages(spec, dict(spec.params))):
            records: list[SourceRecord] = []
            for index, item in enumerate(raw):
                record, _updated = self._record(spec, item, index)
                text = snapshot.content_hash(item, exclude)
                digest = int(text, 16)
                if current.get(record.record_id) == digest:
                    continue  # the same record twice in one read (pages shifted under us)
                current[record.record_id] = digest
                if previous.hashes.get(record.record_id) == digest:
                    continue
                if spec.version_field is None or record.version is None:
                    record.version = text
                records.append(record)
            yield ReadPage(records=records, watermark=None)
        log.debug("snapshot_read", system=self.system, path=spec.path, records=len(current))
        taken_at = int(self.clock()) if interval is not None else None
        yield ReadPage(records=[], watermark=snapshot.encode(current, taken_at))

    def _list_pages(self, spec: ReadSpec, params: dict[str, str]) -> Iterator[list[Any]]:
        """The raw records of each page of a full read, in order."""
        pager = _Pager(self, spec)
        while True:
            url, query = pager.request(params)
            body, headers = self._get(url, query, spec)
            raw = self._records_of(body, spec)
            yield raw
            if not pager.more(body, raw, headers) or not pager.advance(body, len(raw)):
                return

    def _records_of(self, body: Any, spec: ReadSpec) -> list[Any]:
        """The records of one answer: the list at records_path, or the lists at its paths one after another.

        With several lists, a page counts as full when their records together reach the page
        size, and an offset moves on by all of them: right for APIs that page the lists
        together, and for page numbers also for APIs that page each list on its own (a list
        that is full makes the page full). Offsets per list need another pagination.
        """
        paths = spec.records_paths
        if len(paths) == 1:
            raw = dig(body, paths[0])
            if not isinstance(raw, list):
                raise PermanentError(
                    f"GET {spec.path}: expected a list at records_path {paths[0]!r}, got {type(raw).__name__}",
                    system=self.system,
                )
            return raw
        records: list[Any] = []
        for path in paths:
            found = dig(body, path)
            if found is None:
                continue  # an API may leave an empty list out
            if not isinstance(found, list):
                raise PermanentError(
                    f"GET {spec.path}: expected a list at records_path {path!r}, got {type(found).__name__}",
                    system=self.system,
                )
            records.extend(found)
        return records

    def _record(self, spec: ReadSpec, item: Any, index: int) -> tuple[SourceRecord, datetime | None]:
        if not isinstance(item, dict):
            raise PermanentError(
                f"GET {spec.path}: record {index} is a {type(item).__name__}, not an object",
                system=self.system,
            )
        record_id = item.get(spec.id_field)
        if record_id is None or record_id == "":
            raise PermanentError(
                f"GET {spec.path}: record {index} has no id field {spec.id_field!r}", system=self.system
            )
        raw_updated = item.get(spec.updated_field) if spec.updated_field else None
        updated: datetime | None = None
        if raw_updated is not None:
            try:
                updated = parse_moment(raw_updated)
            except ValueError:
                raise PermanentError(
                    f"GET {spec.path}: record {record_id!r} field {spec.updated_field!r} "
                    f"is not an ISO timestamp: {self.scrubber.excerpt(str(raw_updated), 60)}",
                    system=self.system,
                ) from None
        version = item.get(spec.version_field) if spec.version_field else None
        return changed_record(item, record_id, version, raw_updated, updated), updated

    def _get(self, url: str, params: dict[str, str], spec: ReadSpec) -> tuple[Any, CaseInsensitiveDict[str]]:
        """One GET, waiting out a bounded number of 429/503 with Retry-After; the JSON body and headers.

        Takes one unit of the request budget per request sent (BudgetExhausted is transient);
        a 401 with renewable credentials renews them and asks once more.
        """
        waits = 0
        renewed = False
        while True:
            if self.budget is not None:
                self.budget.acquire()
            sent = self.credentials.headers()
            try:
                response = self.session.get(url, params=params, headers=sent or None, timeout=self.config.timeout_s)
            except requests.RequestException as exc:
                error = f"GET {spec.path} failed: {self.scrubber.describe(exc)}"
                if classify_exception(exc) == "transient":
                    raise TransientError(error, system=self.system) from None
                raise PermanentError(error, system=self.system) from None
            status = response.status_code
            outcome = classify_status(status)
            if outcome == "ok":
                try:
                    return json.loads(response.content), response.headers
                except ValueError:
                    raise PermanentError(
                        f"GET {spec.path} → {status}: body is not JSON: "
                        f"{self.scrubber.excerpt(response_text(response))}",
                        system=self.system,
                        status=status,
                    ) from None
            if status == 401 and self.credentials.renewable and not renewed:
                renewed = True
                log.info("read_token_rejected", system=self.system, path=spec.path)
                self.credentials.renew(sent)
                continue
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if status in RATE_LIMITED_STATUSES and retry_after is not None and waits < spec.rate_limit_retries:
                waits += 1
                wait = min(retry_after, spec.max_retry_wait_s)
                log.info("read_rate_limited", system=self.system, path=spec.path, status=status, wait_s=wait)
                self.sleep(wait)
                continue
            error = f"GET {spec.path} → {status}: {self.scrubber.excerpt(response_text(response))}"
            if outcome == "transient":
                raise TransientError(error, system=self.system, status=status, retry_after=retry_after)
            raise PermanentError(error, system=self.system, status=status)


class _Pager:
    """Where the next page of one read is: a page number, an offset, a cursor or a next link."""

    def __init__(self, reader: RestReader, spec: ReadSpec) -> None:
        self.reader = reader
        self.spec = spec
        self.pagination = spec.pagination
        self.url = reader.config.base_url + spec.path
        self.cursor: str | None = None
        self.seen_cursors: set[str] = set()
        self.next_url: str | None = None  # link pagination: the next page's URL, as the server gave it
        self.restart()

    def restart(self) -> None:
        """Back to the first page (the since value moved: see the module docstring)."""
        self.page_no = self.pagination.start if isinstance(self.pagination, PagePagination) else 0
        self.offset = 0

    def request(self, base_params: dict[str, str]) -> tuple[str, dict[str, str]]:
        """URL and query of the current page; a next link carries its own query."""
        if self.next_url is not None:
            return self.next_url, {}
        pagination = self.pagination
        params = dict(base_params)
        if isinstance(pagination, PagePagination):
            params[pagination.page_param] = str(self.page_no)
            params[pagination.size_param] = str(pagination.page_size)
        elif isinstance(pagination, OffsetPagination):
            params[pagination.offset_param] = str(self.offset)
            params[pagination.limit_param] = str(pagination.limit)
        elif isinstance(pagination, CursorPagination) and self.cursor is not None:
            params[pagination.cursor_param] = self.cursor
        elif isinstance(pagination, LinkPagination) and pagination.size_param and pagination.page_size:
            params[pagination.size_param] = str(pagination.page_size)
        return self.url, params

    def more(self, body: Any, raw: list[Any], headers: CaseInsensitiveDict[str]) -> bool:
        """Whether the server says another page may follow (a next link; a non-empty page not flagged last)."""
        if isinstance(self.pagination, LinkPagination):
            self.next_url = self._next_link(headers, self.next_url or self.url, self.pagination)
            return self.next_url is not None
        return bool(raw) and dig(body, self.spec.has_more_path, True) is not False

    def full(self, length: int) -> bool:
        """The page's `length` records are as many as asked for (page and offset pagination)."""
        if isinstance(self.pagination, PagePagination):
            return length >= self.pagination.page_size
        if isinstance(self.pagination, OffsetPagination):
            return length >= self.pagination.limit
        return False

    def advance(self, body: Any, length: int) -> bool:
        """Move on to the next page (`length`: the records of the one just read); False when it was the last."""
        pagination = self.pagination
        if isinstance(pagination, LinkPagination):
            return self.next_url is not None
        if isinstance(pagination, PagePagination | OffsetPagination):
            if not self.full(length):
                return False
            self.page_no += 1
            self.offset += length
            return True
        if isinstance(pagination, CursorPagination):
            found = dig(body, pagination.cursor_path)
            if found in (None, "") or str(found) in self.seen_cursors:
                return False
            self.cursor = str(found)
            self.seen_cursors.add(self.cursor)
            return True
        return False

    def _next_link(self, headers: CaseInsensitiveDict[str], current: str, pagination: LinkPagination) -> str | None:
        """The absolute URL of the `rel` link of the Link header; None at the last page.

        A link to another origin is refused (PermanentError): the request would carry our credentials.
        """
        header = headers.get("Link")
        if not header:
            return None
        base_url = self.reader.config.base_url
        for link in requests.utils.parse_header_links(header):
            if pagination.rel in str(link.get("rel", "")).split() and link.get("url"):
                target = urljoin(current, link["url"])
                if not same_origin(target, base_url):
                    raise PermanentError(
                        f"GET {self.spec.path}: the next-page link points to another origin "
                        f"({self.reader.scrubber.excerpt(target, 120)}); credentials are only sent to {base_url}",
                        system=self.reader.system,
                    )
                return None if target == current else target
        return None


_DONE = object()


def _read_ahead(pages: Iterator[list[Any]], depth: int = 1) -> Iterator[list[Any]]:
    """`pages`, fetched in a thread up to `depth` pages ahead of the caller (memory: at most depth + 2 pages).

    An error of the fetching thread is raised here, in order, after the pages before it. When
    the caller stops early (or fails), the thread stops at its next page.
    """
    handoff: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: Any, error: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                handoff.put((item, error), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for page in pages:
                if not offer(page):
                    return
        except BaseException as exc:  # handed to the caller, who raises it
            offer(_DONE, exc)
            return
        offer(_DONE)

    thread = threading.Thread(target=produce, name="rest-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = handoff.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()


def _watermark_moment(watermark: str | None) -> datetime | None:
    """The watermark as a moment; an opaque (non-ISO) watermark is passed through unfiltered."""
    if not watermark:
        return None
    try:
        return parse_moment(watermark)
    except ValueError:
        return None
