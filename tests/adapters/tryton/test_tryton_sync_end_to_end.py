"""CRM ↔ Tryton through the whole pipeline: sample CRM, real trytond, real worker and broker.

The demo configuration (deploy/demo/tryton.yaml) runs against the session's Tryton: CRM
customers become parties, won orders become confirmed sales whose stock is reserved, the
reservation and — once accounting posts the invoice — the invoicing flow back onto the CRM
orders. Broken input ends in the dead-letter queue with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.tryton import TrytonAdapter
from adapters.tryton.localserver import LocalTryton
from deploy.demo.sample_crm import SampleCrm
from middleware.broker.base import H_ERROR, H_ERROR_CLASS, dlq_name
from middleware.config import load_config
from middleware.runtime.worker import Worker
from middleware.yamlsource import load_yaml_file

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "deploy" / "demo" / "tryton.yaml"


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


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
    config = load_yaml_file(CONFIG).data
    config["broker"] = f"embedded:///{tmp_path}/broker.db"
    config["store"] = f"sqlite:///{tmp_path}/state.db"
    config["mappings"] = [str(REPO / "mappings")]
    config["observability"] = {"port": 0, "log_format": "json", "log_level": "warning"}
    for source in config["sources"]:
        source["poll_interval_s"] = 0.3
    for route in config["routes"]:
        route["retry"] = {"max_attempts": 6, "initial_delay_s": 0.2, "max_delay_s": 1.0}
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _erp_statuses(crm: SampleCrm, orders: set[str]) -> dict[str, Any]:
    with crm.lock:
        return {k: crm.orders.rows[k].get("erp_status") for k in orders}


@pytest.mark.slow
def test_crm_customers_and_won_orders_reach_tryton_and_status_flows_back(
    crm: SampleCrm, config_path: Path, tryton: LocalTryton
) -> None:
    crm.seed(customers=11, orders_per_customer=1, with_bad_records=True)  # C-1010 archived, C-1011 broken
    crm.upsert_order(
        {"order_no": "SO-UNKNOWN-SKU", "customer_no": "C-1001", "placed_at": "2026-11-24T08:00:00+08:00",
         "currency": "EUR", "stage": "won", "lines": [{"sku": "NO-SUCH-SKU", "desc": "?", "qty": "1", "price": "1"}]}
    )
    with crm.lock:
        bad_customers = set(crm.bad_records["customers"])
        bad_orders = set(crm.bad_records["orders"]) | {"SO-UNKNOWN-SKU"}
        customers = {k for k in crm.customers.rows if k not in bad_customers}
        won = {k for k, o in crm.orders.rows.items() if o["stage"] == "won" and k not in bad_orders}
    assert won, "the seed must give some won orders"

    adapter = TrytonAdapter("check", tryton.system_settings())
    worker = Worker(load_config(config_path), serve_health=False).start()
    try:
        def parties() -> list[dict[str, Any]]:
            return adapter.rpc.model("party.party", "search_read", [("code", "in", sorted(customers))], 0, None,
                                     None, ["code", "active"], context={"active_test": False})

        def sales() -> list[dict[str, Any]]:
            return adapter.rpc.model("sale.sale", "search_read", [("reference", "in", sorted(won | bad_orders))],
                                     0, None, None, ["reference", "state", "invoices", "party.code"])

        _wait(lambda: len(sales()) == len(won), 90, "every won order to become a Tryton sale")
        _wait(lambda: set(_erp_statuses(crm, won).values()) == {"reserved"}, 60, "reservations in the CRM")

        # exactly once: one party per customer, one sale per won order, each on its customer
        found = parties()
        assert sorted(p["code"] for p in found) == sorted(customers)
        archived = {k for k in customers if crm.customer(k)["status"] == "archived"}  # type: ignore[index]
        assert {p["code"] for p in found if not p["active"]} == archived
        rows = sales()
        assert sorted(s["reference"] for s in rows) == sorted(won)
        assert all(s["state"] == "processing" for s in rows), rows
        for s in rows:
            assert s["party."]["code"] == crm.order(s["reference"])["customer_no"], s  # type: ignore[index]

        # accounting posts the invoices in Tryton; the CRM hears "invoiced"
        adapter.rpc.model("account.invoice", "post", sorted({i for s in rows for i in s["invoices"]}))
        _wait(lambda: set(_erp_statuses(crm, won).values()) == {"invoiced"}, 60, "invoiced statuses in the CRM")
        assert all(count == 1 for count in crm.state()["applied_counts"].values()), crm.state()["applied_counts"]

        # broken orders are dead-lettered with their reasons; nothing else is
        route = "orders_crm_to_tryton"
        _wait(lambda: worker.broker.depth(dlq_name(route)) == 2, 30, "both broken orders in the DLQ")
        dead = {d.headers[H_ERROR_CLASS]: d.headers[H_ERROR] for d in worker.broker.browse(dlq_name(route), 10)}
        assert "abc" in dead["MappingError"]
        assert "no product.product with code='NO-SUCH-SKU'" in dead["PermanentError"]
        # the nameless customer is dead-lettered by its mapping instead of becoming a nameless party
        customer_route = "customers_crm_to_tryton"
        _wait(lambda: worker.broker.depth(dlq_name(customer_route)) == 1, 30, "the nameless customer in the DLQ")
        (nameless,) = worker.broker.browse(dlq_name(customer_route), 10)
        assert nameless.headers[H_ERROR_CLASS] == "MappingError" and "'name'" in nameless.headers[H_ERROR]

        # the session's Tryton also holds sales of other tests, unknown to this CRM: their
        # statuses are refused (404) and dead-lettered; none of this CRM's orders is
        for status_route in ("shipment_status_tryton_to_crm", "invoice_status_tryton_to_crm"):
            for letter in worker.broker.browse(dlq_name(status_route), 1000):
                assert "unknown order" in letter.headers[H_ERROR]
                assert not any(f"'{order}'" in letter.headers[H_ERROR] for order in won)
        assert worker.alive()
    finally:
        worker.stop()
        adapter.close()
