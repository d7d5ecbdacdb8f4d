"""What an operator's dashboard and probes read from a running worker.

A real worker on the embedded broker writes into the sample ERP; its health server must
answer liveness and readiness, and `/metrics` must carry per-route counts that match what
happened: consumed, produced, dead-lettered (with the error class), the DLQ size gauge,
the latency and lag histograms and the last-success timestamp.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from deploy.demo.sample_erp import SampleErp
from middleware.broker.base import OutgoingMessage
from middleware.config import load_config
from middleware.message import Envelope, Source
from middleware.runtime.worker import Worker
from tests.e2e.harness import wait_until, write_config

ROUTE = "customers_crm_to_erp"


@pytest.fixture
def erp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SampleErp]:
    service = SampleErp(advance_every_s=0).start()
    monkeypatch.setenv("DEMO_ERP_URL", service.url)
    monkeypatch.setenv("DEMO_CRM_URL", "http://127.0.0.1:9")  # no sources run in this test
    monkeypatch.setenv("DEMO_CRM_TOKEN", "unused-token")
    yield service
    service.stop()


def _customer(number: str, company: str) -> OutgoingMessage:
    envelope = Envelope(
        type="customer.upserted",
        source=Source(system="crm", entity="customer", record_id=number, version="1"),
        occurred_at=datetime.now(UTC),
        payload={
            "customer_no": number,
            "company": company,
            "email": f"{number.lower()}@example.com",
            "tier": "gold",
            "status": "active",
            "billing": {"street": "Ring 1", "zip": "10115", "city": "Berlin", "country": "DE"},
            "updated_at": "2026-11-24T10:00:00+08:00",
            "version": 1,
        },
    )
    return OutgoingMessage(routing_key=envelope.type, body=envelope.to_bytes(), message_id=str(envelope.message_id))


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
def test_health_probes_and_per_route_metrics(erp: SampleErp, tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, broker=f"embedded:///{tmp_path}/broker.db", routes=[ROUTE], sources=[]))
    worker = Worker(config, run_sources=True).start()
    try:
        assert worker.health is not None
        base = f"http://127.0.0.1:{worker.health.port}"
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 200

        def metric(name: str, **labels: str) -> float:
            return _sample(requests.get(f"{base}/metrics", timeout=5).text, name, route=ROUTE, **labels)

        before = {
            "consumed": metric("isthmus_messages_consumed_total"),
            "produced": metric("isthmus_messages_produced_total"),
            "dead": metric("isthmus_messages_dead_lettered_total", error_class="PermanentError"),
        }
        good = [_customer(f"M-{i}", f"Metric Customer {i}") for i in range(5)]
        bad = _customer("M-BAD", "")  # the ERP answers 400: account_name is required
        worker.broker.publish([*good, bad])
        wait_until(lambda: erp.state(with_effects=False)["accounts"] == 5, 20, "five accounts in the ERP")
        wait_until(lambda: metric("isthmus_dlq_size") == 1, 20, "the DLQ size gauge to show the refused write")

        assert metric("isthmus_messages_consumed_total") - before["consumed"] == 6
        assert metric("isthmus_messages_produced_total") - before["produced"] == 5
        assert metric("isthmus_messages_dead_lettered_total", error_class="PermanentError") - before["dead"] == 1
        assert metric("isthmus_processing_seconds_count") >= 6
        assert metric("isthmus_end_to_end_lag_seconds_count") >= 5
        assert metric("isthmus_pipeline_lag_seconds_count") >= 5
        assert metric("isthmus_last_success_timestamp_seconds") > datetime.now(UTC).timestamp() - 60
    finally:
        worker.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/healthz", timeout=2)
