"""Structured conditions (`when:`)."""

from __future__ import annotations

from typing import Any

import pytest

from middleware.mapping import compile_mapping_text


def passes(condition: str, record: dict[str, Any]) -> bool:
    m = compile_mapping_text(f"mapping: c\nsource: a.b\ntarget: c.d\nwhen: {condition}\nfields:\n  x: {{const: 1}}\n")
    return m.apply(record) is not None


@pytest.mark.parametrize(
    ("condition", "record", "expected"),
    [
        ("{field: s, equals: won}", {"s": "won"}, True),
        ("{field: s, equals: won}", {"s": "lost"}, False),
        ("{field: s, equals: won}", {}, False),
        ("{field: n, equals: 3}", {"n": "3"}, True),
        ("{field: n, equals: 3}", {"n": 3}, True),
        ("{field: b, equals: true}", {"b": True}, True),
        ("{field: s, not_equals: won}", {"s": "open"}, True),
        ("{field: s, not_equals: won}", {"s": "won"}, False),
        ("{field: s, in: [a, b]}", {"s": "b"}, True),
        ("{field: s, in: [a, b]}", {"s": "c"}, False),
        ("{field: a.b, exists: true}", {"a": {"b": 0}}, True),
        ("{field: a.b, exists: true}", {"a": {"b": None}}, False),
        ("{field: a.b, exists: false}", {"a": {}}, True),
        ("{field: s, matches: '^C-[0-9]+$'}", {"s": "C-12"}, True),
        ("{field: s, matches: '^C-[0-9]+$'}", {"s": "X-12"}, False),
        ("{field: s, matches: 'x'}", {}, False),
        ("{field: n, gt: 10}", {"n": "10.5"}, True),
        ("{field: n, gt: 10}", {"n": 10}, False),
        ("{field: n, gte: 10}", {"n": 10}, True),
        ("{field: n, lt: 0}", {"n": -1}, True),
        ("{field: n, lte: 0}", {"n": "abc"}, False),
        ("{field: n, lt: 5}", {}, False),
        ("{all: [{field: a, equals: 1}, {field: b, equals: 2}]}", {"a": 1, "b": 2}, True),
        ("{all: [{field: a, equals: 1}, {field: b, equals: 2}]}", {"a": 1, "b": 3}, False),
        ("{any: [{field: a, equals: 1}, {field: b, equals: 2}]}", {"a": 0, "b": 2}, True),
        ("{any: [{field: a, equals: 1}, {field: b, equals: 2}]}", {}, False),
        ("{not: {field: a, equals: 1}}", {"a": 2}, True),
        ("{not: {field: a, equals: 1}}", {"a": 1}, False),
    ],
)
def test_condition(condition: str, record: dict[str, Any], expected: bool) -> None:
    assert passes(condition, record) is expected
