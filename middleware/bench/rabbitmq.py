"""`isthmus bench` on RabbitMQ: the figures issue 3 asks for, measured on a real broker.

Every figure is durable and confirmed (persistent messages, quorum queues as the product
declares them, publisher confirms) and measured in one run on one broker:

* `rabbitmq_raw_limit_events_per_s`: the ceiling. A minimal pika loop on one durable
  (quorum) queue: persistent messages published with pipelined confirms (a window of
  unconfirmed messages on an asynchronous `SelectConnection`, not one round trip per
  message), consumed at the same time by another process with manual acks (one `multiple`
  ack per 50 messages, prefetch 500). Counted from the first publish to the last message
  consumed.
* `rabbitmq_e2e_events_per_s`: the product at saturation. Envelopes published with the
  product's `RabbitMqBroker.publish` (confirmed) by a few publisher threads, consumed by
  `isthmus worker --no-sources` processes, mapped through the demo's customer chain and
  written over HTTP to a loopback target; counted when the target took the write in. Two
  workers share the route through `shards` (route queues have a single active consumer);
  8 s of traffic at 500/s come first, uncounted, so the broker has split the shards between
  the workers as in a long-running deployment. `rabbitmq_e2e_cpu_pct_*` say how much of a
  core each process used and `rabbitmq_e2e_machine_busy_pct` how busy both cores were
  (RabbitMQ and anything else on the box included): whether the figure was CPU-bound.
* `p50_latency_ms_at_1000` / `p99_latency_ms_at_1000`: open loop: message *i* is due at
  `t0 + i/1000 s` and published then (in the small batches that are due at each tick of the
  publisher), whatever the pipeline is doing; latency runs from when it was *due* (so a
  publisher falling behind is counted, not hidden) to when its write reached the target.
  The first second is warm-up and is left out.
* `webhook_ingest_events_per_s`: in `middleware.bench.webhook`.
* `worker_rss_growth_pct`: one worker process consumes a long run (100,000 messages, or
  1,000,000 with `--long`); its resident set after warm-up (10 % of the run applied) against
  at the end.
* `rabbitmq_sharding`: "on", or "off: …" on a RabbitMQ without the consistent-hash exchange
  plugin (a default install): the figures are then measured with unsharded routes, so the
  two e2e workers share one active consumer, and the progress line says what to enable.

The HTTP target is `LoopbackTarget`: a lean asyncio server answering the REST writer the way
the sample ERP does (201 with an id on create, 200 on update, `Idempotency-Key` honoured),
recording when each key first landed. It is deliberately cheaper than the sample ERP
(Python's `http.server`, about 1,900 writes/s here): on a 2-core box every CPU cycle the
target burns is taken from the worker, and the figure is meant to be the middleware's.
Clocks: `time.monotonic()` is CLOCK_MONOTONIC, one clock for every process on the machine,
so publish and landing times taken in different processes can be subtracted.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pika
import pika.exceptions
import pika.spec

from middleware.bench.configs import ACCOUNT_WRITES, bench_config, customer_route, write_config
from middleware.bench.harness import free_port, percentile, step, stop_processes, wait_port
from middleware.bench.workload import bench_envelopes, idempotency_key

REPO = Path(__file__).resolve().parents[2]
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
AMQP_URL_ENV = "ISTHMUS_BENCH_AMQP_URL"
ROUTE_PREFIX = "bench_rmq"


# ----- the broker URL ------------------------------------------------------------------------
def pika_parameters(url: str) -> pika.URLParameters:
    """pika parameters for `url` without Isthmus's own query options (exchange, prefetch)."""
    parts = urlsplit(url)
    rest = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("exchange", "prefetch")]
    return pika.URLParameters(urlunsplit(parts._replace(query=urlencode(rest))))


