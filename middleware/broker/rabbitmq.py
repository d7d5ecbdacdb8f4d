"""The RabbitMQ broker: the Broker contract on pika's BlockingConnection and quorum queues.

Topology, for the exchange NAME (`?exchange=NAME` in the URL, default `isthmus`)::

    publish ──> NAME (topic) ──binding keys──> <queue>            (quorum)
                  │ alternate-exchange
                  └──> NAME.unrouted (fanout) ──> isthmus.unrouted (quorum)
    retry_later ──> <queue>.retry (classic, per-message TTL) ──expired, dead-lettered──> <queue>
    dead_letter ──> <queue>.dlq (quorum)

URL: `amqp[s]://USER:PASS@HOST:PORT/VHOST?exchange=NAME&prefetch=N` plus any pika URL option
(`heartbeat` defaults to 30 s, `blocked_connection_timeout` to 60 s). `prefetch` (default 200)
bounds the messages one instance holds per queue, fetched or buffered.

Every declaration is idempotent and happens in `setup_route`, or lazily the first time an
instance needs a queue or the exchange. A queue that already exists with other arguments
(say a classic queue from an older setup) is reported with what to do, not papered over.

What a caller may rely on, and the limits RabbitMQ puts on the contract:

* One instance is one AMQP connection and must be used by one thread only (pika's
  BlockingConnection is not thread-safe); the worker opens one per thread.
* `publish`, `send`, `retry_later`, `dead_letter` return only after the broker confirmed
  every message (publisher confirms, persistent messages). One confirm round trip per
  message: simple and correct; pipelining is left for when `isthmus bench` asks for it.
* A connection found closed is reopened once, at the start of the next call. Deliveries
  fetched on the old connection were requeued by RabbitMQ and come back with
  `redelivered=True`; their tags carry the channel generation, so acking or dead-lettering
  one of them later is a no-op instead of a channel error (and no duplicate is published).
* Heartbeats are only answered while the instance is inside a call: a batch that takes
  longer than about two heartbeat intervals loses the connection, and its messages are
  redelivered (the worker's idempotency keys make that harmless).
* `depth` counts ready messages and delayed retries; messages fetched but not yet acked
  are not counted (RabbitMQ reports only ready messages).
* A retry queue expires messages only from its head, so a short delay queued behind a long
  one waits for it: `retry_later` guarantees "not before `delay_s`", not "exactly then".
* `setup_route` only adds bindings: without the management API a binding removed from the
  config cannot be found to be removed; unbind it by hand (messages it still routes are
  dead-lettered by the route as an unknown type, never lost).
* `browse` and `take` use `basic.get` and hand back what they do not keep by closing their
  channel; on a quorum queue that counts as a delivery attempt (`redelivered=True` later).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import pika
import pika.exceptions
import structlog
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from middleware.broker.base import (
    DLQ_SUFFIX,
    H_ERROR,
    H_ERROR_CLASS,
    UNROUTED_QUEUE,
    Delivery,
    OutgoingMessage,
    dlq_name,
)
from middleware.errors import ConfigError, IsthmusError, Problem, TransientError

log = structlog.get_logger("isthmus.broker.rabbitmq")

DEFAULT_EXCHANGE = "isthmus"
DEFAULT_PREFETCH = 200
DEFAULT_HEARTBEAT_S = 30
DEFAULT_BLOCKED_TIMEOUT_S = 60
RETRY_SUFFIX = ".retry"

# The message type travels in a header: `send`, retries and dead letters go through the
# default exchange, whose routing key is the queue name, and replay needs the type back.
H_ROUTING_KEY = "x-isthmus-routing-key"
# RabbitMQ's own bookkeeping; copied onto a retried message it would only confuse the broker.
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
_QUORUM = {"x-queue-type": "quorum"}
_NOT_FOUND = 404
_PRECONDITION_FAILED = 406

T = TypeVar("T")


def retry_queue_name(queue: str) -> str:
    return queue + RETRY_SUFFIX


@dataclass(frozen=True)
class _Tag:
    """A delivery's handle: valid only on the consume channel of the same generation."""

    generation: int
    delivery_tag: int


