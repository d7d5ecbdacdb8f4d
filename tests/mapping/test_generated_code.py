"""The generated build functions must behave exactly like the transforms they inline.

The compiler writes common transforms (upper, lower, trim, prefix, suffix, decimal) straight
into a generated function for str inputs and nested `each:` lists into comprehensions. These
tests compare that fast path with the transform called directly, for inputs of every type,
at the top level and inside a list, so an optimisation can never change a result.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from middleware.errors import MappingError
from middleware.mapping import TRANSFORMS, compile_mapping_text

INLINED = [
    ("upper", ()),
    ("lower", ()),
    ("trim", ()),
    ("prefix('P-')", ("P-",)),
    ("suffix('-S')", ("-S",)),
    ("decimal(2)", (2,)),
]
INPUTS: list[Any] = [
    "abc",
    "NaN",
    "Infinity",
    " Mixed Case ",
    "",
    "12.345",
    "-0.005",
    "1e3",
    7,
    2.5,
    Decimal("3.14159"),
    True,
    None,
]


def _direct(transform: str, args: tuple[Any, ...], value: Any) -> tuple[str, Any]:
    name = transform.split("(")[0]
    step = TRANSFORMS[name].factory(*args)
    try:
        return "ok", step(value, None)
    except Exception as exc:
        return "error", type(exc).__name__


def _compiled(transform: str, value: Any) -> tuple[str, Any]:
    mapping = compile_mapping_text(
        f"""
mapping: t
source: test.in
target: test.out
fields:
  out: {{from: v, transform: "{transform}"}}
  lines:
    each: items
    fields:
      n: {{index: 1}}
      out: {{from: v, transform: "{transform}"}}
"""
    )
    try:
        result = mapping.apply({"v": value, "items": [{"v": value}, {"v": value}]})
    except MappingError:
        return "error", "MappingError"
    assert result is not None
    assert [line["out"] for line in result["lines"]] == [result["out"], result["out"]]
    assert [line["n"] for line in result["lines"]] == [1, 2]
    return "ok", result["out"]


@pytest.mark.parametrize("transform,args", INLINED, ids=[t for t, _ in INLINED])
@pytest.mark.parametrize("value", INPUTS, ids=[repr(v) for v in INPUTS])
def test_inlined_transform_matches_the_transform_itself(transform: str, args: tuple[Any, ...], value: Any) -> None:
    kind, direct = _direct(transform, args, value)
    compiled_kind, compiled = _compiled(transform, value)
    if kind == "error":
        assert compiled_kind == "error", f"{transform} on {value!r}: direct raised, compiled gave {compiled!r}"
    else:
        assert (compiled_kind, compiled) == ("ok", direct)
        assert type(compiled) is type(direct)


def test_a_failing_value_inside_a_list_names_the_field_and_the_value() -> None:
    mapping = compile_mapping_text(
        """
mapping: t
source: test.in
target: test.out
fields:
  lines:
    each: items
    fields:
      qty: {from: q, transform: "decimal(3)"}
"""
    )
    with pytest.raises(MappingError) as info:
        mapping.apply({"items": [{"q": "1"}, {"q": "abc"}]})
    assert "lines[].qty" in str(info.value) and "'abc'" in str(info.value)


def test_list_items_that_are_not_objects_read_as_missing() -> None:
    mapping = compile_mapping_text(
        """
mapping: t
source: test.in
target: test.out
fields:
  lines:
    each: items
    fields:
      sku: {from: sku, transform: upper}
"""
    )
    assert mapping.apply({"items": [{"sku": "a"}, "not an object", None]}) == {
        "lines": [{"sku": "A"}, {"sku": None}, {"sku": None}]
    }
