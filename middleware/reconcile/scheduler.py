"""Reconciling routes on a schedule inside the worker, and the drift metrics it exports.

The worker builds a `ReconcileScheduler` from the config's `reconcile:` section (routes with
`every:` or `cron:`), `start()`s it with the other threads and `stop()`s it when it drains.
One thread runs every due route in turn: reconciliation reads both systems whole, and
running two at once would only compete for the same connections. A run that fails (a system
down) is logged and counted (`isthmus_reconcile_runs_total{outcome="error"}`), its drift
gauges keep the last good values, and the route's next run is at its next scheduled time.

Exported per route, after each run: `isthmus_reconcile_drift_records{route,kind}` for every
kind (missing, different, orphaned, unmappable; 0 included, so an alert can watch them) and
`isthmus_reconcile_last_run_timestamp_seconds{route}`; with `heal: true` also
`isthmus_reconcile_healed_records_total{route}`. Drift is measured *before* healing: the
gauge says what the run found; healed records drop out at the next run.

Run it in one worker process per config (the one that runs sources): several processes
would reconcile, and heal, the same routes several times over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from middleware.adapter import Adapter
from middleware.broker.base import Broker
from middleware.config import LoadedConfig
from middleware.message import utc_now
from middleware.observability import RECONCILE_DRIFT, RECONCILE_HEALED, RECONCILE_LAST_RUN, RECONCILE_RUNS
from middleware.reconcile.engine import KINDS, Reconciler, ReconcileReport, plan_route
from middleware.schedule.cron import Schedule, parse_schedule
from middleware.store.base import Store

log = structlog.get_logger("isthmus.reconcile")


def observe_report(report: ReconcileReport) -> None:
    """Set the route's drift gauges (every kind) and its last-run time from one report."""
    counts = report.counts()
    for kind in KINDS:
        RECONCILE_DRIFT.labels(report.route, kind).set(counts[kind])
    finished = report.finished_at or utc_now()
    RECONCILE_LAST_RUN.labels(report.route).set(finished.timestamp())


@dataclass
class _Job:
    route: str
    schedule: Schedule
    reconciler: Reconciler
    heal: bool
    due: datetime


class ReconcileScheduler:
    """Runs the scheduled reconciliations of one config in a background thread.

    Everything that can fail on a bad config (plans, mappings, readers) is built in the
    constructor, on the worker's thread, so a mistake stops the worker at start.
    `new_broker` is called once, in the scheduler's thread (broker handles are per thread).
    """

    def __init__(
        self,
        config: LoadedConfig,
        store: Store,
        new_broker: Callable[[], Broker],
        adapter: Callable[[str], Adapter],
        *,
        wait_s: float = 0.0,
    ) -> None:
        self.new_broker = new_broker
        self.wait_s = wait_s
        self.stop_event = threading.Event()
        self.reports: dict[str, ReconcileReport] = {}
        self._thread: threading.Thread | None = None
        self._broker: Broker | None = None
        now = utc_now()
        self.jobs: list[_Job] = []
        for route, settings in config.model.reconcile.items():
            if settings.every is None and settings.cron is None:
                continue
            schedule = parse_schedule(settings.every, settings.cron)
            reconciler = Reconciler(config, plan_route(config, route), store, adapter)
            self.jobs.append(_Job(route, schedule, reconciler, settings.heal, schedule.next_after(now)))
        for job in self.jobs:  # the series exist from the start; last run 0 = never ran
            RECONCILE_LAST_RUN.labels(job.route)
            RECONCILE_RUNS.labels(job.route, "ok")
            RECONCILE_RUNS.labels(job.route, "error")

    def start(self) -> ReconcileScheduler:
        if self.jobs and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="reconcile-scheduler", daemon=True)
            self._thread.start()
            log.info("reconcile_scheduler_started", routes={j.route: str(j.schedule) for j in self.jobs})
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the run in hand (a run is not interrupted), then close the thread's broker."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._broker is not None:
            try:
                self._broker.close()
            except Exception as exc:
                log.warning("broker_close_failed", error=str(exc))

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def run_once(self, route: str) -> ReconcileReport:
        """Reconcile one scheduled route now (and heal it if configured); what a due run does."""
        job = next((j for j in self.jobs if j.route == route), None)
        if job is None:
            raise KeyError(f"route {route!r} has no reconcile schedule")
        return self._run(job)

    def _run(self, job: _Job) -> ReconcileReport:
        started = time.monotonic()
        try:
            report = job.reconciler.run()
            observe_report(report)
            if job.heal and any(d.kind in ("missing", "different") for d in report.drift):
                if self._broker is None:
                    self._broker = self.new_broker()
                heal = job.reconciler.heal(report, self._broker, wait_s=self.wait_s)
                RECONCILE_HEALED.labels(job.route).inc(len(heal.emitted) + len(heal.recreated))
        except Exception:
            RECONCILE_RUNS.labels(job.route, "error").inc()
            raise
        RECONCILE_RUNS.labels(job.route, "ok").inc()
        self.reports[job.route] = report
        log.info(
            "reconcile_run_finished",
            route=job.route,
            seconds=round(time.monotonic() - started, 3),
            healed=bool(report.heal),
            **report.counts(),
        )
        return report

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            job = min(self.jobs, key=lambda j: j.due)
            wait = (job.due - utc_now()).total_seconds()
            if wait > 0:
                self.stop_event.wait(min(wait, 60.0))  # re-check now and then: the clock may jump
                continue
            try:
                self._run(job)
            except Exception as exc:  # a system down or a bug: the next run tries again
                log.error("reconcile_run_failed", route=job.route, error=f"{type(exc).__name__}: {exc}")
            job.due = job.schedule.next_after(utc_now())

    def describe(self) -> dict[str, Any]:
        return {job.route: {"schedule": str(job.schedule), "next_run": job.due.isoformat()} for job in self.jobs}
