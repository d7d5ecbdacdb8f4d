"""Webhook receiver: signed events become envelopes on the broker; bad requests publish nothing."""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest
import requests
from pydantic import SecretStr

from adapters.webhook import WebhookEndpoint, WebhookReceiver, sign
from middleware.broker.base import Broker, OutgoingMessage
from middleware.message import Envelope

SECRET = "hook-secret-1"


class MemoryBroker:
    """Test double: only `publish` (what the receiver uses); can be told to fail."""

    url = "memory://"

    def __init__(self) -> None:
        self.published: list[OutgoingMessage] = []
        self.fail = False
        self.lock = threading.Lock()

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.fail:
            raise OSError("disk full")
        with self.lock:
            self.published.extend(messages)

    def envelopes(self) -> list[Envelope]:
        return [Envelope.from_bytes(m.body) for m in self.published]


ENDPOINTS = {
    "crm_customers": WebhookEndpoint(
        path="/webhooks/crm/customers",
        system="crm",
        entity="customer",
        message_type="customer.upserted",
        id_field="customer_no",
        version_field="version",
        occurred_field="updated_at",
        secret=SecretStr(SECRET),
    ),
    "crm_orders": WebhookEndpoint(
        path="/webhooks/crm/orders",
        system="crm",
        entity="order",
        message_type="sales_order.upserted",
        id_field="order.order_no",
        records_path="events",
    ),
}


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def receiver(broker: MemoryBroker) -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver("127.0.0.1", 0, ENDPOINTS, cast(Broker, broker)).start()
    yield hook
    hook.stop()


def post(
    receiver: WebhookReceiver,
    path: str,
    body: Any,
    signed: bool = True,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = dict(headers or {})
    if signed:
        headers["X-Isthmus-Signature"] = sign(SECRET, raw)
    return requests.post(receiver.url + path, data=raw, headers=headers, timeout=5)


CUSTOMER = {
    "customer_no": "C-1001",
    "company": "Acme",
    "version": 3,
    "updated_at": "2026-11-24T10:00:00+08:00",
}


def test_signed_event_is_accepted_after_it_is_published(receiver, broker) -> None:
    response = post(receiver, "/webhooks/crm/customers", CUSTOMER, headers={"X-Correlation-Id": "flow-7"})
    assert response.status_code == 202
    answer = response.json()
    assert answer["accepted"] == 1
    (message,) = broker.published
    assert answer["message_ids"] == [message.message_id]
    assert message.routing_key == "customer.upserted"
    (envelope,) = broker.envelopes()
    assert envelope.type == "customer.upserted"
    assert (envelope.source.system, envelope.source.entity) == ("crm", "customer")
    assert (envelope.source.record_id, envelope.source.version) == ("C-1001", "3")
    assert envelope.occurred_at == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    assert envelope.correlation_id == "flow-7"
    assert envelope.payload == CUSTOMER
    assert str(envelope.message_id) == message.message_id


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "garbage"])
def test_bad_or_missing_signature_is_401_and_publishes_nothing(receiver, broker, signature) -> None:
    headers = {"X-Isthmus-Signature": signature} if signature else {}
    response = post(receiver, "/webhooks/crm/customers", CUSTOMER, signed=False, headers=headers)
    assert response.status_code == 401 and "signature" in response.json()["error"]
    assert broker.published == []


def test_signature_over_a_different_body_is_rejected(receiver, broker) -> None:
    raw = json.dumps(CUSTOMER).encode()
    response = requests.post(
        receiver.url + "/webhooks/crm/customers",
        data=raw + b" ",
        headers={"X-Isthmus-Signature": sign(SECRET, raw)},
        timeout=5,
    )
    assert response.status_code == 401 and broker.published == []


def test_malformed_json_is_400_with_the_reason(receiver, broker) -> None:
    response = post(receiver, "/webhooks/crm/customers", b'{"customer_no": ')
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    assert broker.published == []


def test_event_without_its_id_is_422_and_nothing_of_the_request_is_published(receiver, broker) -> None:
    events = [CUSTOMER, {"company": "No Number", "version": 1}]
    response = post(receiver, "/webhooks/crm/customers", events)
    assert response.status_code == 422 and "customer_no" in response.json()["error"]
    assert broker.published == []


def test_a_list_of_events_becomes_one_message_each(receiver, broker) -> None:
    events = [{**CUSTOMER, "customer_no": f"C-{i}"} for i in range(5)]
    response = post(receiver, "/webhooks/crm/customers", events)
    assert response.status_code == 202 and response.json()["accepted"] == 5
    assert [e.source.record_id for e in broker.envelopes()] == [f"C-{i}" for i in range(5)]


def test_records_path_and_nested_id_field_without_secret(receiver, broker) -> None:
    body = {"events": [{"order": {"order_no": "SO-1"}}, {"order": {"order_no": "SO-2"}}]}
    response = post(receiver, "/webhooks/crm/orders", body, signed=False)
    assert response.status_code == 202
    envelopes = broker.envelopes()
    assert [e.source.record_id for e in envelopes] == ["SO-1", "SO-2"]
    assert all(e.type == "sales_order.upserted" and e.source.version is None for e in envelopes)


def test_broker_failure_is_503_with_retry_after(receiver, broker) -> None:
    broker.fail = True
    response = post(receiver, "/webhooks/crm/customers", CUSTOMER)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"


def test_unknown_path_is_404_and_healthz_answers(receiver) -> None:
    assert post(receiver, "/webhooks/nope", CUSTOMER).status_code == 404
    assert requests.get(receiver.url + "/healthz", timeout=5).status_code == 200


def test_connections_are_kept_alive(receiver, broker) -> None:
    with requests.Session() as session:
        for i in range(3):
            raw = json.dumps({**CUSTOMER, "customer_no": f"K-{i}"}).encode()
            response = session.post(
                receiver.url + "/webhooks/crm/customers",
                data=raw,
                headers={"X-Isthmus-Signature": sign(SECRET, raw)},
                timeout=5,
            )
            assert response.status_code == 202
            assert response.headers.get("Connection", "").lower() != "close"
    assert len(broker.published) == 3


def test_endpoint_config_rejects_bad_message_type() -> None:
    with pytest.raises(ValueError, match="entity>.<event>"):
        WebhookEndpoint(path="/x", system="crm", entity="c", message_type="Customer Upserted", id_field="id")


def test_events_land_durably_on_the_embedded_broker(tmp_path) -> None:
    try:
        importlib.import_module("middleware.broker.embedded")
        open_broker = importlib.import_module("middleware.broker").open_broker
    except ImportError:
        pytest.skip("embedded broker not built yet")
    broker = open_broker("embedded:///" + str(tmp_path / "b.db"))
    try:
        broker.setup_route("customers", ["customer.upserted"])
        hook = WebhookReceiver("127.0.0.1", 0, ENDPOINTS, broker).start()
        try:
            response = post(hook, "/webhooks/crm/customers", [CUSTOMER, {**CUSTOMER, "customer_no": "C-2"}])
            assert response.status_code == 202
        finally:
            hook.stop()
        deliveries = broker.fetch("customers", 10, 1.0)
        assert sorted(Envelope.from_bytes(d.body).source.record_id for d in deliveries) == ["C-1001", "C-2"]
        broker.ack(deliveries)
    finally:
        broker.close()
