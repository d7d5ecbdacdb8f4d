"""Writing mapped records over REST, concurrently but in order per record.

`write_batch` sends up to `concurrency` requests at once. Requests about the same record
share a *lane* and run one after another in the order given, so an older version never
overtakes a newer one. The lane key is the resolved URL when the path template addresses a
record (it has a `{placeholder}`); a path without placeholders (e.g. `POST /api/accounts`)
says nothing about the record, so the lane is the record's identity instead: the message's
idempotency key without its `@version` suffix. Every request carries `Idempotency-Key` (the
message's key) and `X-Correlation-Id`; results come back in request order.

Each request takes one unit of the system's request budget first (a spent day's budget is a
transient result with `retry_after` until 00:00 UTC, and nothing is sent) and carries the
current credentials; a 401 with renewable credentials (OAuth2, login) renews them and sends
the request once more — safe, as the target refused the first one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlencode

import requests

from adapters.rest.auth import Credentials
from adapters.rest.budget import RequestBudget
from adapters.rest.config import RestSystemConfig, WriteSpec, path_placeholders
from adapters.rest.payload import encode_json
from adapters.rest.transport import (
    HttpReply,
    classify_exception,
    classify_status,
    parse_retry_after,
    response_text,
    send_direct,
)
from adapters.shared.documents import dig
from adapters.shared.lanes import LanePool
from adapters.shared.scrubber import Scrubber
from middleware.adapter import WriteRequest, WriteResult, merge_by_key
from middleware.errors import DeliveryError, TransientError


@dataclass
class _Prepared:
    method: str
    url: str
    path: str
    body: bytes
    headers: dict[str, str]
    lane: str
    fallback_id: str | None
    id_path: str | None
    request: WriteRequest
    compare: bool = False  # write.skip_unchanged: read the record first, send nothing if it holds this


class RestWriter:
    """Writes the entities of one REST system that have `write:` settings.

    The producing end of the REST Channel Adapter: each request's idempotency key goes out
    as `Idempotency-Key`, so a target that honours it is an Idempotent Receiver of redeliveries.
    """

    def __init__(
        self,
        system: str,
        config: RestSystemConfig,
        session: requests.Session,
        scrubber: Scrubber,
        credentials: Credentials | None = None,
        budget: RequestBudget | None = None,
    ) -> None:
        self.system = system
        self.config = config
        self.session = session
        self.scrubber = scrubber
        self.credentials = credentials or Credentials()
        self.budget = budget
        self._lanes = LanePool(config.concurrency, thread_name_prefix=f"rest-{system}")

    def write_batch(self, requests: Sequence[WriteRequest]) -> list[WriteResult]:
        results: list[WriteResult | None] = [None] * len(requests)
        lanes: dict[str, list[tuple[int, _Prepared]]] = {}
        for index, request in enumerate(requests):
            prepared = self._prepare(request)
            if isinstance(prepared, WriteResult):
                results[index] = prepared
            else:
                lanes.setdefault(prepared.lane, []).append((index, prepared))

        def run_lane(lane: list[tuple[int, _Prepared]]) -> None:
            # Two versions of a record the target does not know yet can share a batch: the
            # first creates it, and the later ones must update what it created, not create again.
            created_id: str | None = None
            for index, prepared in lane:
                if created_id is not None and prepared.request.target_id is None:
                    redone = self._prepare(replace(prepared.request, target_id=created_id))
                    if isinstance(redone, WriteResult):
                        results[index] = redone
                        continue
                    prepared = redone
                if prepared.request.merge or prepared.compare:
                    merged = self._merged(prepared)
                    if isinstance(merged, WriteResult):
                        results[index] = merged
                        continue
                    prepared = merged
                result = self._send(prepared)
                results[index] = result
                if result.outcome == "ok" and prepared.request.target_id is None and result.target_id:
                    created_id = result.target_id

        self._lanes.run(lanes.values(), run_lane)
        return [r if r is not None else WriteResult("transient", error="not attempted") for r in results]

    def close(self) -> None:
        self._lanes.close()

    def find_by_key(self, entity: str, records: Sequence[dict[str, Any]]) -> list[str | None]:
        """The target ids of records already there under their `key_field` value, by the entity's
        `find:` request, one GET per record (`KeyFinder`). A failed request raises TransientError:
        the caller must not create a record it could not look for."""
        spec = self.config.entities.get(entity)
        write = spec.write if spec is not None else None
        if write is None or write.find is None or not write.key_field:
            return [None for _ in records]
        find, key_field = write.find, write.key_field
        found: list[str | None] = []
        for record in records:
            value = dig(record, key_field)
            if value is None or value == "":
                found.append(None)
                continue
            path = f"{find.path}?{urlencode({find.param: str(value)})}"
            body = self._get_json(path)
            rows = dig(body, find.records_path) if find.records_path else body
            if not isinstance(rows, list):
                raise TransientError(
                    f"GET {find.path}: no list at {find.records_path or 'the body'!r}", system=self.system
                )
            first = next((row for row in rows if isinstance(row, dict)), None)
            target = dig(first, find.id_path) if first is not None else None
            found.append(None if target is None or isinstance(target, dict | list) else str(target))
        return found

    def _get_json(self, path: str) -> Any:
        what = f"GET {path.split('?', 1)[0]}"
        try:
            if self.budget is not None:
                self.budget.acquire()
            headers = {"Accept": "application/json", **self.credentials.headers()}
            response = send_direct(
                self.session, "GET", self.config.base_url + path, None, headers, self.config.timeout_s
            )
        except DeliveryError as exc:
            raise TransientError(f"{what} not sent: {exc}", system=self.system, status=exc.status) from None
        except requests.RequestException as exc:
            raise TransientError(f"{what} failed: {self.scrubber.describe(exc)}", system=self.system) from None
        if response.status_code >= 300:
            text = self.scrubber.excerpt(response_text(response))
            raise TransientError(
                f"{what} → {response.status_code}: {text}", system=self.system, status=response.status_code
            )
        try:
            return json.loads(response.content)
        except ValueError:
            raise TransientError(f"{what}: the answer is not JSON", system=self.system) from None

    def _prepare(self, request: WriteRequest) -> _Prepared | WriteResult:
        entity = self.config.entities.get(request.entity)
        spec = entity.write if entity is not None else None
        if spec is None:
            return WriteResult("permanent", error=f"system {self.system!r} cannot write entity {request.entity!r}")
        record = request.record
        if spec.mode == "upsert":
            assert spec.path is not None
            method, template = spec.method, spec.path
        elif request.target_id is None:
            assert spec.create is not None
            method, template = spec.create.method, spec.create.path
        else:
            assert spec.update is not None
            method, template = spec.update.method, spec.update.path
        try:
            path = _fill_path(template, spec, request)
        except KeyError as exc:
            return WriteResult("permanent", error=f"record has no field {exc.args[0]!r} needed for path {template!r}")
        body_record = {k: v for k, v in record.items() if k not in spec.drop_fields} if spec.drop_fields else record
        try:
            body = encode_json(body_record)
        except ValueError as exc:
            return WriteResult("permanent", error=f"record cannot be encoded as JSON: {exc}")
        headers = {"Content-Type": "application/json", "Idempotency-Key": request.key}
        if request.correlation_id:
            headers["X-Correlation-Id"] = request.correlation_id
        url = self.config.base_url + path
        if path_placeholders(template):
            lane = url
        else:
            identity, at, _version = request.key.rpartition("@")
            lane = f"record:{request.entity}:{identity if at else request.key}"
        fallback = request.target_id
        if fallback is None and spec.mode == "upsert" and spec.key_field and record.get(spec.key_field) is not None:
            fallback = str(record[spec.key_field])
        return _Prepared(method, url, path, body, headers, lane, fallback, spec.id_path, request, spec.skip_unchanged)

    def _send(self, prepared: _Prepared) -> WriteResult:
        what = f"{prepared.method} {prepared.path}"
        renewed = False
        while True:
            headers = prepared.headers
            try:
                if self.budget is not None:
                    self.budget.acquire()
                sent = self.credentials.headers()
            except DeliveryError as exc:  # budget spent, or the token endpoint failed: nothing was sent
                error = f"{what} not sent: {exc}"
                if isinstance(exc, TransientError):
                    return WriteResult("transient", error=error, status=exc.status, retry_after=exc.retry_after)
                return WriteResult("permanent", error=error, status=exc.status)
            if sent:
                headers = {**headers, **sent}
            try:
                response = send_direct(
                    self.session,
                    prepared.method,
                    prepared.url,
                    prepared.body,
                    headers,
                    self.config.timeout_s,
                )
            except requests.RequestException as exc:
                return WriteResult(classify_exception(exc), error=f"{what} failed: {self.scrubber.describe(exc)}")
            if response.status_code == 401 and self.credentials.renewable and not renewed:
                renewed = True
                try:
                    self.credentials.renew(sent)
                except DeliveryError:
                    pass  # answered below as the 401 it is
                else:
                    continue
            break
        status = response.status_code
        outcome = classify_status(status)
        if outcome != "ok":
            text = response_text(response)
            return WriteResult(
                outcome,
                error=f"{what} → {status}: {self.scrubber.excerpt(text)}",
                status=status,
                retry_after=parse_retry_after(response.headers.get("Retry-After")) if outcome == "transient" else None,
                locked=outcome == "permanent" and self._is_locked(prepared.request.entity, status, text),
            )
        return WriteResult("ok", target_id=self._target_id(response, prepared), status=status)

    def _is_locked(self, entity: str, status: int, text: str) -> bool:
        """The entity's `write.locked` answer: the record cannot change in its state."""
        spec = self.config.entities[entity].write
        locked = spec.locked if spec is not None else None
        if locked is None or status not in locked.status:
            return False
        return locked.body_contains is None or locked.body_contains in text

    def _merged(self, prepared: _Prepared) -> _Prepared | WriteResult:
        """The request with its `merge` lists merged into the record's current ones (read by the
        entity's `read.item_path`): a write that carries the billing address keeps the shipping one.
        With `skip_unchanged`, a record that already holds every field of the body is not written
        (an ok result marked unchanged).

        Without an item_path, or for a record the target does not have yet, the request is sent
        as it is."""
        request = prepared.request
        entity = self.config.entities[request.entity]
        spec, read = entity.write, entity.read
        record_id = request.target_id
        if record_id is None and spec is not None and spec.mode == "upsert" and spec.key_field:
            found = dig(request.record, spec.key_field)
            record_id = None if found in (None, "") else str(found)
        if read is None or read.item_path is None or record_id is None:
            return prepared
        path = read.item_path.replace("{id}", quote(record_id, safe=""))
        try:
            if self.budget is not None:
                self.budget.acquire()
            headers = {"Accept": "application/json", **self.credentials.headers()}
            reply = send_direct(self.session, "GET", self.config.base_url + path, None, headers, self.config.timeout_s)
        except (DeliveryError, requests.RequestException) as exc:
            return WriteResult("transient", error=f"GET {path} (to merge lists) failed: {self.scrubber.describe(exc)}")
        if reply.status_code == 404:
            return prepared
        if classify_status(reply.status_code) != "ok":
            return WriteResult(
                "transient", error=f"GET {path} (to merge lists) → {reply.status_code}", status=reply.status_code
            )
        try:
            current: Any = json.loads(reply.content) if reply.content else {}
        except ValueError:
            return WriteResult("transient", error=f"GET {path} (to merge lists) did not answer JSON")
        if read.item_record_path:
            current = dig(current, read.item_record_path)
        if not isinstance(current, dict):
            return prepared
        record = dict(request.record)
        for name, key in request.merge.items():
            if isinstance(record.get(name), list):
                record[name] = merge_by_key(current.get(name), record[name], key)
        if prepared.compare and spec is not None:
            body = {k: v for k, v in record.items() if k not in spec.drop_fields}
            if all(k in current and same_json(current[k], v) for k, v in body.items()):
                held_id = dig(current, spec.id_path) if spec.id_path else None
                target = str(held_id) if held_id not in (None, "") and not isinstance(held_id, dict | list) else None
                return WriteResult("ok", target_id=target or prepared.fallback_id, unchanged=True)
        if not request.merge:
            return prepared
        redone = self._prepare(replace(request, record=record, merge={}))
        if isinstance(redone, _Prepared):
            redone.compare = False
        return redone

    def _target_id(self, response: HttpReply, prepared: _Prepared) -> str | None:
        if prepared.id_path is None or not response.content:
            return prepared.fallback_id
        try:
            body: Any = json.loads(response.content)
        except ValueError:
            return prepared.fallback_id
        found = dig(body, prepared.id_path)
        return prepared.fallback_id if found is None or isinstance(found, dict | list) else str(found)


