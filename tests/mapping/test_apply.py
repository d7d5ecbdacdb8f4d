"""Applying compiled mappings: fields, nesting, lists, value maps, defaults, xrefs, chains."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from middleware.errors import ConfigError, MappingError, TransientError, XrefMissingError
from middleware.mapping import (
    StaticMappingContext,
    StoreMappingContext,
    compile_mapping_text,
    compose,
    preview,
    to_json_ready,
)
from middleware.store.base import RecordRef


def mapping(fields: str, *, source: str = "test.in", target: str = "test.out", extra: str = "") -> Any:
    return compile_mapping_text(f"mapping: m\nsource: {source}\ntarget: {target}\n{extra}fields:\n{fields}")


def test_short_form_reads_dotted_paths_and_list_indexes() -> None:
    m = mapping("  a: x\n  city: billing.city\n  sku: lines.0.sku\n  last: lines.-1.sku\n  deep: a.b.c.d\n")
    record = {"x": 1, "billing": {"city": "Berlin"}, "lines": [{"sku": "A"}, {"sku": "B"}], "a": {"b": {"c": {"d": 4}}}}
    assert m.apply(record) == {"a": 1, "city": "Berlin", "sku": "A", "last": "B", "deep": 4}


def test_missing_source_values_read_as_none_without_error() -> None:
    m = mapping("  a: x\n  city: billing.city\n  sku: lines.3.sku\n  deep: a.b.c\n", extra="on_missing: null\n")
    assert m.apply({"billing": "not an object", "lines": [], "a": {"b": [1]}}) == {
        "a": None,
        "city": None,
        "sku": None,
        "deep": None,
    }


def test_dotted_target_paths_build_nested_objects() -> None:
    m = mapping("  address.city: c\n  address.geo.lat: lat\n  name: n\n")
    assert m.apply({"c": "Berlin", "lat": 52.5, "n": "x"}) == {
        "address": {"city": "Berlin", "geo": {"lat": 52.5}},
        "name": "x",
    }


def test_const_and_index_fields() -> None:
    m = mapping(
        "  kind: {const: billing}\n  empty: {const: null}\n"
        "  lines:\n    each: items\n    fields:\n      n: {index: 1}\n      zero: {index: 0}\n      sku: sku\n"
    )
    assert m.apply({"items": [{"sku": "A"}, {"sku": "B"}]}) == {
        "kind": "billing",
        "empty": None,
        "lines": [{"n": 1, "zero": 0, "sku": "A"}, {"n": 2, "zero": 1, "sku": "B"}],
    }


def test_each_over_a_missing_list_gives_an_empty_list_and_over_a_non_list_fails() -> None:
    m = mapping("  lines:\n    each: items\n    fields:\n      sku: sku\n", extra="on_missing: null\n")
    assert m.apply({}) == {"lines": []}
    with pytest.raises(MappingError, match="each: expects a list"):
        m.apply({"items": {"sku": "A"}})


def test_each_when_filters_items_and_index_counts_kept_items() -> None:
    m = mapping(
        "  lines:\n    each: items\n    when: {field: qty, gt: 0}\n    fields:\n      n: {index: 1}\n      sku: sku\n"
    )
    items = [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 0}, {"sku": "C", "qty": "2"}]
    assert m.apply({"items": items}) == {"lines": [{"n": 1, "sku": "A"}, {"n": 2, "sku": "C"}]}


def test_nested_each_inside_each() -> None:
    m = mapping(
        "  orders:\n    each: orders\n    fields:\n      id: id\n"
        "      lines:\n        each: lines\n        fields:\n          sku: {from: sku, transform: upper}\n",
        extra="on_missing: null\n",
    )
    record = {"orders": [{"id": 1, "lines": [{"sku": "a"}, {"sku": "b"}]}, {"id": 2}]}
    assert m.apply(record) == {"orders": [{"id": 1, "lines": [{"sku": "A"}, {"sku": "B"}]}, {"id": 2, "lines": []}]}


def test_each_over_a_list_of_plain_values_reads_the_item_with_dot() -> None:
    m = mapping("  tags:\n    each: tags\n    fields:\n      name: {from: ., transform: upper}\n      missing: x\n")
    assert m.apply({"tags": ["a", "b"]}) == {"tags": [{"name": "A", "missing": None}, {"name": "B", "missing": None}]}


def test_list_of_item_blocks_builds_a_target_list_from_one_record() -> None:
    m = mapping(
        "  addresses:\n    - kind: {const: billing}\n      city: bill.city\n    - kind: {const: shipping}\n"
        "      city: ship.city\n"
    )
    assert m.apply({"bill": {"city": "A"}, "ship": {"city": "B"}}) == {
        "addresses": [{"kind": "billing", "city": "A"}, {"kind": "shipping", "city": "B"}],
    }


def test_value_map_with_otherwise_maps_unknown_values() -> None:
    m = mapping("  tier: {from: t, values: {gold: A, silver: B}, otherwise: C}\n", extra="on_missing: null\n")
    assert m.apply({"t": "gold"}) == {"tier": "A"}
    assert m.apply({"t": "bronze"}) == {"tier": "C"}
    assert m.apply({}) == {"tier": None}


def test_value_map_without_otherwise_fails_on_unknown_value_naming_it() -> None:
    m = mapping("  tier: {from: t, values: {gold: A, silver: B}}\n")
    with pytest.raises(MappingError) as caught:
        m.apply({"t": "platinum"})
    assert caught.value.field == "tier"
    assert "'platinum' is not in values: (gold, silver)" in str(caught.value)


def test_value_map_matches_booleans_and_numbers_by_their_text() -> None:
    m = mapping(
        '  blocked: {from: active, values: {"true": false, "false": true}}\n  code: {from: n, values: {"1": one}}\n'
    )
    assert m.apply({"active": True, "n": 1}) == {"blocked": False, "code": "one"}
    assert m.apply({"active": False, "n": "1"}) == {"blocked": True, "code": "one"}


def test_default_replaces_missing_null_and_empty_results() -> None:
    m = mapping(
        "  a: {from: a, default: x}\n  b: {from: b, transform: trim, default: null}\n  c: {from: c, default: 0}\n"
    )
    assert m.apply({"b": "   ", "c": None}) == {"a": "x", "b": None, "c": 0}
    assert m.apply({"a": "given", "b": " v ", "c": 5}) == {"a": "given", "b": "v", "c": 5}


def test_default_goes_through_no_transform_and_keeps_its_value() -> None:
    m = mapping('  pct: {from: d, transform: "decimal(2)", default: "0"}\n')
    assert m.apply({"d": "5"}) == {"pct": Decimal("5.00")}
    assert m.apply({}) == {"pct": "0"}


def test_required_field_missing_is_a_mapping_error_naming_the_field() -> None:
    m = mapping("  code: {from: x, required: true}\n")
    assert m.apply({"x": "A"}) == {"code": "A"}
    for record in ({}, {"x": None}, {"x": ""}):
        with pytest.raises(MappingError) as caught:
            m.apply(record)
        assert caught.value.field == "code"
        assert caught.value.mapping == "m"


def test_field_when_leaves_the_key_out_when_false() -> None:
    m = mapping('  limit: {from: limit, transform: "decimal(2)", when: {field: limit, exists: true}}\n  x: x\n')
    assert m.apply({"limit": "10", "x": 1}) == {"limit": Decimal("10.00"), "x": 1}
    assert m.apply({"x": 1}) == {"x": 1}


def test_mapping_when_false_skips_the_record() -> None:
    m = mapping("  id: id\n", extra="when: {field: stage, equals: won}\n")
    assert m.apply({"id": 1, "stage": "won"}) == {"id": 1}
    assert m.apply({"id": 1, "stage": "open"}) is None
    assert m.apply_validated({"id": 1, "stage": "open"}) is None


def test_error_in_one_field_is_reported_after_fast_path_with_field_and_value() -> None:
    m = mapping(
        '  a: {from: a, transform: upper}\n  q: {from: q, transform: "decimal(3)"}\n'
        '  lines:\n    each: lines\n    fields:\n      qty: {from: qty, transform: "decimal(3)"}\n'
    )
    assert m.apply({"a": "x", "q": "1", "lines": [{"qty": "2"}]}) == {
        "a": "X",
        "q": Decimal("1.000"),
        "lines": [{"qty": Decimal("2.000")}],
    }
    with pytest.raises(MappingError) as caught:
        m.apply({"a": "x", "q": "1", "lines": [{"qty": "2"}, {"qty": "abc"}]})
    assert caught.value.field == "lines[].qty"
    assert "'abc'" in str(caught.value)


def test_long_bad_values_are_truncated_in_errors() -> None:
    m = mapping('  q: {from: q, transform: "decimal(2)"}\n')
    with pytest.raises(MappingError) as caught:
        m.apply({"q": "x" * 500})
    assert len(str(caught.value)) < 200
    assert "..." in str(caught.value)


def test_input_that_is_not_an_object_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="must be an object"):
        mapping("  a: a\n").apply(["not", "a", "dict"])  # type: ignore[arg-type]


# ----- xref ---------------------------------------------------------------------------------
XREF = '  account: {from: customer, transform: "xref(crm, customer, erp)"}\n'


def test_xref_found_gives_the_linked_id() -> None:
    ctx = StaticMappingContext({"crm:customer:C-1": "erp:A-7"})
    assert mapping(XREF).apply({"customer": "C-1"}, ctx) == {"account": "A-7"}


def test_xref_missing_raises_transient_xref_missing_error() -> None:
    with pytest.raises(XrefMissingError) as caught:
        mapping(XREF).apply({"customer": "C-2"}, StaticMappingContext())
    assert isinstance(caught.value, TransientError)
    assert "C-2" in str(caught.value)
    assert "account" in str(caught.value)


def test_xref_missing_with_optional_or_default_does_not_raise() -> None:
    optional = mapping('  account: {from: c, transform: "xref(crm, customer, erp)", optional: true}\n')
    assert optional.apply({"c": "C-2"}, StaticMappingContext()) == {"account": None}
    defaulted = mapping('  account: {from: c, transform: "xref(crm, customer, erp)", default: NONE}\n')
    assert defaulted.apply({"c": "C-2"}, StaticMappingContext()) == {"account": "NONE"}


def test_xref_of_a_missing_source_value_makes_no_lookup() -> None:
    assert mapping(XREF).apply({}, StaticMappingContext()) == {}
    assert mapping(XREF, extra="on_missing: null\n").apply({}, StaticMappingContext()) == {"account": None}


def test_static_context_answers_links_in_both_directions() -> None:
    ctx = StaticMappingContext([{"from": "crm:customer:C-1", "to": "erp:A-7"}])
    assert ctx.xref("crm", "customer", "C-1", "erp") == "A-7"
    assert ctx.xref("erp", "customer", "A-7", "crm") == "C-1"
    assert ctx.xref("crm", "customer", "C-9", "erp") is None
    with pytest.raises(ValueError, match="system:entity:id"):
        StaticMappingContext({"C-1": "erp:A-7"})


def test_store_context_asks_the_store() -> None:
    class FakeStore:
        url = "memory://"

        def lookup(self, ref: RecordRef, other_system: str) -> RecordRef | None:
            if ref == RecordRef("crm", "customer", "C-1") and other_system == "erp":
                return RecordRef("erp", "account", "A-7")
            return None

    ctx = StoreMappingContext(FakeStore())  # type: ignore[arg-type]
    assert mapping(XREF).apply({"customer": "C-1"}, ctx) == {"account": "A-7"}
    with pytest.raises(XrefMissingError):
        mapping(XREF).apply({"customer": "C-9"}, ctx)


# ----- validated output and chains ----------------------------------------------------------
CUSTOMER = """  customer_id: number
  name: {from: name, transform: trim}
  credit_limit: {from: limit, transform: "decimal(2)"}
  updated_at: {from: at, transform: datetime}
