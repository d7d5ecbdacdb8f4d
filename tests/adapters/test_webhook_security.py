"""Webhook receiver: signature schemes, the replay window and event-id de-duplication.

A real receiver on loopback takes real HTTP POSTs; what was enqueued is read back from the
broker (a recording double, or the embedded broker where durability matters), and the
seen event ids live in a real SQLite state store, reopened to stand for a restart.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from pydantic import SecretStr, ValidationError

from adapters.webhook import WebhookEndpoint, WebhookReceiver
from adapters.webhook.signatures import SignatureSettings, sign_body, sign_timestamped
from middleware.broker.base import Broker, OutgoingMessage
from middleware.config import WebhookEndpointConfig
from middleware.message import Envelope
from middleware.store import open_store
from middleware.store.base import Store

SECRET = "whsec-test-0123456789"
EVENT = {"event_id": "evt_001", "type": "customer.updated", "data": {"customer_no": "C-7", "version": 4}}


class RecordingBroker:
    """Records what was published; can be told to fail or to hold publishes until released."""

    url = "memory://"

    def __init__(self) -> None:
        self.published: list[OutgoingMessage] = []
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self.gate.wait(5)
        if self.fail:
            raise OSError("broker down")
        with self.lock:
            self.published.extend(messages)

    def record_ids(self) -> list[str]:
        return [Envelope.from_bytes(m.body).source.record_id for m in self.published]


def endpoint(**settings: Any) -> WebhookEndpoint:
    base: dict[str, Any] = {
        "path": "/hooks/crm",
        "system": "crm",
        "entity": "customer",
        "message_type": "customer.upserted",
        "id_field": "data.customer_no",
        "version_field": "data.version",
        "secret": SecretStr(SECRET),
    }
    return WebhookEndpoint(**{**base, **settings})


@pytest.fixture
def broker() -> RecordingBroker:
    return RecordingBroker()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield opened
    opened.close()


Start = Callable[..., WebhookReceiver]


@pytest.fixture
def start(broker: RecordingBroker) -> Iterator[Start]:
    running: list[WebhookReceiver] = []

    def run(hook: WebhookEndpoint, store: Store | None = None, on: Any = None) -> WebhookReceiver:
        receiver = WebhookReceiver("127.0.0.1", 0, {"crm_hook": hook}, cast(Broker, on or broker), store=store)
        running.append(receiver.start())
        return receiver

    yield run
    for receiver in running:
        receiver.stop()


def post(receiver: WebhookReceiver, body: Any, headers: dict[str, str]) -> requests.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(receiver.url + "/hooks/crm", data=raw, headers=headers, timeout=5)


def timestamped(body: Any, at: float | None = None, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    moment = int(time.time() if at is None else at)
    return raw, {"Stripe-Signature": sign_timestamped(secret, raw, moment)}


STRIPE_LIKE = SignatureSettings(scheme="timestamped", header="Stripe-Signature", tolerance_s=300)


# ----- signature schemes ----------------------------------------------------------------------


def test_timestamped_signature_over_timestamp_dot_body_is_accepted(start, broker) -> None:
    receiver = start(endpoint(signature=STRIPE_LIKE))
    raw, headers = timestamped(EVENT)
    response = post(receiver, raw, headers)
    assert response.status_code == 202 and broker.record_ids() == ["C-7"]


def test_timestamped_signature_with_the_wrong_secret_is_401_and_nothing_is_enqueued(start, broker) -> None:
    receiver = start(endpoint(signature=STRIPE_LIKE))
    raw, headers = timestamped(EVENT, secret="some-other-secret")
    response = post(receiver, raw, headers)
    assert response.status_code == 401 and "Stripe-Signature" in response.json()["error"]
    assert broker.published == []


def test_signature_of_the_body_alone_does_not_pass_the_timestamped_scheme(start, broker) -> None:
    receiver = start(endpoint(signature=STRIPE_LIKE))
    raw = json.dumps(EVENT).encode()
    digest = sign_body(SECRET, raw).removeprefix("sha256=")
    response = post(receiver, raw, {"Stripe-Signature": f"t={int(time.time())},v1={digest}"})
    assert response.status_code == 401 and broker.published == []


@pytest.mark.parametrize("skew_s", [-301, 301])
def test_timestamps_outside_the_replay_window_are_refused_even_when_signed(start, broker, skew_s: int) -> None:
    receiver = start(endpoint(signature=STRIPE_LIKE))
    raw, headers = timestamped(EVENT, at=time.time() + skew_s)
    response = post(receiver, raw, headers)
    assert response.status_code == 401 and "replay window" in response.json()["error"]
    assert broker.published == []


def test_any_one_matching_v1_signature_passes_during_a_secret_rotation(start, broker) -> None:
    receiver = start(endpoint(signature=STRIPE_LIKE))
    raw = json.dumps(EVENT).encode()
    now = int(time.time())
    good = sign_timestamped(SECRET, raw, now).split(",")[1]
    old = sign_timestamped("the-old-secret", raw, now).split(",")[1]
    response = post(receiver, raw, {"Stripe-Signature": f"t={now},{old},{good}"})
    assert response.status_code == 202


@pytest.mark.parametrize("header", ["", "t=abc,v1=00", "v1=" + "0" * 64])
def test_malformed_timestamped_headers_are_401(start, broker, header: str) -> None:
    receiver = start(endpoint(signature=STRIPE_LIKE))
    response = post(receiver, EVENT, {"Stripe-Signature": header} if header else {})
    assert response.status_code == 401 and broker.published == []


def test_hmac_sha256_with_another_header_and_base64_digest(start, broker) -> None:
    settings = SignatureSettings(header="X-Shop-Hmac-Sha256", prefix="", encoding="base64")
    receiver = start(endpoint(signature=settings))
    raw = json.dumps(EVENT).encode()
    assert post(receiver, raw, {"X-Shop-Hmac-Sha256": sign_body(SECRET, raw, settings)}).status_code == 202
    assert post(receiver, raw, {"X-Shop-Hmac-Sha256": sign_body("wrong", raw, settings)}).status_code == 401
    assert len(broker.published) == 1


def test_signature_settings_need_a_secret_in_the_config() -> None:
    fields = {"path": "/h", "system": "crm", "entity": "c", "message_type": "c.u", "id_field": "id"}
    with pytest.raises(ValidationError, match="'signature' needs 'secret'"):
        WebhookEndpointConfig.model_validate({**fields, "signature": {"scheme": "timestamped"}})
    with pytest.raises(ValidationError, match="exactly one of event_id_field or event_id_header"):
        WebhookEndpointConfig.model_validate({**fields, "dedup": {}})


def test_the_worker_path_from_isthmus_yaml_keeps_signature_and_dedup_settings() -> None:
    fields = {"path": "/h", "system": "crm", "entity": "c", "message_type": "c.u", "id_field": "id", "secret": "s"}
    fields |= {"signature": {"scheme": "timestamped", "tolerance_s": 60}, "dedup": {"event_id_header": "X-Id"}}
    config = WebhookEndpointConfig.model_validate(fields)
    hook = WebhookEndpoint.model_validate(config.model_dump())  # what Worker._start_webhooks does
    assert hook.signature is not None and hook.signature.scheme == "timestamped" and hook.signature.tolerance_s == 60
    assert hook.dedup is not None and hook.dedup.event_id_header == "X-Id"


# ----- event-id de-duplication ------------------------------------------------------------------


def signed(body: Any) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, {"X-Isthmus-Signature": sign_body(SECRET, raw)}


def test_a_redelivered_event_is_answered_200_and_not_enqueued_again(start, broker, store) -> None:
    receiver = start(endpoint(dedup={"event_id_field": "event_id"}), store=store)
    first = post(receiver, *signed(EVENT))
    again = post(receiver, *signed(EVENT))
    assert first.status_code == 202 and first.json()["duplicates"] == 0
    assert again.status_code == 200 and again.json() == {"accepted": 0, "message_ids": [], "duplicates": 1}
    assert len(broker.published) == 1


def test_a_batch_with_seen_and_new_events_enqueues_only_the_new_ones(start, broker, store) -> None:
    receiver = start(endpoint(dedup={"event_id_field": "event_id"}), store=store)
    post(receiver, *signed(EVENT))
    newer = {**EVENT, "event_id": "evt_002", "data": {"customer_no": "C-8", "version": 1}}
    response = post(receiver, *signed([EVENT, newer, newer]))
    assert response.status_code == 202 and response.json()["accepted"] == 1 and response.json()["duplicates"] == 2
    assert broker.record_ids() == ["C-7", "C-8"]


def test_seen_event_ids_survive_a_restart_of_the_receiver(start, tmp_path: Path) -> None:
    from middleware.broker import open_broker

    broker = open_broker(f"embedded:///{tmp_path / 'broker.db'}")
    broker.setup_route("customers", ["customer.upserted"])
    hook = endpoint(dedup={"event_id_field": "event_id"})
    try:
        for expected in (202, 200):  # each round: a new receiver and a reopened store, as after a restart
            store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
            try:
                receiver = start(hook, store=store, on=broker)
                assert post(receiver, *signed(EVENT)).status_code == expected
                receiver.stop()
            finally:
                store.close()
        deliveries = broker.fetch("customers", 10, 0.5)
        assert len(deliveries) == 1
        broker.ack(deliveries)
    finally:
        broker.close()


def test_event_id_from_a_header_dedupes_the_whole_request(start, broker, store) -> None:
    receiver = start(endpoint(dedup={"event_id_header": "X-Event-Id"}), store=store)
    raw, headers = signed([EVENT, {**EVENT, "data": {"customer_no": "C-9"}}])
    assert post(receiver, raw, {**headers, "X-Event-Id": "delivery-1"}).status_code == 202
    assert post(receiver, raw, {**headers, "X-Event-Id": "delivery-1"}).status_code == 200
    assert post(receiver, raw, headers).status_code == 422  # no id: cannot tell a duplicate
    assert broker.record_ids() == ["C-7", "C-9"]


def test_event_without_its_event_id_is_422_and_nothing_is_enqueued(start, broker, store) -> None:
    receiver = start(endpoint(dedup={"event_id_field": "event_id"}), store=store)
    response = post(receiver, *signed([EVENT, {"data": {"customer_no": "C-1"}}]))
    assert response.status_code == 422 and "event_id" in response.json()["error"]
    assert broker.published == []


def test_a_wrongly_signed_delivery_does_not_mark_its_event_as_seen(start, broker, store) -> None:
    receiver = start(endpoint(dedup={"event_id_field": "event_id"}), store=store)
    raw = json.dumps(EVENT).encode()
    assert post(receiver, raw, {"X-Isthmus-Signature": "sha256=" + "0" * 64}).status_code == 401
    assert broker.published == []
    assert post(receiver, *signed(EVENT)).status_code == 202
    assert len(broker.published) == 1


def test_an_event_whose_publish_failed_is_accepted_when_sent_again(start, broker, store) -> None:
    receiver = start(endpoint(dedup={"event_id_field": "event_id"}), store=store)
    broker.fail = True
    assert post(receiver, *signed(EVENT)).status_code == 503
    broker.fail = False
    assert post(receiver, *signed(EVENT)).status_code == 202
    assert len(broker.published) == 1


def test_two_deliveries_of_one_event_at_the_same_moment_enqueue_it_once(start, broker, store) -> None:
    receiver = start(endpoint(dedup={"event_id_field": "event_id"}), store=store)
    broker.gate.clear()  # the first publish waits: the second delivery arrives meanwhile
    answers: list[int] = []
    senders = [threading.Thread(target=lambda: answers.append(post(receiver, *signed(EVENT)).status_code))]
    senders.append(threading.Thread(target=lambda: answers.append(post(receiver, *signed(EVENT)).status_code)))
    for sender in senders:
        sender.start()
    time.sleep(0.3)
    broker.gate.set()
    for sender in senders:
        sender.join(10)
    assert sorted(answers) == [200, 202]
    assert len(broker.published) == 1


def test_without_a_store_duplicates_are_still_caught_within_the_process(start, broker) -> None:
    receiver = start(endpoint(dedup={"event_id_field": "event_id"}))
    assert receiver.ledger.durable is False
    assert [post(receiver, *signed(EVENT)).status_code for _ in range(2)] == [202, 200]
    assert len(broker.published) == 1
