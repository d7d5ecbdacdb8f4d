"""The whole spine, end to end, on the embedded broker and on RabbitMQ.

Real sample CRM and ERP HTTP services on loopback, a real worker (pollers, route consumers,
HTTP writes), real broker and SQLite store. Asserts what an operator relies on: every good
record arrives exactly once, status flows back, broken records end in the DLQ with their
reason, and the worker keeps running through bad input.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from deploy.demo.sample_crm import SampleCrm
from deploy.demo.sample_erp import SampleErp
from middleware.bench.rabbitmq import delete_topology
from middleware.broker.base import H_ERROR, H_ERROR_CLASS, OutgoingMessage, dlq_name
from middleware.cli.main import main as isthmus
from middleware.config import load_config
from middleware.message import Envelope, Source
from middleware.runtime.worker import Worker
from tests.e2e.harness import expected_targets, wait_until, write_config

ROUTES = ["customers_crm_to_erp", "orders_crm_to_erp", "order_status_erp_to_crm"]


@pytest.fixture
def crm() -> Iterator[SampleCrm]:
    service = SampleCrm(token="demo-crm-token").start()
    yield service
    service.stop()


@pytest.fixture
def erp() -> Iterator[SampleErp]:
    service = SampleErp(advance_every_s=0.2).start()
    yield service
    service.stop()


@pytest.fixture(params=["embedded", "rabbitmq"])
def broker_setup(request: pytest.FixtureRequest, tmp_path: Path, unique_name: str) -> Iterator[tuple[str, str]]:
    """(broker URL, route-name suffix) for each broker kind."""
    if request.param == "embedded":
        yield f"embedded:///{tmp_path}/broker.db", ""
        return
    amqp_url: str = request.getfixturevalue("amqp_url")
    exchange = f"isthmus_{unique_name}"
    suffix = f"_{unique_name}"
    yield f"{amqp_url}?exchange={exchange}", suffix
    delete_topology(amqp_url, [r + suffix for r in ROUTES] + ["isthmus.unrouted"], exchange)


@pytest.fixture
def env(crm: SampleCrm, erp: SampleErp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_CRM_URL", crm.url)
    monkeypatch.setenv("DEMO_ERP_URL", erp.url)
    monkeypatch.setenv("DEMO_CRM_TOKEN", "demo-crm-token")


def _invoiced(crm: SampleCrm) -> set[str]:
    with crm.lock:
        return {k for k, o in crm.orders.rows.items() if o.get("erp_status") == "invoiced"}


def _erp_refs(erp: SampleErp, kind: str) -> list[str]:
    with erp.lock:
        table = erp.accounts if kind == "accounts" else erp.orders
        return [record["external_ref"] for record in table.values()]


@pytest.mark.slow
@pytest.mark.usefixtures("env")
def test_customers_orders_and_status_sync_exactly_once(
    crm: SampleCrm, erp: SampleErp, broker_setup: tuple[str, str], tmp_path: Path
) -> None:
    broker_url, suffix = broker_setup
    crm.seed(customers=25, orders_per_customer=2, with_bad_records=True)
    good_customers, won_orders = expected_targets(crm)
    config = load_config(write_config(tmp_path, broker=broker_url, route_suffix=suffix))
    worker = Worker(config, serve_health=False).start()
    try:
        wait_until(
            lambda: (
                set(_erp_refs(erp, "accounts")) == good_customers
                and set(_erp_refs(erp, "orders")) == won_orders
                and _invoiced(crm) == won_orders
            ),
            timeout_s=90,
            what="customers, won orders and invoiced statuses to flow",
        )
        # exactly once: no account or order created twice, no write applied twice
        assert sorted(_erp_refs(erp, "accounts")) == sorted(good_customers)
        assert sorted(_erp_refs(erp, "orders")) == sorted(won_orders)
        assert all(count == 1 for count in erp.state()["applied_counts"].values())
        assert all(count == 1 for count in crm.state()["applied_counts"].values())

        # the broken customer (empty name → ERP 400) is dead-lettered with the ERP's reason
        customers_route = "customers_crm_to_erp" + suffix
        wait_until(lambda: worker.broker.depth(dlq_name(customers_route)) >= 1, 10, "customer DLQ")
        (dead,) = worker.broker.browse(dlq_name(customers_route), 10)
        assert dead.headers[H_ERROR_CLASS] == "PermanentError"
        assert "account_name is required" in dead.headers[H_ERROR]
        assert Envelope.from_bytes(dead.body).source.record_id in crm.bad_records["customers"]

        # the broken order (qty "abc") is dead-lettered by its mapping, if it was a won order
        bad_order = crm.order(crm.bad_records["orders"][0])
        assert bad_order is not None
        orders_route = "orders_crm_to_erp" + suffix
        if bad_order["stage"] == "won":
            wait_until(lambda: worker.broker.depth(dlq_name(orders_route)) >= 1, 10, "order DLQ")
            (dead_order,) = worker.broker.browse(dlq_name(orders_route), 10)
            assert dead_order.headers[H_ERROR_CLASS] == "MappingError"
            assert "abc" in dead_order.headers[H_ERROR]

        # bad input on the queue: malformed JSON and an unknown type; the worker keeps running
        stray = Envelope(
            type="invoice.posted",
            source=Source(system="crm", entity="invoice", record_id="I-1"),
            occurred_at=datetime.now(UTC),
        )
        before = worker.broker.depth(dlq_name(customers_route))
        worker.broker.send(
            customers_route,
            [
                OutgoingMessage("customer.upserted", b'{"type": "customer.upserted", '),
                OutgoingMessage("invoice.posted", stray.to_bytes()),
            ],
        )
        wait_until(lambda: worker.broker.depth(dlq_name(customers_route)) == before + 2, 15, "bad input DLQ")
        classes = sorted(d.headers[H_ERROR_CLASS] for d in worker.broker.browse(dlq_name(customers_route), 10))
        assert classes == ["MalformedMessageError", "PermanentError", "UnknownMessageTypeError"]

        # ...and still syncs: a change made now arrives
        crm.upsert_customer({"customer_no": sorted(good_customers)[0], "company": "Renamed After Bad Input AG"})
        wait_until(
            lambda: "Renamed After Bad Input AG" in {a["account_name"] for a in erp.accounts.values()},
            20,
            "a later change to sync",
        )
        assert worker.alive()
    finally:
        worker.stop()


@pytest.mark.usefixtures("env")
def test_dead_letter_replayed_after_fix_is_applied(crm: SampleCrm, erp: SampleErp, tmp_path: Path) -> None:
    """An operator fixes the cause (here: the ERP stops refusing) and replays the dead letter."""
    config_path = write_config(
        tmp_path,
        broker=f"embedded:///{tmp_path}/broker.db",
        routes=["customers_crm_to_erp"],
        sources=["crm_customers"],
    )
    crm.seed(customers=1, orders_per_customer=0, with_bad_records=False)
    erp.fail_next(1, status=409)
    config = load_config(config_path)
    worker = Worker(config, serve_health=False).start()
    try:
        wait_until(lambda: worker.broker.depth("customers_crm_to_erp.dlq") == 1, 15, "the refused write in the DLQ")
        assert erp.state()["accounts"] == 0
        assert isthmus(["dlq", "list", "--config", str(config_path)]) == 0
        assert isthmus(["dlq", "replay", "--config", str(config_path), "--route", "customers_crm_to_erp", "--all"]) == 0
        wait_until(lambda: erp.state()["accounts"] == 1, 15, "the replayed customer in the ERP")
        assert worker.broker.depth("customers_crm_to_erp.dlq") == 0
    finally:
        worker.stop()


def test_worker_refuses_to_start_on_a_bad_config(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "isthmus.yaml"
    bad.write_text("broker: embedded://b.db\nroutes:\n  - name: x\n    onn: [a.b]\n", encoding="utf-8")
    assert isthmus(["worker", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4:5" in err and "unknown key 'onn'" in err and "did you mean 'on'" in err
