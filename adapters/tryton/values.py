"""Mapped records → Tryton field values, driven by the model's own field definitions.

A mapped record is JSON: text, numbers, lists and objects. What each value must become is
read from Tryton (`fields_get`, once per model) instead of being configured:

* numeric → Decimal, float/integer → numbers, date/datetime → Tryton's date objects
  (a datetime is sent as naive UTC, as Tryton stores it), boolean from true/false;
* many2one → an id: a number (or digits), or an object naming the record by its fields,
  e.g. `country: {code: DE}` or `product: {code: WIDGET-1}`, looked up for the whole
  batch at once (`{code: null}` means no record);
* one2many → a list of objects, each converted against the related model; on update the
  existing children are rewritten in place by position, extra ones created, surplus ones
  deactivated (or deleted where the model has no `active`). A child that leaves one of its
  model's required fields empty is left out, so a mapping may list an e-mail contact
  mechanism that the customer does not have;
* many2many → a list of ids or lookup objects; on update the list replaces the old one.

Unknown fields are refused with the nearest field names, before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from adapters.tryton.rpc import TrytonRpc
from middleware.problems import did_you_mean

FieldDefs = dict[str, dict[str, Any]]


class RecordProblem(Exception):
    """This record cannot be written as it is (permanent for the record, not the batch)."""


@dataclass(frozen=True)
class Lookup:
    """A many2one named by field values instead of an id, resolved per batch."""

    model: str
    key: tuple[tuple[str, Any], ...]

    def describe(self) -> str:
        return f"{self.model} with " + ", ".join(f"{k}={v!r}" for k, v in self.key)


@dataclass
class Children:
    """A one2many's children, converted; written as create/write ops once targets are known."""

    model: str
    items: list[dict[str, Any]]


@dataclass
class Links:
    """A many2many's targets (ids or lookups)."""

    items: list[Any]


class FieldCatalog:
    """`fields_get` answers per model, kept for the adapter's life (models change on upgrade only)."""

    ATTRIBUTES = ("type", "relation", "required", "readonly", "relation_field", "selection")

    def __init__(self, rpc: TrytonRpc) -> None:
        self.rpc = rpc
        self._models: dict[str, FieldDefs] = {}

    def fields(self, model: str) -> FieldDefs:
        found = self._models.get(model)
        if found is None:
            raw = self.rpc.model(model, "fields_get", None)
            found = {
                name: {k: spec.get(k) for k in self.ATTRIBUTES}
                for name, spec in raw.items()
                if isinstance(spec, dict)
            }
            self._models[model] = found
        return found


class Converter:
    """Converts one batch's records; collects the lookups so they are resolved in a few calls."""

    def __init__(self, catalog: FieldCatalog) -> None:
        self.catalog = catalog
        self.lookups: set[Lookup] = set()

    def convert(self, model: str, record: dict[str, Any], skip: frozenset[str] = frozenset()) -> dict[str, Any]:
        fields = self.catalog.fields(model)
        values: dict[str, Any] = {}
        for name, value in record.items():
            if name in skip:
                continue
            spec = fields.get(name)
            if spec is None:
                raise RecordProblem(f"Tryton model {model} has no field {name!r}; {did_you_mean(name, fields)}")
            try:
                values[name] = self._value(model, name, spec, value)
            except RecordProblem:
                raise
            except (ValueError, TypeError, InvalidOperation) as exc:
                raise RecordProblem(f"{model}.{name}: {value!r} is not a valid {spec['type']} ({exc})") from None
        return values

    def _value(self, model: str, name: str, spec: dict[str, Any], value: Any) -> Any:
        kind = spec["type"]
        if value is None:
            return [] if kind in ("one2many", "many2many") else None
        if kind == "numeric":
            return value if isinstance(value, Decimal) else Decimal(str(value))
        if kind == "float":
            return float(value)
        if kind in ("integer", "biginteger"):
            return int(value)
        if kind == "boolean":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError("expected true or false")
                return lowered in ("true", "1", "yes")
            return bool(value)
        if kind == "date":
            return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
        if kind in ("datetime", "timestamp"):
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
        if kind == "time":
            return value if isinstance(value, time) else time.fromisoformat(str(value))
        if kind == "many2one":
            return self._reference(spec["relation"], value, f"{model}.{name}")
        if kind == "one2many":
            if not isinstance(value, list):
                raise RecordProblem(f"{model}.{name} takes a list of objects, got {type(value).__name__}")
            relation = spec["relation"]
            parent_field = spec.get("relation_field")
            required = [
                f for f, s in self.catalog.fields(relation).items() if s.get("required") and f != parent_field
            ]
            items = []
            for item in value:
                if not isinstance(item, dict):
                    raise RecordProblem(f"{model}.{name} items must be objects, got {type(item).__name__}")
                if any(f in item and item[f] in (None, "") for f in required):
                    continue  # e.g. an e-mail contact mechanism without an address
                items.append(self.convert(relation, item))
            return Children(relation, items)
        if kind == "many2many":
            if not isinstance(value, list):
                raise RecordProblem(f"{model}.{name} takes a list, got {type(value).__name__}")
            return Links([self._reference(spec["relation"], item, f"{model}.{name}") for item in value])
        if kind == "selection" and value == "":
            return None
        return value

    def _reference(self, relation: str, value: Any, where: str) -> Any:
        if isinstance(value, bool):
            raise RecordProblem(f"{where}: {value!r} is not a record id or a lookup object")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            if value.strip().isdigit():
                return int(value)
            raise RecordProblem(f"{where}: {value!r} is not an id; name the record instead, e.g. {{code: {value}}}")
        if isinstance(value, dict):
            if not value:
                raise RecordProblem(f"{where}: an empty lookup object names no record")
            if "id" in value and value["id"] is not None:
                return int(value["id"])
            if all(v in (None, "") for v in value.values()):
                return None
            fields = self.catalog.fields(relation)
            for key in value:
                if key not in fields:
                    raise RecordProblem(f"{where}: {relation} has no field {key!r} to look up by")
            lookup = Lookup(relation, tuple(sorted(value.items())))
            self.lookups.add(lookup)
            return lookup
        raise RecordProblem(f"{where}: {value!r} is not a record id or a lookup object")

    def resolve(self, rpc: TrytonRpc) -> dict[Lookup, int | str]:
        """Lookup → id, or → the reason it names no single record. One call per model and key."""
        found: dict[Lookup, int | str] = {}
        groups: dict[tuple[str, tuple[str, ...]], list[Lookup]] = {}
        for lookup in self.lookups:
            groups.setdefault((lookup.model, tuple(k for k, _ in lookup.key)), []).append(lookup)
        for (model, keys), lookups in groups.items():
            if len(keys) == 1:
                key = keys[0]
                values = sorted({lk.key[0][1] for lk in lookups}, key=str)
                rows = rpc.model(model, "search_read", [(key, "in", values)], 0, None, None, [key])
                by_value: dict[Any, list[int]] = {}
                for row in rows:
                    by_value.setdefault(row.get(key), []).append(int(row["id"]))
                for lookup in lookups:
                    ids = by_value.get(lookup.key[0][1], [])
                    found[lookup] = ids[0] if len(ids) == 1 else _no_single(lookup, ids)
            else:
                for lookup in lookups:
                    domain = [(k, "=", v) for k, v in lookup.key]
                    ids = rpc.model(model, "search", domain, 0, 2, None)
                    found[lookup] = int(ids[0]) if len(ids) == 1 else _no_single(lookup, ids)
        return found


