"""The RabbitMQ broker: the Broker contract on pika's BlockingConnection and quorum queues.

Topology (names and arguments in `rabbitmq_topology`), for the exchange NAME (`?exchange=NAME`
in the URL, default `isthmus`) and a route R::

    publish ──> NAME (topic) ──binding keys──> R   or   R.shards ──hash of x-isthmus-key──> R.shard-NN
                  │ alternate-exchange
                  └──> NAME.unrouted (fanout) ──> isthmus.unrouted (quorum)
    retry_later ──> R.retry-<ms>ms (quorum, TTL, one per delay step) ──expired, at-least-once──> R
    dead_letter ──> R.dlq (quorum, reason in headers)

URL: `amqp[s]://USER:PASS@HOST:PORT/VHOST?exchange=NAME&prefetch=N` plus any pika URL option
(`heartbeat` defaults to 30 s, `blocked_connection_timeout` to 60 s). `prefetch` (default 200)
bounds the unacked messages per consumer (one consumer per shard).

Declarations are idempotent: `setup_route` (the worker at start, `isthmus broker setup`)
declares a route with its `QueueOptions`; other instances in the same process learn them
from it, and a queue used without setup gets the defaults. A queue that exists with other
arguments is reported with what to do (a ConfigError), not papered over.

What a caller may rely on, and the limits RabbitMQ puts on the contract:

* One instance is one AMQP connection and must be used by one thread only (pika's
  BlockingConnection is not thread-safe); the worker opens one per thread.
* `publish`, `send`, `retry_later`, `dead_letter` return only after the broker confirmed
  every message (persistent, mandatory). Confirms are pipelined (`rabbitmq_publisher`): up
  to 1,000 in flight, one wait per batch. A nack (a full queue refusing with
  `reject-publish`) raises `BackpressureError`; a message nothing can route raises.
* Ordering: each route queue has a single active consumer; with `shards: N` the route is N
  queues behind a consistent-hash exchange keyed on the record (`x-isthmus-key`), so one
  record's messages go to one shard and are applied in publish order by one worker while N
  workers share the route. Idle standby consumers take over when the active one dies. A
  worker active on more than its share of busy shards (shards / workers, counted from the
  queues' consumer counts) hands the extra ones on, between batches. A retried message
  waits in its retry queue while later messages for the same record go ahead; the route's
  stale-version check decides what that means for the record (see route.py).
* A connection found closed is reopened at the start of the next call. Deliveries fetched on
  the old connection were requeued by RabbitMQ and come back with `redelivered=True`; their
  tags carry the channel generation, so acking or dead-lettering one of them later is a
  no-op instead of a channel error (and no duplicate is published).
* Heartbeats are only answered while the instance is inside a call: a batch that takes
  longer than about two heartbeat intervals loses the connection, and its messages are
  redelivered (the worker's idempotency keys make that harmless).
* `depth` counts ready messages and delayed retries; messages fetched but not yet acked
  are not counted (RabbitMQ reports only ready messages without the management API).
* Retry delays are rounded to the route's declared steps (each step is its own queue, so
  a short delay never waits behind a long one); jitter is not applied.
* `setup_route` only adds bindings: without the management API a binding removed from the
  config cannot be found to be removed; unbind it by hand (messages it still routes are
  dead-lettered by the route as an unknown type, never lost).
* `browse` and `take` use `basic.get` and hand back what they do not keep by closing their
  channel; on a quorum queue that counts as a delivery attempt (`redelivered=True` later).
"""

from __future__ import annotations

import math
import random
import threading
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

from middleware.broker import rabbitmq_topology as topo
from middleware.broker.base import (
    H_ERROR,
    H_ERROR_CLASS,
    H_RECORD_KEY,
    UNROUTED_QUEUE,
    Delivery,
    OutgoingMessage,
    QueueOptions,
    dlq_name,
)
from middleware.broker.rabbitmq_plugins import ENABLE_CONSISTENT_HASH, is_unknown_exchange_type
from middleware.broker.rabbitmq_publisher import ConfirmingPublisher, Publication
from middleware.errors import ConfigError, IsthmusError, Problem, TransientError

log = structlog.get_logger("isthmus.broker.rabbitmq")

DEFAULT_EXCHANGE = "isthmus"
DEFAULT_PREFETCH = 200
DEFAULT_HEARTBEAT_S = 30
DEFAULT_BLOCKED_TIMEOUT_S = 60
REBALANCE_INTERVAL_S = 5.0

