"""`two_way:` is checked when the config loads: a pair whose routes disagree fails before any message."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from middleware.broker import open_broker
from middleware.config import load_config
from middleware.errors import ConfigError
from middleware.runtime.route import RouteProcessor
from middleware.store import open_store
from middleware.yamlsource import load_yaml_file

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo" / "tryton_two_way.yaml"


def _config(tmp_path: Path, change: Any = None) -> Path:
    data = copy.deepcopy(load_yaml_file(DEMO).data)
    data["broker"] = f"embedded:///{tmp_path}/broker.db"
    data["store"] = f"sqlite:///{tmp_path}/state.db"
    data["mappings"] = [str(REPO / "mappings")]
    if change is not None:
        change({route["name"]: route for route in data["routes"]})
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _problems(path: Path) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    return "\n".join(problem.render() for problem in raised.value.problems)


def test_the_demo_pairs_load_with_shared_fields_and_policies() -> None:
    routes = {r.name: r for r in load_config(DEMO).model.routes}
    there, back = routes["customers_crm_to_tryton"].two_way, routes["customers_tryton_to_crm"].two_way
    assert there is not None and back is not None
    assert (there.peer, back.peer) == ("customers_tryton_to_crm", "customers_crm_to_tryton")
    assert there.fields == back.fields and there.conflicts == back.conflicts
    assert there.conflicts.policy_for("name").owner == "crm"
    assert there.conflicts.policy_for("payment_terms").owner == "tryton"
    assert there.conflicts.policy_for("addresses").policy == "last_writer_wins"
    assert back.write_always == ["customer_no"]


def test_routes_of_a_pair_must_agree_on_fields_and_policies(tmp_path: Path) -> None:
    def differ(routes: dict[str, Any]) -> None:
        routes["customers_tryton_to_crm"]["two_way"]["conflicts"]["fields"]["name"] = {"owner": "tryton"}

    found = _problems(_config(tmp_path, differ))
    assert "must sync the same fields with the same conflict policies" in found
    assert "isthmus.yaml:" in found and "YAML anchor" in found


def test_a_peer_must_exist_and_name_the_route_back(tmp_path: Path) -> None:
    def lonely(routes: dict[str, Any]) -> None:
        routes["products_crm_to_tryton"]["two_way"]["peer"] = "products_tryton_to_crn"
        routes["customers_tryton_to_crm"]["two_way"]["peer"] = "products_crm_to_tryton"

    found = _problems(_config(tmp_path, lonely))
    assert "no route 'products_tryton_to_crn' (the peer)" in found and "products_tryton_to_crm" in found
    assert "route 'customers_tryton_to_crm' must be two-way with peer: customers_crm_to_tryton" in found


def test_policies_name_real_systems_and_synced_fields(tmp_path: Path) -> None:
    def wrong(routes: dict[str, Any]) -> None:
        for name in ("customers_crm_to_tryton", "customers_tryton_to_crm"):
            fields = routes[name]["two_way"]["conflicts"]["fields"]
            fields["name"] = {"owner": "erp"}
            fields["tier"] = "manual"

    found = _problems(_config(tmp_path, wrong))
    assert "owner 'erp' is not a system of this pair" in found and "one of: crm, tryton" in found
    assert "conflict policy for 'tier', which is not a synced field" in found


def test_a_policy_is_owner_last_writer_wins_or_manual(tmp_path: Path) -> None:
    def typo(routes: dict[str, Any]) -> None:
        routes["products_crm_to_tryton"]["two_way"]["conflicts"]["default"] = "last_write_wins"

    assert "last_writer_wins" in _problems(_config(tmp_path, typo))


def test_synced_fields_must_be_fields_of_the_canonical_entity(tmp_path: Path) -> None:
    def unknown(routes: dict[str, Any]) -> None:
        for name in ("products_crm_to_tryton", "products_tryton_to_crm"):
            routes[name]["two_way"]["fields"].append("colour")

    config = load_config(_config(tmp_path, unknown))
    route = next(r for r in config.model.routes if r.name == "products_crm_to_tryton")
    broker, store = open_broker(config.model.broker), open_store(config.model.store)
    try:
        with pytest.raises(ConfigError, match="Product has no field 'colour'"):
            RouteProcessor(route, broker, store, writer=None, map_record=lambda r: r, mapping_label="")  # type: ignore[arg-type]
    finally:
        broker.close()
        store.close()


def test_conflicts_cli_lists_nothing_and_refuses_an_unknown_id(tmp_path: Path) -> None:
    config = _config(tmp_path)
    isthmus = str(Path(sys.executable).parent / "isthmus")
    listed = subprocess.run(
        [isthmus, "conflicts", "list", "--config", str(config)], capture_output=True, text=True, check=False
    )
    assert listed.returncode == 0 and listed.stdout.strip() == "0 conflicts"
    unknown = subprocess.run(
        [isthmus, "conflicts", "resolve", "c-nope", "--take", "crm", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert unknown.returncode == 2 and "no conflict 'c-nope'" in unknown.stderr
