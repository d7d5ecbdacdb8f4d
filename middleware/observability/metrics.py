"""Metrics, structured logs and the health endpoint of a worker.

Metrics live in the process-wide prometheus_client registry and are served by each worker
process on its own port: several processes on one host are several scrape targets (give
each its own `observability.port`, or `isthmus worker --metrics-port`), and queries
aggregate them — `sum by (route)` for counters and histograms, `max by (route)` for the
gauges every process samples from the shared broker (queue depth, DLQ size, last success).
Why not prometheus_client's multiprocess mode: it needs a shared directory cleaned at
every start, cannot serve collectors computed at scrape time (the watermark age below),
and folds all processes into one target, so a dead worker would not show as `up == 0`.

Logs are structlog: JSON when the stream is not a terminal, readable on one; message
handling passes route, message_id and correlation_id on every line; secrets and the
configured PII fields are masked (`middleware.observability.logmask`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from middleware.observability.logmask import DEFAULT_PII_FIELDS, LogMasker

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)

MESSAGES_CONSUMED = Counter("isthmus_messages_consumed_total", "Messages taken from a route's queue.", ["route"])
MESSAGES_PRODUCED = Counter(
    "isthmus_messages_produced_total", "Effects written to the route's target system.", ["route"]
)
MESSAGES_SKIPPED = Counter(
    "isthmus_messages_skipped_total",
    "Messages acked without an effect (duplicate, duplicate_path, filtered, stale; two-way: echo, unchanged, "
    "conflict).",
    ["route", "reason"],
)
MESSAGES_FAILED = Counter(
    "isthmus_messages_failed_total", "Failed processing attempts, by error class.", ["route", "error_class"]
)
MESSAGES_RETRIED = Counter("isthmus_messages_retried_total", "Messages scheduled for a delayed retry.", ["route"])
MESSAGES_DEAD_LETTERED = Counter(
    "isthmus_messages_dead_lettered_total", "Messages moved to the dead-letter queue.", ["route", "error_class"]
)
MESSAGES_PUBLISHED = Counter(
    "isthmus_messages_published_total",
    "Messages published by sources and webhooks (source: a source's or a webhook endpoint's name).",
    ["source", "type"],
)
ROUTE_INFO = Gauge(
    "isthmus_route_info",
    "1 per route a worker runs; its labels say where the route reads from and writes to.",
    ["route", "from_system", "to_system", "to_entity"],
)
PROCESSING_SECONDS = Histogram(
    "isthmus_processing_seconds",
    "Time from fetch to ack of one batch, per message.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
END_TO_END_LAG = Histogram(
    "isthmus_end_to_end_lag_seconds",
    "From the change in the source system (the record's own timestamp) to the durable effect in the target.",
    ["route"],
    buckets=LAG_BUCKETS,
)
PIPELINE_LAG = Histogram(
    "isthmus_pipeline_lag_seconds",
    "From intake into Isthmus (poll, webhook) to the durable effect in the target.",
    ["route"],
    buckets=LAG_BUCKETS,
)
LAST_SUCCESS = Gauge("isthmus_last_success_timestamp_seconds", "Unix time of the route's last effect.", ["route"])
QUEUE_DEPTH = Gauge("isthmus_queue_depth", "Messages waiting in the route's queue.", ["route"])
DLQ_SIZE = Gauge("isthmus_dlq_size", "Messages in the route's dead-letter queue.", ["route"])
CONFLICTS_TOTAL = Counter(
    "isthmus_conflicts_total",
    "Conflicts a two-way route found (the same field changed on both sides, or by its non-owner), by the "
    "policy that decided: owner, last_writer_wins, manual (parked).",
    ["route", "policy"],
)
CONFLICTS_OPEN = Gauge(
    "isthmus_conflicts_open", "Manual conflicts found by the route and not resolved yet.", ["route"]
)
POLLS = Counter("isthmus_polls_total", "Polls of a source, by outcome.", ["source", "outcome"])
POLLER_LAST_SUCCESS = Gauge(
    "isthmus_poller_last_success_timestamp_seconds", "Unix time of the source's last successful poll.", ["source"]
)
WEBHOOK_REQUESTS = Counter(
    "isthmus_webhook_requests_total", "Webhook POSTs answered, by endpoint and HTTP status.", ["endpoint", "status"]
)
WEBHOOK_EVENTS_IGNORED = Counter(
    "isthmus_webhook_events_ignored_total",
    "Webhook events acknowledged but not published (reason unknown_kind: emits_by names no such kind).",
    ["endpoint", "reason"],
)
WEBHOOK_FETCHES = Counter(
    "isthmus_webhook_fetches_total",
    "Full records fetched for webhook triggers (item_path), by outcome: ok, missing, retried, dead_lettered.",
    ["endpoint", "outcome"],
)
ADAPTER_CALLS = Counter(
    "isthmus_adapter_calls_total",
    "Calls to a system: operation read or write; status the HTTP code or the failure "
    "(timeout, connection_error, invalid_request); outcome ok, transient or permanent.",
    ["system", "operation", "status", "outcome"],
)
ADAPTER_CALL_SECONDS = Histogram(
    "isthmus_adapter_call_seconds",
    "Duration of one call to a system, until the response was read.",
    ["system", "operation"],
    buckets=(*LATENCY_BUCKETS, 30, 60),
)
REQUEST_BUDGET_REMAINING = Gauge(
    "isthmus_request_budget_remaining",
    "Calls to a system this process may still make (systems with a request_budget): window second "
    "(tokens in the bucket now) or day (until 00:00 UTC).",
    ["system", "window"],
)
REQUEST_BUDGET_LIMIT = Gauge(
    "isthmus_request_budget_limit",
    "The configured request budget of a system: window second (bucket size) or day (calls per UTC day).",
    ["system", "window"],
)

RECONCILE_DRIFT = Gauge(
    "isthmus_reconcile_drift_records",
    "Records out of sync at the route's last reconciliation, by kind: missing (in the target), different "
    "(field values), orphaned (target records without a live source record), unmappable (the mapping fails).",
    ["route", "kind"],
)
RECONCILE_LAST_RUN = Gauge(
    "isthmus_reconcile_last_run_timestamp_seconds", "Unix time the route's last reconciliation finished.", ["route"]
)
RECONCILE_RUNS = Counter(
    "isthmus_reconcile_runs_total", "Scheduled reconciliations of a route, by outcome: ok, error.", ["route", "outcome"]
)
RECONCILE_HEALED = Counter(
    "isthmus_reconcile_healed_records_total",
    "Records a scheduled reconciliation re-emitted onto the route (or re-created) to heal drift.",
    ["route"],
)

_adapter_children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}


def observe_adapter_call(system: str, operation: str, status: str, outcome: str, seconds: float) -> None:
    """Count one call to a system and its duration (label children cached: this is per write)."""
    key = (system, operation, status, outcome)
    children = _adapter_children.get(key)
    if children is None:
        children = (
            ADAPTER_CALLS.labels(system, operation, status, outcome),
            ADAPTER_CALL_SECONDS.labels(system, operation),
        )
        _adapter_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def prepare_adapter_metrics(system: str) -> None:
    """Create a system's 429 series at 0, so `rate()` sees the first rate-limited call.

    A counter series that first appears with a value above 0 has no increase to Prometheus;
    the rate-limit alert watches exactly this series.
    """
    for operation in ("read", "write"):
        ADAPTER_CALLS.labels(system, operation, "429", "transient")


class WatermarkAges(Collector):
    """`isthmus_poller_watermark_age_seconds{source}`: now minus the source's watermark.

    Computed at scrape time from the last watermark each poller saw, so the age keeps
    growing while a source fails to poll (a gauge set after each poll would freeze then).
    """

    NAME = "isthmus_poller_watermark_age_seconds"
    DOC = "Now minus the source's watermark (the change time up to which it has read)."

    def __init__(self) -> None:
        self._moments: dict[str, float] = {}
        self._lock = threading.Lock()

    def set(self, source: str, watermark: datetime) -> None:
        with self._lock:
            self._moments[source] = watermark.timestamp()

    def age(self, source: str) -> float | None:
        with self._lock:
            moment = self._moments.get(source)
        return None if moment is None else max(0.0, time.time() - moment)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.NAME, self.DOC, labels=["source"])]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.NAME, self.DOC, labels=["source"])
        now = time.time()
        with self._lock:
            for source, moment in sorted(self._moments.items()):
                family.add_metric([source], max(0.0, now - moment))
        yield family


WATERMARK_AGE = WatermarkAges()
REGISTRY.register(WATERMARK_AGE)


def configure_logging(
    fmt: str = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    *,
    pii_fields: Iterable[str] = DEFAULT_PII_FIELDS,
) -> None:
    """JSON lines for machines, coloured lines for people; both carry bound context.

    `stream` (default stderr) lets the demo send logs to a file and keep the console for progress.
    Every line passes the `LogMasker` last, after exceptions are formatted, so neither a
    registered secret nor a value of a `pii_fields` key reaches the stream.
    """
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            LogMasker(pii_fields),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


class HealthServer:
    """Serves /metrics, /healthz (the process is alive and its threads run) and /readyz."""

    def __init__(
        self, host: str, port: int, *, alive: Callable[[], bool], ready: Callable[[], tuple[bool, str]]
    ) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path.startswith("/metrics"):
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif self.path.startswith("/healthz"):
                    ok = server.alive()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"worker threads stopped\n")
                elif self.path.startswith("/readyz"):
                    ok, why = server.ready()
                    self._send(200 if ok else 503, (why or "ready").encode() + b"\n")
                else:
                    self._send(404, b"try /metrics, /healthz or /readyz\n")

            def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.alive = alive
        self.ready = ready
        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="health-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