def with_exchange(url: str, exchange: str) -> str:
    """`url` with `?exchange=` set to `exchange` (a unique one per run: the broker is shared)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "exchange"]
    query.append(("exchange", exchange))
    return urlunsplit(parts._replace(query=urlencode(query)))


def rabbitmq_reachable(url: str, timeout_s: float = 3.0) -> str | None:
    """None when an AMQP connection opens, else why not (for the skip message)."""
    params = pika_parameters(url)
    params.socket_timeout = timeout_s
    params.stack_timeout = timeout_s  # a broker that accepts TCP but never answers AMQP
    params.connection_attempts = 1
    params.retry_delay = 0
    params.blocked_connection_timeout = timeout_s
    try:
        with socket.create_connection((params.host, params.port), timeout=timeout_s):
            pass
    except OSError as exc:
        return f"{params.host}:{params.port}: {exc.strerror or exc}"
    try:
        connection = pika.BlockingConnection(params)
    except Exception as exc:  # pika's errors (a handshake timeout is not an AMQPError), socket errors
        # pika wraps the socket's error: "AMQPConnectionError: (... ConnectionRefusedError(111, ...),)"
        detail = "; ".join(str(arg) for arg in exc.args) or type(exc).__name__
        return f"{type(exc).__name__}: {detail}"
    connection.close()
    return None


def _queue_counts(url: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of `queue`; (0, 0) when it does not exist."""
    connection = pika.BlockingConnection(pika_parameters(url))
    try:
        frame = connection.channel().queue_declare(queue, passive=True)
        return int(frame.method.message_count), int(frame.method.consumer_count)
    except pika.exceptions.ChannelClosedByBroker:
        return 0, 0
    finally:
        with suppress(Exception):
            connection.close()


def delete_topology(url: str, queues: Sequence[str], exchange: str | None) -> None:
    """Remove what one bench run declared: its queues with their DLQ and retry queues, its
    exchange and the exchange's alternate. The shared `isthmus.unrouted` queue stays."""
    connection = pika.BlockingConnection(pika_parameters(url))
    try:
        channel = connection.channel()
        for name in queues:
            for queue in (name, f"{name}.dlq", f"{name}.retry"):
                channel.queue_delete(queue)
        if exchange:
            channel.exchange_delete(exchange)
            channel.exchange_delete(f"{exchange}.unrouted")
    finally:
        with suppress(Exception):
            connection.close()


# ----- the loopback HTTP target --------------------------------------------------------------
class _TargetState:
    def __init__(self, record_times: bool) -> None:
        self.record_times = record_times
        self.landed: dict[str, float] = {}
        self.keys: set[str] = set()
        self.count = 0
        self.duplicates = 0
        self.requests = 0
        self.last_landed_at = 0.0
        self.next_id = 0


_REASONS = {200: b"OK", 201: b"Created", 400: b"Bad Request", 404: b"Not Found"}


