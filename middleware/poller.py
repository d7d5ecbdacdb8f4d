"""Sources: poll a system for changes since a watermark and publish them as envelopes.

The watermark advances only after a page's messages are durably published, so a crash
re-reads at most one page; re-read records carry the same source version and therefore the
same idempotency key, and the routes skip them.

Watermarks are inclusive (`updated >= watermark`) so that a change sharing the watermark's
instant is never lost; that means every poll reads the records *at* the watermark again. The
poller remembers which record versions it published at that boundary instant (persisted next
to the watermark) and does not publish them again — otherwise a record that was dead-lettered
would be dead-lettered anew on every poll.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import structlog

from middleware.adapter import Reader, SourceRecord
from middleware.broker.base import Broker, OutgoingMessage
from middleware.config import SourceConfig
from middleware.errors import IsthmusError
from middleware.message import Envelope, Source
from middleware.observability import MESSAGES_PUBLISHED, POLLER_LAST_SUCCESS, POLLS, WATERMARK_AGE
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
        self._boundary_name = f"source:{config.name}:boundary"
        self._last_success = POLLER_LAST_SUCCESS.labels(config.name)  # 0 until the first good poll
        self._polls_ok = POLLS.labels(config.name, "ok")  # both series exist from the start, so
        self._polls_failed = POLLS.labels(config.name, "error")  # rate() sees the first failure

    def poll_once(self) -> int:
        """Read every page of changes since the watermark and publish them; returns the count."""
        cfg = self.config
        watermark = self.store.get_watermark(self._watermark_name)
        boundary = set(json.loads(self.store.get_watermark(self._boundary_name) or "[]"))
        read: list[tuple[datetime, str]] = []  # (occurred_at, key) of every record read this poll
        count = 0
        for page in self.reader.read_changes(cfg.entity, watermark):
            fresh = []
            for record in page.records:
                key = f"{record.record_id}@{record.version}"
                read.append((record.occurred_at, key))
                if key not in boundary:
                    fresh.append(record)
            if fresh:
                messages = [self._message(record) for record in fresh]
                self.broker.publish(messages)
                count += len(messages)
                MESSAGES_PUBLISHED.labels(cfg.name, cfg.emits).inc(len(messages))
            if page.watermark and page.watermark != watermark:
                self.store.set_watermark(self._watermark_name, page.watermark)
                watermark = page.watermark
                log.debug("watermark_advanced", source=cfg.name, watermark=watermark)
        self._remember_boundary(watermark, read, boundary)
        self._observe_watermark(watermark)
        self.published += count
        return count

    def _remember_boundary(self, watermark: str | None, read: list[tuple[datetime, str]], old: set[str]) -> None:
        """Persist the keys read at the watermark's instant: the next poll reads them again."""
        moment = _moment(watermark)
        if moment is None:
            return
        at_boundary = sorted({key for occurred, key in read if _utc(occurred) >= moment})
        if set(at_boundary) != old:
            self.store.set_watermark(self._boundary_name, json.dumps(at_boundary))

    def _message(self, record: SourceRecord) -> OutgoingMessage:
        cfg = self.config
        envelope = Envelope(
            type=cfg.emits,
            source=Source(system=cfg.system, entity=cfg.entity, record_id=record.record_id, version=record.version),
            occurred_at=record.occurred_at,
            payload=record.data,
        )
        message_id = str(envelope.message_id)
        return OutgoingMessage(cfg.emits, envelope.to_bytes(), message_id=message_id, key=envelope.record_key)

    def _observe_watermark(self, watermark: str | None) -> None:
        moment = _moment(watermark)
        if moment is None:
            return
        WATERMARK_AGE.set(self.config.name, moment)

    def run(self, stop: threading.Event) -> None:
        """Poll every `poll_interval_s` until `stop` is set; failures are logged and retried."""
        cfg = self.config
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                published = self.poll_once()
                self._polls_ok.inc()
                self._last_success.set(time.time())
                if published:
                    log.info("source_polled", source=cfg.name, published=published)
                failures = 0
                self.last_error = ""
                wait = cfg.poll_interval_s - (time.monotonic() - started)
            except (IsthmusError, OSError) as exc:
                failures += 1
                self.last_error = str(exc)
                self._polls_failed.inc()
                wait = min(60.0, cfg.poll_interval_s * 2 ** min(failures, 6))
                log.warning("source_poll_failed", source=cfg.name, error=str(exc), retry_in_s=round(wait, 1))
            stop.wait(max(0.0, wait))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _moment(watermark: str | None) -> datetime | None:
    """The watermark as an aware moment; None for an empty or opaque (cursor) watermark."""
    if not watermark:
        return None
    try:
        return _utc(datetime.fromisoformat(watermark))
    except ValueError:
        return None
