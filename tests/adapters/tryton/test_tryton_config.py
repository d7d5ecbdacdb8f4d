"""`type: tryton` systems in isthmus.yaml: validated at load, with located, hinted problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.tryton import TrytonSystemConfig
from middleware.config import load_config
from middleware.errors import ConfigError

BASE = """\
broker: embedded://broker.db
store: sqlite://state.db
mappings: []
systems:
  tryton:
    type: tryton
    url: http://127.0.0.1:8000
    database: isthmus
    username: admin
{extra}
"""


def _load(tmp_path: Path, extra: str) -> None:
    path = tmp_path / "isthmus.yaml"
    path.write_text(BASE.format(extra=extra), encoding="utf-8")
    load_config(path, check_mappings=False)


def test_demo_config_loads_with_the_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRYTON_PASSWORD", "s3cret-pass")
    config = load_config(Path(__file__).resolve().parents[3] / "deploy" / "demo" / "tryton.yaml")
    kind, settings = config.systems["tryton"]
    assert kind == "tryton" and isinstance(settings, TrytonSystemConfig)
    assert settings.password.get_secret_value() == "s3cret-pass"
    assert settings.model_of("shipment") == "stock.shipment.out"


def test_password_written_in_clear_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, "    password: hunter2hunter2\n    entities: {}")
    assert "secrets must not be written in YAML" in str(caught.value)
    assert "hunter2hunter2" not in str(caught.value)


def test_misspelt_setting_is_reported_with_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TP", "x")
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, "    password: ${TP}\n    entities: {party: {write: {key_feld: code}}}")
    text = str(caught.value)
    assert "isthmus.yaml:11:32" in text and "unknown key 'key_feld'" in text and "did you mean 'key_field'" in text


def test_entity_named_after_no_kind_needs_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TP", "x")
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, "    password: ${TP}\n    entities: {customers: {write: {}}}")
    assert "set 'kind'" in str(caught.value)
    settings = TrytonSystemConfig.model_validate(
        {"url": "http://h", "database": "d", "username": "u", "password": "p",
         "entities": {"customers": {"kind": "party", "write": {"key_field": "code"}}}}
    )
    assert settings.model_of("customers") == "party.party"


def test_shipments_cannot_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TP", "x")
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, "    password: ${TP}\n    entities: {shipment: {write: {}}}")
    assert "read-only" in str(caught.value)
