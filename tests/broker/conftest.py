"""Fixtures for the RabbitMQ tests of this folder (the contract suite defines its own `broker`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from middleware.broker.rabbitmq import RabbitMqBroker
from tests.broker.rabbit_kit import delete_route_objects, with_exchange


@pytest.fixture
def raw_channel(amqp_url: str) -> Iterator[Callable[[], BlockingChannel]]:
    """Fresh channels on a plain pika connection (a failed declaration closes its channel)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url.split("?", 1)[0]))
    yield connection.channel
    connection.close()


@pytest.fixture
def names(unique_name: str, raw_channel: Callable[[], BlockingChannel]) -> Iterator[tuple[str, str]]:
    """(exchange, queue) unique to the test; every queue and exchange made for them deleted after."""
    exchange, queue = unique_name, unique_name + ".q"
    yield exchange, queue
    delete_route_objects(raw_channel, exchange, queue)


@pytest.fixture
def broker(amqp_url: str, names: tuple[str, str]) -> Iterator[RabbitMqBroker]:
    exchange, queue = names
    broker = RabbitMqBroker(with_exchange(amqp_url, exchange))
    broker.setup_route(queue, ["customer.*"])
    yield broker
    broker.close()
