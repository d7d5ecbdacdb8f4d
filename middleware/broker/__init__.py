"""Brokers: `open_broker(url)` picks the implementation by URL scheme.

`embedded://PATH` → EmbeddedBroker (SQLite, no server; the default);
`amqp://` / `amqps://` → RabbitMqBroker (pika). Implementations import lazily so a machine
without one library can still use the other.
"""

from __future__ import annotations

from pathlib import Path

from middleware.broker.base import (
    DLQ_SUFFIX,
    UNROUTED_QUEUE,
    Broker,
    Delivery,
    OutgoingMessage,
    dlq_name,
)

__all__ = ["DLQ_SUFFIX", "UNROUTED_QUEUE", "Broker", "Delivery", "OutgoingMessage", "dlq_name", "open_broker"]


def open_broker(url: str, base_dir: str | Path | None = None) -> Broker:
    """The broker for `url`; relative embedded paths resolve against `base_dir` (the config's folder)."""
    if url.startswith("embedded://"):
        from middleware.broker.embedded import EmbeddedBroker

        return EmbeddedBroker.from_url(url, base_dir)
    if url.startswith(("amqp://", "amqps://")):
        from middleware.broker.rabbitmq import RabbitMqBroker

        return RabbitMqBroker(url)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ValueError(f"unknown broker URL scheme {scheme!r}: use embedded://PATH or amqp://USER:PASS@HOST:PORT/VHOST")
