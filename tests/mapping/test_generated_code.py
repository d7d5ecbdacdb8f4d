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


def test_generated_order_mapping_agrees_with_the_field_by_field_path_on_random_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bench's 20-field order mapping (nested object, dotted reads, lists, decimals, dates)
    on records whose values have every type: wherever the generated function returns, it must
    return what the per-field closures return."""
    import random

    from middleware.bench.suite import ORDER_MAPPING, sample_order
    from middleware.mapping import compiler

    mapping = compile_mapping_text(ORDER_MAPPING)
    monkeypatch.setattr(compiler, "GENERATE_CODE", False)
    careful = compile_mapping_text(ORDER_MAPPING).block
    pool: list[Any] = [None, "", " x ", "12.5", "won", 3, 2.5, True, {"a": 1}, [1], "NaN", "2026-11-24T09:15:00+08:00"]
    rng = random.Random(7)
    agreed = 0
    for i in range(3000):
        record = sample_order(i)
        for key in rng.sample(sorted(record), k=rng.randint(0, 4)):
            record[key] = rng.choice(pool)
        if isinstance(record.get("ship"), dict) and rng.random() < 0.5:
            record["ship"] = {**record["ship"], rng.choice(["street", "zip", "city", "country"]): rng.choice(pool)}
        lines = record.get("lines")
        if isinstance(lines, list) and lines and isinstance(lines[0], dict) and rng.random() < 0.5:
            line = rng.randrange(len(lines))
            lines[line] = {**lines[line], rng.choice(["sku", "qty", "price"]): rng.choice(pool)}
        try:
            expected: Any = ("ok", careful(record, None))
        except Exception as exc:
            expected = ("error", type(exc).__name__)
        try:
            actual: Any = ("ok", mapping.block(record, None))
        except Exception as exc:
            actual = ("error", type(exc).__name__)
        assert actual == expected, record
        agreed += expected[0] == "ok"
    assert agreed > 500  # enough records map cleanly that the fast path is really compared
