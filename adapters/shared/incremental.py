"""Incremental reads: which entity may be read, how a read record is built, and the boundary at the watermark.

`WatermarkBoundary` is the bookkeeping of a read that asks for changes since a moment and
may have to ask again from a later one (a full page, paged by moving the since value):

- with a client-side filter, records changed before the watermark are dropped
  (`updated >= watermark`, so a change sharing the watermark's instant is not lost);
- after `reanchor`, records at exactly the new anchor that were already admitted are dropped;
- `best` is the newest change time admitted so far (never below the starting watermark), so
  `watermark()` after each page is safe to persist once the page is published.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar

from adapters.shared.documents import utc_iso
from middleware.adapter import SourceRecord
from middleware.errors import ConfigError
from middleware.message import utc_now

_Spec = TypeVar("_Spec", covariant=True)
_ReadSpec = TypeVar("_ReadSpec")


class _Readable(Protocol[_Spec]):
    @property
    def read(self) -> _Spec | None: ...


def read_spec(system: str, entities: Mapping[str, _Readable[_ReadSpec]], entity: str) -> _ReadSpec:
    """The `read:` settings of `entity`; ConfigError naming the readable entities if it has none."""
    spec = entities.get(entity)
    if spec is None or spec.read is None:
        readable = [name for name, e in entities.items() if e.read is not None]
        raise ConfigError(f"system {system!r} cannot read entity {entity!r}; readable: {readable}")
    return spec.read


def changed_record(
    item: dict[str, Any], record_id: Any, version: Any, raw_updated: Any, updated: datetime | None
) -> SourceRecord:
    """A record as a list read yields it: versioned by its version field, else by its raw change value;
    occurred at its change time, else now."""
    if version is None:
        version = raw_updated
    return SourceRecord(
        record_id=str(record_id),
        version=None if version is None else str(version),
        occurred_at=updated or utc_now(),
        data=item,
    )


class WatermarkBoundary:
    """The newest change time of one read, the ids at it, and the moment the current query asks from."""

    def __init__(self, since: datetime | None, client_filter: bool) -> None:
        self.since = since
        self.client_filter = client_filter  # the source does not filter by the watermark: drop older here
        self.best = since
        self.anchor = since  # the moment the current query asks from
        self._at_best: set[str] = set()  # ids admitted whose change time equals `best`
        self._already: set[str] = set()  # ids at `anchor` admitted before the query was re-anchored

    def admit(self, record_id: str, updated: datetime | None) -> bool:
        """Whether the record belongs in this read; an admitted record moves `best` forward."""
        if self.client_filter and self.since is not None and updated is not None and updated < self.since:
            return False
        if self._already and updated == self.anchor and record_id in self._already:
            return False
        if updated is not None and (self.best is None or updated > self.best):
            self.best, self._at_best = updated, set()
        if updated is not None and updated == self.best:
            self._at_best.add(record_id)
        return True

    def watermark(self, fallback: str | None) -> str | None:
        """The watermark to persist after the records admitted so far: `best`, or `fallback` if none."""
        return utc_iso(self.best) if self.best is not None else fallback

    def can_reanchor(self) -> bool:
        """Whether `best` lies past the current anchor, so asking again from it makes progress."""
        return self.best is not None and (self.anchor is None or self.best > self.anchor)

    def reanchor(self) -> datetime:
        """Ask from `best` next; the records already admitted at it are skipped. Returns the new anchor."""
        assert self.best is not None
        self.anchor, self._already = self.best, set(self._at_best)
        return self.best
