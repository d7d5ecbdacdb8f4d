"""Dotted source paths compiled to getters once, at load.

`billing.city` reads `record["billing"]["city"]`; a numeric part indexes a list
(`lines.0.sku`, `lines.-1.sku`); `.` alone is the record (or list item) itself. A missing key,
a too-short list or a non-container on the way gives None, never an exception: missing data is
normal data.
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


def make_getter(path: str) -> Getter:
    """A fast function `(record, ctx=None) → value at path` (None when anything is missing).

    The unused `ctx` lets a getter stand directly as a compiled field."""
    parts = split_path(path)
    if not parts:
        return _identity
    steps = [(p, _index(p)) for p in parts]
    if len(steps) == 1 and steps[0][1] is None:
        key = steps[0][0]

        def get_one(record: Any, ctx: Any = None) -> Any:
            try:
                return record.get(key)
            except AttributeError:
                return None

        return get_one
    if len(steps) == 2 and steps[0][1] is None and steps[1][1] is None:
        first, second = steps[0][0], steps[1][0]

        def get_two(record: Any, ctx: Any = None) -> Any:
            try:
                return record.get(first).get(second)
            except AttributeError:
                return None

        get_two.parts = (first, second)  # type: ignore[attr-defined]  # lets the compiler inline it
        return get_two
    frozen = tuple(steps)

    def get_many(record: Any, ctx: Any = None) -> Any:
        value = record
        for key, index in frozen:
            if isinstance(value, dict):
                value = value.get(key)
            elif index is not None and isinstance(value, list):
                value = value[index] if -len(value) <= index < len(value) else None
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
