"""Scheduled sources: cron slots in a time zone, one batch per slot, and the last slot in the store.

The slot arithmetic is checked on its own (DST days included); the poller runs against the
sample CRM over HTTP, the SQLite state store and the embedded broker, with an injected clock,
so "02:00 tomorrow" happens at once and a restart is a new poller on the same files.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from adapters.rest import RestAdapter
from deploy.demo.sample_crm import SampleCrm
from middleware.broker import open_broker
from middleware.broker.base import Broker
from middleware.config import SourceConfig, load_config
from middleware.errors import ConfigError
from middleware.message import Envelope
from middleware.runtime.poller import SourcePoller
from middleware.schedule.zoned import ZonedSchedule
from middleware.store import open_store
from middleware.store.base import Store
from middleware.yamlsource import load_yaml_file

REPO = Path(__file__).resolve().parents[2]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# ----- slots -----------------------------------------------------------------------------------
def test_daily_slot_is_the_next_two_oclock_in_utc() -> None:
    schedule = ZonedSchedule.parse("0 2 * * *")
    assert schedule.next_after(utc(2026, 3, 10, 1, 59, 30)) == utc(2026, 3, 10, 2, 0)
    assert schedule.next_after(utc(2026, 3, 10, 2, 0)) == utc(2026, 3, 11, 2, 0)  # strictly after
    assert schedule.latest_at_or_before(utc(2026, 3, 10, 2, 0)) == utc(2026, 3, 10, 2, 0)
    assert schedule.latest_at_or_before(utc(2026, 3, 10, 1, 59)) == utc(2026, 3, 9, 2, 0)


def test_slots_are_wall_clock_times_of_the_schedules_time_zone() -> None:
    berlin = ZonedSchedule.parse("0 2 * * *", "Europe/Berlin")
    assert berlin.next_after(utc(2026, 1, 15, 12, 0)) == utc(2026, 1, 16, 1, 0)  # CET, +01:00
    assert berlin.next_after(utc(2026, 7, 15, 12, 0)) == utc(2026, 7, 16, 0, 0)  # CEST, +02:00


def test_a_slot_in_the_skipped_spring_hour_runs_once_shifted_by_the_gap() -> None:
    berlin = ZonedSchedule.parse("30 2 * * *", "Europe/Berlin")  # 2026-03-29: 02:00 -> 03:00
    slot = berlin.next_after(utc(2026, 3, 28, 12, 0))
    assert slot == utc(2026, 3, 29, 1, 30)  # 03:30 CEST
    assert berlin.next_after(slot) == utc(2026, 3, 30, 0, 30)  # back to 02:30 CEST


def test_a_slot_in_the_repeated_autumn_hour_runs_once() -> None:
    berlin = ZonedSchedule.parse("30 2 * * *", "Europe/Berlin")  # 2026-10-25: 03:00 -> 02:00
    first = berlin.next_after(utc(2026, 10, 24, 12, 0))
    assert first == utc(2026, 10, 25, 0, 30)  # 02:30 CEST, the first occurrence
    assert berlin.next_after(first) == utc(2026, 10, 26, 1, 30)  # not 02:30 CET again that night
    every_15 = ZonedSchedule.parse("*/15 2 * * *", "Europe/Berlin")
    night = []
    moment = utc(2026, 10, 24, 23, 0)
    while (moment := every_15.next_after(moment)) < utc(2026, 10, 25, 3, 0):
        night.append(moment)
    assert len(night) == 4, night  # 02:00, 02:15, 02:30, 02:45 once each


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/15 9-17 * * mon-fri", utc(2026, 3, 13, 17, 50), utc(2026, 3, 16, 9, 0)),  # Friday evening -> Monday
        ("0 0 29 2 *", utc(2026, 3, 1), utc(2028, 2, 29)),  # leap day, two years on
        ("0 12 1 * mon", utc(2026, 3, 2, 13, 0), utc(2026, 3, 9, 12, 0)),  # day-of-month OR weekday
        ("@monthly", utc(2026, 12, 31, 23, 59), utc(2027, 1, 1)),
    ],
)
def test_next_slots_of_common_schedules(expression: str, after: datetime, expected: datetime) -> None:
    schedule = ZonedSchedule.parse(expression)
    assert schedule.next_after(after) == expected
    assert schedule.latest_at_or_before(expected) == expected


@pytest.mark.parametrize(
    ("expression", "timezone", "message"),
    [
        ("0 2 * *", "UTC", "5 fields"),
        ("61 2 * * *", "UTC", "outside 0-59"),
        ("0 0 30 2 *", "UTC", "never fires"),
        ("0 2 * * fri-mon", "UTC", "backwards"),
        ("0 2 * * *", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_bad_schedules_are_refused_with_the_reason(expression: str, timezone: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ZonedSchedule.parse(expression, timezone)


def test_the_config_refuses_a_schedule_beside_a_poll_interval() -> None:
    common: dict[str, Any] = {
        "name": "crm_customers",
        "system": "crm",
        "entity": "customer",
        "emits": "customer.upserted",
    }
    with pytest.raises(ValidationError, match="either 'schedule'"):
        SourceConfig(**common, schedule="0 2 * * *", poll_interval_s=5)
    with pytest.raises(ValidationError, match="go with 'schedule'"):
        SourceConfig(**common, batch="full")
    assert SourceConfig(**common, schedule="@daily", timezone="Europe/Berlin").cron() is not None


def test_a_bad_schedule_in_isthmus_yaml_is_reported_at_its_line(tmp_path: Path) -> None:
    config = load_yaml_file(REPO / "deploy" / "demo" / "isthmus.yaml").data
    config["sources"][0].pop("poll_interval_s", None)
    config["sources"][0]["schedule"] = "0 25 * * *"
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_config(path, check_mappings=False)
    (problem,) = caught.value.problems
    assert "outside 0-23" in problem.message and problem.path == "sources[0]"
    assert problem.location is not None and problem.location.line > 1


# ----- the poller --------------------------------------------------------------------------------
class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def crm() -> Iterator[SampleCrm]:
    service = SampleCrm(token="demo-crm-token").start()
    service.seed(customers=5, orders_per_customer=0, with_bad_records=False)
    yield service
    service.stop()


@pytest.fixture
def files(tmp_path: Path) -> Iterator[dict[str, Any]]:
    opened: list[Any] = []

    def store() -> Store:
        opened.append(open_store(f"sqlite:///{tmp_path}/state.db"))
        return opened[-1]  # type: ignore[no-any-return]

    def broker() -> Broker:
        opened.append(open_broker(f"embedded:///{tmp_path}/broker.db"))
        opened[-1].setup_route("customers", ["customer.*"])
        return opened[-1]  # type: ignore[no-any-return]

    yield {"store": store, "broker": broker}
    for handle in opened:
        handle.close()


def poller(crm: SampleCrm, files: dict[str, Any], clock: Clock, **settings: Any) -> SourcePoller:
    """A new poller on the same store and broker files: what a worker (re)start builds."""
    config = SourceConfig(
        name="crm_customers",
        system="crm",
        entity="customer",
        emits="customer.upserted",
        **({"schedule": "0 2 * * *", "timezone": "Europe/Berlin"} | settings),
    )
    demo = load_yaml_file(REPO / "deploy" / "demo" / "isthmus.yaml").data["systems"]["crm"]
    settings = {key: value for key, value in demo.items() if key != "type"}
    settings |= {"base_url": crm.url, "auth": {"type": "bearer", "token": "demo-crm-token"}, "timeout_s": 2}
    reader = RestAdapter("crm", settings).reader()
    return SourcePoller(config, reader, files["broker"](), files["store"](), clock=clock)


def published(broker: Broker) -> list[str]:
    return [Envelope.from_bytes(d.body).source.record_id for d in broker.browse("customers", 1000)]


def test_scheduled_source_runs_at_its_slot_and_not_again_after_restart(crm: SampleCrm, files: dict[str, Any]) -> None:
    clock = Clock(utc(2026, 1, 15, 12, 0))  # 13:00 in Berlin
    first = poller(crm, files, clock)
    assert first.run_due() is None  # first start: arms the schedule, runs at the next 02:00 Berlin
    clock.now = utc(2026, 1, 16, 0, 59)
    assert first.run_due() is None
    clock.now = utc(2026, 1, 16, 1, 0, 5)  # 02:00:05 Berlin
    assert first.run_due() == 5
    assert first.run_due() is None  # the slot is done
    assert first.last_slot() == utc(2026, 1, 16, 1, 0)

    clock.now = utc(2026, 1, 16, 1, 3)  # the worker restarts a few minutes later
    again = poller(crm, files, clock)
    assert again.run_due() is None
    assert again.next_slot() == utc(2026, 1, 17, 1, 0)
    assert sorted(published(again.broker)) == [f"C-{1001 + i}" for i in range(5)]  # once each


def test_slots_missed_while_down_run_once_at_start_and_read_incrementally(
    crm: SampleCrm, files: dict[str, Any]
) -> None:
    clock = Clock(utc(2026, 1, 15, 12, 0))
    poller(crm, files, clock).run_due()
    clock.now = utc(2026, 1, 16, 1, 0)
    assert poller(crm, files, clock).run_due() == 5
    crm.upsert_customer({"customer_no": "C-1003", "tier": "gold"})
    clock.now = utc(2026, 1, 19, 9, 0)  # down over three slots (17th, 18th, 19th at 02:00 Berlin)
    restarted = poller(crm, files, clock)
    assert restarted.run_due() == 1  # one batch, with only what changed
    assert restarted.last_slot() == utc(2026, 1, 19, 1, 0)  # caught up: the missed slots are done
    assert restarted.run_due() is None


def test_a_full_batch_publishes_every_record_again(crm: SampleCrm, files: dict[str, Any]) -> None:
    clock = Clock(utc(2026, 1, 15, 12, 0))
    poller(crm, files, clock, batch="full").run_due()
    clock.now = utc(2026, 1, 16, 1, 0)
    assert poller(crm, files, clock, batch="full").run_due() == 5
    clock.now = utc(2026, 1, 17, 1, 0)
    full = poller(crm, files, clock, batch="full")
    assert full.run_due() == 5  # unchanged records too; routes skip the versions they applied
    assert len(published(full.broker)) == 10


def test_a_failed_batch_keeps_its_slot_due(crm: SampleCrm, files: dict[str, Any]) -> None:
    clock = Clock(utc(2026, 1, 15, 12, 0))
    poller(crm, files, clock).run_due()
    clock.now = utc(2026, 1, 16, 1, 0)
    crm.stop()  # the CRM is down at 02:00
    failing = poller(crm, files, clock)
    with pytest.raises(Exception):  # noqa: B017 - whatever the transport raises
        failing.run_due()
    assert failing.last_slot() == utc(2026, 1, 15, 12, 0)  # not recorded: still due
    crm.start()
    assert poller(crm, files, clock).run_due() == 5


def test_a_worker_runs_a_scheduled_source_at_its_slot_once_across_a_restart(
    crm: SampleCrm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from middleware.runtime.worker import Worker
    from tests.flows.conftest import wait_until

    demo = load_yaml_file(REPO / "deploy" / "demo" / "isthmus.yaml").data
    config = {
        "broker": f"embedded:///{tmp_path}/broker.db",
        "store": f"sqlite:///{tmp_path}/state.db",
        "mappings": [str(REPO / "mappings")],
        "observability": {"port": 0, "log_format": "json", "log_level": "warning"},
        "systems": {"crm": demo["systems"]["crm"]},
        "sources": [
            {
                "name": "crm_customers",
                "system": "crm",
                "entity": "customer",
                "emits": "customer.upserted",
                "schedule": "0 2 * * *",
                "timezone": "Europe/Berlin",
            }
        ],
        "routes": [
            {
                "name": "customers_held",
                "on": ["customer.upserted"],
                "mappings": ["crm_customer_to_canonical"],
                "to": {"system": "crm", "entity": "order"},
            }
        ],  # not consumed: run_routes=False
    }
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setenv("DEMO_CRM_URL", crm.url)
    clock = Clock(utc(2026, 1, 16, 0, 59, 59))  # 01:59:59 in Berlin
    monkeypatch.setattr("middleware.runtime.poller.utc_now", clock)

    def run_worker(then: datetime | None = None) -> tuple[int, datetime]:
        """Start a worker, optionally move the clock once the schedule is armed, stop it; (queued, next slot)."""
        worker = Worker(load_config(path), run_routes=False, serve_health=False).start()
        try:
            poller = worker.pollers[0]
            wait_until(lambda: poller.last_slot() is not None, 5, "the schedule to be armed")
            if then is not None:
                clock.now = then
                wait_until(lambda: worker.broker.depth("customers_held") > 0, 5, "the batch of the 02:00 slot")
            time.sleep(1.0)  # the poller loop wakes at least once more
            return worker.broker.depth("customers_held"), poller.next_slot()
        finally:
            worker.stop()

    assert run_worker(then=utc(2026, 1, 16, 1, 0, 5)) == (5, utc(2026, 1, 17, 1, 0))  # the 02:00 slot ran
    clock.now = utc(2026, 1, 16, 1, 3)
    assert run_worker() == (5, utc(2026, 1, 17, 1, 0))  # restarted at 02:03: nothing more