class _TargetProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request at a time per connection (as urllib3 sends them)."""

    def __init__(self, state: _TargetState) -> None:
        self.state = state
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            key = None
            for line in lines[1:]:
                name, _, value = line.partition(":")
                lowered = name.strip().lower()
                if lowered == "content-length":
                    length = int(value)
                elif lowered == "idempotency-key":
                    key = value.strip()
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, _, rest = lines[0].partition(" ")
            path = rest.rpartition(" ")[0]
            self._answer(*self._route(method, path, key, body))

    def _route(self, method: str, path: str, key: str | None, body: bytes) -> tuple[int, bytes]:
        state = self.state
        if method == "GET" and path.startswith("/admin/"):
            if path.startswith("/admin/state"):
                answer = {
                    "landed": state.count,
                    "duplicates": state.duplicates,
                    "requests": state.requests,
                    "last_landed_at": state.last_landed_at,
                }
                return 200, json.dumps(answer).encode()
            if path.startswith("/admin/landed"):
                return 200, json.dumps(state.landed).encode()
            return 404, b'{"error": "no such admin path"}'
        state.requests += 1
        if method not in ("POST", "PUT") or not body:
            return 400, b'{"error": "a write needs a JSON body"}'
        if key is not None:
            if key in state.keys:
                state.duplicates += 1
            else:
                state.keys.add(key)
                state.count += 1
                now = time.monotonic()
                state.last_landed_at = now
                if state.record_times:
                    state.landed[key] = now
        if method == "POST":
            state.next_id += 1
            return 201, b'{"id": "A%07d"}' % state.next_id
        return 200, b'{"id": "%s"}' % path.rpartition("/")[2].encode()

    def _answer(self, status: int, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, _REASONS.get(status, b"Unknown"), len(payload), payload)
        )


def serve_target(port: int, record_times: bool) -> None:
    """Process entry point of the loopback target: serve until terminated."""
    state = _TargetState(record_times)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _TargetProtocol(state), "127.0.0.1", port, backlog=512)
        async with server:
            await server.serve_forever()

    with suppress(KeyboardInterrupt):
        asyncio.run(main())


class LoopbackTarget:
    """The HTTP target in its own process; `landed()` and `landing_times()` ask it over HTTP."""

    def __init__(self, record_times: bool = False) -> None:
        self.port = free_port()
        self.record_times = record_times
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackTarget:
        command = [sys.executable, "-m", "middleware.bench.rabbitmq", "target", str(self.port)]
        if self.record_times:
            command.append("--record-times")
        self._process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
        wait_port(self.port, "the loopback HTTP target")
        return self

    def _get(self, path: str) -> Any:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", path)
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def state(self) -> dict[str, Any]:
        return dict(self._get("/admin/state"))

    def landed(self) -> int:
        return int(self.state()["landed"])

    def landing_times(self) -> dict[str, float]:
        return dict(self._get("/admin/landed"))

    @property
    def pid(self) -> int | None:
        return None if self._process is None else int(self._process.pid)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def __enter__(self) -> LoopbackTarget:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----- the raw pika ceiling ------------------------------------------------------------------
RAW_PREFETCH = 500
RAW_ACK_EVERY = 50
RAW_CONFIRM_WINDOW = 1000


def raw_consume(url: str, queue: str, count: int) -> None:
    """Consumer process: manual acks, one `multiple` ack per RAW_ACK_EVERY messages.

    Prints `ready` once consuming, then the monotonic time of the last message."""
    connection = pika.BlockingConnection(pika_parameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=RAW_PREFETCH)
    received = 0

    def on_message(ch: Any, method: Any, _properties: Any, _body: bytes) -> None:
        nonlocal received
        received += 1
        if received % RAW_ACK_EVERY == 0 or received >= count:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if received >= count:
            ch.stop_consuming()

    channel.basic_consume(queue, on_message)
    print("ready", flush=True)
    channel.start_consuming()
    print(repr(time.monotonic()), flush=True)
    connection.close()


class _PipelinedPublisher:
    """Publishes persistent messages on a SelectConnection with up to `window` unconfirmed."""

    def __init__(self, url: str, queue: str, bodies: Sequence[bytes], window: int) -> None:
        self.params = pika_parameters(url)
        self.queue = queue
        self.bodies = bodies
        self.window = window
        self.published = 0
        self.outstanding: set[int] = set()
        self.confirmed = 0
        self.nacked = 0
        self.error: str | None = None
        self.channel: Any = None
        self.connection: Any = None
        self.properties = pika.BasicProperties(
            content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent
        )

    def run(self) -> None:
        self.connection = pika.SelectConnection(
            self.params,
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._on_channel),
            on_open_error_callback=self._on_error,
            on_close_callback=lambda _conn, _reason: self.connection.ioloop.stop(),
        )
        self.connection.ioloop.start()
        if self.error:
            raise RuntimeError(f"raw publisher failed: {self.error}")

    def _on_error(self, _connection: Any, error: Any) -> None:
        self.error = str(error)
        self.connection.ioloop.stop()

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._fill())

    def _fill(self) -> None:
        while self.published < len(self.bodies) and len(self.outstanding) < self.window:
            self.channel.basic_publish("", self.queue, self.bodies[self.published], self.properties)
            self.published += 1
            self.outstanding.add(self.published)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self.nacked += 1
        if method.multiple:
            done = {tag for tag in self.outstanding if tag <= method.delivery_tag}
        else:
            done = {method.delivery_tag} & self.outstanding
        self.outstanding -= done
        self.confirmed += len(done)
        if self.confirmed >= len(self.bodies):
            self.connection.close()
        else:
            self._fill()


def bench_rabbitmq_raw(url: str, messages: int, body: bytes) -> dict[str, Any]:
    """The ceiling: minimal pika publish (pipelined confirms) and consume (manual acks)."""
    queue = f"{ROUTE_PREFIX}_raw_{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika_parameters(url))
    connection.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    connection.close()
    command = [sys.executable, "-m", "middleware.bench.rabbitmq", "raw-consume", url, queue, str(messages)]
    consumer = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout is not None
        if consumer.stdout.readline().strip() != "ready":
            raise RuntimeError("the raw consumer did not start")
        publisher = _PipelinedPublisher(url, queue, [body] * messages, RAW_CONFIRM_WINDOW)
        started = time.monotonic()
        publisher.run()
        published = time.monotonic() - started
        finished = float(consumer.stdout.readline())
        consumer.wait(30)
        return {
            "rabbitmq_raw_limit_events_per_s": round(messages / (finished - started)),
            "rabbitmq_raw_publish_confirmed_per_s": round(messages / published),
            "rabbitmq_raw_messages": messages,
        }
    finally:
        if consumer.poll() is None:
            consumer.terminate()
            consumer.wait(10)
        delete_topology(url, [queue], None)


# ----- the product end to end ----------------------------------------------------------------
@dataclass
class RouteTopology:
    holding: list[str]  # the queues a route's messages wait in (itself, or its shards)
    presence: str | None  # a queue whose consumer count is the number of workers, if any
    queues: list[str]  # every queue of the route
    exchanges: list[str]  # the run's exchange, its alternate, the shard exchange


@dataclass
class BenchRun:
    """One run's topology on the shared broker: a unique exchange and route, removed at the end.

    The workers declare the route (as in production), with the route's queue options; the
    bench only removes it afterwards, by the names the broker gives it."""

    amqp_url: str
    directory: Path
    target_url: str
    route: str = field(default_factory=lambda: f"{ROUTE_PREFIX}_{uuid.uuid4().hex[:10]}")
    batch_size: int = 200
    concurrency: int = 16
    shards: int = 1
    webhooks: dict[str, Any] | None = None
    env: dict[str, str] = field(default_factory=dict)
    _started: int = field(default=0, init=False)
    _logs: dict[int, Path] = field(default_factory=dict, init=False)

    @property
    def exchange(self) -> str:
        return f"{self.route}_x"

    @property
    def broker_url(self) -> str:
        return with_exchange(self.amqp_url, self.exchange)

    @property
    def config_path(self) -> Path:
        return self.directory / "isthmus.yaml"

    def route_settings(self) -> dict[str, Any]:
        route = customer_route(self.route, "erp", "account", "canonical_customer_to_erp", self.batch_size)
        if self.shards > 1:
            route["shards"] = self.shards
        return route

    def write_config(self) -> Path:
        erp = {
            "type": "rest",
            "base_url": self.target_url,
            "concurrency": self.concurrency,
            "max_connections": self.concurrency,
            "entities": {"account": ACCOUNT_WRITES},
        }
        store = f"sqlite:///{self.directory / 'state.db'}"
        config = bench_config(self.broker_url, store, {"erp": erp}, [self.route_settings()])
        if self.webhooks is not None:
            config["webhooks"] = self.webhooks
        return write_config(self.config_path, config)

    def topology(self) -> RouteTopology:
        """The route's queues and exchanges, as the broker names them."""
        from middleware.config import RouteConfig

        route = RouteConfig.model_validate(self.route_settings())
        found = RouteTopology(
            holding=[self.route],
            presence=None,
            queues=[self.route, f"{self.route}.dlq", f"{self.route}.retry"],
            exchanges=[self.exchange, f"{self.exchange}.unrouted"],
        )
        try:
            from middleware.broker import rabbitmq_topology as topo
        except ImportError:  # the broker before shards and retry steps
            return found
        options = route.queue_options()
        found.holding = topo.shard_queues(self.route, options.shards)
        found.queues += found.holding + [topo.retry_queue(self.route, step) for step in topo.retry_steps_ms(options)]
        if options.shards > 1:
            found.exchanges.append(topo.shard_exchange(self.route))
            presence = getattr(topo, "presence_queue", None)
            if presence is not None:
                found.presence = str(presence(self.route))
                found.queues.append(found.presence)
        found.queues = list(dict.fromkeys(found.queues))
        return found

    def start_worker(self, *flags: str) -> subprocess.Popen[bytes]:
        """`isthmus worker` on this run's config; its stderr goes to a file (a pipe nobody
        reads would stall a worker that logs a lot), see `worker_log`."""
        command = [sys.executable, "-m", "middleware.cli.main", "worker", "--config", str(self.config_path), *flags]
        self._started += 1
        with open(self.directory / f"worker-{self._started}.log", "wb") as log_file:
            proc = subprocess.Popen(
                command, cwd=REPO, env={**os.environ, **self.env}, stdout=subprocess.DEVNULL, stderr=log_file
            )
        self._logs[proc.pid] = self.directory / f"worker-{self._started}.log"
        return proc

    def worker_log(self, proc: subprocess.Popen[bytes], chars: int = 2000) -> str:
        path = self._logs.get(proc.pid)
        return path.read_text(encoding="utf-8", errors="replace")[-chars:] if path and path.exists() else ""

    def wait_consumers(self, count: int, workers: Sequence[subprocess.Popen[bytes]], timeout_s: float = 60) -> None:
        """Until every queue of the route has a consumer and `count` workers are attached.

        Single-active-consumer queues report only their active consumer; a sharded route's
        presence queue (where the broker has one) counts the workers."""
        topology = self.topology()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for proc in workers:
                if proc.poll() is not None:
                    raise RuntimeError(f"a bench worker exited with {proc.returncode}: {self.worker_log(proc)}")
            attached = min(_queue_counts(self.amqp_url, queue)[1] for queue in topology.holding) >= 1
            if attached and (topology.presence is None or _queue_counts(self.amqp_url, topology.presence)[1] >= count):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{count} worker(s) did not attach to queue {self.route!r} in {timeout_s:g} s")

    def dead_lettered(self) -> int:
        return _queue_counts(self.amqp_url, f"{self.route}.dlq")[0]

    def cleanup(self) -> None:
        topology = self.topology()
        connection = pika.BlockingConnection(pika_parameters(self.amqp_url))
        try:
            channel = connection.channel()
            for queue in topology.queues:
                channel.queue_delete(queue)
            for exchange in topology.exchanges:
                channel.exchange_delete(exchange)
        finally:
            with suppress(Exception):
                connection.close()


