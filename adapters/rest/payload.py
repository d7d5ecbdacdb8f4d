"""JSON in and out of the REST adapter: body encoding, dotted paths, timestamps.

Decimal encoding (what a target may rely on): a `Decimal` is written as a JSON *number*
whose text is exactly `str(decimal)` — `Decimal("19.90")` becomes `19.90`, never the float
`19.9` nor the string `"19.90"`. The standard `json` module cannot emit raw number text, so
`encode_json` is a small serializer of its own. A target that parses numbers as floats
still reads the right value; one that parses them as decimals (e.g. Python's
`json.loads(..., parse_float=Decimal)`) keeps every digit. NaN and infinities, which JSON
cannot carry, are refused. `datetime`, `date` and `time` become ISO 8601 strings; UUIDs
become strings.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from adapters.shared.documents import dig as dig
from adapters.shared.documents import parse_moment
from adapters.shared.documents import utc_iso as utc_iso

parse_timestamp = parse_moment  # the name REST modules knew it by; naive timestamps are UTC
_encode_string = json.encoder.encode_basestring  # type: ignore[attr-defined]


class _NeedsExactEncoder(Exception):
    """A value the C encoder cannot write exactly (a Decimal): use the serializer below."""


def _plain_default(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise _NeedsExactEncoder


_fast_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_plain_default)


def encode_json(value: Any) -> bytes:
    """UTF-8 JSON for a request body; raises ValueError for what JSON cannot carry.

    Most bodies hold no Decimal: those go through the C encoder (several times faster, and
    body encoding is on every write's path); the first Decimal met switches to the exact
    serializer below, which writes the same JSON for everything else.
    """
    try:
        return _fast_encoder.encode(value).encode()
    except _NeedsExactEncoder:
        pass
    except TypeError:
        pass  # e.g. a non-string key: the exact serializer knows the rules and the message
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts).encode()


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_encode_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be sent as JSON")
        out.append(float.__repr__(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"Decimal {value} cannot be sent as JSON")
        out.append(str(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for key, item in value.items():
            if not first:
                out.append(",")
            first = False
            if not isinstance(key, str):
                if isinstance(key, int | float | bool) or key is None:
                    key = json.dumps(key)
                else:
                    raise ValueError(f"object key {key!r} is not a string")
            out.append(_encode_string(key))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, datetime | date | time):
        out.append(_encode_string(value.isoformat()))
    elif isinstance(value, uuid.UUID):
        out.append(_encode_string(str(value)))
    else:
        raise ValueError(f"a {type(value).__name__} cannot be sent as JSON")
