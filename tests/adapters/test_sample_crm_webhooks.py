"""SAMPLE CRM webhooks: signed as the webhook adapter verifies, partial payloads, retried while the
receiver is down, bounded. A real HTTP receiver on loopback records what arrives."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from adapters.webhook.signatures import SignatureSettings, verify
from deploy.demo.sample_crm import SampleCrm
from deploy.demo.webhook_sender import SIGNATURE_HEADER

SECRET = "crm-webhook-secret"
SIGNED = SignatureSettings(scheme="timestamped", header=SIGNATURE_HEADER)


class Receiver:
    """Records every POST (headers and raw body) and answers 200, or `status` when set."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[tuple[Message, bytes]] = []  # headers look up case-insensitively
        self.clients: list[int] = []  # the sender's port per request: one port = one kept-alive connection
        self.status = 200
        received = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                received.clients.append(self.client_address[1])
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.requests.append((self.headers, body))
                self.send_response(received.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def crm() -> Iterator[SampleCrm]:
    service = SampleCrm(token="t").start()
    yield service
    service.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.stop()


def _wait(condition: Any, what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_customer_change_arrives_signed_as_the_webhook_adapter_verifies_it(crm: SampleCrm, receiver: Receiver) -> None:
    crm.add_webhook(receiver.url, SECRET, ["customer.changed"])
    crm.upsert_customer({"customer_no": "C-1", "company": "Acme"})
    _wait(lambda: receiver.requests, "the event")
    (headers, body) = receiver.requests[0]
    assert verify(SIGNED, SECRET, body, headers, time.time()) is None
    assert verify(SIGNED, "another secret", body, headers, time.time()) is not None
    event = json.loads(body)
    assert (event["event"], headers["x-crm-event"], headers["x-crm-event-id"]) == (
        "customer.changed",
        "customer.changed",
        event["event_id"],
    )
    assert event["data"]["customer_no"] == "C-1" and event["occurred_at"] == event["data"]["updated_at"]


def test_payloads_are_partial_a_customer_without_address_a_won_order_without_lines(
    crm: SampleCrm, receiver: Receiver
) -> None:
    crm.add_webhook(receiver.url, SECRET)
    billing = {"street": "Ring 1", "zip": "10115", "city": "Berlin", "country": "DE"}
    crm.upsert_customer({"customer_no": "C-1", "company": "Acme", "billing": billing})
    lines = [{"sku": "WIDGET-1", "desc": "Widget", "qty": "1", "price": "19.90"}]
    crm.upsert_order({"order_no": "SO-1", "customer_no": "C-1", "stage": "open", "lines": lines})
    crm.upsert_order({"order_no": "SO-1", "stage": "won"})
    _wait(lambda: len(receiver.requests) >= 2, "two events")
    time.sleep(0.2)
    customer, order = receiver.events()  # the open order sent nothing
    assert customer["event"] == "customer.changed" and "billing" not in customer["data"]
    assert customer["data"]["company"] == "Acme" and crm.customer("C-1")["billing"] == billing
    assert order["event"] == "order.won" and "lines" not in order["data"]
    assert order["data"]["stage"] == "won" and order["data"]["version"] == 2


def test_api_patch_sends_an_event_but_seed_and_status_write_backs_do_not(crm: SampleCrm, receiver: Receiver) -> None:
    crm.add_webhook(receiver.url, SECRET)
    crm.seed(customers=3, orders_per_customer=1, with_bad_records=False)
    auth = {"Authorization": "Bearer t"}
    requests.patch(f"{crm.url}/api/orders/SO-5001", json={"erp_status": "shipped"}, headers=auth, timeout=5)
    changed = requests.patch(f"{crm.url}/api/customers/C-1001", json={"phone": "+49 1"}, headers=auth, timeout=5)
    assert changed.status_code == 200
    _wait(lambda: receiver.requests, "the PATCH's event")
    time.sleep(0.2)
    assert [(e["event"], e["data"]["customer_no"]) for e in receiver.events()] == [("customer.changed", "C-1001")]


def test_deliveries_share_one_kept_alive_connection_per_receiver(crm: SampleCrm, receiver: Receiver) -> None:
    crm.add_webhook(receiver.url, SECRET, ["customer.changed"])
    for i in range(3):
        crm.upsert_customer({"customer_no": f"C-{i}", "company": "Acme"})
    _wait(lambda: len(receiver.requests) == 3, "three events")
    assert len(set(receiver.clients)) == 1, receiver.clients


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_events_are_retried_in_order_while_the_receiver_is_down(crm: SampleCrm) -> None:
    port = _free_port()
    crm.add_webhook(f"http://127.0.0.1:{port}/hooks", SECRET, ["customer.changed"])
    for i in range(3):
        crm.upsert_customer({"customer_no": f"C-{i}", "company": f"Acme {i}"})
    _wait(lambda: crm.webhook_stats()["subscriptions"][0]["failed_attempts"] >= 2, "failed attempts")
    assert crm.webhook_stats()["queued"] == 3
    late = Receiver(port)
    try:
        _wait(lambda: len(late.requests) == 3, "the three events once the receiver is up", timeout_s=15)
        assert [e["data"]["customer_no"] for e in late.events()] == ["C-0", "C-1", "C-2"]
        stats = crm.webhook_stats()
        assert stats["queued"] == 0 and stats["subscriptions"][0]["delivered"] == 3
    finally:
        late.stop()


def test_a_refused_delivery_goes_to_the_next_url_with_the_same_event_id(crm: SampleCrm) -> None:
    refusing, accepting = Receiver(), Receiver()
    refusing.status = 503
    try:
        crm.add_webhook([refusing.url, accepting.url], SECRET)
        crm.upsert_customer({"customer_no": "C-1", "company": "Acme"})
        _wait(lambda: accepting.requests, "the delivery to the second URL")
        assert refusing.requests[0][0]["x-crm-event-id"] == accepting.requests[0][0]["x-crm-event-id"]
    finally:
        refusing.stop()
        accepting.stop()


def test_subscriptions_over_http_never_answer_the_secret(crm: SampleCrm, receiver: Receiver) -> None:
    created = requests.post(
        crm.url + "/admin/webhooks", json={"url": receiver.url, "secret": SECRET, "events": ["order.won"]}, timeout=5
    )
    assert created.status_code == 201 and created.json()["events"] == ["order.won"]
    listed = requests.get(crm.url + "/admin/webhooks", timeout=5)
    assert SECRET not in created.text + listed.text and listed.json()["subscriptions"][0]["id"] == created.json()["id"]
    for bad in ({"url": "ftp://x", "secret": "s"}, {"url": receiver.url}, {"url": receiver.url, "secret": "s",
                                                                          "events": ["deal.lost"]}):
        assert requests.post(crm.url + "/admin/webhooks", json=bad, timeout=5).status_code == 400


def test_a_full_queue_drops_and_counts_instead_of_blocking_the_crm() -> None:
    crm = SampleCrm()
    crm.webhooks.stop()
    from deploy.demo.webhook_sender import WebhookSender

    crm.webhooks = WebhookSender(max_queued=2)
    crm.add_webhook(f"http://127.0.0.1:{_free_port()}/hooks", SECRET)
    try:
        started = time.monotonic()
        for i in range(20):
            crm.upsert_customer({"customer_no": f"C-{i}", "company": "Acme"})
        assert time.monotonic() - started < 1.0
        stats = crm.webhook_stats()
        assert stats["dropped"] >= 17 and stats["queued"] <= 3
    finally:
        crm.webhooks.stop()
