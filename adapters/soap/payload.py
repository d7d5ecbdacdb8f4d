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
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import zeep.helpers
from lxml import etree

from adapters.shared.documents import dig as dig
from adapters.shared.documents import parse_moment as parse_moment
from adapters.shared.documents import utc_iso as utc_iso


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
