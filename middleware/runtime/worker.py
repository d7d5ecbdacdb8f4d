"""The worker daemon: sources, webhooks and route consumers in one process, until told to stop.

`Worker.start()` builds everything from a validated config (broker topology declared,
adapters opened, mappings compiled) so that a bad config fails before the first message.
SIGTERM/SIGINT set one stop event: pollers stop polling, consumers finish the batch in
hand (its messages are acked, retried or dead-lettered — never half done) and exit, then
connections close. A SIGKILL loses nothing either: unacked messages are redelivered.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import structlog

from middleware.adapter import Adapter, Writer, load_adapter_class
from middleware.broker import open_broker
from middleware.broker.base import UNROUTED_QUEUE, Broker, dlq_name
from middleware.config import LoadedConfig
from middleware.errors import ConfigError
from middleware.flows.runner import FlowWiring
from middleware.observability import DLQ_SIZE, QUEUE_DEPTH, HealthServer, configure_logging
from middleware.reconcile.scheduler import ReconcileScheduler
from middleware.redact import redact_url
from middleware.runtime.chains import build_route_mapper
from middleware.runtime.poller import SourcePoller
from middleware.runtime.route import BatchOutcome, RouteProcessor
from middleware.store import open_store
from middleware.store.base import Store

log = structlog.get_logger("isthmus.worker")


RouteStats = BatchOutcome  # running totals per route: the sum of its batches' outcomes


class Worker:
    """Everything one worker process runs. Build, `start()`, then `wait()` or `stop()`."""

    def __init__(
        self,
        config: LoadedConfig,
        *,
        run_sources: bool = True,
        run_routes: bool = True,
        serve_health: bool = True,
        fetch_timeout_s: float = 0.5,
        log_stream: Any = None,
    ) -> None:
        self.config = config
        self.run_sources = run_sources
        self.run_routes = run_routes
        self.serve_health = serve_health
        self.fetch_timeout_s = fetch_timeout_s
        self.log_stream = log_stream
        self.stop_event = threading.Event()
        self.stats: dict[str, RouteStats] = {}
        self.pollers: list[SourcePoller] = []
        self.fetchers: list[Any] = []  # adapters.webhook.enrich.ItemFetcher, one per endpoint with item_path
        self.processors: list[RouteProcessor] = []
        self.adapters: dict[str, Adapter] = {}
        self.health: HealthServer | None = None
        self.webhook: Any = None
        self.reconcile_scheduler: ReconcileScheduler | None = None
        self._threads: list[threading.Thread] = []
        self._broker_url = config.model.broker
        self._store_url = config.model.store
        self._thread_brokers: list[Broker] = []
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._probe_broker: Broker | None = None  # readiness checks get their own connection
        self.broker: Broker = open_broker(self._broker_url, base_dir=config.base_dir)
        self.store: Store = open_store(self._store_url, base_dir=config.base_dir)

    # ----- building -----------------------------------------------------------------
    def _adapter(self, system: str) -> Adapter:
        if system not in self.adapters:
            type_name, settings = self.config.systems[system]
            self.adapters[system] = load_adapter_class(type_name)(system, settings)
        return self.adapters[system]

    def _new_broker(self) -> Broker:
        """Each thread gets its own broker handle (pika connections are not thread-safe)."""
        broker = open_broker(self._broker_url, base_dir=self.config.base_dir)
        with self._lock:
            self._thread_brokers.append(broker)
        return broker

    def build(self) -> None:
        model = self.config.model
        for route in model.routes:
            self.broker.setup_route(route.name, route.on, route.queue_options())
        self.broker.setup_route(UNROUTED_QUEUE, [])
        if self.run_routes:
            flows = FlowWiring(self.config, self.store, self._adapter, self._new_broker)  # routes to `flow:` targets
            for route in model.routes:
                writer: Writer
                if route.to.flow is not None:
                    (mapper, label), writer = flows.mapper(route), flows.writer(route)
                else:
                    mapper, label = build_route_mapper(self.config, route.mappings, self.store)
                    writer = self._adapter(route.to.system).writer()
                processor = RouteProcessor(route, self.broker, self.store, writer, mapper, label)
                self.processors.append(processor)
                self.stats[route.name] = RouteStats()
        self._build_fetchers()
        if self.run_sources:
            for source in model.sources:
                adapter = self._adapter(source.system)
                self.pollers.append(
                    SourcePoller(source, adapter.reader(), self.broker, self.store, capabilities=adapter.capabilities)
                )
        if self.run_sources and model.reconcile:  # scheduled reconciliation runs beside the sources
            self.reconcile_scheduler = ReconcileScheduler(self.config, self.store, self._new_broker, self._adapter)

    def _build_fetchers(self) -> None:
        """Declare the fetch queue of every webhook endpoint with item_path (the receiver sends its triggers
        there, so it must exist whatever this process runs); with routes, one `ItemFetcher` per endpoint:
        the consumer side of hybrid intake."""
        hooks = self.config.model.webhooks
        if hooks is None:
            return
        from adapters.webhook.enrich import ItemFetcher
        from adapters.webhook.receiver import WebhookEndpoint, fetch_queue
        from middleware.adapter import ItemReader
        from middleware.broker.base import QueueOptions

        for name, settings in hooks.endpoints.items():
            endpoint = WebhookEndpoint.model_validate(settings.model_dump())
            if not endpoint.fetches():
                continue
            self.broker.setup_route(fetch_queue(name), [], QueueOptions(retry_delays_s=endpoint.retry.schedule()))
            if not self.run_routes:
                continue
            adapter = self._adapter(endpoint.system)
            if "read_item" not in adapter.capabilities:  # validate refuses this config; a plugin adapter may not
                raise ConfigError(
                    f"webhook endpoint {name!r}: system {endpoint.system!r} cannot fetch one record by path"
                )
            self.fetchers.append(ItemFetcher(name, endpoint, cast(ItemReader, adapter.reader()), self.broker))

    # ----- running ------------------------------------------------------------------
    def start(self) -> Worker:
        obs = self.config.model.observability
        configure_logging(obs.log_format, obs.log_level, self.log_stream, pii_fields=obs.pii_fields)
        self.build()
        for processor in self.processors:
            self._spawn(f"route-{processor.queue}", self._consume_loop, processor)
        for poller in self.pollers:
            self._spawn(f"source-{poller.config.name}", self._poll_loop, poller)
        for fetcher in self.fetchers:
            self._spawn(f"fetch-{fetcher.name}", self._fetch_loop, fetcher)
        self._spawn("depth-sampler", self._sample_depths)
        if self.reconcile_scheduler is not None:
            self.reconcile_scheduler.start()
        if self.run_sources and self.config.model.webhooks and self.config.model.webhooks.endpoints:
            self._start_webhooks()
        if self.serve_health:
            self.health = HealthServer(obs.host, obs.port, alive=self.alive, ready=self.ready).start()
        log.info(
            "worker_started",
            routes=[p.queue for p in self.processors],
            sources=[p.config.name for p in self.pollers],
            broker=redact_url(self._broker_url),
            metrics_port=self.health.port if self.health else None,
        )
        return self

    def _start_webhooks(self) -> None:
        from adapters.webhook.receiver import WebhookEndpoint, WebhookReceiver

        hooks = self.config.model.webhooks
        assert hooks is not None
        endpoints = {
            name: WebhookEndpoint.model_validate(endpoint.model_dump()) for name, endpoint in hooks.endpoints.items()
        }
        self.webhook = WebhookReceiver(hooks.host, hooks.port, endpoints, self._new_broker(), store=self.store)
        self.webhook.start()

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _consume_loop(self, processor: RouteProcessor) -> None:
        broker = self._new_broker()
        processor.broker = broker
        stats = self.stats[processor.queue]
        failures = 0
        while not self.stop_event.is_set():
            try:
                deliveries = broker.fetch(processor.queue, processor.config.batch_size, self.fetch_timeout_s)
                if deliveries:
                    stats.add(processor.process(deliveries))
                failures = 0
            except Exception as exc:  # broker or store outage: back off, keep running
                failures += 1
                wait = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.error(
                    "route_batch_failed", route=processor.queue, error=f"{type(exc).__name__}: {exc}", retry_in_s=wait
                )
                self.stop_event.wait(wait)

    def _fetch_loop(self, fetcher: Any) -> None:
        fetcher.broker = self._new_broker()
        fetcher.run(self.stop_event, fetch_timeout_s=self.fetch_timeout_s)

    def _poll_loop(self, poller: SourcePoller) -> None:
        poller.broker = self._new_broker()
        poller.run(self.stop_event)

    def _sample_depths(self) -> None:
        broker = self._new_broker()
        interval = self.config.model.observability.depth_sample_interval_s
        while not self.stop_event.is_set():
            try:
                for route in self.config.model.routes:
                    QUEUE_DEPTH.labels(route.name).set(broker.depth(route.name))
                    DLQ_SIZE.labels(route.name).set(broker.depth(dlq_name(route.name)))
            except Exception as exc:
                log.warning("queue_depth_sample_failed", error=str(exc))
            self.stop_event.wait(interval)

    def alive(self) -> bool:
        scheduler_ok = self.reconcile_scheduler is None or self.reconcile_scheduler.alive()
        return not self.stop_event.is_set() and all(t.is_alive() for t in self._threads) and scheduler_ok

    def ready(self) -> tuple[bool, str]:
        if not self.alive():
            return False, "stopping or a worker thread died"
        with self._probe_lock:  # the health server may ask from several threads at once
            try:
                if self._probe_broker is None:
                    self._probe_broker = self._new_broker()
                for route in self.config.model.routes[:1]:
                    self._probe_broker.depth(route.name)
            except Exception as exc:
                return False, f"broker unreachable: {exc}"
        return True, "ready"

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: Any) -> None:
            log.info("shutdown_requested", signal=signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def wait(self) -> None:
        while not self.stop_event.is_set():
            self.stop_event.wait(0.5)
        self.stop()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Drain: let each thread finish its batch, then close everything."""
        self.stop_event.set()
        if self.webhook is not None:
            self.webhook.stop()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        if self.reconcile_scheduler is not None:
            self.reconcile_scheduler.stop(max(0.1, deadline - time.monotonic()))
        if self.health is not None:
            self.health.stop()
        for adapter in self.adapters.values():
            adapter.close()
        for broker in [*self._thread_brokers, self.broker]:
            try:
                broker.close()
            except Exception as exc:
                log.warning("broker_close_failed", error=str(exc))
        self.store.close()
        log.info("worker_stopped", applied={k: v.applied for k, v in self.stats.items()})
