"""One target record, one identity; one source record, many paths — on real components.

The target is the sample ERP as a real HTTP server, without its Idempotency-Key dedupe (like
Tryton, most targets have none), written by the REST adapter with `key_field: external_ref`
and `find:`. Routes run on a real embedded broker and SQLite store. A "webhook" route and a
"poll" route bring the same CRM customers under different idempotency keys (an event id, a
record version), as the two paths of one entity do.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from adapters.rest import RestAdapter, RestSystemConfig
from deploy.demo.sample_erp import SampleErp
from middleware.broker import open_broker
from middleware.broker.base import H_ORIGIN, Broker, OutgoingMessage
from middleware.config import RetryPolicy, RouteConfig, TargetSpec
from middleware.message import Envelope, Source
from middleware.runtime.route import RouteProcessor
from middleware.store import open_store
from middleware.store.base import IdentityWrite, RecordRef, Store, TargetIdentity

WEBHOOK, POLL = "account.changed", "customer.upserted"


@pytest.fixture
def erp() -> Iterator[SampleErp]:
    server = SampleErp(advance_every_s=0, dedupe=False).start()
    yield server
    server.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = open_broker(f"embedded:///{tmp_path}/broker.db")
    yield b
    b.close()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/state.db"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


def erp_adapter(erp: SampleErp) -> RestAdapter:
    write = {
        "mode": "create_or_update",
        "create": {"method": "POST", "path": "/api/accounts"},
        "update": {"method": "PUT", "path": "/api/accounts/{target_id}"},
        "id_path": "id",
        "key_field": "external_ref",
        "find": {"path": "/api/accounts", "param": "external_ref", "records_path": "items"},
    }
    config = {"base_url": erp.url, "entities": {"account": {"write": write}}}
    return RestAdapter("erp", RestSystemConfig.model_validate(config))


def map_either(payload: dict[str, Any]) -> dict[str, Any]:
    """A webhook event carries the record under `data`; a poll brings the record itself."""
    record = payload.get("data", payload)
    return {"external_ref": record["no"], "account_name": record["name"]}


def route(name: str, on: str, unique: str, lease_s: float = 60.0) -> RouteConfig:
    return RouteConfig(
        name=f"{name}_{unique}",
        on=[on],
        mappings=["m"],
        to=TargetSpec(system="erp", entity="account", key=["external_ref"], claim_lease_s=lease_s),
        retry=RetryPolicy(max_attempts=3, initial_delay_s=0.05, max_delay_s=0.1),
    )


def processor(config: RouteConfig, broker: Broker, store: Store, adapter: RestAdapter) -> RouteProcessor:
    broker.setup_route(config.name, config.on)
    return RouteProcessor(config, broker, store, adapter.writer(), map_either, "m")


def change(kind: str, no: str, name: str, version: str = "1") -> Envelope:
    record = {"no": no, "name": name}
    if kind == WEBHOOK:
        payload: dict[str, Any] = {"event_id": f"evt-{no}-{version}", "data": record}
        version = f"evt-{no}-{version}"
    else:
        payload = record
    return Envelope(
        type=kind,
        source=Source(system="crm", entity="customer", record_id=no, version=version),
        occurred_at=datetime.now(UTC),
        payload=payload,
    )


def publish(broker: Broker, *envelopes: Envelope, headers: dict[str, str] | None = None) -> None:
    broker.publish(
        [
            OutgoingMessage(e.type, e.to_bytes(), headers=dict(headers or {}), message_id=str(e.message_id))
            for e in envelopes
        ]
    )


def drain(proc: RouteProcessor, broker: Broker, idle_s: float = 0.5) -> None:
    """Process the route's queue until nothing came for `idle_s` (retries included)."""
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < idle_s:
        deliveries = broker.fetch(proc.queue, 50, 0.05)
        if deliveries:
            proc.process(deliveries)
            quiet_since = time.monotonic()


def skipped(route_name: str, reason: str) -> float:
    return REGISTRY.get_sample_value("isthmus_messages_skipped_total", {"route": route_name, "reason": reason}) or 0.0


def posts(erp: SampleErp) -> list[dict[str, Any]]:
    return [e for e in erp.state()["effects"] if e["method"] == "POST"]


