"""RabbitMQ specifics the contract suite cannot see: queue types and arguments, clear errors
for a queue declared differently before, and surviving a lost connection."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from middleware.broker.base import H_ERROR_CLASS, Delivery, OutgoingMessage, dlq_name
from middleware.broker.rabbitmq import RabbitMqBroker, parse_rabbitmq_url
from middleware.errors import ConfigError, TransientError


@pytest.fixture
def raw_channel(amqp_url: str) -> Iterator[Callable[[], BlockingChannel]]:
    """Fresh channels on a plain pika connection (a failed declaration closes its channel)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url.split("?", 1)[0]))
    yield connection.channel
    connection.close()


@pytest.fixture
def names(unique_name: str, raw_channel: Callable[[], BlockingChannel]) -> Iterator[tuple[str, str]]:
    """(exchange, queue) unique to the test; both, and the queue's DLQ and retry queue, deleted after."""
    exchange, queue = unique_name, unique_name + ".q"
    yield exchange, queue
    channel = raw_channel()
    for name in (queue, dlq_name(queue), queue + ".retry"):
        channel.queue_delete(name)
    channel.exchange_delete(exchange)
    channel.exchange_delete(exchange + ".unrouted")


@pytest.fixture
def broker(amqp_url: str, names: tuple[str, str]) -> Iterator[RabbitMqBroker]:
    exchange, queue = names
    broker = RabbitMqBroker(f"{amqp_url}{'&' if '?' in amqp_url else '?'}exchange={exchange}")
    broker.setup_route(queue, ["customer.*"])
    yield broker
    broker.close()


def redeclare_fails(channel: Callable[[], BlockingChannel], queue: str, arguments: dict[str, str]) -> bool:
    try:
        channel().queue_declare(queue, durable=True, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as exc:
        return exc.reply_code == 406
    return False


def collect(broker: RabbitMqBroker, queue: str, count: int, timeout_s: float = 5.0) -> list[Delivery]:
    found: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < count and time.monotonic() < deadline:
        found.extend(broker.fetch(queue, count - len(found), 0.5))
    return found


def cut_socket(broker: RabbitMqBroker) -> None:
    """Break the TCP connection without pika noticing, as a network failure or broker restart would."""
    assert broker._connection is not None
    broker._connection._impl._transport._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]


# ----- URL handling (no server needed) --------------------------------------------------------
def test_url_options_of_ours_are_removed_before_pika_sees_them() -> None:
    params, exchange, prefetch = parse_rabbitmq_url("amqp://u:p@mq:5673/v?exchange=crm&prefetch=50")
    assert (exchange, prefetch) == ("crm", 50)
    assert (params.host, params.port, params.virtual_host) == ("mq", 5673, "v")
    assert params.heartbeat == 30
    assert params.blocked_connection_timeout == 60


def test_url_heartbeat_wins_over_the_default() -> None:
    params, exchange, prefetch = parse_rabbitmq_url("amqp://u:p@mq/%2F?heartbeat=5")
    assert (params.heartbeat, exchange, prefetch) == (5, "isthmus", 200)


def test_bad_prefetch_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="prefetch"):
        RabbitMqBroker("amqp://u:p@mq/%2F?prefetch=lots")


def test_password_never_appears_in_repr() -> None:
    broker = RabbitMqBroker("amqp://isthmus:s3cret@mq:5672/%2F")
    assert "s3cret" not in repr(broker)
    assert broker.url == "amqp://isthmus:s3cret@mq:5672/%2F"
    broker.close()
    broker.close()  # idempotent, even when it never connected


# ----- topology -------------------------------------------------------------------------------
@pytest.mark.rabbitmq
def test_route_queue_and_its_dlq_are_quorum_queues(
    broker: RabbitMqBroker, names: tuple[str, str], raw_channel: Callable[[], BlockingChannel]
) -> None:
    _, queue = names
    for name in (queue, dlq_name(queue)):
        raw_channel().queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})  # equivalent
        assert redeclare_fails(raw_channel, name, {"x-queue-type": "classic"}), f"{name} is not quorum"


@pytest.mark.rabbitmq
def test_retry_queue_dead_letters_back_to_its_route_queue(
    broker: RabbitMqBroker, names: tuple[str, str], raw_channel: Callable[[], BlockingChannel]
) -> None:
    _, queue = names
    expected = {"x-queue-type": "classic", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}
    raw_channel().queue_declare(queue + ".retry", durable=True, arguments=expected)  # equivalent
    elsewhere = {**expected, "x-dead-letter-routing-key": "elsewhere"}
    assert redeclare_fails(raw_channel, queue + ".retry", elsewhere)


