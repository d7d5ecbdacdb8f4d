"""Comparing what a route would write with what the target holds, field by field.

Used by reconciliation and by `isthmus replay`. The comparison is about the *fields the
mapping writes*: the target record is projected onto the mapped record's shape (its keys,
recursively; lists position by position, as writers update child records in place), so
fields the target has and the mapping does not touch (ids, audit dates, a language) never
count as drift. A mapped field the target's read does not return at all cannot be compared;
it is listed as *uncompared* so that a silent gap in the comparison is visible.

Both sides are normalised before they are compared, because two systems rarely spell one
value the same way:

* text: surrounding whitespace dropped, runs of inner whitespace made one space;
* decimals: numbers, and text with a decimal point, compare by value (`19.90` = `19.9`,
  `5` = `5.0` = `5`); text of digits only stays text, so `010115` (a postal code) is not `10115`;
* date-times: ISO 8601 text compares as the UTC instant (`10:00+08:00` = `02:00Z`); a time
  without a zone is taken as UTC, as Tryton stores it; dates compare as written;
* booleans: `true`/`false` text equals the boolean, and so do 1/0 where the mapping writes a
  boolean (databases such as SQLite store booleans as integers);
* empty: null, "", [], {} and an object whose values are all empty are one value (a writer
  sends `country: {code: null}` to mean "no country", the target reads back null);
* linked records: where the mapping writes a plain value and the target reads back a linked
  record (Tryton's many2one `{"code": "C-1", "id": 35}`, a REST API's nested `{id, code}`),
  the value is compared with the link's `id` — or with its `code`, `key` or `number` when
  that is the one it equals (a mapping that writes the party's code). Where the mapping
  writes a link `{id: 35, ...}` and the target reads back the bare id, the ids are compared.
  Lists of links (many2many) compare item by item the same way.

The content hash of each side (sha256 of the normalised projection) decides in sync or not;
the field-level diff then says where.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

_DECIMAL_TEXT = re.compile(r"^[+-]?\d+\.\d+$")
_DATETIME_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class FieldDiff:
    """One field that differs: `target` is what the target holds (before), `source` what the route writes (after)."""

    path: str
    target: Any
    source: Any

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.path, "target": self.target, "source": self.source}


@dataclass
class Comparison:
    """The outcome of comparing one mapped record with one target record."""

    diffs: list[FieldDiff]
    source_hash: str
    target_hash: str
    uncompared: set[str] = field(default_factory=set)

    @property
    def in_sync(self) -> bool:
        return self.source_hash == self.target_hash


def normalise(value: Any) -> Any:
    """The comparable form of a JSON-like value (see the module docstring)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return _decimal_text(Decimal(str(value)))
    if isinstance(value, str):
        text = _SPACES.sub(" ", value).strip()
        if not text:
            return None
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if _DECIMAL_TEXT.match(text):
            return _decimal_text(Decimal(text))
        if _DATETIME_TEXT.match(text):
            return _instant_text(text)
        return text
    if isinstance(value, datetime):
        return _instant_text(value.isoformat())
    if isinstance(value, list | tuple):
        items = [normalise(item) for item in value]
        return items or None
    if isinstance(value, dict):
        out = {str(k): normalise(v) for k, v in value.items()}
        return out if any(v is not None for v in out.values()) else None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _decimal_text(number: Decimal) -> str:
    try:
        text = format(number.normalize(), "f")
    except InvalidOperation:
        return str(number)
    return "0" if text in ("-0", "+0") else text


