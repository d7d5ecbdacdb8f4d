"""Order-to-cash, end to end: sample CRM on loopback, a real Tryton, a real worker on the embedded broker.

The configuration is the demo's (deploy/demo/order_to_cash.yaml, flows/order_to_cash.yaml),
pointed at this session's Tryton and a fresh CRM, with short poll intervals. Each test places
its own orders (unique numbers), then watches the CRM order and the Tryton sale.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.tryton import TrytonAdapter
from adapters.tryton.localserver import LocalTryton
from deploy.demo.sample_crm import SampleCrm
from middleware.config import load_config
from middleware.runtime.worker import Worker
from middleware.store import open_store
from middleware.yamlsource import load_yaml_file
from tests.flows.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "demo" / "order_to_cash.yaml"

pytestmark = pytest.mark.slow


def write_config(directory: Path, *, poll_customers: bool = False) -> Path:
    config = load_yaml_file(CONFIG).data
    config["broker"] = f"embedded:///{directory}/broker.db"
    config["store"] = f"sqlite:///{directory}/state.db"
    config["mappings"] = [str(REPO / "mappings")]
    config["flows"] = [str(REPO / "flows")]
    config["observability"] = {"port": 0, "log_format": "json", "log_level": "warning"}
    config["systems"]["tryton"]["settle_s"] = 0
    for source in config["sources"]:
        if "schedule" not in source:
            source["poll_interval_s"] = 0.25
        elif poll_customers:  # real time instead of the nightly batch
            for key in ("schedule", "timezone"):
                source.pop(key)
            source["poll_interval_s"] = 0.25
    for route in config["routes"]:
        route["retry"] = {"max_attempts": 10, "initial_delay_s": 0.2, "max_delay_s": 1.0}
    path = directory / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Setup:
    crm: SampleCrm
    tryton: TrytonAdapter
    config: Path
    worker: Worker

    def order(self, order_no: str) -> dict[str, Any]:
        found = self.crm.order(order_no)
        assert found is not None
        return found

    def status(self, order_no: str) -> str | None:
        return self.order(order_no).get("erp_status")

    def sales(self, reference: str) -> list[dict[str, Any]]:
        return list(
            self.tryton.rpc.model(
                "sale.sale",
                "search_read",
                [("reference", "=", reference)],
                0,
                None,
                None,
                ["state", "number", "shipments", "invoices", "total_amount", "party.code"],
            )
        )

    def statuses_sent(self, order_no: str) -> list[str]:
        return [e["erp_status"] for e in self.crm.state()["effects"] if e["id"] == order_no]


@pytest.fixture(scope="module")
def o2c(tryton: LocalTryton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    crm = SampleCrm(token="demo-crm-token").start()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DEMO_CRM_URL", crm.url)
        env.setenv("DEMO_CRM_TOKEN", "demo-crm-token")
        env.setenv("TRYTON_URL", tryton.url)
        env.setenv("TRYTON_PASSWORD", tryton.password)
        path = write_config(tmp_path_factory.mktemp("o2c"))
        worker = Worker(load_config(path), serve_health=False).start()
        checker = TrytonAdapter("check", tryton.system_settings())
        try:
            yield Setup(crm, checker, path, worker)
        finally:
            worker.stop()
            checker.close()
            crm.stop()


def place_order(crm: SampleCrm, tag: str, lines: list[tuple[str, str, str]], suffix: str = "") -> str:
    """A new CRM customer (not synced to Tryton by any batch yet) and a won order of theirs."""
    customer_no, order_no = f"C-{tag}{suffix}", f"SO-{tag}{suffix}"
    crm.upsert_customer(
        {
            "customer_no": customer_no,
            "company": f"Flow {tag}{suffix} GmbH",
            "email": f"buyer@{tag.lower()}.example",
            "tier": "silver",
            "status": "active",
            "vat": "DE123456789",
            "billing": {"street": "Hauptstr. 1", "zip": "10115", "city": "Berlin", "country": "DE"},
        }
    )
    crm.upsert_order(
        {
            "order_no": order_no,
            "customer_no": customer_no,
            "placed_at": "2026-11-24T09:00:00+08:00",
            "currency": "EUR",
            "stage": "won",
            "lines": [{"sku": sku, "desc": sku, "qty": qty, "price": price} for sku, qty, price in lines],
        }
    )
    return order_no


def pay_invoice(rpc: Any, invoice: int) -> None:
    """What accounting does in Tryton: post the invoice (if still draft) and record its payment."""
    state = rpc.model("account.invoice", "read", [invoice], ["state"])[0]["state"]
    if state in ("draft", "validated"):
        rpc.model("account.invoice", "post", [invoice])
    context = rpc.context
    methods = rpc.model("account.invoice.payment.method", "search", [("name", "=", "Isthmus test bank")], 0, 1, None)
    if not methods:
        journal = rpc.model("account.journal", "search", [("type", "=", "cash")], 0, 1, None)[0]
        cash = rpc.model("account.account", "search", [("code", "=", "1.1.1")], 0, 1, None)[0]
        methods = rpc.model(
            "account.invoice.payment.method",
            "create",
            [
                {
                    "company": context["company"],
                    "name": "Isthmus test bank",
                    "journal": journal,
                    "credit_account": cash,
                    "debit_account": cash,
                }
            ],
        )
    session, _, _ = rpc.call("wizard.account.invoice.pay.create", {})
    wizard_context = {**context, "active_model": "account.invoice", "active_id": invoice, "active_ids": [invoice]}
    defaults = rpc.call("wizard.account.invoice.pay.execute", session, {}, "start", wizard_context)["view"]["defaults"]
    start = {name: defaults[name] for name in ("payee", "payees", "amount", "currency", "company", "invoice_account")}
    start |= {"payment_method": methods[0], "date": dt.date.today(), "description": "paid in the test"}
    rpc.call("wizard.account.invoice.pay.execute", session, {"start": start}, "choice", wizard_context)
    rpc.call("wizard.account.invoice.pay.delete", session, wizard_context)


def flows_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "middleware.cli.main", "flows", *args, "--config", str(config)],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_won_order_is_confirmed_reserved_and_invoiced_and_payment_reaches_the_crm(o2c: Setup, tag: str) -> None:
    order_no = place_order(o2c.crm, tag, [("WIDGET-1", "2", "19.90"), ("CABLE-2M", "3", "7.49")])

    wait_until(lambda: o2c.status(order_no) == "reserved", 60, "the reservation on the CRM order")
    (sale,) = o2c.sales(order_no)
    assert sale["state"] == "processing" and sale["party."]["code"] == f"C-{tag}"  # customer ensured, then sold to
    order = o2c.order(order_no)
    shipment = o2c.tryton.rpc.model(
        "stock.shipment.out", "read", sale["shipments"], ["number", "state", "planned_date"]
    )
    assert shipment[0]["state"] == "assigned"  # stock reserved
    assert order["erp_shipment_number"] == shipment[0]["number"] and order["erp_shipment_status"] == "planned"
    assert order["erp_planned_ship_date"] == shipment[0]["planned_date"].isoformat()  # shipment scheduled
    assert order["erp_order_number"] == sale["number"]

    (invoice,) = sale["invoices"]
    pay_invoice(o2c.tryton.rpc, invoice)
    wait_until(lambda: o2c.status(order_no) == "paid", 60, "the payment on the CRM order")
    booked = o2c.tryton.rpc.model("account.invoice", "read", [invoice], ["number", "total_amount", "state"])[0]
    order = o2c.order(order_no)
    assert booked["state"] == "paid"
    assert order["erp_invoice_number"] == booked["number"]
    assert Decimal(order["erp_invoice_amount"]) == booked["total_amount"] == sale["total_amount"]
    assert order["erp_invoice_currency"] == "EUR" and order["erp_paid"] is True
    assert o2c.statuses_sent(order_no) == ["reserved", "invoiced", "paid"]  # in order, each once

    run = open_store(f"sqlite:///{o2c.config.parent}/state.db").get_flow_run("order_to_cash", order_no)
    assert run is not None and run.status == "completed"
    trail = [(e["step"], e["event"]) for e in json.loads(run.state)["trail"]]
    assert ("large_order_approval", "done") in trail and ("awaiting_approval_status", "skipped") in trail
    assert trail[-1] == ("flow", "completed")


def test_an_order_out_of_stock_is_cancelled_in_tryton_and_the_crm_hears_why(o2c: Setup, tag: str) -> None:
    order_no = place_order(o2c.crm, tag, [("WIDGET-1", "1", "19.90"), ("BOLT-M8", "50000", "0.35")])

    wait_until(lambda: o2c.status(order_no) == "out_of_stock", 60, "the out-of-stock status on the CRM order")
    reason = o2c.order(order_no)["erp_status_reason"]
    assert reason.startswith("not enough stock: BOLT-M8: ordered 50000, available ")
    assert "WIDGET-1" not in reason  # only what is short
    (sale,) = o2c.sales(order_no)
    assert sale["state"] == "cancelled"  # compensated: no half-done sale
    assert sale["shipments"] == [] and sale["invoices"] == []
    assert o2c.statuses_sent(order_no) == ["out_of_stock"]


def test_a_large_order_waits_for_approval_and_isthmus_flows_approve_releases_it(o2c: Setup, tag: str) -> None:
    approved = place_order(o2c.crm, tag, [("PANEL-XL", "9", "1299.00")], suffix="A")  # 13,912.29 gross
    rejected = place_order(o2c.crm, tag, [("PANEL-XL", "8", "1299.00")], suffix="R")

    for order_no in (approved, rejected):
        wait_until(partial(lambda o: o2c.status(o) == "awaiting_approval", order_no), 60, f"{order_no} to wait")
        (sale,) = o2c.sales(order_no)
        assert sale["state"] == "quotation"  # not confirmed: nothing shipped, nothing invoiced
    assert "above 10000" in o2c.order(approved)["erp_status_reason"]

    listed = flows_cli(o2c.config, "list", "--status", "waiting", "--json")
    assert listed.returncode == 0, listed.stderr
    waiting = {row["key"]: row for row in json.loads(listed.stdout)}
    assert waiting[approved]["waiting_for"] == "approval" and waiting[rejected]["waiting_for"] == "approval"

    done = flows_cli(o2c.config, "approve", approved, "--by", "controller")
    assert done.returncode == 0, done.stderr
    assert f"approved {approved}" in done.stdout
    refused = flows_cli(o2c.config, "reject", rejected, "--by", "controller", "--reason", "credit limit reached")
    assert refused.returncode == 0, refused.stderr

    wait_until(lambda: o2c.status(approved) == "reserved", 60, "the approved order to be confirmed and reserved")
    assert o2c.sales(approved)[0]["state"] == "processing"
    wait_until(lambda: o2c.status(rejected) == "rejected", 60, "the rejection on the CRM order")
    assert o2c.order(rejected)["erp_status_reason"] == "rejected by controller: credit limit reached"
    assert o2c.sales(rejected)[0]["state"] == "cancelled"

    again = flows_cli(o2c.config, "approve", approved)
    assert again.returncode == 1 and "nothing to approve" in again.stderr  # it no longer waits


def test_a_tier_change_raises_a_stock_alert_note_on_the_tryton_party(
    tryton: LocalTryton, tmp_path: Path, tag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    crm = SampleCrm(token="demo-crm-token").start()
    monkeypatch.setenv("DEMO_CRM_URL", crm.url)
    monkeypatch.setenv("TRYTON_URL", tryton.url)
    monkeypatch.setenv("TRYTON_PASSWORD", tryton.password)
    worker = Worker(load_config(write_config(tmp_path, poll_customers=True)), serve_health=False).start()
    checker = TrytonAdapter("check", tryton.system_settings())
    customer_no = f"C-{tag}T"
    try:
        crm.upsert_customer(
            {
                "customer_no": customer_no,
                "company": f"Tiered {tag}",
                "tier": "silver",
                "status": "active",
                "billing": {"street": "Ring 2", "zip": "20095", "city": "Hamburg", "country": "DE"},
            }
        )

        def party() -> dict[str, Any] | None:
            rows = checker.rpc.model(
                "party.party", "search_read", [("code", "=", customer_no)], 0, None, None, ["name"]
            )
            return rows[0] if rows else None

        def notes(party_id: int) -> list[str]:
            rows = checker.rpc.model(
                "ir.note", "search_read", [("resource", "=", f"party.party,{party_id}")], 0, None, None, ["message"]
            )
            return [row["message"] for row in rows]

        store = open_store(f"sqlite:///{tmp_path}/state.db")
        wait_until(
            lambda: (r := store.get_flow_run("customer_master", customer_no)) and r.status == "completed",
            30,
            "the first customer_master run",
        )
        found = party()
        assert found is not None and notes(found["id"]) == []  # a first sight sets the baseline: no alert

        crm.upsert_customer({"customer_no": customer_no, "email": f"new@{tag.lower()}.example"})  # not the tier
        crm.upsert_customer({"customer_no": customer_no, "tier": "gold"})

        def gold_run_done() -> bool:
            run = store.get_flow_run("customer_master", customer_no)
            return run is not None and run.status == "completed" and json.loads(run.state)["record"]["tier"] == "gold"

        wait_until(lambda: notes(found["id"]), 30, "the stock alert note")
        wait_until(gold_run_done, 30, "the gold version's run")
        (note,) = notes(found["id"])  # one alert: the e-mail change raised none
        assert f"customer {customer_no} moved from tier silver to gold" in note
        store.close()
    finally:
        worker.stop()
        checker.close()
        crm.stop()