def test_webhook_and_poll_routes_racing_create_each_record_once(
    erp: SampleErp, broker: Broker, store_url: str, unique_name: str
) -> None:
    erp.set_latency(0.01)  # creates stay in flight while the other route looks
    adapter = erp_adapter(erp)
    stores = [open_store(store_url), open_store(store_url)]  # two connections, as two workers have
    brokers = [broker, open_broker(broker.url)]  # type: ignore[attr-defined]  # one per thread, as in a worker
    procs = [
        processor(route("won_webhook", WEBHOOK, unique_name), brokers[0], stores[0], adapter),
        processor(route("accounts_poll", POLL, unique_name), brokers[1], stores[1], adapter),
    ]
    numbers = [f"C-{i}" for i in range(40)]
    for no in numbers:
        publish(broker, change(WEBHOOK, no, f"Company {no}"), change(POLL, no, f"Company {no}"))
    try:
        threads = [threading.Thread(target=drain, args=(p, b, 3.0)) for p, b in zip(procs, brokers, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for s in stores:
            s.close()
        brokers[1].close()
    refs = sorted(a["external_ref"] for a in erp.accounts.values())
    assert refs == sorted(numbers), "a customer was created twice (or never)"
    assert len(posts(erp)) == len(numbers)


def test_the_poll_after_the_webhook_is_skipped_as_duplicate_path(
    erp: SampleErp, broker: Broker, store: Store, unique_name: str
) -> None:
    adapter = erp_adapter(erp)
    webhook = processor(route("won_webhook", WEBHOOK, unique_name), broker, store, adapter)
    poll = processor(route("accounts_poll", POLL, unique_name), broker, store, adapter)
    publish(broker, *(change(WEBHOOK, f"C-{i}", "Acme") for i in range(5)))
    drain(webhook, broker, 0.2)
    publish(broker, *(change(POLL, f"C-{i}", "Acme") for i in range(5)))
    publish(broker, change(POLL, "C-9", "New one"))
    outcome = poll.process(broker.fetch(poll.queue, 50, 1.0))
    assert (outcome.skipped, outcome.applied) == (5, 1)
    assert skipped(poll.config.name, "duplicate_path") == 5
    assert [e["method"] for e in erp.state()["effects"]] == ["POST"] * 6, "the poll wrote what the webhook had"


def test_a_changed_record_from_the_other_path_is_written_as_an_update(
    erp: SampleErp, broker: Broker, store: Store, unique_name: str
) -> None:
    adapter = erp_adapter(erp)
    webhook = processor(route("won_webhook", WEBHOOK, unique_name), broker, store, adapter)
    poll = processor(route("accounts_poll", POLL, unique_name), broker, store, adapter)
    publish(broker, change(WEBHOOK, "C-1", "Acme"))
    drain(webhook, broker, 0.2)
    publish(broker, change(POLL, "C-1", "Acme Renamed", version="2"))
    assert poll.process(broker.fetch(poll.queue, 50, 1.0)).applied == 1
    (account,) = erp.accounts.values()
    assert account["account_name"] == "Acme Renamed"
    assert [e["method"] for e in erp.state()["effects"]] == ["POST", "PUT"]
    assert store.lookup(RecordRef("crm", "customer", "C-1"), "erp") == RecordRef("erp", "account", account["id"])


def test_a_redelivery_on_the_same_path_still_counts_as_duplicate(
    erp: SampleErp, broker: Broker, store: Store, unique_name: str
) -> None:
    poll = processor(route("accounts_poll", POLL, unique_name), broker, store, erp_adapter(erp))
    same = change(POLL, "C-1", "Acme")
    publish(broker, same)
    drain(poll, broker, 0.2)
    publish(broker, same)
    drain(poll, broker, 0.2)
    assert skipped(poll.config.name, "duplicate") == 1
    assert skipped(poll.config.name, "duplicate_path") == 0


def test_a_heal_reemit_of_the_same_content_is_written(
    erp: SampleErp, broker: Broker, store: Store, unique_name: str
) -> None:
    """Reconcile heal re-emits on purpose (the target drifted): never skipped as duplicate_path."""
    adapter = erp_adapter(erp)
    webhook = processor(route("won_webhook", WEBHOOK, unique_name), broker, store, adapter)
    poll = processor(route("accounts_poll", POLL, unique_name), broker, store, adapter)
    publish(broker, change(WEBHOOK, "C-1", "Acme"))
    drain(webhook, broker, 0.2)
    publish(broker, change(POLL, "C-1", "Acme", version="1+reconcile-abc"), headers={H_ORIGIN: "reconcile:abc"})
    assert poll.process(broker.fetch(poll.queue, 50, 1.0)).applied == 1
    assert [e["method"] for e in erp.state()["effects"]] == ["POST", "PUT"]


def _create_directly(erp: SampleErp, no: str) -> str:
    """What a worker killed right after its create left behind: the account, and nothing else."""
    body = json.dumps({"external_ref": no, "account_name": "Acme"}).encode()
    req = urllib.request.Request(
        f"{erp.url}/api/accounts", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as response:
        return str(json.loads(response.read())["id"])


def test_a_claim_left_by_a_killed_worker_is_recovered_by_finding_the_record_by_key(
    erp: SampleErp, broker: Broker, store: Store, unique_name: str
) -> None:
    account_id = _create_directly(erp, "C-1")
    sale = TargetIdentity("erp", "account", "C-1")
    assert store.claim_identities([sale], "killed-worker", lease_s=60)[sale].status == "new"
    time.sleep(0.4)
    poll = processor(route("accounts_poll", POLL, unique_name, lease_s=0.3), broker, store, erp_adapter(erp))
    publish(broker, change(POLL, "C-1", "Acme Corp"))
    assert poll.process(broker.fetch(poll.queue, 50, 1.0)).applied == 1
    assert len(erp.accounts) == 1, "the record was created again instead of being found by key"
    assert erp.accounts[account_id]["account_name"] == "Acme Corp"
    assert store.claim_identities([sale], "someone", lease_s=60)[sale].target_id == account_id
    assert store.lookup(RecordRef("crm", "customer", "C-1"), "erp") == RecordRef("erp", "account", account_id)


def test_a_held_claim_waits_without_spending_an_attempt_then_updates(
    erp: SampleErp, broker: Broker, store: Store, unique_name: str
) -> None:
    sale = TargetIdentity("erp", "account", "C-1")
    store.claim_identities([sale], "live-worker", lease_s=60)
    poll = processor(route("accounts_poll", POLL, unique_name), broker, store, erp_adapter(erp))
    poll.identities.wait_s = 0.3  # type: ignore[union-attr]  # a short bounded wait for the test
    publish(broker, change(POLL, "C-1", "Acme Corp"))
    assert poll.process(broker.fetch(poll.queue, 50, 1.0)).retried == 1
    assert erp.accounts == {}, "a writer created the record another one holds the claim of"
    account_id = _create_directly(erp, "C-1")  # the live worker creates and links it
    store.mark_applied("other", [], identity=IdentityWrite("live-worker", linked=[(sale, account_id)]))
    deliveries = broker.fetch(poll.queue, 50, 3.0)
    assert Envelope.from_bytes(deliveries[0].body).attempt == 0
    assert poll.process(deliveries).applied == 1
    assert len(erp.accounts) == 1 and erp.accounts[account_id]["account_name"] == "Acme Corp"


def test_a_failed_create_expires_its_claim_so_the_retry_looks_first(
    erp: SampleErp, broker: Broker, store: Store, unique_name: str
) -> None:
    poll = processor(route("accounts_poll", POLL, unique_name), broker, store, erp_adapter(erp))
    erp.fail_next(1, 503)
    publish(broker, change(POLL, "C-1", "Acme"))
    assert poll.process(broker.fetch(poll.queue, 50, 1.0)).retried == 1
    sale = TargetIdentity("erp", "account", "C-1")
    assert store.claim_identities([sale], "next-worker", lease_s=3600)[sale].status == "recover"
    store.mark_applied("t", [], identity=IdentityWrite("next-worker", expired=[sale]))  # it gives up again
    drain(poll, broker, 0.5)
    assert len(erp.accounts) == 1


def test_a_failed_search_by_key_retries_instead_of_creating_blindly(
    erp: SampleErp, broker: Broker, store: Store, unique_name: str
) -> None:
    account_id = _create_directly(erp, "C-1")
    sale = TargetIdentity("erp", "account", "C-1")
    store.claim_identities([sale], "killed-worker", lease_s=60)
    time.sleep(0.4)
    poll = processor(route("accounts_poll", POLL, unique_name, lease_s=0.3), broker, store, erp_adapter(erp))
    erp.fail_next(1, 503)  # the search by key fails
    publish(broker, change(POLL, "C-1", "Acme Corp"))
    assert poll.process(broker.fetch(poll.queue, 50, 1.0)).retried == 1
    assert list(erp.accounts) == [account_id]
    drain(poll, broker, 0.5)
    assert list(erp.accounts) == [account_id], "the retry created the record instead of finding it"
    assert erp.accounts[account_id]["account_name"] == "Acme Corp"
