"""Helpers and fixtures for tests against the real RabbitMQ: unique names, raw channels,
cleanup of every object a route declares, collecting deliveries."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from middleware.broker import rabbitmq_topology as topo
from middleware.broker.base import Delivery, dlq_name
from middleware.broker.rabbitmq import RabbitMqBroker

STEPS_MS = (300, 900, 2_000)


def delete_route_objects(raw_channel: Callable[[], BlockingChannel], exchange: str, queue: str) -> None:
    probe = RabbitMqBroker("amqp://guest:guest@127.0.0.1/%2F?exchange=" + exchange)
    shard_names = topo.shard_queues(queue, 64) + topo.shard_queues(queue, 8) + topo.shard_queues(queue, 4)
    steps = {*topo.FALLBACK_RETRY_STEPS_MS, *STEPS_MS, *topo.retry_steps_ms(probe.options(queue))}
    channel = raw_channel()
    auxiliary = {queue, dlq_name(queue), topo.presence_queue(queue), *(topo.retry_queue(queue, s) for s in steps)}
    for name in auxiliary | set(shard_names):
        channel.queue_delete(name)
    for name in (exchange, exchange + ".unrouted", topo.shard_exchange(queue)):
        channel.exchange_delete(name)


def with_exchange(amqp_url: str, exchange: str) -> str:
    return f"{amqp_url}{'&' if '?' in amqp_url else '?'}exchange={exchange}"


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


