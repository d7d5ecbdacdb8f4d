"""What a mapping may ask of the outside world while it runs: cross-references.

The worker passes a `StoreMappingContext` over its state store; previews, examples and tests
pass a `StaticMappingContext` with the links written inline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from middleware.store.base import RecordRef, Store


class MappingContext(Protocol):
    """Lookups a compiled mapping may make per record."""

    def xref(self, from_system: str, entity: str, record_id: str, to_system: str) -> str | None:
        """Id in `to_system` of the record linked to (`from_system`, `entity`, `record_id`), if any."""
        ...


class StoreMappingContext:
    """Cross-references answered by the state store (what the worker uses)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def xref(self, from_system: str, entity: str, record_id: str, to_system: str) -> str | None:
        found = self.store.lookup(RecordRef(from_system, entity, record_id), to_system)
        return found.id if found is not None else None


class MessageConditionContext:
    """What a route's `when:` is evaluated with: the store's cross-references and the message's
    own source record (`{linked: crm}` without `field:` asks about it)."""

    def __init__(self, store: Store, source: RecordRef) -> None:
        self.store = store
        self.source = source

    def xref(self, from_system: str, entity: str, record_id: str, to_system: str) -> str | None:
        found = self.store.lookup(RecordRef(from_system, entity, record_id), to_system)
        return found.id if found is not None else None


class StaticMappingContext:
    """Cross-references given inline, for previews, examples and tests.

    Accepts a mapping `{"crm:customer:C-1": "erp:A-7"}` (the value may also be just the id,
    `"A-7"`, which then answers for any target system), or a list of `{"from": ..., "to": ...}`
    items in the same notation. Links answer in both directions when both ends are complete
    (`system:entity:id` on the left, `system:id` or `system:entity:id` on the right).
    """

    def __init__(self, links: Mapping[str, str] | Iterable[Mapping[str, Any]] | None = None) -> None:
        self._links: dict[tuple[str, str, str], dict[str | None, str]] = {}
        if links is None:
            return
        pairs: Iterable[tuple[Any, Any]]
        pairs = links.items() if isinstance(links, Mapping) else ((i.get("from"), i.get("to")) for i in links)
        for left, right in pairs:
            self.add(str(left), str(right))

    def add(self, left: str, right: str) -> None:
        """Link `system:entity:id` to `system:id`, `system:entity:id` or a bare id."""
        system, entity, record_id = _split_ref(left, "left side of an xref")
        parts = right.split(":", 2)
        if len(parts) == 1:
            self._links.setdefault((system, entity, record_id), {})[None] = parts[0]
            return
        to_system, to_id = parts[0], parts[-1]
        self._links.setdefault((system, entity, record_id), {})[to_system] = to_id
        self._links.setdefault((to_system, entity, to_id), {})[system] = record_id
        if len(parts) == 3 and parts[1] != entity:
            self._links.setdefault((to_system, parts[1], to_id), {})[system] = record_id

    def xref(self, from_system: str, entity: str, record_id: str, to_system: str) -> str | None:
        targets = self._links.get((from_system, entity, record_id))
        if not targets:
            return None
        found = targets.get(to_system)
        return found if found is not None else targets.get(None)


def _split_ref(text: str, what: str) -> tuple[str, str, str]:
    parts = text.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{what} must look like 'system:entity:id', e.g. 'crm:customer:C-1'; got {text!r}")
    return parts[0], parts[1], parts[2]
