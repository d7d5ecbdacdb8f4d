"""SOAP values in and out: zeep objects to plain JSON-ready data, timestamps, argument paths.

What a mapping or the broker may rely on: records read over SOAP are plain dicts, lists,
strings, numbers, booleans and None — the same shapes as records read over REST. Like
everywhere in Isthmus (`middleware.mapping.jsonready`), a `Decimal` becomes its exact
string (`Decimal("19.90")` → `"19.90"`, never the float 19.9) and `datetime`/`date`/`time`
become ISO 8601 strings; `bytes` (xsd:base64Binary) become base64 text and raw XML
(xsd:any) its serialized text.
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal
from typing import Any

import zeep.helpers
from lxml import etree

_MISSING = object()


def plain(value: Any) -> Any:
    """A zeep result as plain JSON-ready data."""
    return _json_ready(zeep.helpers.serialize_object(value, target_cls=dict))


def _json_ready(value: Any) -> Any:
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool or kind is float:
        return value
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, etree._Element):
        return etree.tostring(value, encoding="unicode")
    for base in (bool, str, int, float):  # subclasses, e.g. lxml's string results
        if isinstance(value, base):
            return base(value)
    return str(value)


def parse_moment(value: Any, zone: tzinfo) -> datetime:
    """An aware datetime from an xsd:dateTime value or ISO 8601 text; naive ones are in `zone`."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        moment = datetime.fromisoformat(text)
    else:
        raise ValueError(f"{value!r} is not a timestamp")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def set_path(document: dict[str, Any], dotted: str, value: Any) -> None:
    """Put `value` at a dotted path, creating the dicts on the way ('customer.customer_id')."""
    *parents, last = dotted.split(".")
    current = document
    for part in parents:
        child = current.get(part)
        if not isinstance(child, dict):
            child = {}
            current[part] = child
        current = child
    current[last] = value


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


def utc_iso(moment: datetime) -> str:
    """The normalized watermark form: UTC, ISO 8601, e.g. 2026-11-24T02:00:00+00:00."""
    return moment.astimezone(UTC).isoformat()