def same_json(held: Any, written: Any) -> bool:
    """Whether a value read back from the API is what a write would send: numbers by value
    (a JSON 19.9 holds the mapped "19.90"), objects on the keys written, lists item by item."""
    if isinstance(written, dict):
        return isinstance(held, dict) and all(k in held and same_json(held[k], v) for k, v in written.items())
    if isinstance(written, list | tuple):
        return (
            isinstance(held, list)
            and len(held) == len(written)
            and all(same_json(h, w) for h, w in zip(held, written, strict=True))
        )
    if written in (None, "") or held in (None, ""):
        return written in (None, "") and held in (None, "")
    numbers = (int, float, Decimal)
    numeric = [v for v in (held, written) if isinstance(v, numbers) and not isinstance(v, bool)]
    if numeric and not isinstance(held, bool) and not isinstance(written, bool):
        try:
            return Decimal(str(held)) == Decimal(str(written))
        except (InvalidOperation, ValueError):
            return False
    if isinstance(written, datetime | date):
        return str(held) == written.isoformat()
    return bool(held == written)


def _fill_path(template: str, spec: WriteSpec, request: WriteRequest) -> str:
    """The path with `{field}`, `{key}` and `{target_id}` filled (each URL-quoted); KeyError names a gap."""
    record = request.record
    values: dict[str, str] = {}
    for name in path_placeholders(template):
        if name == "target_id" and request.target_id is not None:
            value: Any = request.target_id
        elif name == "key" and spec.key_field:
            value = dig(record, spec.key_field)
        else:
            value = dig(record, name)
        if value is None or value == "":
            raise KeyError(spec.key_field if name == "key" else name)
        values[name] = quote(str(value), safe="")
    path = template
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path
