"""The broker contract the worker, pollers and CLI rely on.

Patterns: **Guaranteed Delivery** (durable before `publish` returns), a **Message Router**
by type (topic bindings), **Competing Consumers** with a single active consumer per queue or
shard, and a **Dead Letter Channel** per route.

Two implementations share it: `embedded` (a durable SQLite queue, no server) and `rabbitmq`
(pika). Semantics every implementation guarantees:

* `publish` and `send` return only once the messages are durable (fsync'd / confirmed).
* A fetched delivery stays invisible to other consumers until it is acked, handed back with
  `requeue`, moved with `retry_later` / `dead_letter`, or its consumer dies (then it is
  delivered again with `redelivered=True`): at-least-once delivery, nothing lost.
* `retry_later` and `dead_letter` replace the delivery atomically where the broker allows
  (embedded: one transaction; RabbitMQ: confirmed publish, then ack).
* Routing: `publish` routes by the message's routing key (the message type) through the
  topic bindings made by `setup_route` (AMQP topic semantics: `*` one word, `#` zero or
  more). A message no binding matches goes to the `UNROUTED_QUEUE` with a reason header.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

UNROUTED_QUEUE = "isthmus.unrouted"
DLQ_SUFFIX = ".dlq"

# Header names written on dead-lettered and retried messages.
H_ERROR_CLASS = "x-isthmus-error-class"
H_ERROR = "x-isthmus-error"
H_MAPPING = "x-isthmus-mapping"
H_ATTEMPTS = "x-isthmus-attempts"
H_ROUTE = "x-isthmus-route"
H_ORIGINAL_QUEUE = "x-isthmus-original-queue"
H_DEAD_LETTERED_AT = "x-isthmus-dead-lettered-at"
# Where a re-emitted message came from (reconcile heal, replay). Not x-isthmus-*: `dlq replay`
# strips those, provenance must survive it. A route never skips such a message as duplicate_path.
H_ORIGIN = "isthmus-origin"
# The record a message is about ("system:entity:record_id"): brokers that shard a route keep
# every message with one key on one shard, so changes to one record are applied in order.
H_RECORD_KEY = "x-isthmus-key"


def dlq_name(queue: str) -> str:
    return queue + DLQ_SUFFIX


@dataclass
class OutgoingMessage:
    """A message to publish: body bytes (an envelope's JSON), routing key, headers."""

    routing_key: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    key: str = ""  # ordering key (the record); empty means the message id, i.e. no ordering

    @property
    def ordering_key(self) -> str:
        return self.key or self.headers.get(H_RECORD_KEY) or self.message_id


@dataclass(frozen=True)
class QueueOptions:
    """Per-route queue settings from the config; each broker honours what it can (see README).

    `shards` > 1 splits the route into that many queues by ordering key, each with a single
    active consumer, so one record's messages stay in order while N workers share the route.
    `retry_delays_s` are the delayed-retry steps a broker may declare up front; `max_length`
    bounds the queue so producers are refused (backpressure) instead of the broker filling up.
    """

    shards: int = 1
    retry_delays_s: tuple[float, ...] = ()
    max_length: int | None = None


@dataclass
class Delivery:
    """A message handed to a consumer; `tag` is the implementation's handle for ack."""

    queue: str
    body: bytes
    headers: dict[str, str]
    message_id: str
    routing_key: str
    tag: Any
    redelivered: bool = False
    key: str = ""  # the ordering key it was published with, where the broker keeps it


class Broker(Protocol):
    url: str

    def setup_route(self, queue: str, binding_keys: Sequence[str], options: QueueOptions | None = None) -> None:
        """Declare `queue`, its DLQ and retry machinery, and bind it to `binding_keys`; idempotent."""

    def describe_route(self, queue: str) -> list[str]:
        """What holds the route on this broker (queues, exchanges), for `isthmus broker setup`."""

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Route by routing key; durable on return; unmatched keys go to UNROUTED_QUEUE."""

    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        """Put messages straight onto `queue` (replay, tests); durable on return."""

    def fetch(self, queue: str, max_messages: int, timeout_s: float) -> list[Delivery]:
        """Up to `max_messages`, waiting at most `timeout_s` for the first one."""

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """The effect is durable: forget these deliveries."""

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Hand back unprocessed deliveries (shutdown) so another consumer gets them now."""

    def retry_later(self, delivery: Delivery, body: bytes, headers: dict[str, str], delay_s: float) -> None:
        """Replace `delivery` with `body` visible again on the same queue after `delay_s`."""

    def dead_letter(self, delivery: Delivery, headers: dict[str, str]) -> None:
        """Move `delivery` (its original body) to its queue's DLQ with reason headers."""

    def depth(self, queue: str) -> int:
        """Messages waiting in `queue` (ready ones, delayed retries included where known)."""

    def browse(self, queue: str, limit: int) -> list[Delivery]:
        """Look at up to `limit` messages without consuming them (for `dlq list/show`)."""

    def take(self, queue: str, message_ids: Sequence[str]) -> list[Delivery]:
        """Remove and return the messages with these ids (for `dlq replay`); others stay."""

    def purge(self, queue: str) -> int:
        """Delete every message in `queue`; returns how many."""

    def close(self) -> None: ...
