"""The series an operator's dashboard needs, exported where the work happens: adapter calls
(by system, operation, status), webhook requests, source polls and the watermark age.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client import REGISTRY
from pydantic import SecretStr

from adapters.rest import RestAdapter, RestSystemConfig
from adapters.webhook import WebhookEndpoint, WebhookReceiver, sign
from deploy.demo.sample_crm import SampleCrm
from deploy.demo.sample_erp import SampleErp
from middleware.adapter import WriteRequest
from middleware.broker import open_broker
from middleware.broker.base import OutgoingMessage
from middleware.config import SourceConfig
from middleware.observability import WATERMARK_AGE
from middleware.runtime.poller import SourcePoller
from middleware.store import open_store
from tests.e2e.harness import wait_until
from tests.observability.conftest import CRM_TOKEN, WEBHOOK_SECRET
from tests.observability.worker_config import closed_port


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def calls(system: str, operation: str, status: str, outcome: str) -> float:
    return value("isthmus_adapter_calls_total", system=system, operation=operation, status=status, outcome=outcome)


def account_request(number: str) -> WriteRequest:
    return WriteRequest(entity="account", record={"account_name": f"Metric {number}"}, key=f"crm:customer:{number}@1")


def erp_adapter(system: str, base_url: str) -> RestAdapter:
    write = {"mode": "create_or_update", "create": {"method": "POST", "path": "/api/accounts"}}
    write["update"] = {"method": "PUT", "path": "/api/accounts/{target_id}"}
    config = {"base_url": base_url, "timeout_s": 2, "entities": {"account": {"write": {**write, "id_path": "id"}}}}
    return RestAdapter(system, RestSystemConfig.model_validate(config))


def test_adapter_writes_are_counted_by_system_operation_status_and_timed(sample_erp: SampleErp) -> None:
    adapter = erp_adapter("erp_metrics", sample_erp.url)
    down = erp_adapter("erp_metrics_down", f"http://127.0.0.1:{closed_port()}")
    assert calls("erp_metrics", "write", "429", "transient") == 0.0  # exists from the start, for rate()
    try:
        sample_erp.fail_next(1, status=503)
        results = adapter.writer().write_batch([account_request("A1")])
        results += adapter.writer().write_batch([account_request("A1"), account_request("A2")])
        results += down.writer().write_batch([account_request("A3")])
    finally:
        adapter.close()
        down.close()
    assert [r.outcome for r in results] == ["transient", "ok", "ok", "transient"]
    assert calls("erp_metrics", "write", "503", "transient") == 1
    assert calls("erp_metrics", "write", "201", "ok") == 2
    assert calls("erp_metrics_down", "write", "connection_error", "transient") == 1
    timed = value("isthmus_adapter_call_seconds_count", system="erp_metrics", operation="write")
    assert timed == 3
    assert value("isthmus_adapter_call_seconds_sum", system="erp_metrics", operation="write") > 0


@pytest.fixture
def poller(sample_crm: SampleCrm, tmp_path: Path) -> Iterator[SourcePoller]:
    config = {"base_url": sample_crm.url, "auth": {"type": "bearer", "token": CRM_TOKEN}}
    config["entities"] = {
        "customer": {
            "read": {
                "path": "/api/customers",
                "records_path": "data",
                "id_field": "customer_no",
                "version_field": "version",
                "updated_field": "updated_at",
                "since_param": "updated_since",
                "pagination": {"type": "page", "page_param": "page", "size_param": "page_size", "start": 1},
            }
        }
    }
    adapter = RestAdapter("crm_metrics", RestSystemConfig.model_validate(config))
    broker = open_broker(f"embedded:///{tmp_path}/broker.db")
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    source = SourceConfig(
        name="crm_metrics_customers", system="crm_metrics", entity="customer", emits="customer.upserted"
    )
    yield SourcePoller(source, adapter.reader(), broker, store)
    adapter.close()
    broker.close()
    store.close()


def test_source_polls_last_success_and_reads_are_exported(poller: SourcePoller, sample_crm: SampleCrm) -> None:
    name = poller.config.name
    assert value("isthmus_polls_total", source=name, outcome="error") == 0.0  # both series exist at 0
    assert value("isthmus_poller_last_success_timestamp_seconds", source=name) == 0.0
    sample_crm.seed(customers=3, orders_per_customer=0, with_bad_records=False)
    poller.config.poll_interval_s = 0.05
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,), daemon=True)
    started = time.time()
    thread.start()
    try:
        wait_until(lambda: value("isthmus_polls_total", source=name, outcome="ok") >= 2, 10, "two good polls")
    finally:
        stop.set()
        thread.join(5)
    assert value("isthmus_poller_last_success_timestamp_seconds", source=name) >= started
    assert value("isthmus_messages_published_total", source=name, type="customer.upserted") == 3
    assert calls("crm_metrics", "read", "200", "ok") >= 2
    assert value("isthmus_poller_watermark_age_seconds", source=name) > 0


def test_watermark_age_is_computed_when_scraped_so_it_grows_while_polls_fail() -> None:
    WATERMARK_AGE.set("stuck_source", datetime.now(UTC) - timedelta(seconds=100))
    first = value("isthmus_poller_watermark_age_seconds", source="stuck_source")
    time.sleep(0.3)
    second = value("isthmus_poller_watermark_age_seconds", source="stuck_source")
    assert 99 < first < second < 110


class _Broker:
    url = "memory://"

    def __init__(self) -> None:
        self.published: list[OutgoingMessage] = []

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self.published.extend(messages)


def test_webhook_requests_are_counted_by_endpoint_and_status() -> None:
    endpoint = WebhookEndpoint(
        path="/hooks/metrics",
        system="crm",
        entity="customer",
        message_type="customer.upserted",
        id_field="customer_no",
        secret=SecretStr(WEBHOOK_SECRET),
    )
    receiver = WebhookReceiver("127.0.0.1", 0, {"metrics_hook": endpoint}, _Broker()).start()  # type: ignore[arg-type]
    before = {
        status: value("isthmus_webhook_requests_total", endpoint="metrics_hook", status=status)
        for status in ("202", "401")
    }
    body = b'[{"customer_no": "W-1"}, {"customer_no": "W-2"}]'
    signed = {"X-Isthmus-Signature": sign(WEBHOOK_SECRET, body), "Content-Type": "application/json"}
    forged = {"X-Isthmus-Signature": "sha256=00", "Content-Type": "application/json"}
    try:
        assert requests.post(receiver.url + "/hooks/metrics", data=body, headers=signed, timeout=5).status_code == 202
        assert requests.post(receiver.url + "/hooks/metrics", data=body, headers=forged, timeout=5).status_code == 401
        assert requests.post(receiver.url + "/hooks/nowhere", data=body, timeout=5).status_code == 404
    finally:
        receiver.stop()
    assert value("isthmus_webhook_requests_total", endpoint="metrics_hook", status="202") - before["202"] == 1
    assert value("isthmus_webhook_requests_total", endpoint="metrics_hook", status="401") - before["401"] == 1
    assert value("isthmus_webhook_requests_total", endpoint="unknown", status="404") >= 1
    assert value("isthmus_messages_published_total", source="metrics_hook", type="customer.upserted") == 2
