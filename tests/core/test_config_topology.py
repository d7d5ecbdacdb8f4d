"""Load-time safety of routes that share a target entity (`isthmus validate` and load_config).

The unsafe topology of issue 12: a webhook route outside the CRM ↔ Tryton customer pair writes
Tryton parties, which the pair owns. That must fail at load with the route's file:line and a
hint. Two routes writing one entity without a shared business key is a warning: printed by
`validate`, never a failure.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from middleware.config import load_config
from middleware.errors import ConfigError
from middleware.yamlsource import load_yaml_file

REPO = Path(__file__).resolve().parents[2]
TWO_WAY = REPO / "deploy" / "demo" / "tryton_two_way.yaml"
ISTHMUS = str(Path(sys.executable).parent / "isthmus")

WEBHOOK_ROUTE = {
    "name": "customers_webhook_to_tryton",
    "on": ["customer.webhook"],
    "from_system": "crm",
    "mappings": ["crm_customer_to_canonical", "canonical_customer_to_tryton_party"],
    "to": {"system": "tryton", "entity": "party"},
}
SALE_ROUTE = {
    "on": ["order.won"],
    "from_system": "crm",
    "mappings": ["crm_order_to_canonical", "canonical_order_to_tryton_sale"],
    "to": {"system": "tryton", "entity": "sale"},
}


def write_config(tmp_path: Path, *extra_routes: dict[str, Any]) -> Path:
    data = copy.deepcopy(load_yaml_file(TWO_WAY).data)
    data["broker"] = f"embedded:///{tmp_path}/broker.db"
    data["store"] = f"sqlite:///{tmp_path}/state.db"
    data["mappings"] = [str(REPO / "mappings")]
    data["systems"]["tryton"]["entities"]["sale"] = {"read": {}, "write": {"key_field": "reference"}}
    data["routes"].extend(copy.deepcopy(list(extra_routes)))
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ISTHMUS, "validate", "--config", str(path)], capture_output=True, text=True, timeout=60)


def test_a_route_outside_a_pair_writing_what_the_pair_owns_fails_with_its_place(tmp_path: Path) -> None:
    path = write_config(tmp_path, WEBHOOK_ROUTE)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    (problem,) = [p for p in raised.value.problems if p.severity == "error"]
    assert "'customers_webhook_to_tryton' writes tryton.party" in problem.message
    assert "'customers_crm_to_tryton' owns" in problem.message
    assert problem.location is not None and problem.location.file == str(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    route_line = next(n for n, line in enumerate(lines, 1) if "name: customers_webhook_to_tryton" in line)
    assert route_line < problem.location.line <= route_line + 10  # inside the offending route, at its `to:`
    assert "customers_crm_to_tryton" in problem.hint and "customer.webhook" in problem.hint
    result = validate(path)
    assert result.returncode == 1
    assert f"{path}:{problem.location.line}:" in result.stderr and "hint:" in result.stderr


def test_the_same_messages_fed_to_the_pair_itself_are_safe(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["routes"][0]["on"].append("customer.webhook")
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert load_config(path).warnings == []


def test_two_routes_creating_one_entity_without_a_shared_key_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    # Tryton routes share the adapter's key field by default; `key: []` turns the identity off
    unkeyed = {**SALE_ROUTE, "to": {"system": "tryton", "entity": "sale", "key": []}}
    path = write_config(
        tmp_path, {"name": "deals_webhook", **unkeyed}, {**unkeyed, "name": "deals_poll", "on": ["order.polled"]}
    )
    (warning,) = load_config(path).warnings
    assert warning.severity == "warning" and "'deals_webhook', 'deals_poll' all write tryton.sale" in warning.message
    assert "to.key" in warning.hint
    result = validate(path)
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "tryton.sale" in result.stderr


def test_two_routes_on_the_adapters_default_business_key_need_no_warning(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, {"name": "deals_webhook", **SALE_ROUTE}, {**SALE_ROUTE, "name": "deals_poll", "on": ["order.polled"]}
    )
    assert load_config(path).warnings == []


def test_a_shared_business_key_silences_the_warning(tmp_path: Path) -> None:
    keyed = {**SALE_ROUTE, "to": {**SALE_ROUTE["to"], "key": "reference"}}
    path = write_config(tmp_path, {**keyed, "name": "deals_webhook"}, {**keyed, "name": "deals_poll", "on": ["x.y"]})
    assert load_config(path).warnings == []
