"""Recognising Isthmus's own writes when they come back: canonical values and their content hash.

A two-way route writes record R into system S; S's poller then reads R again and the
opposite route receives that change. To know it as our own echo, the route that wrote
stamps (S, entity, R's id) with the hash of what it wrote (`EchoStamp` in the store), and
the opposite route compares the hash of what it read.

The comparison is made on the **canonical** form of the **synced fields that were written**,
not on the native write body: the body Isthmus sends to Tryton (`country: {code: DE}`,
one2many operations) and the record the Tryton reader returns (ids, nested dicts, Decimals)
never look alike, whereas both directions of a pair map their system's record into the same
canonical entity. So the writer hashes the canonical values it wrote, the reader hashes the
canonical values it read, field by field, after `normalise`:

* null and "" are the same (systems store "" or NULL);
* a field *absent* from a record is not compared at all: a partial record (a webhook payload
  without the address) says nothing about the fields it lacks, so it is never a change to
  blank (`CanonicalFields.carried`). Mappings leave out what the source did not carry and
  keep an explicit null, so absent and null stay apart up to here;
* a Decimal field compares as a number (`19.9`, `19.90` and `19.9000` are equal);
* objects drop their null members; lists keep their order (the first address is the billing
  address on both sides); text is compared exactly (the mappings trim and lower-case).
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel

# What a normaliser does to one value: the canonical model's type decides.
Normaliser = typing.Callable[[Any], Any]


def _decimal(value: Any) -> Any:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return value
    if not number.is_finite():
        return str(number)
    text = format(number.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _plain(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        cleaned = {k: _plain(v) for k, v in value.items()}
        return {k: v for k, v in sorted(cleaned.items()) if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return _decimal(value)
    return value


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, is a list) of `X | None`, `list[X]`, `list[X] | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
        return annotation, False
    if origin in (list, tuple):
        args: Any = typing.get_args(annotation)
        inner, _ = _unwrap(args[0]) if args else (Any, False)
        return inner, True
    return annotation, False


def _for_annotation(annotation: Any) -> Normaliser:
    inner, is_list = _unwrap(annotation)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        one: Normaliser = model_normaliser(inner)
    elif inner is Decimal:
        one = _decimal
    else:
        one = _plain
    if not is_list:
        return one

    def each(value: Any) -> Any:
        if value is None or value == "" or value == []:
            return None
        if not isinstance(value, list | tuple):
            return one(value)
        return [one(v) for v in value]

    return each


def model_normaliser(model: type[BaseModel]) -> Normaliser:
    """A function canonical JSON of `model` → its normal form (see the module docstring)."""
    fields = {name: _for_annotation(info.annotation) for name, info in model.model_fields.items()}

    def normalise(value: Any) -> Any:
        if value is None or value == "":
            return None
        if not isinstance(value, Mapping):
            return _plain(value)
        out = {}
        for key, item in value.items():
            normal = fields.get(key, _plain)(item)
            if normal is not None:
                out[key] = normal
        return dict(sorted(out.items())) or None

    return normalise


class CanonicalFields:
    """Normal forms of the synced fields of one canonical entity (e.g. Customer)."""

    def __init__(self, model: type[BaseModel], fields: Iterable[str]) -> None:
        self.model = model
        self.fields = tuple(fields)
        unknown = [f for f in self.fields if f not in model.model_fields]
        if unknown:
            raise ValueError(f"{model.__name__} has no field {', '.join(map(repr, unknown))}")
        self._normalisers = {name: _for_annotation(model.model_fields[name].annotation) for name in self.fields}

    def values(self, canonical: Mapping[str, Any]) -> dict[str, Any]:
        """Every synced field's normal value (None where the record has none)."""
        return {name: self._normalisers[name](canonical.get(name)) for name in self.fields}

    def carried(self, canonical: Mapping[str, Any]) -> list[str]:
        """The synced fields the record carries (present, even if null), in the configured order."""
        return [name for name in self.fields if name in canonical]

    def normalise(self, name: str, value: Any) -> Any:
        return self._normalisers[name](value)


def content_hash(values: Mapping[str, Any], fields: Iterable[str]) -> str:
    """The hash stamped for a write and compared on read: normal values of `fields`, order-free."""
    subset = {name: values.get(name) for name in sorted(set(fields))}
    text = json.dumps(subset, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
