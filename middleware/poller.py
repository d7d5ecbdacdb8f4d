"""Sources: poll a system for changes since a watermark and publish them as envelopes.

The watermark advances only after a page's messages are durably published, so a crash
re-reads at most one page; re-read records carry the same source version and therefore the
same idempotency key, and the routes skip them.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import structlog

from middleware.adapter import Reader
from middleware.broker.base import Broker, OutgoingMessage
from middleware.config import SourceConfig
from middleware.errors import IsthmusError
from middleware.message import Envelope, Source
from middleware.observability import MESSAGES_PUBLISHED, POLLS, WATERMARK_AGE
from middleware.store.base import Store

log = structlog.get_logger("isthmus.poller")


class SourcePoller:
    """Polls one source until stopped; one thread each."""

    def __init__(self, config: SourceConfig, reader: Reader, broker: Broker, store: Store) -> None:
        self.config = config
        self.reader = reader
        self.broker = broker
        self.store = store
        self.published = 0
        self.last_error: str = ""
        self._watermark_name = f"source:{config.name}"

    def poll_once(self) -> int:
        """Read every page of changes since the watermark and publish them; returns the count."""
        cfg = self.config
        watermark = self.store.get_watermark(self._watermark_name)
        count = 0
        for page in self.reader.read_changes(cfg.entity, watermark):
            if page.records:
                messages = [self._message(record) for record in page.records]
                self.broker.publish(messages)
                count += len(messages)
                MESSAGES_PUBLISHED.labels(cfg.name, cfg.emits).inc(len(messages))
            if page.watermark and page.watermark != watermark:
                self.store.set_watermark(self._watermark_name, page.watermark)
                watermark = page.watermark
                log.debug("watermark_advanced", source=cfg.name, watermark=watermark)
        self._observe_watermark(watermark)
        self.published += count
        return count

    def _message(self, record: object) -> OutgoingMessage:
        from middleware.adapter import SourceRecord

        assert isinstance(record, SourceRecord)
        cfg = self.config
        envelope = Envelope(
            type=cfg.emits,
            source=Source(system=cfg.system, entity=cfg.entity, record_id=record.record_id, version=record.version),
            occurred_at=record.occurred_at,
            payload=record.data,
        )
        return OutgoingMessage(routing_key=cfg.emits, body=envelope.to_bytes(), message_id=str(envelope.message_id))

    def _observe_watermark(self, watermark: str | None) -> None:
        if not watermark:
            return
        try:
            moment = datetime.fromisoformat(watermark)
        except ValueError:
            return
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        WATERMARK_AGE.labels(self.config.name).set((datetime.now(UTC) - moment).total_seconds())

    def run(self, stop: threading.Event) -> None:
        """Poll every `poll_interval_s` until `stop` is set; failures are logged and retried."""
        cfg = self.config
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                published = self.poll_once()
                POLLS.labels(cfg.name, "ok").inc()
                if published:
                    log.info("source_polled", source=cfg.name, published=published)
                failures = 0
                self.last_error = ""
                wait = cfg.poll_interval_s - (time.monotonic() - started)
            except (IsthmusError, OSError) as exc:
                failures += 1
                self.last_error = str(exc)
                POLLS.labels(cfg.name, "error").inc()
                wait = min(60.0, cfg.poll_interval_s * 2 ** min(failures, 6))
                log.warning("source_poll_failed", source=cfg.name, error=str(exc), retry_in_s=round(wait, 1))
            stop.wait(max(0.0, wait))