@contextmanager
def bench_run(amqp_url: str, target: LoopbackTarget, **options: Any) -> Iterator[BenchRun]:
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-rmq-") as tmp:
        run = BenchRun(amqp_url, Path(tmp), target.url, **options)
        run.write_config()
        try:
            yield run
        finally:
            try:
                run.cleanup()
            except Exception as exc:
                step(f"   could not remove the bench's queues of route {run.route!r}: {exc}")


@contextmanager
def running_workers(run: BenchRun, count: int, *flags: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            workers.append(run.start_worker("--no-sources", *flags))
        run.wait_consumers(count, workers)
        yield workers
    finally:
        stop_processes(workers)


def publish_concurrently(
    broker_url: str,
    messages: Sequence[Any],
    threads: int,
    batch: int = 100,
    throttle: Callable[[int], None] | None = None,
) -> float:
    """Publish with the product's broker (confirmed), `threads` handles at once (as several
    sources would); returns when every message is confirmed, with the seconds that took.
    `throttle(published)` may block to bound the backlog."""
    from middleware.broker import open_broker

    chunks = [messages[i : i + batch] for i in range(0, len(messages), batch)]
    lock = threading.Lock()
    position = 0
    published = 0
    errors: list[BaseException] = []

    def publish() -> None:
        nonlocal position, published
        broker = open_broker(broker_url)
        try:
            while True:
                with lock:
                    if position >= len(chunks) or errors:
                        return
                    chunk = chunks[position]
                    position += 1
                if throttle is not None:
                    throttle(published)
                broker.publish(chunk)
                with lock:
                    published += len(chunk)
        except BaseException as exc:
            errors.append(exc)
        finally:
            broker.close()

    started = time.monotonic()
    workers = [threading.Thread(target=publish, name=f"bench-publisher-{n}") for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if errors:
        raise errors[0]
    return time.monotonic() - started


def wait_landed(target: LoopbackTarget, count: int, timeout_s: float, interval_s: float = 0.05) -> dict[str, Any]:
    """Poll the target until `count` distinct writes landed; its last state either way."""
    deadline = time.monotonic() + timeout_s
    state = target.state()
    while state["landed"] < count and time.monotonic() < deadline:
        time.sleep(interval_s)
        state = target.state()
    return state


E2E_WORKERS = 2
E2E_SHARDS = 4  # > workers, so the broker's rebalancing has something to even out


def shards_for(workers: int, shards: int = E2E_SHARDS) -> int:
    """Route queues with a single active consumer need shards for N workers to share a route;
    1 on a broker version without the `shards` route option."""
    from middleware.config import RouteConfig

    return shards if workers > 1 and "shards" in RouteConfig.model_fields else 1


def publish_paced(broker_url: str, messages: Sequence[Any], rate: float) -> tuple[float, float]:
    """Open loop: message i goes out at `start + i/rate` (what is due at each tick, in one
    confirmed publish), whatever the pipeline does. Returns (start, how far behind the
    schedule the last publish returned, in seconds)."""
    from middleware.broker import open_broker

    broker = open_broker(broker_url)
    try:
        started = time.monotonic()
        sent = 0
        while sent < len(messages):
            due = min(len(messages), int((time.monotonic() - started) * rate) + 1)
            if due > sent:
                broker.publish(messages[sent:due])
                sent = due
            else:
                time.sleep(max(0.0, started + sent / rate - time.monotonic()))
        return started, max(0.0, time.monotonic() - (started + (len(messages) - 1) / rate))
    finally:
        broker.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """(all CPU ticks, idle + iowait ticks) of the machine so far."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]


class CpuMeter:
    """CPU used by some processes, and by the whole machine, between `start` and `stop`:
    on a 2-core box with a shared broker it says whether a figure was CPU-bound and where."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._cpu: dict[str, float] = {}
        self._ticks = (0, 0)
        self._started = 0.0

    def start(self) -> CpuMeter:
        self._cpu = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        self._ticks = _machine_ticks()
        self._started = time.monotonic()
        return self

    def stop(self, prefix: str) -> dict[str, Any]:
        elapsed = time.monotonic() - self._started
        total, idle = (now - then for now, then in zip(_machine_ticks(), self._ticks, strict=True))
        used = {name: 100 * (_cpu_seconds(pid) - self._cpu[name]) / elapsed for name, pid in self.pids.items()}
        results: dict[str, Any] = {f"{prefix}_cpu_pct_{name}": round(value) for name, value in used.items()}
        results[f"{prefix}_machine_busy_pct"] = round(100 * (1 - idle / total)) if total else None
        return results


def bench_rabbitmq_e2e(
    amqp_url: str,
    events: int,
    workers: int = E2E_WORKERS,
    publishers: int = 4,
    shards: int | None = None,
    warmup_s: float = 0.0,
) -> dict[str, Any]:
    """Events/s from the first publish to the last write landed, at saturation.

    With `warmup_s`, traffic at 500 events/s runs that long first (not counted), so the
    workers have split a sharded route's queues between them as in a long-running
    deployment (the broker hands busy shards on every few seconds)."""
    tag = f"E{uuid.uuid4().hex[:6]}"
    messages = bench_envelopes(events, tag)
    warmup = bench_envelopes(int(500 * warmup_s), f"{tag}w")
    shards = shards_for(workers) if shards is None else shards
    with LoopbackTarget() as target, bench_run(amqp_url, target, shards=shards) as run:
        with running_workers(run, workers) as procs:
            if warmup:
                publish_paced(run.broker_url, warmup, 500)
                wait_landed(target, len(warmup), timeout_s=120)
            pids = {f"worker{n}": proc.pid for n, proc in enumerate(procs)}
            meter = CpuMeter({**pids, "target": target.pid or 0, "bench": os.getpid()}).start()
            started = time.monotonic()
            publish_s = publish_concurrently(run.broker_url, messages, publishers)
            state = wait_landed(target, len(warmup) + events, timeout_s=max(120.0, events / 100))
            cpu = meter.stop("rabbitmq_e2e")
        elapsed = (state["last_landed_at"] or time.monotonic()) - started
        landed = state["landed"] - len(warmup)
        return {
            "rabbitmq_e2e_events_per_s": round(landed / elapsed),
            "rabbitmq_e2e_publish_confirmed_per_s": round(events / publish_s),
            "rabbitmq_e2e_events": events,
            "rabbitmq_e2e_landed": landed,
            "rabbitmq_e2e_worker_processes": workers,
            "rabbitmq_e2e_shards": shards,
            "rabbitmq_e2e_dead_lettered": run.dead_lettered(),
            **cpu,
        }


def bench_latency(amqp_url: str, rate: int, seconds: float, workers: int = 1, warmup_s: float = 1.0) -> dict[str, Any]:
    """Open-loop latency at `rate` events/s: from when each message was due to when it landed."""
    tag = f"L{uuid.uuid4().hex[:6]}"
    total = int(rate * (seconds + warmup_s))
    messages = bench_envelopes(total, tag)
    with LoopbackTarget(record_times=True) as target, bench_run(amqp_url, target) as run:
        with running_workers(run, workers):
            started, behind_s = publish_paced(run.broker_url, messages, rate)
            wait_landed(target, total, timeout_s=max(60.0, seconds * 4))
            landed = target.landing_times()
        first_measured = int(rate * warmup_s)
        latencies = sorted(
            1000 * (landed[key] - (started + i / rate))
            for i in range(first_measured, total)
            if (key := idempotency_key(i, tag)) in landed
        )
        return {
            f"p50_latency_ms_at_{rate}": round(percentile(latencies, 0.50), 1),
            f"p99_latency_ms_at_{rate}": round(percentile(latencies, 0.99), 1),
            f"max_latency_ms_at_{rate}": round(latencies[-1], 1) if latencies else float("nan"),
            f"latency_samples_at_{rate}": len(latencies),
            f"latency_missing_at_{rate}": total - first_measured - len(latencies),
            f"latency_publisher_behind_ms_at_{rate}": round(1000 * behind_s, 1),
        }


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def bench_worker_rss(amqp_url: str, events: int, publishers: int = 2, max_backlog: int = 20_000) -> dict[str, Any]:
    """One worker process over a long run: RSS after warm-up (10 % applied) vs at the end.

    The backlog on the shared broker is bounded (`max_backlog` published but not landed) so a
    long run does not park a million messages in RabbitMQ.
    """
    tag = f"R{uuid.uuid4().hex[:6]}"
    with LoopbackTarget() as target, bench_run(amqp_url, target) as run:  # noqa: SIM117 - clearer apart
        with running_workers(run, 1) as workers:
            pid = workers[0].pid
            samples: list[tuple[int, int]] = []  # (landed, rss KiB)
            stop = threading.Event()
            landed_now = 0

            def sample() -> None:
                nonlocal landed_now
                while not stop.is_set():
                    landed_now = target.landed()
                    samples.append((landed_now, _rss_kib(pid)))
                    stop.wait(0.5)

            def throttle(first: int, published: int) -> None:
                while first + published - landed_now > max_backlog and not stop.is_set():
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, name="bench-rss-sampler", daemon=True)
            sampler.start()
            started = time.monotonic()
            chunk = 50_000  # envelopes are built in chunks: a million at once would weigh GBs here
            try:
                for first in range(0, events, chunk):
                    messages = bench_envelopes(min(chunk, events - first), tag, first)
                    publish_concurrently(run.broker_url, messages, publishers, throttle=partial(throttle, first))
                    if first // chunk % 4 == 0:
                        step(f"   worker RSS run: {first + len(messages)}/{events} published")
                state = wait_landed(target, events, timeout_s=max(120.0, events / 100))
            finally:
                stop.set()
                sampler.join(5)
            end_rss = _rss_kib(pid)
            elapsed = (state["last_landed_at"] or time.monotonic()) - started
    warm = next((rss for landed, rss in samples if landed >= events // 10), samples[0][1] if samples else end_rss)
    return {
        "worker_rss_growth_pct": round(100 * (end_rss - warm) / warm, 1),
        "worker_rss_after_warmup_mb": round(warm / 1024, 1),
        "worker_rss_at_end_mb": round(end_rss / 1024, 1),
        "worker_rss_run_messages": events,
        "worker_rss_run_landed": state["landed"],
        "worker_rss_run_events_per_s": round(state["landed"] / elapsed),
    }


def rabbitmq_sharding(url: str) -> str:
    """Whether the figures can use sharded routes, for the progress line and the JSON: "on"
    when the broker has the consistent-hash exchange, else "off: <why>; measured with unsharded routes".

    A default RabbitMQ lacks the plugin: the figures are then taken with `shards: 1`
    (one active consumer per route) instead of failing."""
    from middleware.broker.rabbitmq_plugins import consistent_hash_missing

    try:
        missing = consistent_hash_missing(pika_parameters(url))
    except Exception as exc:  # pika's errors: the figures that follow report the broker's state
        missing = f"could not ask the broker for the consistent-hash exchange ({type(exc).__name__}: {exc})"
    if missing is None:
        return "on"
    return f"off: {missing}; measured with unsharded routes"


def find_rabbitmq(url: str | None = None) -> tuple[str | None, str]:
    """(the RabbitMQ URL to bench on, "") or (None, why the RabbitMQ figures are skipped).

    `url`, else $ISTHMUS_BENCH_AMQP_URL, else the local broker with the default account."""
    from middleware.redact import redact_url

    candidate = url or os.environ.get(AMQP_URL_ENV) or DEFAULT_AMQP_URL
    problem = rabbitmq_reachable(candidate)
    if problem is None:
        return candidate, ""
    return None, (
        f"RabbitMQ at {redact_url(candidate)} did not answer ({problem}): skipping the RabbitMQ and webhook "
        f"figures. Start it, or pass --amqp-url (or set {AMQP_URL_ENV}); --no-rabbitmq skips them quietly."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Helper processes of the bench: `target PORT [--record-times]`, `raw-consume URL QUEUE N`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["target"]:
        serve_target(int(args[1]), "--record-times" in args[2:])
        return 0
    if args[:1] == ["raw-consume"]:
        raw_consume(args[1], args[2], int(args[3]))
        return 0
    print("usage: python -m middleware.bench.rabbitmq target PORT [--record-times] | raw-consume URL QUEUE N")
    return 2


if __name__ == "__main__":
    sys.exit(main())
