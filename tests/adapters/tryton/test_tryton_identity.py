"""Two routes write the same won orders into the real Tryton: one sale per order.

The topology of the issue: two routes (a webhook route and a poll route of one CRM entity, here
two routes fed by the same order changes) both map won orders to Tryton sales. Tryton has no
unique constraint on a sale's reference and no Idempotency-Key; without the identity claim
each route looked the sale up, found nothing and created it (5 won deals made 9 sales). The
sale entity's `key_field: reference` makes it the routes' business key by default.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.tryton import TrytonAdapter
from adapters.tryton.localserver import LocalTryton
from deploy.demo.sample_crm import SampleCrm
from middleware.config import load_config
from middleware.runtime.worker import Worker
from middleware.yamlsource import load_yaml_file

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "deploy" / "demo" / "tryton.yaml"


@pytest.fixture
def crm() -> Iterator[SampleCrm]:
    service = SampleCrm(token="demo-crm-token").start()
    yield service
    service.stop()


@pytest.fixture
def config_path(tmp_path: Path, tryton: LocalTryton, crm: SampleCrm, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEMO_CRM_URL", crm.url)
    monkeypatch.setenv("DEMO_CRM_TOKEN", "demo-crm-token")
    monkeypatch.setenv("TRYTON_URL", tryton.url)
    monkeypatch.setenv("TRYTON_PASSWORD", tryton.password)
    config: dict[str, Any] = load_yaml_file(CONFIG).data
    config["broker"] = f"embedded:///{tmp_path}/broker.db"
    config["store"] = f"sqlite:///{tmp_path}/state.db"
    config["mappings"] = [str(REPO / "mappings")]
    config["observability"] = {"port": 0, "log_format": "json", "log_level": "warning"}
    config["sources"] = [s for s in config["sources"] if s["name"] in ("crm_customers", "crm_orders")]
    for source in config["sources"]:
        source["poll_interval_s"] = 0.3
    routes = [r for r in config["routes"] if r["name"] in ("customers_crm_to_tryton", "orders_crm_to_tryton")]
    for route in routes:
        route["retry"] = {"max_attempts": 8, "initial_delay_s": 0.2, "max_delay_s": 1.0}
    orders = next(r for r in routes if r["name"] == "orders_crm_to_tryton")
    routes.append({**orders, "name": "orders_crm_to_tryton_twin"})
    config["routes"] = routes
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.slow
def test_two_routes_make_one_tryton_sale_per_won_order(
    crm: SampleCrm, config_path: Path, tryton: LocalTryton, tag: str
) -> None:
    won: set[str] = set()
    for i in range(6):  # numbers unique to this test: the session's Tryton is shared
        customer = f"C-{tag}-{i}"
        crm.upsert_customer(
            {
                "customer_no": customer,
                "company": f"Identity Test {tag} {i} GmbH",
                "email": f"buyer{i}@identity.example",
                "tier": "silver",
                "status": "active",
                "billing": {"street": f"Hauptstr. {i + 1}", "zip": "10115", "city": "Berlin", "country": "DE"},
            }
        )
        order = f"SO-{tag}-{i}"
        crm.upsert_order(
            {
                "order_no": order,
                "customer_no": customer,
                "placed_at": "2026-11-24T08:00:00+08:00",
                "currency": "EUR",
                "stage": "won",
                "lines": [{"sku": "WIDGET-1", "desc": "Widget", "qty": str(i + 1), "price": "19.90"}],
            }
        )
        won.add(order)
    adapter = TrytonAdapter("check", tryton.system_settings())

    def references() -> list[str]:
        rows = adapter.rpc.model(
            "sale.sale", "search_read", [("reference", "in", sorted(won))], 0, None, None, ["reference"]
        )
        return [r["reference"] for r in rows]

    worker = Worker(load_config(config_path), serve_health=False).start()
    try:
        deadline = time.monotonic() + 120
        while set(references()) != won and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(3.0)  # both routes have had every order; any second create would land now
        found = references()
    finally:
        worker.stop()
    assert sorted(found) == sorted(won), f"sales per reference: { {r: found.count(r) for r in set(found)} }"
