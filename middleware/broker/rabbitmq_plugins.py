"""What a RabbitMQ server offers beyond plain AMQP 0-9-1, found by asking it.

Sharded routes need the `x-consistent-hash` exchange type, which only exists once the
`rabbitmq_consistent_hash_exchange` plugin is enabled; a default RabbitMQ lacks it. RabbitMQ
answers the declaration of an unknown exchange type with 503 COMMAND_INVALID, a
connection-level error in AMQP 0-9-1: it closes the whole connection, every channel with it.
So `exchange_type_missing` asks on a connection of its own, and the broker turns that answer
into a `ConfigError` that says which plugin to enable instead of a lost-connection retry.
"""

from __future__ import annotations

import uuid
from contextlib import suppress

import pika
import pika.exceptions

from middleware.broker.rabbitmq_topology import CONSISTENT_HASH, CONSISTENT_HASH_PLUGIN

COMMAND_INVALID = 503
ENABLE_CONSISTENT_HASH = f"rabbitmq-plugins enable {CONSISTENT_HASH_PLUGIN}"
PROBE_EXCHANGE_PREFIX = "isthmus.probe.exchange-type."


def is_unknown_exchange_type(exc: BaseException) -> bool:
    """Whether `exc` is RabbitMQ refusing an exchange type it does not know (503 on the
    connection; a channel-level 503 is accepted too, the code is what the server means)."""
    closed = (pika.exceptions.ConnectionClosedByBroker, pika.exceptions.ChannelClosedByBroker)
    return isinstance(exc, closed) and exc.reply_code == COMMAND_INVALID


def exchange_type_missing(parameters: pika.ConnectionParameters, exchange_type: str) -> str | None:
    """None when the server knows `exchange_type`; else its answer, e.g.
    "COMMAND_INVALID - unknown exchange type 'x-consistent-hash'".

    Declares a throwaway auto-delete exchange with a unique name on a connection of its own
    (the refusal closes that connection, no other) and deletes it again. Any other failure
    (the broker is down, the account may not configure exchanges) is raised as pika raises it.
    """
    connection = pika.BlockingConnection(parameters)
    try:
        channel = connection.channel()
        name = PROBE_EXCHANGE_PREFIX + uuid.uuid4().hex[:12]
        try:
            channel.exchange_declare(name, exchange_type, auto_delete=True)
        except (pika.exceptions.ConnectionClosedByBroker, pika.exceptions.ChannelClosedByBroker) as exc:
            if not is_unknown_exchange_type(exc):
                raise
            return str(exc.reply_text)
        channel.exchange_delete(name)
        return None
    finally:
        if connection.is_open:
            with suppress(pika.exceptions.AMQPError):
                connection.close()


def consistent_hash_missing(parameters: pika.ConnectionParameters) -> str | None:
    """None when sharded routes can run on this server; else what is missing and how to enable it."""
    if exchange_type_missing(parameters, CONSISTENT_HASH) is None:
        return None
    return f"the {CONSISTENT_HASH_PLUGIN} plugin is not enabled ({ENABLE_CONSISTENT_HASH})"
