"""Reading changes over SOAP: one `ReadPage` per call, with a safe watermark.

Watermarks are normalized to UTC ISO 8601 (`2026-11-24T02:00:00+00:00`), as for REST. The
watermark is handed to the operation as its `since_argument` (in the system's
`naive_timezone`, formatted by `since_format`); records the operation returns are yielded
even when they sit at or below the watermark (the routes' idempotency drops re-reads).
Without a `since_argument` the operation is taken to return everything, and records
changed before the watermark are dropped here (`updated >= watermark`, so a change sharing
the watermark's instant is not lost).

With a `limit_argument`, a full answer means there may be more: the next call asks from
the highest updated value read so far, skipping the records at exactly that moment that
were already yielded. That needs the operation to return the oldest changes first; a full
answer whose records all share one moment cannot be paged past and fails (raise `limit`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from adapters.shared.documents import dig, parse_moment, utc_iso
from adapters.shared.incremental import WatermarkBoundary, changed_record, read_spec
from adapters.soap.client import SoapClient
from adapters.soap.config import ReadSpec, SoapSystemConfig
from middleware.adapter import ReadPage, SourceRecord
from middleware.errors import PermanentError


class SoapReader:
    """Reads the entities of one SOAP system that have `read:` settings.

    A Polling Consumer (enterprise integration patterns): the poller calls the configured
    "changed since" operation with the last watermark.
    """

    def __init__(self, system: str, config: SoapSystemConfig, client: SoapClient) -> None:
        self.system = system
        self.config = config
        self.client = client
        self.zone = ZoneInfo(config.naive_timezone)

    def _spec(self, entity: str) -> ReadSpec:
        return read_spec(self.system, self.config.entities, entity)

    def read_changes(self, entity: str, watermark: str | None) -> Iterator[ReadPage]:
        spec = self._spec(entity)
        boundary = WatermarkBoundary(self._watermark_moment(watermark), client_filter=spec.since_argument is None)
        while True:
            arguments = dict(spec.arguments)
            if spec.since_argument:
                value = self._since_value(spec, boundary.anchor, watermark)
                if value is not None:
                    arguments[spec.since_argument] = value
            if spec.limit_argument:
                arguments[spec.limit_argument] = spec.limit
            result = self.client.call(spec.operation, arguments, "read")
            items = _as_list(dig(result, spec.records_path), spec, self.system)
            records: list[SourceRecord] = []
            for index, item in enumerate(items):
                record, updated = self._record(spec, item, index)
                if boundary.admit(record.record_id, updated):
                    records.append(record)
            yield ReadPage(records=records, watermark=boundary.watermark(watermark))

            if not spec.limit_argument or len(items) < spec.limit:
                return
            if not boundary.can_reanchor():
                anchor = boundary.anchor
                raise PermanentError(
                    f"{spec.operation}: a full answer of {spec.limit} records all changed at "
                    f"{utc_iso(anchor) if anchor else 'an unknown moment'}; the read cannot page past them — "
                    f"raise systems.{self.system}.entities.{entity}.read.limit",
                    system=self.system,
                )
            boundary.reanchor()

    def _since_value(self, spec: ReadSpec, moment: datetime | None, watermark: str | None) -> str | None:
        if moment is None:
            if watermark:  # an opaque watermark is passed as it is
                return watermark
            if spec.initial_since is None:
                return None
            try:
                moment = parse_moment(spec.initial_since, self.zone)
            except ValueError:
                return spec.initial_since
        local = moment.astimezone(self.zone)
        return local.isoformat() if spec.since_format == "iso" else local.strftime(spec.since_format)

    def _watermark_moment(self, watermark: str | None) -> datetime | None:
        if not watermark:
            return None
        try:
            return parse_moment(watermark, self.zone)
        except ValueError:
            return None

    def _record(self, spec: ReadSpec, item: Any, index: int) -> tuple[SourceRecord, datetime | None]:
        if not isinstance(item, dict):
            raise PermanentError(
                f"{spec.operation}: record {index} is a {type(item).__name__}, not a structure "
                f"(check records_path {spec.records_path!r})",
                system=self.system,
            )
        record_id = dig(item, spec.id_field)
        if record_id is None or record_id == "":
            raise PermanentError(
                f"{spec.operation}: record {index} has no id field {spec.id_field!r}; "
                f"its fields: {', '.join(item) or 'none'}",
                system=self.system,
            )
        raw_updated = dig(item, spec.updated_field)
        updated: datetime | None = None
        if raw_updated is not None:
            try:
                updated = parse_moment(raw_updated, self.zone)
            except ValueError:
                raise PermanentError(
                    f"{spec.operation}: record {record_id!r} field {spec.updated_field!r} is not a timestamp",
                    system=self.system,
                ) from None
        version = dig(item, spec.version_field) if spec.version_field else None
        return changed_record(item, record_id, version, raw_updated, updated), updated


def _as_list(raw: Any, spec: ReadSpec, system: str) -> list[Any]:
    """The records at records_path: a list, one record (a structure) or nothing."""
    if raw is None:
        return []
    if isinstance(raw, list):
        return raw
    if isinstance(raw, dict):
        return [raw]
    raise PermanentError(
        f"{spec.operation}: expected records at records_path {spec.records_path!r}, got a {type(raw).__name__}",
        system=system,
    )
