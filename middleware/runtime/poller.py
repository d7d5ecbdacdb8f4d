"""Sources: poll a system for changes since a watermark and publish them as envelopes.

Pattern: **Polling Consumer** (an **Event-Driven Consumer** is the webhook receiver).

The watermark advances only after a page's messages are durably published, so a crash
re-reads at most one page; re-read records carry the same source version and therefore the
same idempotency key, and the routes skip them.

Watermarks are inclusive (`updated >= watermark`) so that a change sharing the watermark's
instant is never lost; that means every poll reads the records *at* the watermark again. The
poller remembers which record versions it published at that boundary instant (persisted next
to the watermark) and does not publish them again — otherwise a record that was dead-lettered
would be dead-lettered anew on every poll.

A source with `schedule:` (cron, see middleware/schedule/zoned.py) runs one batch per slot instead
of polling every `poll_interval_s`: `batch: incremental` reads the changes since the
watermark, exactly as a poll; `batch: full` reads every record (from no watermark) and
publishes it again, leaving the watermark where it was or moving it forward, never back —
routes skip the record versions they already applied. The last slot handled is kept in the
state store's watermarks (`source:<name>:schedule`), written after the batch is published:

* a restart does not run a slot again, and does not skip one: at start the next slot after
  the stored one is due if it has passed, so a slot (or several) missed while no worker
  ran runs **once**, at start; then the stored slot becomes the latest one that has passed;
* a batch that fails is retried with backoff and its slot stays unrecorded until it succeeds;
  a worker killed during a batch runs it again at start (its records carry the same
  idempotency keys, so routes apply them once);
* a source seen for the first time stores its start time as the baseline: it runs at the
  first slot after that, not at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from middleware.adapter import Reader, SourceRecord
from middleware.broker.base import Broker, OutgoingMessage
from middleware.config import SourceConfig
from middleware.errors import IsthmusError
from middleware.message import Envelope, Source
from middleware.observability import MESSAGES_PUBLISHED, POLLER_LAST_SUCCESS, POLLS, WATERMARK_AGE
from middleware.schedule.zoned import utc_now
from middleware.store.base import Store

log = structlog.get_logger("isthmus.poller")


class SourcePoller:
    """Polls one source until stopped; one thread each."""

    def __init__(
        self,
        config: SourceConfig,
        reader: Reader,
        broker: Broker,
        store: Store,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.reader = reader
        self.broker = broker
        self.store = store
        self.clock = clock or utc_now  # scheduled sources ask it what time it is (tests inject one)
        self.schedule = config.cron()
        self.published = 0
        self.last_error: str = ""
        self._watermark_name = f"source:{config.name}"
        self._boundary_name = f"source:{config.name}:boundary"
        self._slot_name = f"source:{config.name}:schedule"
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
            count += self._publish(fresh)
            if page.watermark and page.watermark != watermark:
                self.store.set_watermark(self._watermark_name, page.watermark)
                watermark = page.watermark
                log.debug("watermark_advanced", source=cfg.name, watermark=watermark)
        self._remember_boundary(watermark, read, boundary)
        self._observe_watermark(watermark)
        self.published += count
        return count

    def read_all_once(self) -> int:
        """A full batch: read every record (no watermark) and publish it; the watermark only moves forward."""
        cfg = self.config
        stored = self.store.get_watermark(self._watermark_name)
        count = 0
        for page in self.reader.read_changes(cfg.entity, None):
            count += self._publish(page.records)
            if page.watermark and _later(page.watermark, stored):
                self.store.set_watermark(self._watermark_name, page.watermark)
                stored = page.watermark
        self._observe_watermark(stored)
        self.published += count
        return count

    def _publish(self, records: list[SourceRecord]) -> int:
        if not records:
            return 0
        messages = [self._message(record) for record in records]
        self.broker.publish(messages)
        MESSAGES_PUBLISHED.labels(self.config.name, self.config.emits).inc(len(messages))
        return len(messages)

    # ----- schedules --------------------------------------------------------------------
    def last_slot(self) -> datetime | None:
        """The last slot handled (or the baseline stored at first start); None before the first start."""
        stored = self.store.get_watermark(self._slot_name)
        return _moment(stored)

    def next_slot(self) -> datetime:
        """When the next batch is due (it may have passed: then it runs at once)."""
        assert self.schedule is not None, "next_slot is for scheduled sources"
        return self.schedule.next_after(self.last_slot() or self.clock())

    def run_due(self) -> int | None:
        """Run the batch if a slot is due; returns how many records it published, or None if none was due.

        Several slots that passed unrun (the worker was down) run as one batch. The slot is recorded
        only after the batch succeeded, so an exception here leaves it due.
        """
        schedule = self.schedule
        assert schedule is not None, "run_due is for scheduled sources"
        now = self.clock()
        last = self.last_slot()
        if last is None:
            self.store.set_watermark(self._slot_name, now.isoformat())
            log.info(
                "source_schedule_armed",
                source=self.config.name,
                schedule=str(schedule),
                next_run=schedule.next_after(now).isoformat(),
            )
            return None
        due = schedule.next_after(last)
        if due > now:
            return None
        latest = schedule.latest_at_or_before(now) or due
        published = self.read_all_once() if self.config.batch == "full" else self.poll_once()
        self.store.set_watermark(self._slot_name, latest.isoformat())
        log.info(
            "source_batch_ran",
            source=self.config.name,
            slot=due.isoformat(),
            caught_up_to=latest.isoformat() if latest != due else None,
            batch=self.config.batch,
            published=published,
            next_run=schedule.next_after(latest).isoformat(),
        )
        return published

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
        """Poll every `poll_interval_s` (or run the schedule's batches) until `stop` is set; failures are
        logged and retried."""
        if self.schedule is not None:
            self._run_scheduled(stop)
            return
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

    def _run_scheduled(self, stop: threading.Event) -> None:
        cfg = self.config
        failures = 0
        while not stop.is_set():
            try:
                if self.run_due() is not None:
                    self._polls_ok.inc()
                # healthy while waiting for the next slot, so IsthmusSourceNotPolling fires only on failures
                self._last_success.set(time.time())
                failures = 0
                self.last_error = ""
                # wake at the slot, and at least every minute (the host clock may be set meanwhile)
                wait = min(60.0, (self.next_slot() - self.clock()).total_seconds())
            except (IsthmusError, OSError) as exc:
                failures += 1
                self.last_error = str(exc)
                self._polls_failed.inc()
                wait = min(60.0, 5.0 * 2 ** min(failures, 6))
                log.warning("source_batch_failed", source=cfg.name, error=str(exc), retry_in_s=round(wait, 1))
            stop.wait(max(0.05, wait))


def _later(candidate: str, current: str | None) -> bool:
    """Whether watermark `candidate` is ahead of `current` (opaque cursors: only when there is none)."""
    if current is None:
        return True
    new, old = _moment(candidate), _moment(current)
    return new is not None and old is not None and new > old


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
