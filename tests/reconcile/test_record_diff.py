"""Comparing a mapped record with a target record: only mapped fields, normalised, field by field."""

from __future__ import annotations

from decimal import Decimal

import pytest

from middleware.reconcile.diff import FieldDiff, compare, normalise

PARTY = {
    "name": "Acme GmbH",
    "code": "C-1001",
    "active": True,
    "addresses": [{"street": "Hauptstr. 1", "postal_code": "10115", "city": "Berlin", "country": {"code": "DE"}}],
}
TRYTON_PARTY = {
    "id": 7,
    "name": "Acme  GmbH ",
    "code": "C-1001",
    "active": 1,
    "lang": {"id": 3, "code": "de"},
    "create_date": "2026-11-24T02:00:00+00:00",
    "addresses": [
        {
            "id": 9,
            "street": "Hauptstr. 1",
            "postal_code": "10115",
            "city": "Berlin",
            "country": {"id": 60, "code": "DE"},
        }
    ],
}


def test_fields_the_mapping_does_not_write_are_not_compared() -> None:
    result = compare(PARTY, TRYTON_PARTY)
    assert result.in_sync and result.diffs == [] and result.uncompared == set()
    assert result.source_hash == result.target_hash


def test_a_changed_field_is_reported_with_before_and_after() -> None:
    target = {**TRYTON_PARTY, "name": "Renamed", "addresses": [{**TRYTON_PARTY["addresses"][0], "city": "Hamburg"}]}
    result = compare(PARTY, target)
    assert not result.in_sync
    assert result.diffs == [
        FieldDiff("name", "Renamed", "Acme GmbH"),
        FieldDiff("addresses[0].city", "Hamburg", "Berlin"),
    ]


def test_a_child_missing_in_the_target_is_one_diff() -> None:
    mapped = {"lines": [{"sku": "A", "qty": "1"}, {"sku": "B", "qty": "2"}]}
    result = compare(mapped, {"lines": [{"sku": "A", "qty": "1.000", "id": 1}]})
    assert result.diffs == [FieldDiff("lines[1]", None, {"sku": "B", "qty": "2"})]
    extra = compare({"lines": [{"sku": "A"}]}, {"lines": [{"sku": "A"}, {"sku": "Z", "id": 4}]})
    assert extra.diffs == [FieldDiff("lines[1]", {"sku": "Z"}, None)]


@pytest.mark.parametrize(
    ("mapped", "stored"),
    [
        ("19.90", "19.9"),
        ("19.90", Decimal("19.900")),
        (5, "5.0"),
        ("2026-11-24T10:00:00+08:00", "2026-11-24T02:00:00Z"),
        ("2026-11-24T02:00:00+00:00", "2026-11-24 02:00:00"),  # a zone-less time is UTC
        ("  two  words ", "two words"),
        (None, ""),
        ([], None),
        ({"code": None}, None),  # "no country" written as a lookup with no key
        (True, "true"),
    ],
)
def test_equal_values_spelt_differently_are_in_sync(mapped: object, stored: object) -> None:
    assert compare({"field": mapped}, {"field": stored}).in_sync


@pytest.mark.parametrize(
    ("mapped", "stored"),
    [("10115", "010115"), ("19.90", "19.91"), ("Acme", "acme"), (True, 0), ("2026-11-24", "2026-11-25")],
)
def test_different_values_stay_different(mapped: object, stored: object) -> None:
    result = compare({"field": mapped}, {"field": stored})
    assert not result.in_sync and [d.path for d in result.diffs] == ["field"]


def test_a_mapped_field_the_target_read_does_not_return_is_listed_as_uncompared() -> None:
    result = compare(
        {"name": "A", "vat": "DE1", "address": {"city": "B", "geo": "x"}}, {"name": "A", "address": {"city": "B"}}
    )
    assert result.in_sync and result.uncompared == {"vat", "address.geo"}


def test_ignored_fields_are_left_out_at_any_list_position() -> None:
    mapped = {"name": "A", "contacts": [{"type": "email", "value": "a@b"}, {"type": "phone", "value": "1"}]}
    target = {"name": "A", "contacts": [{"type": "email", "value": "other@b"}, {"type": "phone", "value": "2"}]}
    assert compare(mapped, target, ["contacts.value"]).in_sync
    assert compare(mapped, target, ["contacts"]).in_sync
    assert not compare(mapped, target, ["contact"]).in_sync


def test_no_target_record_makes_every_mapped_field_a_diff() -> None:
    result = compare({"name": "A", "code": "C-1"}, None)
    assert [(d.path, d.target, d.source) for d in result.diffs] == [("name", None, "A"), ("code", None, "C-1")]
    assert result.uncompared == set()


def test_normalise_keeps_digit_strings_as_text() -> None:
    assert normalise("007") == "007" and normalise(7) == "7" and normalise("7.50") == "7.5"


@pytest.mark.parametrize(
    ("mapped", "stored"),
    [
        (35, {"code": "C-1001", "id": "35"}),  # Tryton many2one read back, the mapping wrote the id
        ("C-1001", {"code": "C-1001", "id": 35}),  # ... the mapping wrote the party's code
        ("35", {"id": 35, "code": "X", "name": "Acme"}),  # a REST API's nested {id, code}
        ({"id": 35, "code": "C-1001"}, 35),  # a link written, the bare id read back
        ([3, 4], [{"id": 3, "name": "a"}, {"id": "4", "name": "b"}]),  # many2many
    ],
)
def test_a_linked_record_equals_the_id_or_code_the_mapping_writes(mapped: object, stored: object) -> None:
    result = compare({"party": mapped}, {"party": stored})
    assert result.in_sync, result.diffs


def test_a_link_to_another_record_is_one_diff_showing_its_id() -> None:
    result = compare({"party": 36}, {"party": {"code": "C-1001", "id": 35}})
    assert result.diffs == [FieldDiff("party", "35", "36")]  # normalised, as every diff shows them
    assert not compare({"party": 36}, {"party": {"code": "C-1001"}}).in_sync  # no id: not a link
