"""Route decisions on a real embedded broker and SQLite store: ack, retry, dead-letter, skip.

The writer here is a recording implementation of the adapter contract (the HTTP side is
covered by the end-to-end tests); it lets each test choose the target's answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from middleware.adapter import WriteRequest, WriteResult
from middleware.broker import open_broker
from middleware.broker.base import (
    H_ATTEMPTS,
    H_ERROR,
    H_ERROR_CLASS,
    H_MAPPING,
    H_ROUTE,
    Broker,
    OutgoingMessage,
    dlq_name,
)
from middleware.config import RetryPolicy, RouteConfig, TargetSpec
from middleware.errors import MappingError, TransientError, XrefMissingError
from middleware.message import Envelope, Source
from middleware.runtime.route import RouteProcessor, topic_matches
from middleware.store import open_store
from middleware.store.base import RecordRef, Store


class ScriptedWriter:
    """Answers each write with the next scripted outcome (default ok) and records requests."""

    def __init__(self) -> None:
        self.requests: list[WriteRequest] = []
        self.script: list[WriteResult] = []

    def write_batch(self, requests: Sequence[WriteRequest]) -> list[WriteResult]:
        results = []
        for request in requests:
            self.requests.append(request)
            results.append(self.script.pop(0) if self.script else WriteResult("ok", target_id=f"T-{request.key}"))
        return results


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = open_broker(f"embedded:///{tmp_path}/broker.db")
    b.setup_route("customers", ["customer.*"])
    yield b
    b.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/state.db")
    yield s
    s.close()


def route_config(max_attempts: int = 3) -> RouteConfig:
    return RouteConfig(
        name="customers",
        on=["customer.*"],
        mappings=["m"],
        to=TargetSpec(system="erp", entity="account"),
        retry=RetryPolicy(max_attempts=max_attempts, initial_delay_s=0.05, max_delay_s=0.1),
    )


def identity(record: dict[str, Any]) -> dict[str, Any] | None:
    if record.get("skip"):
        return None
    if record.get("bad"):
        raise MappingError("value 'abc' is not a decimal", mapping="m", field="credit_limit")
    if record.get("needs_xref"):
        raise XrefMissingError(
            "no erp id for crm:customer:C-9 yet", from_system="crm", entity="customer", record_id="C-9", to_system="erp"
        )
    return dict(record)


def envelope(record_id: str, version: str = "1", changed_at: datetime | None = None, **payload: Any) -> Envelope:
    return Envelope(
        type="customer.upserted",
        source=Source(system="crm", entity="customer", record_id=record_id, version=version),
        occurred_at=changed_at or datetime.now(UTC),
        payload={"id": record_id, **payload},
    )


def publish(broker: Broker, *envelopes: Envelope) -> None:
    broker.publish([OutgoingMessage(e.type, e.to_bytes(), message_id=str(e.message_id)) for e in envelopes])


def run_once(processor: RouteProcessor, broker: Broker) -> Any:
    return processor.process(broker.fetch("customers", 100, 1.0))


def make(broker: Broker, store: Store, writer: ScriptedWriter, max_attempts: int = 3) -> RouteProcessor:
    return RouteProcessor(route_config(max_attempts), broker, store, writer, identity, "m")


def test_effect_is_acked_and_cross_reference_linked(broker: Broker, store: Store) -> None:
    writer = ScriptedWriter()
    publish(broker, envelope("C-1"))
    outcome = run_once(make(broker, store, writer), broker)
    assert outcome.applied == 1
    assert broker.depth("customers") == 0
    linked = store.lookup(RecordRef("crm", "customer", "C-1"), "erp")
    assert linked == RecordRef("erp", "account", "T-crm:customer:C-1@1")


def test_known_target_id_is_passed_so_the_writer_updates(broker: Broker, store: Store) -> None:
    store.link(RecordRef("crm", "customer", "C-1"), RecordRef("erp", "account", "A-7"))
    writer = ScriptedWriter()
    publish(broker, envelope("C-1", version="2"))
    run_once(make(broker, store, writer), broker)
    assert writer.requests[0].target_id == "A-7"


def test_redelivered_message_is_applied_once(broker: Broker, store: Store) -> None:
    writer = ScriptedWriter()
    processor = make(broker, store, writer)
    publish(broker, envelope("C-1"))
    run_once(processor, broker)
    publish(broker, envelope("C-1"))  # same record version read again
    outcome = run_once(processor, broker)
    assert outcome.skipped == 1 and outcome.applied == 0
    assert len(writer.requests) == 1


def test_same_version_twice_in_one_batch_is_written_once(broker: Broker, store: Store) -> None:
    writer = ScriptedWriter()
    publish(broker, envelope("C-1"), envelope("C-1"), envelope("C-1", version="2"))
    outcome = run_once(make(broker, store, writer), broker)
    assert [r.key for r in writer.requests] == ["crm:customer:C-1@1", "crm:customer:C-1@2"]
    assert outcome.skipped == 1


def test_transient_failure_is_retried_with_incremented_attempt(broker: Broker, store: Store) -> None:
    writer = ScriptedWriter()
    writer.script = [WriteResult("transient", error="HTTP 503", status=503)]
    processor = make(broker, store, writer)
    publish(broker, envelope("C-1"))
    assert run_once(processor, broker).retried == 1
    assert broker.fetch("customers", 10, 0.01) == []  # delayed, not visible at once
    deliveries = broker.fetch("customers", 10, 2.0)
    assert len(deliveries) == 1
    assert Envelope.from_bytes(deliveries[0].body).attempt == 1
    assert processor.process(deliveries).applied == 1


def test_transient_failure_dead_letters_after_max_attempts(broker: Broker, store: Store) -> None:
    writer = ScriptedWriter()
    writer.script = [WriteResult("transient", error="HTTP 503", status=503) for _ in range(3)]
    processor = make(broker, store, writer, max_attempts=3)
    publish(broker, envelope("C-1"))
    for _ in range(3):
        processor.process(broker.fetch("customers", 10, 3.0))
    (dead,) = broker.browse(dlq_name("customers"), 10)
    assert dead.headers[H_ERROR_CLASS] == "TransientError"
    assert dead.headers[H_ATTEMPTS] == "3"
    assert broker.depth("customers") == 0


def test_rejected_write_goes_to_dlq_with_reason(broker: Broker, store: Store) -> None:
    writer = ScriptedWriter()
    writer.script = [WriteResult("permanent", error="HTTP 400: account_name is required", status=400)]
    original = envelope("C-1")
    publish(broker, original)
    outcome = run_once(make(broker, store, writer), broker)
    assert outcome.dead_lettered == 1
    (dead,) = broker.browse(dlq_name("customers"), 10)
    assert dead.headers[H_ERROR_CLASS] == "PermanentError"
    assert "account_name is required" in dead.headers[H_ERROR]
    assert dead.headers[H_ROUTE] == "customers"
    assert Envelope.from_bytes(dead.body) == original  # original message kept for replay


def test_mapping_failure_goes_to_dlq_with_mapping_id(broker: Broker, store: Store) -> None:
    publish(broker, envelope("C-1", bad=True))
    run_once(make(broker, store, ScriptedWriter()), broker)
    (dead,) = broker.browse(dlq_name("customers"), 10)
    assert dead.headers[H_ERROR_CLASS] == "MappingError"
    assert dead.headers[H_MAPPING] == "m"
    assert "credit_limit" in dead.headers[H_ERROR]


def test_malformed_message_goes_to_dlq(broker: Broker, store: Store) -> None:
    broker.send("customers", [OutgoingMessage("customer.upserted", b"{not json")])
    run_once(make(broker, store, ScriptedWriter()), broker)
    (dead,) = broker.browse(dlq_name("customers"), 10)
    assert dead.headers[H_ERROR_CLASS] == "MalformedMessageError"
    assert dead.body == b"{not json"


def test_message_type_the_route_does_not_handle_goes_to_dlq(broker: Broker, store: Store) -> None:
    other = Envelope(
        type="invoice.posted",
        source=Source(system="erp", entity="invoice", record_id="I-1"),
        occurred_at=datetime.now(UTC),
    )
    broker.send("customers", [OutgoingMessage(other.type, other.to_bytes())])
    run_once(make(broker, store, ScriptedWriter()), broker)
    (dead,) = broker.browse(dlq_name("customers"), 10)
    assert dead.headers[H_ERROR_CLASS] == "UnknownMessageTypeError"
    assert "invoice.posted" in dead.headers[H_ERROR]


def test_missing_cross_reference_waits_and_retries(broker: Broker, store: Store) -> None:
    publish(broker, envelope("C-9", needs_xref=True))
    outcome = run_once(make(broker, store, ScriptedWriter()), broker)
    assert outcome.retried == 1 and outcome.dead_lettered == 0


def test_filtered_record_is_acked_without_effect(broker: Broker, store: Store) -> None:
    writer = ScriptedWriter()
    publish(broker, envelope("C-1", skip=True))
    outcome = run_once(make(broker, store, writer), broker)
    assert outcome.skipped == 1 and writer.requests == []
    assert broker.depth("customers") == 0


def test_adapter_exception_is_retried_not_lost(broker: Broker, store: Store) -> None:
    class Exploding(ScriptedWriter):
        def write_batch(self, requests: Sequence[WriteRequest]) -> list[WriteResult]:
            raise RuntimeError("adapter bug")

    publish(broker, envelope("C-1"))
    outcome = run_once(make(broker, store, Exploding()), broker)
    assert outcome.retried == 1


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("customer.*", "customer.upserted", True),
        ("customer.*", "customer.a.b", False),
        ("#", "anything.at.all", True),
        ("customer.#", "customer", True),
        ("*.changed", "order_status.changed", True),
        ("order.*", "customer.upserted", False),
    ],
)
def test_topic_patterns_match_like_amqp(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


# ----- stale versions ---------------------------------------------------------------------------
def test_an_older_change_arriving_after_a_newer_one_is_skipped_not_written(broker: Broker, store: Store) -> None:
    """A late, older version (after a retry or a worker failover) must not move the record back."""
    writer = ScriptedWriter()
    processor = make(broker, store, writer)
    now = datetime.now(UTC)
    publish(broker, envelope("C-1", version="2", changed_at=now, name="new"))
    run_once(processor, broker)
    publish(broker, envelope("C-1", version="1", changed_at=now - timedelta(seconds=5), name="old"))
    outcome = run_once(processor, broker)
    assert (outcome.applied, outcome.skipped) == (0, 1)
    assert [r.record["name"] for r in writer.requests] == ["new"]
    assert broker.depth("customers") == 0, "the stale message is acked, not retried"
    assert store.latest_versions("customers", ["crm:customer:C-1"]) == {"crm:customer:C-1": now.timestamp()}


def test_within_one_batch_an_older_change_behind_a_newer_one_is_skipped(broker: Broker, store: Store) -> None:
    writer = ScriptedWriter()
    now = datetime.now(UTC)
    publish(
        broker,
        envelope("C-1", version="3", changed_at=now, name="v3"),
        envelope("C-1", version="2", changed_at=now - timedelta(seconds=1), name="v2"),
        envelope("C-2", version="1", changed_at=now - timedelta(seconds=9), name="other record"),
    )
    outcome = run_once(make(broker, store, writer), broker)
    assert (outcome.applied, outcome.skipped) == (2, 1)
    assert [r.record["name"] for r in writer.requests] == ["v3", "other record"]


def test_newer_changes_in_order_are_all_written(broker: Broker, store: Store) -> None:
    writer = ScriptedWriter()
    processor = make(broker, store, writer)
    start = datetime.now(UTC)
    for n in range(3):
        publish(broker, envelope("C-1", version=str(n), changed_at=start + timedelta(seconds=n), name=f"v{n}"))
        run_once(processor, broker)
    assert [r.record["name"] for r in writer.requests] == ["v0", "v1", "v2"]


def test_stale_check_can_be_turned_off_for_event_routes(broker: Broker, store: Store) -> None:
    writer = ScriptedWriter()
    config = route_config().model_copy(update={"skip_stale": False})
    processor = RouteProcessor(config, broker, store, writer, identity, "m")
    now = datetime.now(UTC)
    publish(broker, envelope("C-1", version="2", changed_at=now, name="new"))
    run_once(processor, broker)
    publish(broker, envelope("C-1", version="1", changed_at=now - timedelta(seconds=5), name="old"))
    run_once(processor, broker)
    assert [r.record["name"] for r in writer.requests] == ["new", "old"]


# ----- a broker failure while moving one message ------------------------------------------------
def test_a_failed_dead_letter_does_not_undo_the_batchs_recorded_effects(
    broker: Broker, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker drops while a rejected write is being dead-lettered: the writes that landed
    are recorded and acked already, so their redelivery is skipped, not written again."""
    writer = ScriptedWriter()
    writer.script = [WriteResult("ok", target_id="A-1"), WriteResult("permanent", error="422", status=422)]
    publish(broker, envelope("C-1"), envelope("C-2"))

    def connection_lost(*_args: object) -> None:
        raise TransientError("RabbitMQ connection lost during dead-lettering")

    monkeypatch.setattr(broker, "dead_letter", connection_lost)
    with pytest.raises(TransientError):
        run_once(make(broker, store, writer), broker)
    assert store.applied("customers", ["crm:customer:C-1@1"]) == {"crm:customer:C-1@1"}
    assert broker.depth("customers") == 1, "C-1 was acked; only C-2, never moved, is left to come back"
