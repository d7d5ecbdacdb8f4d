"""Hybrid intake: one webhook URL for several kinds of event, and the webhook as a trigger whose
full record is fetched by id (`item_path`) — against the real embedded broker, the real sample
CRM and, end to end, a real worker process writing into the sample ERP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from adapters.rest import RestAdapter
from adapters.webhook import WebhookEndpoint, WebhookReceiver
from adapters.webhook.enrich import ItemFetcher
from adapters.webhook.receiver import fetch_queue
from deploy.demo.sample_crm import SampleCrm
from deploy.demo.sample_erp import SampleErp
from middleware.bench.harness import free_port, wait_port
from middleware.broker import open_broker
from middleware.broker.base import Broker, dlq_name
from middleware.config import load_config
from middleware.errors import ConfigError
from middleware.message import Envelope
from middleware.yamlsource import load_yaml_file
from tests.e2e.harness import REPO, wait_until

KINDS = {
    "field": "event",
    "map": {
        "deal.won": {"message_type": "sales_order.upserted", "entity": "order"},
        "account.updated": {"message_type": "customer.upserted", "entity": "customer"},
    },
}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    opened = open_broker(f"embedded:///{tmp_path}/broker.db")
    opened.setup_route("orders", ["sales_order.upserted"])
    opened.setup_route("customers", ["customer.upserted"])
    yield opened
    opened.close()


def taken(broker: Broker, queue: str) -> list[Envelope]:
    deliveries = broker.fetch(queue, 100, 0.3)
    broker.ack(deliveries)
    return [Envelope.from_bytes(d.body) for d in deliveries]


def serve(broker: Broker, **settings: Any) -> WebhookReceiver:
    endpoint = WebhookEndpoint(path="/hooks/crm", system="crm", entity="deal", id_field="data.id", **settings)
    return WebhookReceiver("127.0.0.1", 0, {"crm_events": endpoint}, broker).start()


def test_one_url_carries_several_kinds_and_an_unknown_kind_is_acknowledged_and_ignored(broker: Broker) -> None:
    receiver = serve(broker, emits_by=KINDS)
    try:
        events = [
            {"event": "deal.won", "data": {"id": "SO-1", "stage": "won"}},
            {"event": "account.updated", "data": {"id": "C-1"}},
            {"event": "note.created", "data": {"id": "N-1"}},
        ]
        answer = requests.post(f"{receiver.url}/hooks/crm", json=events, timeout=5)
        assert answer.status_code == 202
        assert answer.json()["accepted"] == 2 and answer.json()["ignored"] == 1
    finally:
        receiver.stop()
    (order,) = taken(broker, "orders")
    (customer,) = taken(broker, "customers")
    assert (order.type, order.source.entity, order.source.record_id) == ("sales_order.upserted", "order", "SO-1")
    assert (customer.type, customer.source.entity, customer.source.record_id) == (
        "customer.upserted",
        "customer",
        "C-1",
    )


def test_the_event_kind_can_come_from_a_header(broker: Broker) -> None:
    receiver = serve(broker, emits_by={"header": "X-Crm-Event", "map": {"deal.won": "sales_order.upserted"}})
    try:
        won = requests.post(
            f"{receiver.url}/hooks/crm", json={"data": {"id": "SO-2"}}, headers={"X-Crm-Event": "deal.won"}, timeout=5
        )
        other = requests.post(
            f"{receiver.url}/hooks/crm", json={"data": {"id": "SO-3"}}, headers={"X-Crm-Event": "deal.lost"}, timeout=5
        )
    finally:
        receiver.stop()
    assert won.status_code == 202 and won.json()["accepted"] == 1
    assert other.status_code == 202 and other.json() == {"accepted": 0, "message_ids": [], "ignored": 1}
    assert [e.source.record_id for e in taken(broker, "orders")] == ["SO-2"]


def _config(tmp_path: Path, endpoint: dict[str, Any], crm_type: str = "rest") -> Path:
    crm: dict[str, Any] = {
        "type": "rest",
        "base_url": "http://127.0.0.1:1",
        "entities": {
            "customer": {
                "read": {
                    "path": "/api/accounts",
                    "records_path": "data",
                    "id_field": "customer_no",
                    "incremental": "snapshot",
                }
            }
        },
    }
    if crm_type != "rest":
        crm = {
            "type": "tryton",
            "url": "http://127.0.0.1:1",
            "database": "d",
            "username": "u",
            "password": "${X_PW:-pw}",
        }
    config = {
        "broker": f"embedded:///{tmp_path}/b.db",
        "store": f"sqlite:///{tmp_path}/s.db",
        "mappings": [],
        "systems": {"crm": crm},
        "webhooks": {
            "endpoints": {
                "crm_events": {
                    "path": "/hooks/crm",
                    "system": "crm",
                    "entity": "customer",
                    "id_field": "id",
                    **endpoint,
                }
            }
        },
    }
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _problems(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, check_mappings=False)
    return str(caught.value)


def test_emits_by_and_item_path_are_checked_at_load_with_their_place(tmp_path: Path) -> None:
    both = _problems(
        _config(
            tmp_path,
            {"message_type": "customer.upserted", "emits_by": {"field": "e", "map": {"a": "customer.upserted"}}},
        )
    )
    assert "exactly one of 'message_type' or 'emits_by'" in both and "isthmus.yaml:" in both
    bad_type = _problems(_config(tmp_path, {"emits_by": {"field": "event", "map": {"deal.won": "Sales Order"}}}))
    assert "map['deal.won']" in bad_type and "isthmus.yaml:" in bad_type
    no_source = _problems(_config(tmp_path, {"emits_by": {"map": {"deal.won": "sales_order.upserted"}}}))
    assert "exactly one of 'field'" in no_source
    placeholder = _problems(
        _config(tmp_path, {"message_type": "customer.upserted", "item_path": "/api/accounts/{key}"})
    )
    assert "one placeholder, {id}" in placeholder
    unreadable = _problems(
        _config(
            tmp_path,
            {
                "emits_by": {
                    "field": "event",
                    "map": {
                        "deal.won": {
                            "message_type": "sales_order.upserted",
                            "entity": "deal",
                            "item_path": "/api/deals/{id}",
                        }
                    },
                }
            },
        )
    )
    assert "has no entity 'deal'" in unreadable and "isthmus.yaml:" in unreadable
    not_rest = _problems(
        _config(tmp_path, {"message_type": "customer.upserted", "item_path": "/a/{id}"}, crm_type="tryton")
    )
    assert "fetches over HTTP" in not_rest
    loaded = load_config(
        _config(tmp_path, {"message_type": "customer.upserted", "item_path": "/api/accounts/{id}"}),
        check_mappings=False,
    )
    assert loaded.model.webhooks is not None


def test_a_trigger_is_published_as_the_full_record_fetched_by_id(broker: Broker) -> None:
    crm = SampleCrm().start()
    crm.seed(customers=3, orders_per_customer=0, with_bad_records=False)
    adapter = RestAdapter(
        "crm",
        {
            "base_url": crm.url,
            "entities": {
                "customer": {
                    "read": {
                        "path": "/api/accounts",
                        "records_path": "data",
                        "id_field": "customer_no",
                        "incremental": "snapshot",
                    }
                }
            },
        },
    )
    kinds = {
        "field": "event",
        "map": {
            "account.updated": {
                "message_type": "customer.upserted",
                "entity": "customer",
                "item_path": "/api/accounts/{id}",
            }
        },
    }
    receiver = serve(broker, emits_by=kinds)
    endpoint = receiver.by_path["/hooks/crm"][1]
    broker.setup_route(fetch_queue("crm_events"), [])
    fetcher = ItemFetcher("crm_events", endpoint, adapter.reader(), broker)
    try:
        events = [
            {"event": "account.updated", "data": {"id": "C-1002"}},
            {"event": "account.updated", "data": {"id": "C-404"}},
        ]
        assert requests.post(f"{receiver.url}/hooks/crm", json=events, timeout=5).status_code == 202
        assert taken(broker, "customers") == []  # nothing partial reaches a route
        assert fetcher.process(broker.fetch(fetch_queue("crm_events"), 10, 1.0)) == 1
        (full,) = taken(broker, "customers")
        assert full.payload == crm.customer("C-1002")  # the whole record, billing address included
        polled = adapter.reader().read_one("customer", "C-1002")
        assert polled is not None and full.source.version == polled.version  # one change, whichever path
        assert broker.depth(fetch_queue("crm_events")) == 0 and broker.depth(dlq_name(fetch_queue("crm_events"))) == 0
    finally:
        receiver.stop()
        adapter.close()
        crm.stop()


def test_a_worker_answers_the_webhook_at_once_and_writes_the_full_record(tmp_path: Path) -> None:
    crm = SampleCrm(token="demo-crm-token").start()
    erp = SampleErp(advance_every_s=0).start()
    crm.seed(customers=5, orders_per_customer=0, with_bad_records=False)
    crm.latency_s = 0.8  # a slow CRM API: the webhook's 202 must not wait for the fetch
    port = free_port()
    config = load_yaml_file(REPO / "deploy" / "demo" / "isthmus.yaml").data  # YAML 1.2: `on:` stays a key
    config.update(
        broker=f"embedded:///{tmp_path}/broker.db",
        store=f"sqlite:///{tmp_path}/state.db",
        mappings=[str(REPO / "mappings")],
        observability={"port": 0, "log_format": "json", "log_level": "info"},
        sources=[],
        routes=[r for r in config["routes"] if r["name"] == "customers_crm_to_erp"],
        webhooks={
            "port": port,
            "endpoints": {
                "crm_events": {
                    "path": "/hooks/crm",
                    "system": "crm",
                    "entity": "customer",
                    "id_field": "data.id",
                    "emits_by": {
                        "field": "event",
                        "map": {
                            "account.updated": {"message_type": "customer.upserted", "item_path": "/api/customers/{id}"}
                        },
                    },
                }
            },
        },
    )
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = dict(os.environ, DEMO_CRM_URL=crm.url, DEMO_ERP_URL=erp.url, DEMO_CRM_TOKEN="demo-crm-token")
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "middleware.cli.main", "worker", "--config", str(path)],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=sink,
        )
    try:
        wait_port(port, "the worker's webhook receiver")
        started = time.monotonic()
        answer = requests.post(
            f"http://127.0.0.1:{port}/hooks/crm", json={"event": "account.updated", "data": {"id": "C-1003"}}, timeout=5
        )
        took = time.monotonic() - started
        assert answer.status_code == 202, answer.text
        assert took < 0.5, f"the 202 took {took:.2f} s: it waited for the CRM"
        wait_until(lambda: len(erp.accounts) == 1, 30, "the account in the ERP")
        (account,) = erp.accounts.values()
        billing = crm.customer("C-1003")["billing"]  # type: ignore[index]
        assert account["address"]["street"] == billing["street"] and account["address"]["city"] == billing["city"]
        assert crm.api_reads["/api/customers/C-1003"] == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        crm.stop()
        erp.stop()
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert not [e for e in lines if e.get("level") == "error"]


def test_a_fetch_that_keeps_failing_is_retried_then_dead_lettered_with_the_trigger(broker: Broker) -> None:
    crm = SampleCrm().start()
    url = crm.url
    crm.stop()  # the CRM's API is down; its webhooks (here: the test) are not
    read = {"path": "/api/accounts", "records_path": "data", "id_field": "customer_no", "incremental": "snapshot"}
    adapter = RestAdapter("crm", {"base_url": url, "timeout_s": 1, "entities": {"customer": {"read": read}}})
    receiver = serve(
        broker,
        emits_by={
            "field": "event",
            "map": {"account.updated": {"message_type": "customer.upserted", "entity": "customer"}},
        },
        item_path="/api/accounts/{id}",
        retry={"max_attempts": 2, "delays_s": [0.2]},
    )
    queue = fetch_queue("crm_events")
    broker.setup_route(queue, [], None)
    fetcher = ItemFetcher("crm_events", receiver.by_path["/hooks/crm"][1], adapter.reader(), broker)
    try:
        event = {"event": "account.updated", "data": {"id": "C-1001"}}
        assert requests.post(f"{receiver.url}/hooks/crm", json=event, timeout=5).status_code == 202
        assert fetcher.process(broker.fetch(queue, 10, 1.0)) == 0  # attempt 1: retried later
        assert broker.depth(dlq_name(queue)) == 0
        time.sleep(0.3)
        assert fetcher.process(broker.fetch(queue, 10, 1.0)) == 0  # attempt 2 of 2: dead-lettered
        (letter,) = broker.browse(dlq_name(queue), 10)
        assert Envelope.from_bytes(letter.body).source.record_id == "C-1001"  # replay fetches again
        assert taken(broker, "customers") == []
    finally:
        receiver.stop()
        adapter.close()
