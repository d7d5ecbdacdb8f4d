"""Dotted source paths compiled to getters once, at load.

`billing.city` reads `record["billing"]["city"]`; a numeric part indexes a list
(`lines.0.sku`, `lines.-1.sku`); `.` alone is the record (or list item) itself. A missing key,
a too-short list or a non-container on the way gives None, never an exception: missing data is
normal data.

A getter made with `missing=` tells *absent* from *null*: an absent key (or a too-short list)
anywhere on the way gives that value instead of None, while an explicit null on the way, or a
non-container, still gives None. Mappings read with `missing=OMIT`, so a field the source
record did not carry is left out of the output rather than written as null.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Getter = Callable[..., Any]

SELF_PATH = "."


def split_path(path: str) -> list[str]:
    """Parts of a dotted path; raises ValueError on empty parts."""
    if path == SELF_PATH:
        return []
    parts = path.split(".")
    for part in parts:
        if not part.strip() or part != part.strip():
            raise ValueError(f"path {path!r} has an empty or blank part")
    return parts


def _index(part: str) -> int | None:
    if part.lstrip("-").isdigit():
        return int(part)
    return None


def single_key(path: str) -> str | None:
    """The key when `path` is one plain key (callers inline `record.get(key)` for speed)."""
    parts = split_path(path)
    return parts[0] if len(parts) == 1 and _index(parts[0]) is None else None


def make_getter(path: str, missing: Any = None) -> Getter:
    """A fast function `(record, ctx=None) → value at path` (None when anything is missing,
    or `missing` when a key on the way is absent, see the module docstring).

    The unused `ctx` lets a getter stand directly as a compiled field."""
    parts = split_path(path)
    if not parts:
        return _identity
    steps = [(p, _index(p)) for p in parts]
    if len(steps) == 1 and steps[0][1] is None:
        key = steps[0][0]

        def get_one(record: Any, ctx: Any = None) -> Any:
            try:
                return record.get(key, missing)
            except AttributeError:
                return None

        return get_one
    if len(steps) == 2 and steps[0][1] is None and steps[1][1] is None:
        first, second = steps[0][0], steps[1][0]
        if missing is None:

            def get_two(record: Any, ctx: Any = None) -> Any:
                try:
                    return record.get(first).get(second)
                except AttributeError:
                    return None

        else:

            def get_two(record: Any, ctx: Any = None) -> Any:
                try:
                    inner = record.get(first, missing)
                except AttributeError:
                    return None
                if inner is missing:
                    return missing
                try:
                    return inner.get(second, missing)
                except AttributeError:
                    return None

        get_two.parts = (first, second)  # type: ignore[attr-defined]  # lets the compiler inline it
        get_two.missing = missing  # type: ignore[attr-defined]
        return get_two
    frozen = tuple(steps)

    def get_many(record: Any, ctx: Any = None) -> Any:
        value = record
        for key, index in frozen:
            if isinstance(value, dict):
                value = value.get(key, missing)
                if value is missing:
                    return missing
            elif index is not None and isinstance(value, list):
                if not -len(value) <= index < len(value):
                    return missing
                value = value[index]
            else:
                return None
            if value is None:
                return None
        return value

    return get_many


def _identity(record: Any, ctx: Any = None) -> Any:
    return record


def is_index(part: str) -> bool:
    return _index(part) is not None