def parse_rabbitmq_url(url: str) -> tuple[pika.URLParameters, str, int]:
    """(pika parameters, exchange, prefetch): our query parameters are removed first."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("exchange", "prefetch"):
            ours[key] = value
        else:
            rest.append((key, value))
    names = {key for key, _ in rest}
    if "heartbeat" not in names:
        rest.append(("heartbeat", str(DEFAULT_HEARTBEAT_S)))
    if "blocked_connection_timeout" not in names:
        rest.append(("blocked_connection_timeout", str(DEFAULT_BLOCKED_TIMEOUT_S)))
    exchange = ours.get("exchange", DEFAULT_EXCHANGE)
    if not exchange or exchange.startswith("amq."):
        raise ConfigError(
            Problem(
                f"exchange {exchange!r} in the broker URL is not usable",
                hint="use ?exchange=NAME with a name not starting with 'amq.'",
            )
        )
    try:
        prefetch = int(ours.get("prefetch", DEFAULT_PREFETCH))
    except ValueError:
        prefetch = 0
    if prefetch <= 0:
        raise ConfigError(
            Problem(
                f"prefetch {ours.get('prefetch')!r} in the broker URL must be a positive integer",
                hint="e.g. ?prefetch=200",
            )
        )
    try:
        params = pika.URLParameters(urlunsplit(parts._replace(query=urlencode(rest))))
    except ValueError as exc:  # pika names the bad parameter; the URL itself may hold a password
        hint = "see pika's URLParameters for the options"
        raise ConfigError(Problem(f"broker URL: {exc}", hint=hint)) from None
    return params, exchange, prefetch


class RabbitMqBroker:
    """The Broker contract on RabbitMQ. One instance per thread; see the module docstring."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._params, self.exchange, self.prefetch = parse_rabbitmq_url(url)
        self._params.client_properties = self._params.client_properties or {
            "connection_name": f"isthmus-{uuid.uuid4().hex[:8]}"
        }
        parts = urlsplit(url)
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        self._where = f"{parts.hostname}:{port}/{unquote(parts.path[1:] or '/')}"
        self._password = unquote(parts.password or "")
        self._connection: BlockingConnection | None = None
        self._consume: BlockingChannel | None = None  # consumers, acks, nacks
        self._publish: BlockingChannel | None = None  # confirm mode
        self._admin: BlockingChannel | None = None  # declarations; a failure here kills nothing else
        self._generation = 0
        self._consumers: dict[str, str] = {}  # queue -> consumer tag
        self._buffers: dict[str, deque[Delivery]] = {}
        self._unacked: set[int] = set()  # seen on the consume channel, not yet settled
        self._exchange_ready = False
        self._declared: set[str] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"RabbitMqBroker({self._where}, exchange={self.exchange!r})"

    @property
    def unrouted_exchange(self) -> str:
        return self.exchange + ".unrouted"

    # ----- connection and channels ----------------------------------------------------
    def _conn(self) -> BlockingConnection:
        if self._closed:
            raise IsthmusError(f"{self!r} is closed")
        if self._connection is None or not self._connection.is_open:
            self._drop_connection()
            try:
                self._connection = BlockingConnection(self._params)
            except pika.exceptions.AMQPError as exc:
                raise TransientError(
                    f"cannot connect to RabbitMQ at {self._where}: {self._describe(exc)}", system="rabbitmq"
                ) from None
            log.debug("rabbitmq_connected", where=self._where)
        return self._connection

    def _drop_connection(self) -> None:
        """Forget the connection and everything tied to it; RabbitMQ requeues what it held."""
        connection, self._connection = self._connection, None
        self._consume = self._publish = self._admin = None
        self._reset_consume_state()
        if connection is not None and connection.is_open:
            with suppress(Exception):
                connection.close()

    def _reset_consume_state(self) -> None:
        self._consumers.clear()
        self._buffers.clear()
        self._unacked.clear()

    def _consume_channel(self) -> BlockingChannel:
        if self._consume is None or not self._consume.is_open:
            self._reset_consume_state()
            channel = self._conn().channel()
            channel.basic_qos(prefetch_count=self.prefetch)
            channel.add_on_cancel_callback(self._on_cancelled)
            self._consume = channel
            self._generation += 1
        return self._consume

    def _publish_channel(self) -> BlockingChannel:
        if self._publish is None or not self._publish.is_open:
            channel = self._conn().channel()
            channel.confirm_delivery()
            self._publish = channel
        return self._publish

    def _admin_channel(self) -> BlockingChannel:
        if self._admin is None or not self._admin.is_open:
            self._admin = self._conn().channel()
        return self._admin

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        return text.replace(self._password, "***") if self._password else text

    @contextmanager
    def _connection_guard(self, action: str) -> Iterator[None]:
        """pika errors become TransientErrors: a lost connection is reopened by the next call,
        a channel RabbitMQ closed (it reports why) by the next use of that channel."""
        try:
            yield
        except pika.exceptions.AMQPConnectionError as exc:
            self._drop_connection()
            raise TransientError(
                f"RabbitMQ connection to {self._where} lost during {action}: {self._describe(exc)}", system="rabbitmq"
            ) from None
        except pika.exceptions.AMQPError as exc:
            raise TransientError(f"RabbitMQ failed {action}: {self._describe(exc)}", system="rabbitmq") from None

    def _reconnecting(self, action: str, operation: Callable[[], T]) -> T:
        """Run an operation that is safe to repeat, reconnecting once if the connection died under it."""
        with self._connection_guard(action):
            try:
                return operation()
            except pika.exceptions.AMQPConnectionError as exc:
                log.warning("rabbitmq_reconnecting", action=action, error=self._describe(exc))
                self._drop_connection()
            return operation()

    # ----- topology -------------------------------------------------------------------
    def setup_route(self, queue: str, binding_keys: Sequence[str]) -> None:
        """Declare `queue`, its DLQ and retry queue, and bind it; existing bindings stay."""

        def declare() -> None:
            self._ensure_exchange()
            self._ensure_queues(queue)
            for key in binding_keys:
                self._admin_channel().queue_bind(queue, self.exchange, routing_key=key)

        self._reconnecting(f"setup of queue {queue!r}", declare)

    def _ensure_exchange(self) -> None:
        if self._exchange_ready:
            return
        what = f"exchange {self.exchange!r}"
        with self._declaring(what, f"set ?exchange=OTHER in the broker URL, or delete {what} and restart"):
            admin = self._admin_channel()
            admin.exchange_declare(self.unrouted_exchange, "fanout", durable=True)
            admin.exchange_declare(
                self.exchange, "topic", durable=True, arguments={"alternate-exchange": self.unrouted_exchange}
            )
        self._ensure_queues(UNROUTED_QUEUE)
        self._admin_channel().queue_bind(UNROUTED_QUEUE, self.unrouted_exchange)
        self._exchange_ready = True

    def _ensure_queues(self, queue: str) -> None:
        """Declare `queue` (quorum), its DLQ (quorum) and its retry queue, once per instance.

        A DLQ is declared alone: it has no DLQ or retry queue of its own."""
        if queue in self._declared:
            return
        retry = {"x-queue-type": "classic", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}
        queues: tuple[tuple[str, dict[str, str]], ...] = ((queue, _QUORUM),)
        if not queue.endswith(DLQ_SUFFIX):
            queues += ((dlq_name(queue), _QUORUM), (retry_queue_name(queue), retry))
        for name, arguments in queues:
            hint = (
                f"delete it (rabbitmqctl delete_queue {name}) if it holds nothing you need, "
                "or use another route name or ?exchange= in the broker URL"
            )
            with self._declaring(f"queue {name!r}", hint):
                self._admin_channel().queue_declare(name, durable=True, arguments=arguments)
        self._declared.add(queue)

    @contextmanager
    def _declaring(self, what: str, hint: str) -> Iterator[None]:
        try:
            yield
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _PRECONDITION_FAILED:
                raise
            raise ConfigError(
                Problem(f"RabbitMQ {what} already exists with different settings: {exc.reply_text}", hint=hint)
            ) from None

    # ----- producing ------------------------------------------------------------------
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        with self._connection_guard("publish"):
            self._ensure_exchange()
            for message in messages:
                self._confirmed(self.exchange, message.routing_key, message, self._reset_exchange)

    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        with self._connection_guard(f"send to {queue!r}"):
            for message in messages:
                self._confirmed("", queue, message, partial(self._redeclare, queue))

    def _confirmed(
        self,
        exchange: str,
        routing_key: str,
        message: OutgoingMessage,
        on_unroutable: Callable[[], None],
        expiration: str | None = None,
    ) -> None:
        """Publish one persistent message and wait for the confirm; an unroutable one is retried
        once after `on_unroutable` declared what was missing (mandatory: never dropped silently)."""
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message.message_id,
            headers={**message.headers, H_ROUTING_KEY: message.routing_key},
            expiration=expiration,
        )
        for attempt in (1, 2):
            try:
                self._publish_channel().basic_publish(exchange, routing_key, message.body, properties, mandatory=True)
                return
            except pika.exceptions.UnroutableError:
                if attempt == 2:
                    raise TransientError(
                        f"RabbitMQ could not route message {message.message_id} to "
                        f"{routing_key!r} on exchange {exchange or '(default)'!r}",
                        system="rabbitmq",
                    ) from None
                on_unroutable()
            except pika.exceptions.NackError:
                raise TransientError(
                    f"RabbitMQ refused (nacked) message {message.message_id} for {routing_key!r}; it was not stored",
                    system="rabbitmq",
                ) from None
            except pika.exceptions.ChannelClosedByBroker as exc:  # e.g. the exchange was deleted
                self._forget_topology()
                raise TransientError(
                    f"RabbitMQ closed the publish channel: {exc.reply_text}", system="rabbitmq"
                ) from None

    def _forget_topology(self) -> None:
        """Declare again on next use: something was deleted under this instance."""
        self._exchange_ready = False
        self._declared.clear()

    def _reset_exchange(self) -> None:
        self._forget_topology()
        self._ensure_exchange()

    def _redeclare(self, queue: str) -> None:
        self._declared.discard(queue)
        self._ensure_queues(queue)

    # ----- consuming ------------------------------------------------------------------
    def fetch(self, queue: str, max_messages: int, timeout_s: float) -> list[Delivery]:
        """Waits up to `timeout_s` for the first message, then returns what is already buffered."""
        if max_messages <= 0:
            return []
        operation = partial(self._fetch, queue, max_messages, timeout_s)
        return self._reconnecting(f"fetch from {queue!r}", operation)

    def _fetch(self, queue: str, max_messages: int, timeout_s: float) -> list[Delivery]:
        channel = self._consume_channel()
        if queue not in self._consumers:
            self._ensure_queues(queue)
            callback = partial(self._on_message, queue, self._generation)
            self._consumers[queue] = channel.basic_consume(queue, callback)
        buffer = self._buffers.setdefault(queue, deque())
        connection = self._conn()
        connection.process_data_events(time_limit=0)
        deadline = time.monotonic() + max(0.0, timeout_s)
        while not buffer and queue in self._consumers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            connection.process_data_events(time_limit=remaining)
        return [buffer.popleft() for _ in range(min(max_messages, len(buffer)))]

    def _on_message(
        self, queue: str, generation: int, _channel: Any, method: Any, properties: Any, body: bytes
    ) -> None:
        if generation != self._generation:
            return
        self._unacked.add(method.delivery_tag)
        self._buffers.setdefault(queue, deque()).append(
            self._delivery(queue, method, properties, body, _Tag(generation, method.delivery_tag))
        )

    def _on_cancelled(self, method_frame: Any) -> None:
        """RabbitMQ cancelled a consumer (its queue was deleted): start a new one on next fetch."""
        tag = method_frame.method.consumer_tag
        for queue, consumer in list(self._consumers.items()):
            if consumer == tag:
                del self._consumers[queue]
                log.warning("rabbitmq_consumer_cancelled", queue=queue)

    def _delivery(self, queue: str, method: Any, properties: Any, body: bytes, tag: _Tag) -> Delivery:
        raw = dict(properties.headers or {})
        routing_key = _text(raw.pop(H_ROUTING_KEY, None)) or method.routing_key
        headers = {k: _text(v) for k, v in raw.items() if not k.startswith(_BROKER_HEADERS)}
        if queue == UNROUTED_QUEUE and method.exchange and H_ERROR_CLASS not in headers:
            headers[H_ERROR_CLASS] = "Unrouted"
            headers[H_ERROR] = (
                f"no route is bound to routing key {routing_key!r}; "
                "add a route whose `on:` matches it, then replay from this queue"
            )
        message_id = properties.message_id or headers.get("message_id") or str(uuid.uuid4())
        return Delivery(
            queue=queue,
            body=bytes(body),
            headers=headers,
            message_id=message_id,
            routing_key=routing_key,
            tag=tag,
            redelivered=bool(method.redelivered),
        )

    def _live(self, deliveries: Sequence[Delivery]) -> list[int]:
        """Delivery tags still held on the current consume channel; stale ones are dropped."""
        if self._consume is None or not self._consume.is_open:
            return []  # RabbitMQ has requeued everything that channel held
        live: list[int] = []
        for delivery in deliveries:
            tag = delivery.tag
            current = isinstance(tag, _Tag) and tag.generation == self._generation
            if current and tag.delivery_tag in self._unacked:
                live.append(tag.delivery_tag)
            else:
                log.debug("rabbitmq_stale_delivery_ignored", queue=delivery.queue, message_id=delivery.message_id)
        return sorted(set(live))

    def _settle(self, tags: list[int], *, ack: bool) -> None:
        """Ack or nack-with-requeue; one `multiple` frame when no other outstanding tag is below."""
        if not tags:
            return
        assert self._consume is not None
        wanted = set(tags)
        highest = tags[-1]
        multiple = len(tags) > 1 and all(t in wanted for t in self._unacked if t <= highest)
        settle: Callable[..., None] = (
            self._consume.basic_ack if ack else partial(self._consume.basic_nack, requeue=True)
        )
        for tag in [highest] if multiple else tags:
            settle(delivery_tag=tag, multiple=multiple)
        self._unacked -= wanted

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._connection_guard("ack"):
            self._settle(self._live(deliveries), ack=True)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Hand back at once: the queue's consumer stops first, or RabbitMQ would hand them
        straight back to this instance; it restarts on the next fetch."""
        with self._connection_guard("requeue"):
            tags = self._live(deliveries)
            if not tags:
                return
            assert self._consume is not None
            for queue in {d.queue for d in deliveries}:
                consumer = self._consumers.pop(queue, None)
                if consumer is not None:
                    self._consume.basic_cancel(consumer)
                tags.extend(d.tag.delivery_tag for d in self._buffers.pop(queue, ()))
            self._settle(sorted(set(tags)), ack=False)

    def retry_later(self, delivery: Delivery, body: bytes, headers: dict[str, str], delay_s: float) -> None:
        """Confirmed publish to `<queue>.retry` with a per-message TTL, then ack."""
        if not self._live([delivery]):
            return  # its connection is gone: RabbitMQ redelivers the original, a copy would duplicate it
        with self._connection_guard(f"retry of {delivery.message_id}"):
            self._ensure_queues(delivery.queue)
            message = OutgoingMessage(delivery.routing_key, body, dict(headers), delivery.message_id)
            expiration = str(max(1, int(delay_s * 1000)))
            self._confirmed(
                "", retry_queue_name(delivery.queue), message, partial(self._redeclare, delivery.queue), expiration
            )
            self._settle(self._live([delivery]), ack=True)

    def dead_letter(self, delivery: Delivery, headers: dict[str, str]) -> None:
        """Confirmed publish of the original body to `<queue>.dlq`, then ack."""
        if not self._live([delivery]):
            return
        with self._connection_guard(f"dead-lettering of {delivery.message_id}"):
            self._ensure_queues(delivery.queue)
            message = OutgoingMessage(
                delivery.routing_key, delivery.body, {**delivery.headers, **headers}, delivery.message_id
            )
            self._confirmed("", dlq_name(delivery.queue), message, partial(self._redeclare, delivery.queue))
            self._settle(self._live([delivery]), ack=True)

    # ----- inspecting -----------------------------------------------------------------
    def depth(self, queue: str) -> int:
        """Ready messages in `queue` plus its delayed retries; unacked in-flight ones not counted."""
        names = [queue] if queue.endswith((DLQ_SUFFIX, RETRY_SUFFIX)) else [queue, retry_queue_name(queue)]
        return self._reconnecting(f"depth of {queue!r}", lambda: sum(self._ready(name) for name in names))

    def _ready(self, queue: str) -> int:
        try:
            frame = self._admin_channel().queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _NOT_FOUND:
                raise
            return 0  # the admin channel is closed now; the next use opens a new one
        return int(frame.method.message_count)

    def browse(self, queue: str, limit: int) -> list[Delivery]:
        """Get up to `limit` messages without acking, then close the channel so all return."""

        def look() -> list[Delivery]:
            with self._side_channel() as channel:
                return [delivery for delivery, _ in self._get_all(channel, queue, limit)]

        return self._reconnecting(f"browse of {queue!r}", look)

    def take(self, queue: str, message_ids: Sequence[str]) -> list[Delivery]:
        """Get every message, ack those with the wanted ids; closing the channel returns the rest."""
        wanted = set(message_ids)
        if not wanted:
            return []
        taken: list[Delivery] = []
        with self._connection_guard(f"take from {queue!r}"), self._side_channel() as channel:
            for delivery, delivery_tag in self._get_all(channel, queue, None):
                if delivery.message_id in wanted:
                    channel.basic_ack(delivery_tag)
                    taken.append(delivery)
        return taken

    @contextmanager
    def _side_channel(self) -> Iterator[BlockingChannel]:
        channel = self._conn().channel()
        try:
            yield channel
        finally:
            if channel.is_open:
                channel.close()

    def _get_all(self, channel: BlockingChannel, queue: str, limit: int | None) -> list[tuple[Delivery, int]]:
        found: list[tuple[Delivery, int]] = []
        try:
            while limit is None or len(found) < limit:
                method, properties, body = channel.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                delivery = self._delivery(queue, method, properties, body, _Tag(0, method.delivery_tag))
                found.append((delivery, method.delivery_tag))
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _NOT_FOUND:
                raise
        return found

    def purge(self, queue: str) -> int:
        """Empty `queue` and its delayed retries; returns how many were deleted (0 if missing)."""
        names = [queue] if queue.endswith((DLQ_SUFFIX, RETRY_SUFFIX)) else [queue, retry_queue_name(queue)]
        return self._reconnecting(f"purge of {queue!r}", lambda: sum(self._purge_one(name) for name in names))

    def _purge_one(self, queue: str) -> int:
        try:
            frame = self._admin_channel().queue_purge(queue)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _NOT_FOUND:
                raise
            return 0
        return int(frame.method.message_count)

    def close(self) -> None:
        """Close the connection; every delivery this instance still holds goes back to its queue."""
        if self._closed:
            return
        self._drop_connection()
        self._closed = True


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)
