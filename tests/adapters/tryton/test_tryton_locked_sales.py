"""Sales past draft against the real trytond: an identical write is a no-op, a change is locked.

The route runs on a real embedded broker and SQLite store with the Tryton adapter's writer, so
what is pinned is what a worker does with a redelivered or amended deal after its sale was
confirmed: nothing at all for the same content (`reason="unchanged"`), and `on_locked` for a
change (skip, note, or the dead-letter queue as before).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from adapters.tryton import TrytonAdapter
from middleware.adapter import WriteRequest
from middleware.broker import open_broker
from middleware.broker.base import H_ERROR_CLASS, Broker, OutgoingMessage, dlq_name
from middleware.config import RetryPolicy, RouteConfig, TargetSpec
from middleware.message import Envelope, Source
from middleware.runtime.route import RouteProcessor
from middleware.store import open_store
from middleware.store.base import RecordRef, Store
from tests.adapters.tryton.test_tryton_adapter import party, sale


def skipped(route: str, reason: str) -> float:
    return REGISTRY.get_sample_value("isthmus_messages_skipped_total", {"route": route, "reason": reason}) or 0.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = open_broker(f"embedded:///{tmp_path}/broker.db")
    yield b
    b.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/state.db")
    yield s
    s.close()


def sale_route(name: str, on_locked: str) -> RouteConfig:
    return RouteConfig(
        name=name,
        on=["order.won"],
        mappings=["m"],
        to=TargetSpec(system="tryton", entity="sale"),
        retry=RetryPolicy(max_attempts=2, initial_delay_s=0.05, max_delay_s=0.1),
        on_locked=on_locked,  # type: ignore[arg-type]
    )


def deal(order: str, record: dict[str, Any], version: str) -> OutgoingMessage:
    envelope = Envelope(
        type="order.won",
        source=Source(system="crm", entity="order", record_id=order, version=version),
        occurred_at=datetime.now(UTC),
        payload=record,
    )
    return OutgoingMessage(envelope.type, envelope.to_bytes(), key=envelope.record_key)


def run(broker: Broker, processor: RouteProcessor) -> None:
    while deliveries := broker.fetch(processor.queue, 50, 0.05):
        processor.process(deliveries)


def test_identical_write_to_a_confirmed_sale_is_unchanged_not_refused(adapter: TrytonAdapter, tag: str) -> None:
    (customer,) = adapter.writer().write_batch([party(tag, 1)])
    (first,) = adapter.writer().write_batch([sale(tag, customer.target_id or "")])
    assert first.outcome == "ok" and not first.unchanged
    (again,) = adapter.writer().write_batch([sale(tag, customer.target_id or "", target_id=first.target_id)])
    assert (again.outcome, again.unchanged, again.target_id) == ("ok", True, first.target_id)
    (change,) = adapter.writer().write_batch([sale(tag, customer.target_id or "", target_id=first.target_id, qty="5")])
    assert (change.outcome, change.locked) == ("permanent", True)
    assert "is processing in Tryton" in change.error


@pytest.mark.parametrize("on_locked", ["skip", "note", "dead_letter"])
def test_a_redelivered_deal_is_a_no_op_and_an_amended_one_follows_on_locked(
    adapter: TrytonAdapter, tag: str, broker: Broker, store: Store, on_locked: str
) -> None:
    name = f"sales_{on_locked}_{tag.lower()}"
    config = sale_route(name, on_locked)
    broker.setup_route(name, config.on)
    processor = RouteProcessor(config, broker, store, adapter.writer(), lambda r: r, "m")
    (customer,) = adapter.writer().write_batch([party(tag, 1)])
    order = f"SO-{tag}-1"
    record = sale(tag, customer.target_id or "").record
    broker.send(name, [deal(order, record, "1")])
    run(broker, processor)
    linked = store.lookup(RecordRef("crm", "order", order), "tryton")
    assert linked is not None  # created, confirmed and linked
    (row,) = adapter.rpc.model("sale.sale", "read", [int(linked.id)], ["state"])
    assert row["state"] == "processing"

    unchanged = skipped(name, "unchanged")
    broker.send(name, [deal(order, record, "2")])  # the same content again (webhook after the poll)
    run(broker, processor)
    assert skipped(name, "unchanged") == unchanged + 1
    assert broker.depth(dlq_name(name)) == 0

    locked = skipped(name, "locked")
    amended = {**record, "lines": [{**record["lines"][0], "quantity": "7"}]}
    broker.send(name, [deal(order, amended, "3")])
    with capture_logs() as logs:
        run(broker, processor)
    noted = [e for e in logs if e["event"] == "record_locked_skipped"]
    assert len(noted) == (1 if on_locked == "note" else 0)
    if on_locked == "dead_letter":
        assert broker.depth(dlq_name(name)) == 1
        (dead,) = broker.fetch(dlq_name(name), 10, 0.1)
        assert dead.headers[H_ERROR_CLASS] == "RecordLockedError"
    else:
        assert broker.depth(dlq_name(name)) == 0
        assert skipped(name, "locked") == locked + 1
    assert adapter.rpc.model("sale.sale", "search_count", [("reference", "=", order)]) == 1


def test_a_write_with_only_the_billing_address_keeps_the_shipping_one(adapter: TrytonAdapter, tag: str) -> None:
    """Addresses merged by the mapping's merge_key (here Tryton's `attn`): the write carries one
    address, the party keeps the other, and the one it carries is changed in place."""
    code = f"C-{tag}-M"
    both = {
        "name": f"Merge {tag}",
        "code": code,
        "addresses": [
            {"attn": "billing", "street": "Hauptstr. 1", "city": "Berlin", "country": {"code": "DE"}},
            {"attn": "shipping", "street": "Lagerweg 9", "city": "Potsdam", "country": {"code": "DE"}},
        ],
    }
    (created,) = adapter.writer().write_batch([WriteRequest("party", both, key=f"crm/customer/{code}@1")])
    assert created.outcome == "ok", created.error
    billing_only = {"code": code, "addresses": [{"attn": "billing", "street": "Ring 2", "city": "Hamburg"}]}
    request = WriteRequest(
        "party", billing_only, key=f"crm/customer/{code}@2", target_id=created.target_id, merge={"addresses": "attn"}
    )
    (updated,) = adapter.writer().write_batch([request])
    assert updated.outcome == "ok", updated.error
    (row,) = adapter.rpc.model("party.party", "read", [int(created.target_id or 0)], ["addresses"])
    addresses = adapter.rpc.model("party.address", "read", row["addresses"], ["attn", "street", "city", "active"])
    held = {a["attn"]: (a["street"], a["city"], a["active"]) for a in addresses}
    assert held == {"billing": ("Ring 2", "Hamburg", True), "shipping": ("Lagerweg 9", "Potsdam", True)}
