"""Conditions on cross-references: `linked` / `not_linked`, answered by the real state store.

The use: a Tryton sale → CRM status route must not send status updates for sales the CRM never
created. `when: {field: id, linked: crm}` asks the xref store (through the mapping context the
worker passes) instead of guessing from the sale's reference with a regex.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from middleware.errors import ConfigError
from middleware.mapping import StaticMappingContext, StoreMappingContext, compile_mapping_text
from middleware.store import open_store
from middleware.store.base import RecordRef, Store

STATUS = """
mapping: sale_status_to_crm
source: tryton.sale
target: crm.order
when: {field: id, linked: crm}
fields:
  status: state
  note: {from: state, when: {field: id, not_linked: {to: erp_archive}}}
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/state.db")
    yield s
    s.close()


def test_only_records_linked_to_the_other_system_pass(store: Store) -> None:
    store.mark_applied("orders", [], links=[(RecordRef("crm", "order", "SO-1"), RecordRef("tryton", "sale", "35"))])
    mapping = compile_mapping_text(STATUS)
    ctx = StoreMappingContext(store)
    assert mapping.apply({"id": 35, "state": "processing"}, ctx) == {"status": "processing", "note": "processing"}
    assert mapping.apply({"id": 36, "state": "processing"}, ctx) is None  # a sale made in Tryton: skipped
    assert mapping.apply({"state": "processing"}, ctx) is None  # no id: not linked


def test_not_linked_and_an_explicit_record_type_for_canonical_sources() -> None:
    mapping = compile_mapping_text(
        """
mapping: order_to_erp
source: SalesOrder
target: erp.order
fields:
  order_id: order_id
  create_only: {const: true, when: {field: order_id, not_linked: {to: erp, from: crm, entity: order}}}
"""
    )
    linked = StaticMappingContext({"crm:order:SO-1": "erp:E-1"})
    assert mapping.apply({"order_id": "SO-1"}, linked) == {"order_id": "SO-1"}
    assert mapping.apply({"order_id": "SO-2"}, linked) == {"order_id": "SO-2", "create_only": True}


@pytest.mark.parametrize(
    ("condition", "message", "hint"),
    [
        ("{field: id, linked: {to: crm, form: x}}", "unknown key 'form' in linked", "'from'"),
        ("{field: id, linked: {from: crm}}", "linked needs 'to'", "linked: crm"),
        ("{field: id, linked: [crm]}", "'linked' takes a system name", "linked: crm"),
    ],
)
def test_a_bad_link_condition_fails_at_load_with_its_place(condition: str, message: str, hint: str) -> None:
    text = f"mapping: m\nsource: tryton.sale\ntarget: crm.order\nwhen: {condition}\nfields:\n  s: state\n"
    with pytest.raises(ConfigError) as raised:
        compile_mapping_text(text, file="m.yaml")
    (problem,) = raised.value.problems
    assert message in problem.message and hint in problem.hint
    assert problem.location is not None and (problem.location.file, problem.location.line) == ("m.yaml", 4)


def test_a_canonical_source_must_name_the_record_system_and_entity() -> None:
    text = (
        "mapping: m\nsource: SalesOrder\ntarget: crm.order\nwhen: {field: order_id, linked: crm}\n"
        "fields:\n  s: status\n"
    )
    with pytest.raises(ConfigError) as raised:
        compile_mapping_text(text, file="m.yaml")
    (problem,) = raised.value.problems
    assert "linked needs 'from'" in problem.message and "canonical" in problem.hint
