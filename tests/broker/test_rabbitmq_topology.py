"""RabbitMQ specifics the contract suite cannot see: queue types and arguments, clear errors
for a queue declared differently before, and surviving a lost connection."""

from __future__ import annotations

from collections.abc import Callable

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from middleware.broker import rabbitmq_topology as topo
from middleware.broker.base import H_ERROR_CLASS, OutgoingMessage, QueueOptions, dlq_name
from middleware.broker.rabbitmq import RabbitMqBroker, parse_rabbitmq_url
from middleware.errors import ConfigError, TransientError
from tests.broker.rabbit_kit import STEPS_MS, collect, cut_socket, redeclare_fails, with_exchange


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
def test_route_queue_is_quorum_with_one_active_consumer_and_a_length_limit(
    amqp_url: str, names: tuple[str, str], raw_channel: Callable[[], BlockingChannel]
) -> None:
    exchange, queue = names
    broker = RabbitMqBroker(with_exchange(amqp_url, exchange))
    broker.setup_route(queue, ["customer.*"], QueueOptions(max_length=1000))
    broker.close()
    expected = {
        "x-queue-type": "quorum",
        "x-single-active-consumer": True,
        "x-max-length": 1000,
        "x-overflow": "reject-publish",
    }
    raw_channel().queue_declare(queue, durable=True, arguments=expected)  # equivalent: no error
    for changed in ({**expected, "x-single-active-consumer": False}, {**expected, "x-max-length": 5}):
        assert redeclare_fails(raw_channel, queue, changed)
    raw_channel().queue_declare(dlq_name(queue), durable=True, arguments={"x-queue-type": "quorum"})
    assert redeclare_fails(raw_channel, dlq_name(queue), {"x-queue-type": "classic"})


@pytest.mark.rabbitmq
def test_each_retry_step_is_a_quorum_queue_that_dead_letters_back_at_least_once(
    amqp_url: str, names: tuple[str, str], raw_channel: Callable[[], BlockingChannel]
) -> None:
    exchange, queue = names
    broker = RabbitMqBroker(with_exchange(amqp_url, exchange))
    broker.setup_route(queue, ["customer.*"], QueueOptions(retry_delays_s=(0.3, 0.9, 2.0)))
    assert broker.retry_queues(queue) == [f"{queue}.retry-300ms", f"{queue}.retry-900ms", f"{queue}.retry-2000ms"]
    broker.close()
    for step in STEPS_MS:
        expected = {
            "x-queue-type": "quorum",
            "x-message-ttl": step,
            "x-overflow": "reject-publish",
            "x-dead-letter-strategy": "at-least-once",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
        }
        name = topo.retry_queue(queue, step)
        raw_channel().queue_declare(name, durable=True, arguments=expected)  # equivalent
        assert redeclare_fails(raw_channel, name, {**expected, "x-dead-letter-routing-key": "elsewhere"})
        assert redeclare_fails(raw_channel, name, {**expected, "x-message-ttl": step + 1})


@pytest.mark.rabbitmq
def test_sharded_route_is_a_consistent_hash_exchange_over_its_shard_queues(
    amqp_url: str, names: tuple[str, str], raw_channel: Callable[[], BlockingChannel], consistent_hash: None
) -> None:
    exchange, queue = names
    broker = RabbitMqBroker(with_exchange(amqp_url, exchange))
    broker.setup_route(queue, ["customer.*"], QueueOptions(shards=4, retry_delays_s=(0.3,)))
    assert broker.shard_queues(queue) == [f"{queue}.shard-{i:02d}" for i in range(4)]
    hashing = {"hash-header": "x-isthmus-key"}
    raw_channel().exchange_declare(topo.shard_exchange(queue), "x-consistent-hash", durable=True, arguments=hashing)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):  # it is not some other kind of exchange
        raw_channel().exchange_declare(topo.shard_exchange(queue), "topic", durable=True)
    retry = topo.retry_queue(queue, 300)
    back = {"x-queue-type": "quorum", "x-message-ttl": 300, "x-overflow": "reject-publish"}
    back |= {"x-dead-letter-strategy": "at-least-once", "x-dead-letter-exchange": topo.shard_exchange(queue)}
    raw_channel().queue_declare(retry, durable=True, arguments=back)  # equivalent

    # every message of one record lands on one shard; many records spread over all shards
    keys = [f"crm:customer:C-{n}" for n in range(200)]
    broker.publish([OutgoingMessage("customer.upserted", b"{}", key=key) for key in keys for _ in range(2)])
    per_shard = [broker._ready(name) for name in broker.shard_queues(queue)]
    assert sum(per_shard) == 400 and all(count > 0 for count in per_shard), per_shard
    seen: dict[str, set[str]] = {}
    for shard in broker.shard_queues(queue):  # basic.get is refused on single-active-consumer queues
        channel = raw_channel()
        for method, properties, _ in channel.consume(shard, auto_ack=True, inactivity_timeout=0.5):
            if method is None:
                break
            seen.setdefault(properties.headers["x-isthmus-key"], set()).add(shard)
        channel.close()
    assert set(seen) == set(keys)
    assert all(len(shards) == 1 for shards in seen.values())
    broker.close()


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
    broker = RabbitMqBroker(with_exchange(amqp_url, exchange))
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
    other = RabbitMqBroker(with_exchange(amqp_url, exchange))
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
