"""`to.key` (a route's business key) is validated at load, with file, line and a hint.

A key must name what the last mapping writes, and the target must be able to find a record by
key (else a claim left by a killed worker could only be recovered by creating twice). Without
`key:` a route takes the field the target adapter finds records by; `key: []` turns it off.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from middleware.config import load_config
from middleware.errors import ConfigError
from tests.core.test_config import good_text, write

FIND = (
    "          find: {path: /api/accounts, param: external_ref, records_path: items}\n"
    "          key_field: external_ref\n"
)


def key_line(text: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if "key:" in line and "to:" in line)


def with_find(text: str) -> str:
    return text.replace("          id_path: id\n", "          id_path: id\n" + FIND, 1)


def with_key(text: str, key: str) -> str:
    return text.replace(
        "    to: {system: erp, entity: account}\n", f"    to: {{system: erp, entity: account, key: {key}}}\n"
    )


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "t")


def test_a_key_on_a_target_that_cannot_find_by_key_fails_at_load(tmp_path: Path) -> None:
    text = with_key(good_text(), "external_ref")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    (problem,) = info.value.problems
    assert "cannot find account records by key" in problem.message
    assert problem.location is not None and problem.location.line == key_line(text)
    assert "write.find" in problem.hint and "systems.erp.entities.account" in problem.hint


def test_a_key_the_mapping_does_not_write_fails_at_load(tmp_path: Path) -> None:
    text = with_key(with_find(good_text()), "reference")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    (problem,) = info.value.problems
    assert "'reference', which mapping 'canonical_customer_to_erp' does not write" in problem.message
    assert problem.location is not None and problem.location.line == key_line(text)
    assert "external_ref" in problem.hint and "canonical_customer_to_erp.yaml" in problem.hint


def test_a_target_that_finds_by_key_gives_routes_its_key_by_default(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, with_find(good_text())))
    assert loaded.model.routes[0].to.key_fields == ["external_ref"]


def test_an_empty_key_turns_the_identity_off(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, with_key(with_find(good_text()), "[]")))
    assert loaded.model.routes[0].to.key_fields == []


def test_a_target_without_a_key_field_keeps_todays_behaviour(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, good_text()))
    assert loaded.model.routes[0].to.key_fields == []


def test_the_tryton_key_field_is_the_default_business_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRYTON_PASSWORD", "p")
    repo = Path(__file__).resolve().parents[2]
    loaded = load_config(repo / "deploy" / "demo" / "tryton.yaml", check_mappings=False)
    keys = {r.name: r.to.key_fields for r in loaded.model.routes}
    assert keys["orders_crm_to_tryton"] == ["reference"]
    assert keys["customers_crm_to_tryton"] == ["code"]
    assert keys["shipment_status_tryton_to_crm"] == []  # a CRM upsert by key needs no claim


def test_find_needs_a_key_field(tmp_path: Path) -> None:
    text = with_find(good_text()).replace("          key_field: external_ref\n", "")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert any("'find' needs mode 'create_or_update' and 'key_field'" in p.message for p in info.value.problems)
