"""Documents as adapters read them: values at dotted paths, timestamps, the watermark form.

What a caller may rely on: `dig` never raises for a missing or mistyped step (it returns
the default), and `utc_iso` is the one normalized watermark form every adapter persists.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

_MISSING = object()


def dig(document: Any, dotted: str | None, default: Any = None) -> Any:
    """The value at a dotted path ('data.items', 'lines.0.sku'); '' is the document itself."""
    if not dotted:
        return document
    current = document
    for part in dotted.split("."):
        if isinstance(current, dict):
            current = current.get(part, _MISSING)
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            current = current[index] if -len(current) <= index < len(current) else _MISSING
        else:
            return default
        if current is _MISSING:
            return default
    return current


def parse_moment(value: Any, zone: tzinfo = UTC, *, what: str = "an ISO 8601 timestamp") -> datetime:
    """An aware datetime from a datetime or ISO 8601 text ('Z' allowed); naive ones are in `zone`.

    Raises ValueError "<value> is not <what>" for anything else.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        moment = datetime.fromisoformat(text)
    else:
        raise ValueError(f"{value!r} is not {what}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def utc_iso(moment: datetime) -> str:
    """The normalized watermark form: UTC, ISO 8601, e.g. 2026-11-24T02:00:00+00:00."""
    return moment.astimezone(UTC).isoformat()
