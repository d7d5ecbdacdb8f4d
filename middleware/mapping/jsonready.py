"""Turning mapped values into what JSON can carry, the same way everywhere.

Decimal → string (exact, no float rounding), datetime/date/time → ISO 8601 string, tuples →
lists. Everything else is returned as it is.
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Any


def to_json_ready(value: Any) -> Any:
    """A copy of `value` with Decimal and date/time values turned into strings."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or kind is float or value is None:
        return value
    if kind is dict:
        return {k: to_json_ready(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [to_json_ready(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: to_json_ready(v) for k, v in value.items()}
    return value
