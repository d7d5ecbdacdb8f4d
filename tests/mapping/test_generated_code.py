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


# ----- missing is not null: the generated path and the closures agree on both ------------------
PARTIAL_MAPPING = """
mapping: partial
source: test.in
target: test.out
fields:
  plain: a
  upper: {from: b, transform: upper}
  dated: {from: c, transform: "date | iso"}
  filled: {from: d, transform: trim, default: none-given}
  nulled: {from: e, transform: trim, default: null}
  dotted: ship.city
  dotted_upper: {from: ship.zip, transform: trim}
  deep: x.y.z
  mapped: {from: tier, values: {gold: A, silver: B}}
  cleared: {from: f, on_missing: null}
  kept_absent: {from: g, transform: trim, default: given-null, on_missing: omit}
  pair: {from: [a, b]}
  fixed: {const: 1}
  ship_to.city: ship.city
  ship_to.country: {from: ship.country, transform: upper}
  addresses:
    - kind: {const: billing}
      city: ship.city
  lines:
    each: items
    fields:
      n: {index: 1}
      sku: {from: sku, transform: upper}
      qty: {from: qty, transform: "decimal(2)"}
"""
KEYS = ["a", "b", "c", "d", "e", "f", "g", "tier", "ship", "x", "items"]


def _partial_record(rng: Any) -> dict[str, Any]:
    full: dict[str, Any] = {
        "a": "A1",
        "b": "bee",
        "c": "2026-11-24",
        "d": " dee ",
        "e": " e ",
        "f": "F",
        "g": " G ",
        "tier": rng.choice(["gold", "silver"]),
        "ship": {"city": "Berlin", "zip": " 10115 ", "country": "de"},
        "x": {"y": {"z": 3}},
        "items": [{"sku": "a", "qty": "1.5"}, {"sku": "b", "qty": 2}],
    }
    for key in KEYS:
        roll = rng.random()
        if roll < 0.3:
            del full[key]
        elif roll < 0.45:
            full[key] = None
        elif roll < 0.5:
            full[key] = ""
    if isinstance(full.get("ship"), dict):
        for key in ("city", "zip", "country"):
            if rng.random() < 0.3:
                del full["ship"][key]
    if isinstance(full.get("items"), list):
        for item in full["items"]:
            if rng.random() < 0.3:
                del item[rng.choice(["sku", "qty"])]
    return full


def test_generated_partial_mapping_agrees_with_the_closures_on_absent_and_null_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import random

    from middleware.mapping import compiler

    mapping = compile_mapping_text(PARTIAL_MAPPING)
    monkeypatch.setattr(compiler, "GENERATE_CODE", False)
    careful = compile_mapping_text(PARTIAL_MAPPING)
    rng = random.Random(11)
    for _ in range(3000):
        record = _partial_record(rng)
        try:
            expected: Any = ("ok", careful.apply(record))
        except Exception as exc:
            expected = ("error", type(exc).__name__)
        try:
            actual: Any = ("ok", mapping.apply(record))
        except Exception as exc:
            actual = ("error", type(exc).__name__)
        assert actual == expected, record


@pytest.mark.parametrize("generate", [True, False], ids=["generated", "closures"])
def test_absent_fields_are_left_out_and_explicit_nulls_are_kept(
    monkeypatch: pytest.MonkeyPatch, generate: bool
) -> None:
    from middleware.mapping import compiler

    monkeypatch.setattr(compiler, "GENERATE_CODE", generate)
    mapping = compile_mapping_text(PARTIAL_MAPPING)
    out = mapping.apply({"a": None, "b": None, "g": None, "ship": {"city": None}, "items": [{"sku": "x"}]})
    assert out == {
        "plain": None,  # explicit null in the source: the target field is cleared
        "upper": None,
        "filled": "none-given",  # a non-null default fills an absent value
        "dotted": None,
        "cleared": None,  # on_missing: null
        "kept_absent": "given-null",  # the default fills a null ...
        "pair": [None, None],
        "fixed": 1,
        "ship_to": {"city": None},
        "addresses": [{"kind": "billing", "city": None}],
        "lines": [{"n": 1, "sku": "X"}],
    }
    # nothing carried: only what the mapping fixes or fills, never a null
    assert mapping.apply({}) == {"filled": "none-given", "cleared": None, "fixed": 1}  # ... not an absent value
