"""The state store: ID cross-references, poll watermarks and applied-message keys.

SQLite by default (`sqlite:///path.db`), PostgreSQL by URL (`postgresql://...`). All
methods are safe to call from several threads (each implementation serialises or pools
connections) and several processes (the database does the locking). Every write is
committed before the method returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RecordRef:
    """A record in one system: (system, entity, id), e.g. ('crm', 'customer', 'C-1001')."""

    system: str
    entity: str
    id: str


class Store(Protocol):
    url: str

    def link(self, a: RecordRef, b: RecordRef) -> None:
        """Record that `a` and `b` are the same thing; both directions; re-linking updates."""

    def lookup(self, ref: RecordRef, other_system: str) -> RecordRef | None:
        """The record in `other_system` linked to `ref`, if any."""

    def lookup_many(self, refs: Sequence[RecordRef], other_system: str) -> dict[RecordRef, RecordRef]:
        """`lookup` for a whole batch in one round trip; refs without a link are left out."""

    def get_watermark(self, name: str) -> str | None: ...

    def set_watermark(self, name: str, value: str) -> None: ...

    def applied(self, route: str, keys: Sequence[str]) -> set[str]:
        """Which of `keys` were already applied on `route` (idempotency)."""

    def latest_versions(self, route: str, record_keys: Sequence[str]) -> dict[str, float]:
        """The newest source change time (Unix seconds) applied on `route` per record key; records
        never applied are left out. The route skips a change older than this one (stale)."""

    def mark_applied(
        self,
        route: str,
        keys: Sequence[str],
        links: Sequence[tuple[RecordRef, RecordRef]] = (),
        versions: Mapping[str, float] | None = None,
    ) -> None:
        """Remember `keys` as applied on `route`, record `links` (as `link` does) and raise each
        record's latest version to at least `versions[record_key]` (never lowers it), in one
        transaction: a batch costs one durable commit, and everything it learned lands together."""

    def close(self) -> None: ...