def _no_single(lookup: Lookup, ids: list[Any]) -> str:
    if not ids:
        return f"no {lookup.describe()} in Tryton"
    return f"{len(ids)} records are {lookup.describe()}; the lookup must name one"


def substitute(value: Any, ids: dict[Lookup, int | str]) -> Any:
    """Replace resolved lookups by their ids; RecordProblem for one that found none."""
    if isinstance(value, Lookup):
        found = ids.get(value)
        if isinstance(found, int):
            return found
        raise RecordProblem(found or f"{value.describe()} was not looked up")
    if isinstance(value, dict):
        return {k: substitute(v, ids) for k, v in value.items()}
    if isinstance(value, Children):
        return Children(value.model, [substitute(item, ids) for item in value.items])
    if isinstance(value, Links):
        return Links([substitute(item, ids) for item in value.items])
    return value


def merge_key_text(value: Any) -> str:
    """A merge key's value as compared between a converted child and a stored one (ids as text)."""
    if isinstance(value, dict):
        value = value.get("id")
    return "" if value is None else str(value)


def for_create(values: dict[str, Any]) -> dict[str, Any]:
    """Values as `create` takes them: children as ('create', …), links as ('add', …)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, Children):
            out[name] = [["create", [for_create(item) for item in value.items]]] if value.items else []
        elif isinstance(value, Links):
            out[name] = [["add", list(value.items)]] if value.items else []
        else:
            out[name] = value
    return out


def for_update(
    values: dict[str, Any],
    existing: dict[str, list[int]],
    catalog: FieldCatalog,
    replace: frozenset[str] = frozenset(),
    merge: dict[str, tuple[str, dict[str, int]]] | None = None,
) -> dict[str, Any]:
    """Values as `write` takes them, given the ids of the record's current children/links.

    Children are rewritten in place by position, extra ones created, surplus ones
    deactivated (deleted if their model has no `active`); fields in `replace` delete all
    old children and create the new ones instead. Fields in `merge` (name → (item key, key
    value → current child id), from the mapping's `merge_key:`) rewrite the child with the same
    key, create the others, and leave every child the write does not mention as it is.
    """
    out: dict[str, Any] = {}
    for name, value in values.items():
        old = existing.get(name, [])
        if isinstance(value, Children):
            ops: list[Any] = []
            if merge and name in merge and name not in replace:
                key, by_key = merge[name]
                used: set[int] = set()
                created: list[dict[str, Any]] = []
                for item in value.items:
                    child = by_key.get(merge_key_text(item.get(key)))
                    if child is not None and child not in used:
                        used.add(child)
                        ops.append(["write", [child], for_update(item, {}, catalog)])
                    else:
                        created.append(for_create(item))
                if created:
                    ops.append(["create", created])
            elif name in replace:
                if old:
                    ops.append(["delete", old])
                if value.items:
                    ops.append(["create", [for_create(item) for item in value.items]])
            else:
                for child_id, item in zip(old, value.items, strict=False):
                    ops.append(["write", [child_id], for_update(item, {}, catalog)])
                extra = value.items[len(old) :]
                if extra:
                    ops.append(["create", [for_create(item) for item in extra]])
                surplus = old[len(value.items) :]
                if surplus:
                    if "active" in catalog.fields(value.model):
                        ops.append(["write", surplus, {"active": False}])
                    else:
                        ops.append(["delete", surplus])
            out[name] = ops
        elif isinstance(value, Links):
            ops = []
            if old:
                ops.append(["remove", old])
            if value.items:
                ops.append(["add", list(value.items)])
            out[name] = ops
        else:
            out[name] = value
    return out