"""


def test_apply_validated_returns_json_ready_canonical_output() -> None:
    m = mapping(CUSTOMER, target="Customer")
    raw = m.apply({"number": "C-1", "name": " A ", "limit": "10.5", "at": "2026-11-24T10:00:00+08:00"})
    assert raw is not None and raw["credit_limit"] == Decimal("10.50")
    assert raw["updated_at"] == datetime(2026, 11, 24, 2, tzinfo=UTC)
    out = m.apply_validated({"number": "C-1", "name": " A ", "limit": "10.5", "at": "2026-11-24T10:00:00+08:00"})
    assert out == {
        "customer_id": "C-1",
        "name": "A",
        "credit_limit": "10.50",
        "updated_at": "2026-11-24T02:00:00Z",
    }  # the model's defaults (active, addresses, contacts) are not what the source said: left out


def test_apply_validated_turns_model_errors_into_mapping_errors_with_the_field() -> None:
    m = mapping(CUSTOMER, target="Customer")
    with pytest.raises(MappingError) as caught:
        m.apply_validated({"number": "C-1", "limit": "1"})
    assert caught.value.field == "name"
    assert "not a valid Customer" in str(caught.value)


def test_to_json_ready_turns_decimals_and_times_into_strings() -> None:
    value = {"a": [Decimal("1.10"), datetime(2026, 1, 1, tzinfo=UTC)], "b": {"c": None, "d": True}}
    assert to_json_ready(value) == {"a": ["1.10", "2026-01-01T00:00:00+00:00"], "b": {"c": None, "d": True}}


def test_chain_feeds_validated_canonical_output_into_the_next_mapping() -> None:
    first = mapping(CUSTOMER, target="Customer")
    second = compile_mapping_text(
        "mapping: m2\nsource: Customer\ntarget: erp.account\nfields:\n"
        "  account_name: name\n  limit: credit_limit\n  at: updated_at\n  active: active\n"
    )
    chain = compose([first, second])
    record = {"number": "C-1", "name": " A ", "limit": "7", "at": "2026-11-24T10:00:00+08:00"}
    assert chain.apply_validated(record) == {
        "account_name": "A",
        "limit": "7.00",
        "at": "2026-11-24T02:00:00Z",
    }  # `active` is the model's default, not the record's: the second mapping does not write it
    assert preview(chain, record) == chain.apply_validated(record)


def test_chain_whose_target_does_not_feed_the_next_source_is_a_config_problem() -> None:
    first = mapping(CUSTOMER, target="Customer")
    second = compile_mapping_text("mapping: m2\nsource: SalesOrder\ntarget: erp.x\nfields:\n  a: order_id\n")
    with pytest.raises(ConfigError) as caught:
        compose([first, second])
    (problem,) = caught.value.problems
    assert "reads 'SalesOrder'" in problem.message and "produces 'Customer'" in problem.message
    assert problem.location is not None and problem.location.line == 2


def test_chain_stops_when_a_mapping_skips_the_record() -> None:
    first = mapping("  id: id\n", extra="when: {field: ok, equals: true}\n")
    second = compile_mapping_text("mapping: m2\nsource: test.out\ntarget: test.x\nfields:\n  b: id\n")
    chain = compose([first, second])
    assert chain.apply({"id": 1, "ok": True}) == {"b": 1}
    assert chain.apply({"id": 1, "ok": False}) is None
