"""`isthmus worker` keeps the webhook event ids it has seen in its state store, so a sender's
redelivery after a worker restart is still answered as a duplicate and not enqueued again.

The receiver's own tests (tests/adapters/test_webhook_security.py) pin that a receiver given
a store remembers ids across a restart; this one pins that the worker gives it its store.
A real worker (webhook receiver, embedded broker, SQLite store), stopped and started again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from adapters.webhook import sign
from middleware.broker import open_broker
from middleware.config import load_config
from middleware.runtime.worker import Worker
from tests.e2e.harness import write_config

ROUTE = "customers_crm_to_erp"
PATH = "/webhooks/crm/customers"
SECRET = "dedup-restart-secret"
EVENT = {
    "event_id": "evt-0001",
    "customer_no": "C-77",
    "company": "Redelivered GmbH",
    "status": "active",
    "updated_at": "2026-11-24T10:00:00+08:00",
    "version": 1,
}


def _config(directory: Path) -> Path:
    path = write_config(directory, broker=f"embedded:///{directory}/broker.db", routes=[ROUTE], sources=[])
    config: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    endpoint = {
        "path": PATH,
        "system": "crm",
        "entity": "customer",
        "message_type": "customer.upserted",
        "id_field": "customer_no",
        "version_field": "version",
        "secret": "${TEST_DEDUP_WEBHOOK_SECRET}",
        "dedup": {"event_id_field": "event_id"},
    }
    config["webhooks"] = {"host": "127.0.0.1", "port": 0, "endpoints": {"crm_customers": endpoint}}
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _deliver_once_more(config: Path) -> requests.Response:
    """Start a worker (receiver only: nothing consumes the route), deliver EVENT, stop it."""
    worker = Worker(load_config(config), run_routes=False, serve_health=False).start()
    try:
        body = json.dumps(EVENT).encode()
        headers = {"Content-Type": "application/json", "X-Isthmus-Signature": sign(SECRET, body)}
        return requests.post(worker.webhook.url + PATH, data=body, headers=headers, timeout=10)
    finally:
        worker.stop()


def test_an_event_id_seen_before_a_worker_restart_is_still_a_duplicate_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_DEDUP_WEBHOOK_SECRET", SECRET)
    config = _config(tmp_path)
    first = _deliver_once_more(config)
    assert first.status_code == 202, first.text
    again = _deliver_once_more(config)  # a new worker process's receiver, the same state store
    assert again.status_code == 200 and again.json()["duplicates"] == 1, again.text
    broker = open_broker(f"embedded:///{tmp_path}/broker.db")
    try:
        assert broker.depth(ROUTE) == 1, "the redelivered event was enqueued again"
    finally:
        broker.close()
