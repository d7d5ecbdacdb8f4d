"""The Broker contract, run against every implementation (embedded SQLite and RabbitMQ).

The worker, pollers and `isthmus dlq` rely only on `middleware.broker.base.Broker`; each test
pins one promise of that contract, so a config that works on one broker works on the other.
RabbitMQ cases use a unique exchange and unique queue names and delete them afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from middleware.broker.base import (
    H_ERROR,
    H_ERROR_CLASS,
    UNROUTED_QUEUE,
    Broker,
    Delivery,
    OutgoingMessage,
    dlq_name,
)


@dataclass
class BrokerKit:
    """Opens instances of one broker implementation that share one store or exchange."""

    kind: str
    factory: Callable[[], Broker]
    prefix: str
    opened: list[Broker] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)

    def open(self) -> Broker:
        broker = self.factory()
        self.opened.append(broker)
        return broker

    def queue(self, name: str) -> str:
        queue = f"{self.prefix}.{name}"
        self.queues.append(queue)
        return queue


def _open_embedded(tmp_path: Path) -> Callable[[], Broker]:
    try:
        from middleware.broker import open_broker
        from middleware.broker.embedded import EmbeddedBroker  # noqa: F401
    except ImportError:
        pytest.skip("embedded broker not written yet")
    url = f"embedded:///{tmp_path}/broker.db?visibility_timeout=2"
    return lambda: open_broker(url)


def _open_rabbitmq(amqp_url: str, exchange: str) -> Callable[[], Broker]:
    from middleware.broker.rabbitmq import RabbitMqBroker

    url = f"{amqp_url}{'&' if '?' in amqp_url else '?'}exchange={exchange}"
    return lambda: RabbitMqBroker(url)


def delete_rabbitmq_topology(amqp_url: str, queues: list[str], exchanges: list[str]) -> None:
    """Remove what a test declared: each queue with its DLQ and retry queues, and the exchanges."""
    import pika

    from middleware.broker.rabbitmq import RabbitMqBroker

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url.split("?", 1)[0]))
    try:
        channel = connection.channel()
        for queue in queues:
            for name in RabbitMqBroker(amqp_url).route_queue_names(queue):  # default options: no shards
                channel.queue_delete(name)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
    finally:
        connection.close()


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def kit(request: pytest.FixtureRequest, tmp_path: Path, unique_name: str) -> Iterator[BrokerKit]:
    amqp_url = request.getfixturevalue("amqp_url") if request.param == "rabbitmq" else ""
    factory = _open_rabbitmq(amqp_url, unique_name) if amqp_url else _open_embedded(tmp_path)
    kit = BrokerKit(request.param, factory, unique_name)
    yield kit
    for broker in kit.opened:
        with suppress(Exception):
            broker.close()
    if amqp_url:
        delete_rabbitmq_topology(amqp_url, kit.queues, [unique_name, unique_name + ".unrouted"])


@pytest.fixture
def broker(kit: BrokerKit) -> Broker:
    return kit.open()


def message(routing_key: str, n: int = 0, **headers: str) -> OutgoingMessage:
    return OutgoingMessage(routing_key=routing_key, body=b'{"n": %d}' % n, headers=dict(headers))


def collect(broker: Broker, queue: str, count: int, timeout_s: float = 5.0) -> list[Delivery]:
    """Fetch until `count` deliveries arrived (or time is up), without acking them."""
    found: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < count and time.monotonic() < deadline:
        found.extend(broker.fetch(queue, count - len(found), min(1.0, max(0.0, deadline - time.monotonic()))))
    return found


def eventually(check: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_publish_routes_by_topic_pattern(kit: BrokerKit, broker: Broker) -> None:
    customers, everything, created = kit.queue("customers"), kit.queue("everything"), kit.queue("created")
    broker.setup_route(customers, ["customer.*"])
    broker.setup_route(everything, ["#"])
    broker.setup_route(created, ["sales_order.created"])
    keys = ["customer.created", "customer.address.changed", "sales_order.created", "sales_order.updated"]
    broker.publish([message(key) for key in keys])

    got = {
        queue: collect(broker, queue, expected) for queue, expected in ((customers, 1), (everything, 4), (created, 1))
    }
    assert [d.routing_key for d in got[customers]] == ["customer.created"]
    assert sorted(d.routing_key for d in got[everything]) == sorted(keys)
    assert [d.routing_key for d in got[created]] == ["sales_order.created"]
    for queue in (customers, everything, created):
        assert broker.fetch(queue, 10, 0.2) == [], f"{queue} got a message its bindings do not match"


def test_unmatched_routing_key_lands_in_unrouted_queue_with_a_reason(kit: BrokerKit, broker: Broker) -> None:
    customers = kit.queue("customers")
    broker.setup_route(customers, ["customer.*"])
    broker.setup_route(UNROUTED_QUEUE, [])
    lost = message("invoice.paid", 7)
    broker.publish([lost])

    # UNROUTED_QUEUE is shared on a real RabbitMQ: take only this test's message.
    (unrouted,) = broker.take(UNROUTED_QUEUE, [lost.message_id])
    assert unrouted.body == lost.body
    assert unrouted.routing_key == "invoice.paid"
    assert unrouted.headers[H_ERROR_CLASS]
    assert "invoice.paid" in unrouted.headers[H_ERROR]
    assert broker.depth(customers) == 0


def test_fetch_returns_at_most_max_messages(kit: BrokerKit, broker: Broker) -> None:
    queue = kit.queue("q")
    broker.setup_route(queue, ["customer.*"])
    broker.publish([message("customer.created", n) for n in range(5)])

    first = broker.fetch(queue, 2, 5.0)
    assert 1 <= len(first) <= 2
    rest = collect(broker, queue, 5 - len(first))
    assert sorted(d.body for d in first + rest) == sorted(message("x", n).body for n in range(5))
    assert broker.fetch(queue, 10, 0.2) == []


def test_fetch_on_an_empty_queue_waits_for_the_timeout(kit: BrokerKit, broker: Broker) -> None:
    queue = kit.queue("q")
    broker.setup_route(queue, ["customer.*"])
    started = time.monotonic()
    assert broker.fetch(queue, 10, 0.5) == []
    assert 0.4 <= time.monotonic() - started < 3.0


def test_unacked_delivery_is_hidden_from_other_consumers_then_redelivered(kit: BrokerKit) -> None:
    first, second = kit.open(), kit.open()
    queue = kit.queue("q")
    first.setup_route(queue, ["customer.*"])
    sent = message("customer.created", 1)
    first.publish([sent])

    (held,) = collect(first, queue, 1)
    assert not held.redelivered
    assert second.fetch(queue, 10, 0.5) == [], "a message held by one consumer went to another"
    first.close()  # dies without acking
    (again,) = collect(second, queue, 1, timeout_s=6.0)
    assert again.message_id == sent.message_id
    assert again.body == sent.body
    assert again.redelivered


def test_ack_removes_the_message_for_good(kit: BrokerKit, broker: Broker) -> None:
    queue = kit.queue("q")
    broker.setup_route(queue, ["customer.*"])
    broker.publish([message("customer.created", 1)])
    broker.ack(collect(broker, queue, 1))
    broker.close()

    other = kit.open()
    assert other.fetch(queue, 10, 0.5) == []
    assert other.depth(queue) == 0


def test_requeue_hands_the_message_back_at_once(kit: BrokerKit) -> None:
    first, second = kit.open(), kit.open()
    queue = kit.queue("q")
    first.setup_route(queue, ["customer.*"])
    sent = message("customer.created", 1)
    first.publish([sent])
    first.requeue(collect(first, queue, 1))

    started = time.monotonic()
    (again,) = second.fetch(queue, 10, 5.0)
    assert time.monotonic() - started < 1.5, "requeued message waited for a timeout"
    assert again.message_id == sent.message_id


def test_retry_later_hides_the_message_until_the_delay_then_shows_the_new_version(
    kit: BrokerKit, broker: Broker
) -> None:
    queue = kit.queue("q")
    broker.setup_route(queue, ["customer.*"])
    sent = message("customer.created", 1, origin="crm")
    broker.publish([sent])
    (delivery,) = collect(broker, queue, 1)

    broker.retry_later(delivery, b'{"n": 1, "attempt": 1}', {"origin": "crm", "x-isthmus-attempts": "1"}, 1.5)
    retried_at = time.monotonic()
    assert broker.fetch(queue, 10, 0.3) == []
    assert broker.depth(queue) == 1, "a delayed retry is still waiting in its queue"
    (again,) = collect(broker, queue, 1, timeout_s=8.0)
    assert time.monotonic() - retried_at >= 1.4
    assert again.body == b'{"n": 1, "attempt": 1}'
    assert again.headers == {"origin": "crm", "x-isthmus-attempts": "1"}
    assert again.routing_key == "customer.created"
    assert again.message_id == sent.message_id


def test_dead_letter_moves_the_original_body_and_headers_to_the_dlq(kit: BrokerKit, broker: Broker) -> None:
    queue = kit.queue("q")
    broker.setup_route(queue, ["customer.*"])
    sent = message("customer.created", 1, origin="crm")
    broker.publish([sent])
    (delivery,) = collect(broker, queue, 1)

    broker.dead_letter(delivery, {H_ERROR_CLASS: "PermanentError", H_ERROR: "422 refused"})
    (dead,) = broker.browse(dlq_name(queue), 10)
    assert dead.body == sent.body
    assert dead.message_id == sent.message_id
    assert dead.routing_key == "customer.created"
    assert dead.headers == {"origin": "crm", H_ERROR_CLASS: "PermanentError", H_ERROR: "422 refused"}
    broker.close()
    assert kit.open().fetch(queue, 10, 0.5) == [], "the dead-lettered message stayed on its queue"


def test_depth_counts_waiting_messages(kit: BrokerKit, broker: Broker) -> None:
    queue = kit.queue("q")
    broker.setup_route(queue, ["customer.*"])
    assert broker.depth(queue) == 0
    broker.publish([message("customer.created", n) for n in range(3)])
    assert eventually(lambda: broker.depth(queue) == 3), broker.depth(queue)
    assert broker.depth(kit.queue("never_declared")) == 0


def test_browse_does_not_consume(kit: BrokerKit, broker: Broker) -> None:
    queue = kit.queue("q")
    broker.setup_route(queue, ["customer.*"])
    sent = [message("customer.created", n) for n in range(3)]
    broker.send(dlq_name(queue), sent)

    assert len(broker.browse(dlq_name(queue), 2)) == 2
    seen = broker.browse(dlq_name(queue), 10)
    assert sorted(d.message_id for d in seen) == sorted(m.message_id for m in sent)
    assert eventually(lambda: broker.depth(dlq_name(queue)) == 3)


def test_take_removes_only_the_named_messages(kit: BrokerKit, broker: Broker) -> None:
    queue = kit.queue("q")
    broker.setup_route(queue, ["customer.*"])
    sent = [message("customer.created", n) for n in range(4)]
    broker.send(dlq_name(queue), sent)

    taken = broker.take(dlq_name(queue), [sent[0].message_id, sent[2].message_id])
    assert sorted(d.body for d in taken) == sorted([sent[0].body, sent[2].body])
    assert all(d.routing_key == "customer.created" for d in taken)
    left = broker.browse(dlq_name(queue), 10)
    assert sorted(d.message_id for d in left) == sorted([sent[1].message_id, sent[3].message_id])


def test_purge_returns_how_many_it_deleted(kit: BrokerKit, broker: Broker) -> None:
    queue = kit.queue("q")
    broker.setup_route(queue, ["customer.*"])
    broker.send(dlq_name(queue), [message("customer.created", n) for n in range(3)])
    assert eventually(lambda: broker.depth(dlq_name(queue)) == 3)

    assert broker.purge(dlq_name(queue)) == 3
    assert broker.depth(dlq_name(queue)) == 0
    assert broker.purge(kit.queue("never_declared")) == 0


def test_send_bypasses_routing(kit: BrokerKit, broker: Broker) -> None:
    customers, everything = kit.queue("customers"), kit.queue("everything")
    broker.setup_route(customers, ["customer.*"])
    broker.setup_route(everything, ["#"])
    sent = message("sales_order.created", 1, replayed="yes")
    broker.send(customers, [sent])

    (delivery,) = collect(broker, customers, 1)
    assert delivery.routing_key == "sales_order.created"
    assert delivery.message_id == sent.message_id
    assert delivery.headers == {"replayed": "yes"}
    assert broker.fetch(everything, 10, 0.3) == []


def test_messages_survive_closing_and_reopening_the_broker(kit: BrokerKit, broker: Broker) -> None:
    queue = kit.queue("q")
    broker.setup_route(queue, ["customer.*"])
    sent = [message("customer.created", n, origin="crm") for n in range(3)]
    broker.publish(sent)
    broker.close()

    reopened = kit.open()
    got = collect(reopened, queue, 3)
    assert sorted((d.message_id, d.body) for d in got) == sorted((m.message_id, m.body) for m in sent)
    assert all(d.headers == {"origin": "crm"} for d in got)


def test_thousand_messages_are_each_delivered_exactly_once(kit: BrokerKit, broker: Broker) -> None:
    queue = kit.queue("q")
    broker.setup_route(queue, ["customer.*"])
    sent = [message("customer.created", n) for n in range(1000)]
    for start in range(0, len(sent), 100):
        broker.publish(sent[start : start + 100])

    received: list[str] = []
    deadline = time.monotonic() + 60
    while len(received) < len(sent) and time.monotonic() < deadline:
        batch = broker.fetch(queue, 100, 1.0)
        received.extend(d.message_id for d in batch)
        broker.ack(batch)
    assert len(received) == len(sent)
    assert set(received) == {m.message_id for m in sent}
    assert broker.fetch(queue, 100, 0.3) == []