@pytest.mark.rabbitmq
def test_exchange_sends_unmatched_messages_to_its_alternate_exchange(
    broker: RabbitMqBroker, names: tuple[str, str], raw_channel: Callable[[], BlockingChannel]
) -> None:
    exchange, _ = names
    raw_channel().exchange_declare(
        exchange, "topic", durable=True, arguments={"alternate-exchange": exchange + ".unrouted"}
    )
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        raw_channel().exchange_declare(exchange, "topic", durable=True)


@pytest.mark.rabbitmq
def test_queue_declared_differently_before_is_reported_with_what_to_do(
    amqp_url: str, names: tuple[str, str], raw_channel: Callable[[], BlockingChannel]
) -> None:
    exchange, queue = names
    raw_channel().queue_declare(queue, durable=True)  # a classic queue from some older setup
    broker = RabbitMqBroker(f"{amqp_url}{'&' if '?' in amqp_url else '?'}exchange={exchange}")
    try:
        with pytest.raises(ConfigError) as raised:
            broker.setup_route(queue, ["customer.*"])
        assert queue in str(raised.value)
        assert "delete" in str(raised.value)
        assert broker.depth(queue) == 0  # the instance is still usable
    finally:
        broker.close()


# ----- losing the connection ------------------------------------------------------------------
@pytest.mark.rabbitmq
def test_closed_connection_is_reopened_and_the_held_message_redelivered(
    broker: RabbitMqBroker, names: tuple[str, str]
) -> None:
    _, queue = names
    first = OutgoingMessage("customer.created", b'{"n": 1}')
    broker.publish([first])
    (held,) = collect(broker, queue, 1)
    assert broker._connection is not None
    broker._connection.close()

    second = OutgoingMessage("customer.created", b'{"n": 2}')
    broker.publish([second])
    got = {d.message_id: d for d in collect(broker, queue, 2)}
    assert set(got) == {first.message_id, second.message_id}
    assert got[first.message_id].redelivered
    broker.ack(list(got.values()))
    assert broker.fetch(queue, 10, 0.3) == []


@pytest.mark.rabbitmq
def test_acking_a_delivery_from_a_dead_connection_is_ignored(
    amqp_url: str, broker: RabbitMqBroker, names: tuple[str, str]
) -> None:
    exchange, queue = names
    broker.publish([OutgoingMessage("customer.created", b'{"n": 1}')])
    (stale,) = collect(broker, queue, 1)
    assert broker._connection is not None
    broker._connection.close()
    (fresh,) = collect(broker, queue, 1)
    assert fresh.redelivered and fresh.message_id == stale.message_id

    broker.ack([stale])  # same delivery tag number, older connection: must not ack `fresh`
    broker.dead_letter(stale, {H_ERROR_CLASS: "PermanentError"})  # nor publish a duplicate
    assert broker.depth(dlq_name(queue)) == 0
    broker.close()
    other = RabbitMqBroker(f"{amqp_url}{'&' if '?' in amqp_url else '?'}exchange={exchange}")
    try:
        (again,) = collect(other, queue, 1)
        assert again.message_id == stale.message_id
    finally:
        other.close()


@pytest.mark.rabbitmq
def test_connection_lost_under_a_fetch_is_recovered_within_the_call(
    broker: RabbitMqBroker, names: tuple[str, str]
) -> None:
    _, queue = names
    broker.publish([OutgoingMessage("customer.created", b'{"n": 1}')])
    cut_socket(broker)
    (delivery,) = collect(broker, queue, 1)
    broker.ack([delivery])


@pytest.mark.rabbitmq
def test_connection_lost_under_a_publish_is_a_transient_error_then_recovers(
    broker: RabbitMqBroker, names: tuple[str, str]
) -> None:
    _, queue = names
    cut_socket(broker)
    with pytest.raises(TransientError, match="connection"):
        broker.publish([OutgoingMessage("customer.created", b'{"n": 1}')])
    broker.publish([OutgoingMessage("customer.created", b'{"n": 2}')])
    bodies = [d.body for d in collect(broker, queue, 2, timeout_s=2.0)]
    assert b'{"n": 2}' in bodies
