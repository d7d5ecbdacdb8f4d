"""Whether a Tryton record already holds what a write would put into it.

A record that Tryton will not change in its state (a sale past draft) may still be sent to
again: a redelivery, a replay, the same order arriving by webhook and by poll. When the record
holds every value the write carries, that is no change at all and the writer answers
`unchanged` instead of refusing it as locked.

Only the fields the mapped record carries are compared, converted as the writer would send
them (ids for many2one, Decimal for numeric, dates), against one `read` of the records and of
their children. One2many children compare by position, on the fields the mapped children carry
(what the writer adds itself, a line's unit or taxes, is not part of what was asked). Anything
this module cannot compare counts as different: a false "unchanged" would lose a change,
a false "different" only makes the route's `on_locked` decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from adapters.tryton.rpc import TrytonRpc
from adapters.tryton.values import Children, FieldCatalog, Links


def unchanged_records(
    rpc: TrytonRpc,
    catalog: FieldCatalog,
    model: str,
    writes: Sequence[tuple[int, dict[str, Any], dict[str, Any]]],
) -> set[int]:
    """The record ids among `writes` (id, converted values, mapped record) that hold the values already."""
    if not writes:
        return set()
    fields = catalog.fields(model)
    names = sorted({name for _, values, mapped in writes for name in mapped if name in values and name in fields})
    rows = rpc.model(model, "read", sorted({target for target, _, _ in writes}), names or ["id"])
    held = {int(row["id"]): row for row in rows}
    children = _read_children(rpc, catalog, fields, writes, held)
    same: set[int] = set()
    for target, values, mapped in writes:
        row = held.get(target)
        if row is not None and all(
            _same_field(catalog, fields[name], values[name], mapped[name], row.get(name), children)
            for name in mapped
            if name in values and name in fields
        ):
            same.add(target)
    return same


def _read_children(
    rpc: TrytonRpc,
    catalog: FieldCatalog,
    fields: dict[str, dict[str, Any]],
    writes: Sequence[tuple[int, dict[str, Any], dict[str, Any]]],
    held: dict[int, dict[str, Any]],
) -> dict[tuple[str, int], dict[str, Any]]:
    """(child model, id) → the child's row, for every one2many the writes carry."""
    wanted: dict[str, set[str]] = {}
    ids: dict[str, set[int]] = {}
    for target, values, mapped in writes:
        for name, value in values.items():
            if not isinstance(value, Children) or not isinstance(mapped.get(name), list):
                continue
            child_fields = wanted.setdefault(value.model, set())
            for child in mapped[name]:
                if isinstance(child, dict):
                    child_fields.update(k for k in child if k in catalog.fields(value.model))
            row = held.get(target) or {}
            ids.setdefault(value.model, set()).update(int(i) for i in row.get(name) or [])
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for child_model, child_ids in ids.items():
        if not child_ids:
            continue
        for row in rpc.model(child_model, "read", sorted(child_ids), sorted(wanted[child_model]) or ["id"]):
            found[(child_model, int(row["id"]))] = row
    return found


def _same_field(
    catalog: FieldCatalog,
    spec: dict[str, Any],
    value: Any,
    mapped: Any,
    held: Any,
    children: dict[tuple[str, int], dict[str, Any]],
) -> bool:
    if isinstance(value, Children):
        held_ids = [int(i) for i in held or []]
        mapped_items = [m for m in mapped if isinstance(m, dict)] if isinstance(mapped, list) else []
        if len(value.items) != len(held_ids) or len(mapped_items) != len(value.items):
            return False  # a child left out or added: not comparable item by item
        child_fields = catalog.fields(value.model)
        for child_id, item, asked in zip(held_ids, value.items, mapped_items, strict=True):
            row = children.get((value.model, child_id))
            if row is None:
                return False
            for key in asked:
                if key not in item or key not in child_fields:
                    continue
                if isinstance(item[key], Children | Links):
                    return False
                if not _same_value(child_fields[key]["type"], item[key], row.get(key)):
                    return False
        return True
    if isinstance(value, Links):
        if not all(isinstance(i, int) for i in value.items):
            return False
        return sorted(value.items) == sorted(int(i) for i in held or [])
    return _same_value(spec["type"], value, held)


def _same_value(kind: str, wanted: Any, held: Any) -> bool:
    if wanted in (None, "") or held in (None, ""):
        return wanted in (None, "") and held in (None, "")
    if kind == "many2one":
        held_id: Any = held.get("id") if isinstance(held, dict) else held
        try:
            return int(wanted) == int(held_id)
        except (TypeError, ValueError):
            return False
    if kind in ("numeric", "float", "integer", "biginteger"):
        try:
            return Decimal(str(wanted)) == Decimal(str(held))
        except (InvalidOperation, ValueError):
            return False
    if kind == "date" and isinstance(held, datetime | date):
        return str(wanted)[:10] == held.isoformat()[:10]
    return bool(wanted == held)
