"""Metrics, structured logs and the health endpoint of a worker.

Metrics live in the process-wide prometheus_client registry (one worker process per
metrics port; several processes on one host each get their own port — see README). Logs
are structlog: JSON when stdout is not a terminal, readable on one; message handling binds
route, message_id and correlation_id so every line can be joined to one message.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)

MESSAGES_CONSUMED = Counter("isthmus_messages_consumed_total", "Messages taken from a route's queue.", ["route"])
MESSAGES_PRODUCED = Counter(
    "isthmus_messages_produced_total", "Effects written to the route's target system.", ["route"]
)
MESSAGES_SKIPPED = Counter(
    "isthmus_messages_skipped_total", "Messages acked without an effect (duplicate, filtered).", ["route", "reason"]
)
MESSAGES_FAILED = Counter(
    "isthmus_messages_failed_total", "Failed processing attempts, by error class.", ["route", "error_class"]
)
MESSAGES_RETRIED = Counter("isthmus_messages_retried_total", "Messages scheduled for a delayed retry.", ["route"])
MESSAGES_DEAD_LETTERED = Counter(
    "isthmus_messages_dead_lettered_total", "Messages moved to the dead-letter queue.", ["route", "error_class"]
)
MESSAGES_PUBLISHED = Counter(
    "isthmus_messages_published_total", "Messages published by sources and webhooks.", ["source", "type"]
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
WATERMARK_AGE = Gauge("isthmus_poller_watermark_age_seconds", "Now minus the source's watermark.", ["source"])
POLLS = Counter("isthmus_polls_total", "Polls of a source, by outcome.", ["source", "outcome"])


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines for machines, coloured lines for people; both carry bound context.

    `stream` (default stderr) lets the demo send logs to a file and keep the console for progress.
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