def _instant_text(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")


def content_hash(value: Any) -> str:
    """sha256 of a normalised value's canonical JSON (key order does not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def compare(mapped: dict[str, Any], target: dict[str, Any] | None, ignore: Collection[str] = ()) -> Comparison:
    """Compare the record a route would write (`mapped`) with the target's record (None: it has none).

    `ignore` holds dotted field paths without list positions (`addresses.street`); a path
    also ignores everything below it.
    """
    uncompared: set[str] = set()
    source_view, target_view = _views(mapped, target or {}, "", frozenset(ignore), uncompared, target is None)
    diffs: list[FieldDiff] = []
    _walk(source_view, target_view, "", diffs)
    return Comparison(diffs, content_hash(source_view), content_hash(target_view), uncompared)


_ABSENT = object()


def _views(
    expected: Any, actual: Any, schema: str, ignore: frozenset[str], uncompared: set[str], creating: bool
) -> tuple[Any, Any]:
    """(normalised expected, normalised actual projected onto expected's shape)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            if actual is not None and not isinstance(actual, list) and LINK_ID in expected:
                return normalise(expected[LINK_ID]), normalise(actual)  # a link read back as its bare id
            return normalise(expected), normalise(actual)
        source: dict[str, Any] = {}
        target: dict[str, Any] = {}
        for key, value in expected.items():
            path = f"{schema}.{key}" if schema else str(key)
            if _ignored(path, ignore):
                continue
            if key not in actual and not creating:
                uncompared.add(path)
                continue
            source[key], target[key] = _views(value, actual.get(key), path, ignore, uncompared, creating)
        return _empty_is_none(source), _empty_is_none(target)
    if isinstance(expected, list):
        items = actual if isinstance(actual, list) else ([] if actual is None else [actual])
        shape = next((e for e in expected if isinstance(e, dict)), None)
        source_items: list[Any] = []
        target_items: list[Any] = []
        for index in range(max(len(expected), len(items))):
            want = expected[index] if index < len(expected) else _ABSENT
            have = items[index] if index < len(items) else _ABSENT
            if want is _ABSENT:
                # an extra item in the target: shown in the shape the mapping writes
                source_items.append(None)
                projected = _views(shape, have, schema, ignore, set(), creating)[1] if shape else normalise(have)
                target_items.append(projected)
            elif have is _ABSENT:
                source_items.append(_views(want, None, schema, ignore, set(), True)[0])
                target_items.append(None)
            else:
                one, other = _views(want, have, schema, ignore, uncompared, creating)
                source_items.append(one)
                target_items.append(other)
        return source_items or None, target_items or None
    if isinstance(actual, dict) and expected is not None:
        actual = _link_value(expected, actual)
    if isinstance(expected, bool) and not isinstance(actual, bool) and str(actual).strip() in ("0", "1"):
        actual = str(actual).strip() == "1"  # a boolean stored as an integer (Tryton on SQLite)
    return normalise(expected), normalise(actual)


LINK_ID = "id"
LINK_KEYS = ("id", "code", "key", "number")  # the fields a linked record is named by, in the order tried


def _link_value(expected: Any, link: dict[str, Any]) -> Any:
    """The field of a linked record that a plain mapped value stands for (see the module docstring).

    Only objects carrying an `id` are links; another object stays an object (and differs).
    """
    if LINK_ID not in link:
        return link
    want = normalise(expected)
    for key in LINK_KEYS:
        if key in link and normalise(link[key]) == want:
            return link[key]
    return link[LINK_ID]


def _empty_is_none(view: dict[str, Any]) -> dict[str, Any] | None:
    return view if any(v is not None for v in view.values()) else None


def _ignored(path: str, ignore: frozenset[str]) -> bool:
    return any(path == item or path.startswith(item + ".") for item in ignore)


def _walk(source: Any, target: Any, path: str, diffs: list[FieldDiff]) -> None:
    if source == target:
        return
    if isinstance(source, dict) and (isinstance(target, dict) or (target is None and not path)):
        target = target or {}  # no target record at all: every mapped field is a diff of its own
        for key in source:
            _walk(source.get(key), target.get(key), f"{path}.{key}" if path else key, diffs)
        return
    if isinstance(source, list) and isinstance(target, list):
        for index in range(max(len(source), len(target))):
            one = source[index] if index < len(source) else None
            other = target[index] if index < len(target) else None
            _walk(one, other, f"{path}[{index}]", diffs)
        return
    diffs.append(FieldDiff(path or "(record)", target, source))