# The message type travels in a header: `send`, retries and dead letters go through the
# default exchange, whose routing key is the queue name, and replay needs the type back.
H_ROUTING_KEY = "x-isthmus-routing-key"
# RabbitMQ's own bookkeeping; copied onto a retried message it would only confuse the broker.
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
_NOT_FOUND = 404
_PRECONDITION_FAILED = 406

T = TypeVar("T")


class BackpressureError(TransientError):
    """A full queue refused messages (`x-overflow: reject-publish`): publish them again later."""


@dataclass(frozen=True)
class _Tag:
    """A delivery's handle: valid only on the consume channel of the same generation."""

    generation: int
    delivery_tag: int


@dataclass(frozen=True)
class _RouteSetup:
    binding_keys: tuple[str, ...]
    options: QueueOptions


# What `setup_route` declared, per (server, exchange, queue): every instance in this process
# (one per worker thread) must agree on a route's shards and retry steps.
_KNOWN_ROUTES: dict[tuple[str, str, str], _RouteSetup] = {}
_KNOWN_LOCK = threading.Lock()


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
        self._publisher: ConfirmingPublisher | None = None  # pipelined confirms
        self._admin: BlockingChannel | None = None  # declarations; a failure here kills nothing else
        self._generation = 0
        self._consumers: dict[str, str] = {}  # shard queue -> consumer tag
        self._buffers: dict[str, deque[Delivery]] = {}  # route queue -> fetched, not yet handed out
        self._unacked: dict[int, str] = {}  # delivery tag on the consume channel -> shard queue
        self._handed_out: set[int] = set()  # unacked tags a `fetch` returned (the rest are buffered)
        self._last_delivery: dict[str, float] = {}  # shard queue -> monotonic time
        self._next_rebalance: dict[str, float] = {}
        self.rebalance_interval_s = REBALANCE_INTERVAL_S
        self._exchange_ready = False
        self._declared: set[str] = set()
        self._sharded_by_probe: dict[str, bool] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"RabbitMqBroker({self._where}, exchange={self.exchange!r})"

    @property
    def unrouted_exchange(self) -> str:
        return self.exchange + ".unrouted"

    # ----- what a route looks like ------------------------------------------------------
    def _known(self, queue: str) -> _RouteSetup | None:
        return _KNOWN_ROUTES.get((self._where, self.exchange, queue))

    def options(self, queue: str) -> QueueOptions:
        known = self._known(queue)
        return known.options if known else QueueOptions()

    def shard_queues(self, queue: str) -> list[str]:
        """The queues that hold `queue`'s messages (itself, or its shards)."""
        return topo.shard_queues(queue, self.options(queue).shards)

    def retry_queues(self, queue: str) -> list[str]:
        return [topo.retry_queue(queue, step) for step in topo.retry_steps_ms(self.options(queue))]

    def _holding_queues(self, queue: str) -> list[str]:
        """Every queue whose messages count as `queue`'s: shards and delayed retries."""
        if topo.is_auxiliary(queue) or queue == UNROUTED_QUEUE:
            return [queue]
        return [*self.shard_queues(queue), *self.retry_queues(queue)]

    def route_queue_names(self, queue: str) -> list[str]:
        """Every queue this broker declares for the route `queue` (for tooling and test cleanup)."""
        names = [*self.shard_queues(queue), *self.retry_queues(queue), dlq_name(queue)]
        if self.options(queue).shards > 1:
            names.append(topo.presence_queue(queue))
        return names

    def describe_route(self, queue: str) -> list[str]:
        options, known = self.options(queue), self._known(queue)
        keys = ", ".join(known.binding_keys) if known and known.binding_keys else "nothing"
        limit = f", max {options.max_length} then reject-publish" if options.max_length else ""
        lines: list[str] = []
        if options.shards > 1:
            hashing = f"x-consistent-hash on {H_RECORD_KEY}"
            lines.append(f"exchange {topo.shard_exchange(queue)} ({hashing}; bound to {keys})")
            lines += [f"queue {name} (quorum, single active consumer{limit})" for name in self.shard_queues(queue)]
            lines.append(f"queue {topo.presence_queue(queue)} (counts live workers)")
        else:
            lines.append(f"queue {queue} (quorum, single active consumer{limit}; bound to {keys})")
        lines += [f"queue {name} (quorum, delayed retry, dead-letters back)" for name in self.retry_queues(queue)]
        lines.append(f"queue {dlq_name(queue)} (quorum, dead letters with their reason)")
        return lines

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
        self._consume = self._admin = None
        self._publisher = None
        self._reset_consume_state()
        if connection is not None and connection.is_open:
            with suppress(Exception):
                connection.close()

    def _reset_consume_state(self) -> None:
        self._consumers.clear()
        self._buffers.clear()
        self._unacked.clear()
        self._handed_out.clear()
        self._last_delivery.clear()

    def _consume_channel(self) -> BlockingChannel:
        if self._consume is None or not self._consume.is_open:
            self._reset_consume_state()
            channel = self._conn().channel()
            channel.basic_qos(prefetch_count=self.prefetch)
            channel.add_on_cancel_callback(self._on_cancelled)
            self._consume = channel
            self._generation += 1
        return self._consume

    def _publish_channel(self) -> ConfirmingPublisher:
        if self._publisher is None or not self._publisher.is_open:
            self._publisher = ConfirmingPublisher(self._conn())
        return self._publisher

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
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.ConnectionWrongStateError) as exc:
                log.warning("rabbitmq_reconnecting", action=action, error=self._describe(exc))
                self._drop_connection()
            return operation()

    # ----- topology -------------------------------------------------------------------
    def setup_route(self, queue: str, binding_keys: Sequence[str], options: QueueOptions | None = None) -> None:
        """Declare the route's queues (shards, retry steps, DLQ) and bind it; existing bindings stay."""
        options = options or QueueOptions()
        with _KNOWN_LOCK:
            known = self._known(queue)
            keys = tuple(dict.fromkeys([*(known.binding_keys if known else ()), *binding_keys]))
            _KNOWN_ROUTES[(self._where, self.exchange, queue)] = _RouteSetup(keys, options)
        self._declared.discard(queue)

        def declare() -> None:
            self._ensure_exchange()
            self._ensure_queues(queue)
            self._bind(queue, binding_keys)

        self._reconnecting(f"setup of queue {queue!r}", declare)

    def _bind(self, queue: str, binding_keys: Sequence[str]) -> None:
        admin = self._admin_channel()
        sharded = self.options(queue).shards > 1
        for key in binding_keys:
            if sharded:
                admin.exchange_bind(topo.shard_exchange(queue), self.exchange, routing_key=key)
            else:
                admin.queue_bind(queue, self.exchange, routing_key=key)

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
        """Declare a route's queues once per instance: its shard queues (and their consistent-hash
        exchange), its retry steps and its DLQ. A DLQ, retry or unrouted queue is declared alone."""
        if queue in self._declared:
            return
        if self._known(queue) is None and not topo.is_auxiliary(queue) and self._exists_elsewhere(queue):
            self._declared.add(queue)  # set up by another process with options unknown here: leave it be
            return
        options = self.options(queue)
        declarations: list[tuple[str, dict[str, Any]]]
        if topo.is_auxiliary(queue) or queue == UNROUTED_QUEUE:
            declarations = [(queue, topo.dlq_arguments())]
        else:
            if options.shards > 1:
                self._declare_shard_exchange(queue)
            route_arguments = topo.route_queue_arguments(options)
            declarations = [(name, route_arguments) for name in topo.shard_queues(queue, options.shards)]
            declarations.append((dlq_name(queue), topo.dlq_arguments()))
            declarations.extend(
                (topo.retry_queue(queue, step), topo.retry_queue_arguments(queue, options, step))
                for step in topo.retry_steps_ms(options)
            )
        for name, arguments in declarations:
            hint = (
                f"delete it (rabbitmqctl delete_queue {name}) if it holds nothing you need, "
                "or use another route name or ?exchange= in the broker URL"
            )
            with self._declaring(f"queue {name!r}", hint):
                self._admin_channel().queue_declare(name, durable=True, arguments=arguments)
        if options.shards > 1:
            for name in topo.shard_queues(queue, options.shards):
                self._admin_channel().queue_bind(name, topo.shard_exchange(queue), routing_key="1")
            presence = topo.presence_queue(queue)
            with self._declaring(f"queue {presence!r}", f"delete it (rabbitmqctl delete_queue {presence})"):
                self._admin_channel().queue_declare(presence, durable=True, arguments=topo.presence_queue_arguments())
        self._declared.add(queue)

    def _exists_elsewhere(self, queue: str) -> bool:
        if queue == UNROUTED_QUEUE:
            return False
        if self._is_sharded(queue):
            return True
        try:
            self._admin_channel().queue_declare(queue, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _NOT_FOUND:
                raise
            return False

    def _declare_shard_exchange(self, queue: str) -> None:
        name = topo.shard_exchange(queue)
        try:
            with self._declaring(f"exchange {name!r}", f"delete it (rabbitmqctl delete_exchange {name}) and restart"):
                self._admin_channel().exchange_declare(
                    name, topo.CONSISTENT_HASH, durable=True, arguments=topo.shard_exchange_arguments()
                )
        except (pika.exceptions.ChannelClosedByBroker, pika.exceptions.ConnectionClosedByBroker) as exc:
            # RabbitMQ refuses an unknown exchange type by closing the whole connection (503)
            if not is_unknown_exchange_type(exc):
                raise
            self._drop_connection()
            raise ConfigError(
                Problem(
                    f"route {queue!r} has shards > 1, which needs RabbitMQ's consistent-hash exchange "
                    f"(the {topo.CONSISTENT_HASH_PLUGIN} plugin): {exc.reply_text}",
                    hint=f"run `{ENABLE_CONSISTENT_HASH}` on the broker, or set shards: 1",
                )
            ) from None

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

    def _forget_topology(self) -> None:
        """Declare again on next use: something was deleted under this instance."""
        self._exchange_ready = False
        self._declared.clear()
        self._sharded_by_probe.clear()

    def _redeclare_everything(self) -> None:
        self._forget_topology()
        self._ensure_exchange()
        with _KNOWN_LOCK:
            routes = [(q, r) for (w, x, q), r in _KNOWN_ROUTES.items() if (w, x) == (self._where, self.exchange)]
        for queue, setup in routes:
            self._ensure_queues(queue)
            self._bind(queue, setup.binding_keys)

    # ----- producing ------------------------------------------------------------------
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        with self._connection_guard("publish"):
            self._ensure_exchange()
            targets = [(self.exchange, m.routing_key) for m in messages]
            self._publish_confirmed(targets, messages, self._redeclare_everything)

    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        """Straight onto `queue` (replay): through its shard exchange when it is sharded, so a
        replayed message lands on its record's shard."""
        if not messages:
            return
        with self._connection_guard(f"send to {queue!r}"):
            self._ensure_queues(queue)
            target = (topo.shard_exchange(queue), "") if self._is_sharded(queue) else ("", queue)
            self._publish_confirmed([target] * len(messages), messages, partial(self._redeclare, queue))

    def _is_sharded(self, queue: str) -> bool:
        if topo.is_auxiliary(queue) or queue == UNROUTED_QUEUE:
            return False
        if self._known(queue) is not None:
            return self.options(queue).shards > 1
        if queue not in self._sharded_by_probe:  # set up by another process: look for its exchange
            try:
                self._admin_channel().exchange_declare(topo.shard_exchange(queue), passive=True)
                self._sharded_by_probe[queue] = True
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != _NOT_FOUND:
                    raise
                self._sharded_by_probe[queue] = False
        return self._sharded_by_probe[queue]

    def _publish_confirmed(
        self,
        targets: Sequence[tuple[str, str]],
        messages: Sequence[OutgoingMessage],
        on_unroutable: Callable[[], None],
    ) -> None:
        """Publish persistent, mandatory messages with pipelined confirms. Unroutable ones are
        published once more after `on_unroutable` declared what was missing, never dropped."""
        publications = [
            Publication(exchange, routing_key, message.body, self._properties(message))
            for (exchange, routing_key), message in zip(targets, messages, strict=True)
        ]
        for attempt in (1, 2):
            try:
                report = self._publish_channel().publish_all(publications)
            except pika.exceptions.ChannelClosedByBroker as exc:  # e.g. the exchange was deleted
                self._forget_topology()
                raise TransientError(
                    f"RabbitMQ closed the publish channel: {exc.reply_text}", system="rabbitmq"
                ) from None
            if report.nacked:
                raise BackpressureError(
                    f"RabbitMQ refused {len(report.nacked)} of {len(publications)} messages "
                    f"(first {messages[report.nacked[0]].message_id} for {targets[report.nacked[0]][1]!r}): "
                    "the queue is full (max_length) or the broker is out of resources; "
                    "publish them again later",
                    system="rabbitmq",
                )
            if not report.returned:
                return
            first = report.returned[0]
            if attempt == 2:
                exchange, routing_key = targets[first]
                raise TransientError(
                    f"RabbitMQ could not route {len(report.returned)} message(s), e.g. "
                    f"{messages[first].message_id} to {routing_key!r} on exchange {exchange or '(default)'!r}",
                    system="rabbitmq",
                )
            log.warning("rabbitmq_unroutable_redeclaring", count=len(report.returned))
            on_unroutable()
            publications = [publications[i] for i in report.returned]
            targets = [targets[i] for i in report.returned]
            messages = [messages[i] for i in report.returned]

    @staticmethod
    def _properties(message: OutgoingMessage, expiration: str | None = None) -> pika.BasicProperties:
        return pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message.message_id,
            headers={**message.headers, H_ROUTING_KEY: message.routing_key, H_RECORD_KEY: message.ordering_key},
            expiration=expiration,
        )

    def _redeclare(self, queue: str) -> None:
        self._declared.discard(queue)
        self._sharded_by_probe.pop(queue, None)
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
        shards = self.shard_queues(queue)
        missing = [shard for shard in shards if shard not in self._consumers]
        if missing:
            self._ensure_queues(queue)
            random.shuffle(missing)  # workers started together then split the shards between them
            for shard in missing:
                self._subscribe(channel, queue, shard)
            presence = topo.presence_queue(queue)
            if len(shards) > 1 and presence not in self._consumers:
                self._consumers[presence] = channel.basic_consume(presence, _ignore_delivery)
        elif len(shards) > 1:
            self._rebalance(channel, queue, shards)
        buffer = self._buffers.setdefault(queue, deque())
        connection = self._conn()
        connection.process_data_events(time_limit=0)
        deadline = time.monotonic() + max(0.0, timeout_s)
        while not buffer and all(shard in self._consumers for shard in shards):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            connection.process_data_events(time_limit=remaining)
        batch = [buffer.popleft() for _ in range(min(max_messages, len(buffer)))]
        self._handed_out.update(d.tag.delivery_tag for d in batch)
        return batch

    def _subscribe(self, channel: BlockingChannel, queue: str, shard: str) -> None:
        callback = partial(self._on_message, queue, shard, self._generation)
        self._consumers[shard] = channel.basic_consume(shard, callback)

    def _rebalance(self, channel: BlockingChannel, queue: str, shards: list[str]) -> None:
        """Hand on busy shards beyond this worker's share, so N workers split a route's load.

        Every worker subscribes to every shard (single active consumer) and holds a consumer on
        the route's presence queue, whose consumer count is the number of live workers. A shard
        moves only when nothing from it is being processed here: its consumer is cancelled (the
        next in line becomes active) and what prefetch buffered from it goes back to the queue.
        RabbitMQ may hand the new consumer newer messages before those returned ones; the
        route's stale-version check keeps a record from going backwards when that happens."""
        now = time.monotonic()
        if now < self._next_rebalance.get(queue, 0.0):
            return
        self._next_rebalance[queue] = now + self.rebalance_interval_s
        busy = [s for s in shards if now - self._last_delivery.get(s, -math.inf) < self.rebalance_interval_s]
        if len(busy) <= 1:
            return
        workers = self._consumer_count(topo.presence_queue(queue))
        share = math.ceil(len(shards) / max(1, workers))
        processing = {self._unacked[tag] for tag in self._handed_out if tag in self._unacked}
        for shard in [s for s in busy if s not in processing][: max(0, len(busy) - share)]:
            channel.basic_cancel(self._consumers.pop(shard))
            buffer = self._buffers.get(queue, deque())
            returned = {d.tag.delivery_tag for d in buffer if self._unacked.get(d.tag.delivery_tag) == shard}
            if returned:
                self._buffers[queue] = deque(d for d in buffer if d.tag.delivery_tag not in returned)
                for tag in sorted(returned):
                    channel.basic_nack(delivery_tag=tag, multiple=False, requeue=True)
                    self._unacked.pop(tag, None)
            self._last_delivery.pop(shard, None)
            self._subscribe(channel, queue, shard)  # back of the line: another worker is active now
            log.info("rabbitmq_shard_handed_on", route=queue, shard=shard, workers=workers, share=share)

    def _consumer_count(self, queue: str) -> int:
        try:
            return int(self._admin_channel().queue_declare(queue, passive=True).method.consumer_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _NOT_FOUND:
                raise
            return 0

    def _on_message(
        self, queue: str, shard: str, generation: int, _channel: Any, method: Any, properties: Any, body: bytes
    ) -> None:
        if generation != self._generation:
            return
        self._unacked[method.delivery_tag] = shard
        self._last_delivery[shard] = time.monotonic()
        self._buffers.setdefault(queue, deque()).append(
            self._delivery(queue, method, properties, body, _Tag(generation, method.delivery_tag))
        )

    def _on_cancelled(self, method_frame: Any) -> None:
        """RabbitMQ cancelled a consumer (its queue was deleted): start a new one on next fetch."""
        tag = method_frame.method.consumer_tag
        for shard, consumer in list(self._consumers.items()):
            if consumer == tag:
                del self._consumers[shard]
                log.warning("rabbitmq_consumer_cancelled", queue=shard)

    def _delivery(self, queue: str, method: Any, properties: Any, body: bytes, tag: _Tag) -> Delivery:
        raw = dict(properties.headers or {})
        routing_key = _text(raw.pop(H_ROUTING_KEY, None)) or method.routing_key
        key = _text(raw.pop(H_RECORD_KEY, None))
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
            key=key,
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
        for tag in wanted:
            self._unacked.pop(tag, None)
        self._handed_out -= wanted

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._connection_guard("ack"):
            self._settle(self._live(deliveries), ack=True)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Hand back at once: the queue's consumers stop first, or RabbitMQ would hand them
        straight back to this instance; they restart on the next fetch."""
        with self._connection_guard("requeue"):
            tags = self._live(deliveries)
            if not tags:
                return
            assert self._consume is not None
            for queue in {d.queue for d in deliveries}:
                for shard in self.shard_queues(queue):
                    consumer = self._consumers.pop(shard, None)
                    if consumer is not None:
                        self._consume.basic_cancel(consumer)
                tags.extend(d.tag.delivery_tag for d in self._buffers.pop(queue, ()))
            self._settle(sorted(set(tags)), ack=False)

    def retry_later(self, delivery: Delivery, body: bytes, headers: dict[str, str], delay_s: float) -> None:
        """Confirmed publish to the route's retry step for `delay_s`, then ack."""
        if not self._live([delivery]):
            return  # its connection is gone: RabbitMQ redelivers the original, a copy would duplicate it
        with self._connection_guard(f"retry of {delivery.message_id}"):
            self._ensure_queues(delivery.queue)
            step = topo.pick_step(topo.retry_steps_ms(self.options(delivery.queue)), delay_s)
            message = OutgoingMessage(delivery.routing_key, body, dict(headers), delivery.message_id, delivery.key)
            target = ("", topo.retry_queue(delivery.queue, step))
            self._publish_confirmed([target], [message], partial(self._redeclare, delivery.queue))
            self._settle(self._live([delivery]), ack=True)

    def dead_letter(self, delivery: Delivery, headers: dict[str, str]) -> None:
        """Confirmed publish of the original body to `<queue>.dlq`, then ack."""
        if not self._live([delivery]):
            return
        with self._connection_guard(f"dead-lettering of {delivery.message_id}"):
            self._ensure_queues(delivery.queue)
            message = OutgoingMessage(
                delivery.routing_key, delivery.body, {**delivery.headers, **headers}, delivery.message_id, delivery.key
            )
            target = ("", dlq_name(delivery.queue))
            self._publish_confirmed([target], [message], partial(self._redeclare, delivery.queue))
            self._settle(self._live([delivery]), ack=True)

    # ----- inspecting -----------------------------------------------------------------
    def depth(self, queue: str) -> int:
        """Ready messages in `queue` (all its shards) plus its delayed retries; unacked ones not counted."""
        names = self._holding_queues(queue)
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
        """basic.get from `queue` (from each of its shards in turn) until empty or `limit`."""
        found: list[tuple[Delivery, int]] = []
        names = [queue] if topo.is_auxiliary(queue) or queue == UNROUTED_QUEUE else self.shard_queues(queue)
        try:
            for name in names:
                while limit is None or len(found) < limit:
                    method, properties, body = channel.basic_get(name, auto_ack=False)
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
        names = self._holding_queues(queue)
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


def _ignore_delivery(*_args: Any) -> None:
    """The presence queue's consumer: nothing is ever sent there."""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)
