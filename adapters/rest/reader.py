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
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import requests
import structlog

from adapters.rest.config import (
    CursorPagination,
    OffsetPagination,
    PagePagination,
    ReadSpec,
    RestSystemConfig,
)
from adapters.rest.payload import dig, parse_timestamp, utc_iso
from adapters.rest.transport import (
    Scrubber,
    classify_exception,
    classify_status,
    parse_retry_after,
    response_text,
)
from middleware.adapter import ReadPage, SourceRecord
from middleware.errors import ConfigError, PermanentError, TransientError
from middleware.message import utc_now

log = structlog.get_logger("isthmus.adapters.rest")

RATE_LIMITED_STATUSES = frozenset({429, 503})


class RestReader:
    """Reads the entities of one REST system that have `read:` settings."""

    def __init__(
        self,
        system: str,
        config: RestSystemConfig,
        session: requests.Session,
        scrubber: Scrubber,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.system = system
        self.config = config
        self.session = session
        self.scrubber = scrubber
        self.sleep = sleep

    def _spec(self, entity: str) -> ReadSpec:
        spec = self.config.entities.get(entity)
        if spec is None or spec.read is None:
            readable = [name for name, e in self.config.entities.items() if e.read is not None]
            raise ConfigError(f"system {self.system!r} cannot read entity {entity!r}; readable: {readable}")
        return spec.read

    def read_changes(self, entity: str, watermark: str | None) -> Iterator[ReadPage]:
        spec = self._spec(entity)
        since = _watermark_moment(watermark)
        best = since
        url = self.config.base_url + spec.path
        base_params: dict[str, str] = dict(spec.params)
        if spec.since_param and watermark:
            base_params[spec.since_param] = utc_iso(since) if since else watermark
        pagination = spec.pagination
        resume_by_since = spec.since_param is not None and isinstance(pagination, PagePagination | OffsetPagination)
        request_since = since  # the moment the current query's since_param asks from
        at_best: set[str] = set()  # ids yielded whose updated value equals `best`
        already: set[str] = set()  # ids at `request_since` yielded before the query was re-anchored
        page_no = pagination.start if isinstance(pagination, PagePagination) else 0
        offset = 0
        cursor: str | None = None
        seen_cursors: set[str] = set()
        while True:
            params = dict(base_params)
            if isinstance(pagination, PagePagination):
                params[pagination.page_param] = str(page_no)
                params[pagination.size_param] = str(pagination.page_size)
            elif isinstance(pagination, OffsetPagination):
                params[pagination.offset_param] = str(offset)
                params[pagination.limit_param] = str(pagination.limit)
            elif isinstance(pagination, CursorPagination) and cursor is not None:
                params[pagination.cursor_param] = cursor
            body = self._get(url, params, spec)
            raw = dig(body, spec.records_path)
            if not isinstance(raw, list):
                raise PermanentError(
                    f"GET {spec.path}: expected a list at records_path {spec.records_path!r}, got {type(raw).__name__}",
                    system=self.system,
                )
            records: list[SourceRecord] = []
            for index, item in enumerate(raw):
                record, updated = self._record(spec, item, index)
                if since is not None and spec.since_param is None and updated is not None and updated < since:
                    continue
                if already and updated == request_since and record.record_id in already:
                    continue
                if updated is not None and (best is None or updated > best):
                    best, at_best = updated, set()
                if updated is not None and updated == best:
                    at_best.add(record.record_id)
                records.append(record)
            yield ReadPage(records=records, watermark=utc_iso(best) if best else watermark)

            if not raw or dig(body, spec.has_more_path, True) is False:
                return
            if isinstance(pagination, PagePagination):
                full = len(raw) >= pagination.page_size
            elif isinstance(pagination, OffsetPagination):
                full = len(raw) >= pagination.limit
            else:
                full = False
            if resume_by_since and full and best is not None and (request_since is None or best > request_since):
                assert spec.since_param is not None
                base_params[spec.since_param] = utc_iso(best)
                request_since, already = best, set(at_best)
                page_no = pagination.start if isinstance(pagination, PagePagination) else 0
                offset = 0
                continue
            if isinstance(pagination, PagePagination):
                if len(raw) < pagination.page_size:
                    return
                page_no += 1
            elif isinstance(pagination, OffsetPagination):
                if len(raw) < pagination.limit:
                    return
                offset += len(raw)
            elif isinstance(pagination, CursorPagination):
                next_cursor = dig(body, pagination.cursor_path)
                if next_cursor in (None, "") or str(next_cursor) in seen_cursors:
                    return
                cursor = str(next_cursor)
                seen_cursors.add(cursor)
            else:
                return

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
        raw_updated = item.get(spec.updated_field)
        updated: datetime | None = None
        if raw_updated is not None:
            try:
                updated = parse_timestamp(raw_updated)
            except ValueError:
                raise PermanentError(
                    f"GET {spec.path}: record {record_id!r} field {spec.updated_field!r} "
                    f"is not an ISO timestamp: {self.scrubber.excerpt(str(raw_updated), 60)}",
                    system=self.system,
                ) from None
        version = item.get(spec.version_field) if spec.version_field else None
        if version is None:
            version = raw_updated
        return (
            SourceRecord(
                record_id=str(record_id),
                version=None if version is None else str(version),
                occurred_at=updated or utc_now(),
                data=item,
            ),
            updated,
        )

    def _get(self, url: str, params: dict[str, str], spec: ReadSpec) -> Any:
        """One GET, waiting out a bounded number of 429/503 with Retry-After; the JSON body."""
        waits = 0
        while True:
            try:
                response = self.session.get(url, params=params, timeout=self.config.timeout_s)
            except requests.RequestException as exc:
                error = f"GET {spec.path} failed: {self.scrubber.describe(exc)}"
                if classify_exception(exc) == "transient":
                    raise TransientError(error, system=self.system) from None
                raise PermanentError(error, system=self.system) from None
            status = response.status_code
            outcome = classify_status(status)
            if outcome == "ok":
                try:
                    return json.loads(response.content)
                except ValueError:
                    raise PermanentError(
                        f"GET {spec.path} → {status}: body is not JSON: "
                        f"{self.scrubber.excerpt(response_text(response))}",
                        system=self.system,
                        status=status,
                    ) from None
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


def _watermark_moment(watermark: str | None) -> datetime | None:
    """The watermark as a moment; an opaque (non-ISO) watermark is passed through unfiltered."""
    if not watermark:
        return None
    try:
        return parse_timestamp(watermark)
    except ValueError:
        return None
