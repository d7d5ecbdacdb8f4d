"""Reconciliation and replay against the real Tryton and the sample CRM, through the real CLI.

One synced world per module (see conftest.py). Drift is injected the way it happens: a
party deleted and a party renamed by someone in Tryton, parties created by hand in Tryton,
a customer purged from the CRM. `isthmus reconcile` must report exactly that, `--heal` must
fix what can be fixed through the route, and replay must show and apply one record's diff.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import REGISTRY

from middleware.config import load_config
from middleware.reconcile.engine import Connections
from middleware.reconcile.scheduler import ReconcileScheduler
from middleware.runtime.worker import Worker
from tests.cli.cli_runner import Run, run_isthmus
from tests.reconcile.conftest import CUSTOMERS, NAMELESS, ROUTE, World, wait_for

pytestmark = pytest.mark.slow


def isthmus(world: World, *args: str, timeout: float = 120) -> Run:
    run = run_isthmus(world.config_path.parent, *args, "--config", str(world.config_path), timeout=timeout)
    run.assert_no_traceback()
    return run


def reconcile_json(world: World, *extra: str) -> tuple[int, dict[str, Any]]:
    run = isthmus(world, "reconcile", "customer", "--json", *extra)
    assert run.code in (0, 1), run.output
    (report,) = json.loads(run.out)["routes"]
    return run.code, report


def drift_of(report: dict[str, Any]) -> dict[str, list[tuple[str | None, str | None]]]:
    found: dict[str, list[tuple[str | None, str | None]]] = {}
    for item in report["drift"]:
        found.setdefault(item["kind"], []).append((item["source_id"], item["target_id"]))
    return found


def drift_gauge(kind: str) -> float | None:
    return REGISTRY.get_sample_value("isthmus_reconcile_drift_records", {"route": ROUTE, "kind": kind})


def scheduled_run(world: World) -> None:
    """What the worker's scheduler does when the route is due (heal off, as configured)."""
    config = load_config(world.config_path)
    connections = Connections(config)
    try:
        scheduler = ReconcileScheduler(config, connections.store, connections.new_broker, connections.adapter)
        scheduler.run_once(ROUTE)
    finally:
        connections.close()


def test_reconcile_reports_injected_drift_and_heal_fixes_missing_and_different(synced: World) -> None:
    world = synced
    deleted_id = world.party_id("C-1002")
    world.erp.rpc.model("party.party", "delete", [deleted_id])
    world.rename_party("C-1003", "Renamed in Tryton")
    orphan_id = world.party_id("C-1004")
    world.delete_crm_customer("C-1004")
    (walk_in_id, local_id) = world.erp.rpc.model(
        "party.party", "create", [{"name": "Walk-in customer", "code": "C-9001"}, {"name": "Local", "code": "L-1"}]
    )
    expected_name = world.crm.customer("C-1003")["company"]  # type: ignore[index]
    world.until_listed(walk_in_id, local_id, world.party_id("C-1003"))

    code, report = reconcile_json(world)

    assert code == 1
    assert drift_of(report) == {
        "missing": [("C-1002", str(deleted_id))],
        "different": [("C-1003", str(world.party_id("C-1003")))],
        "orphaned": [("C-1004", str(orphan_id)), (None, str(walk_in_id))],
        "unmappable": [(NAMELESS, None)],
    }
    by_kind = {item["kind"] + (item["source_id"] or ""): item for item in report["drift"]}
    assert by_kind["differentC-1003"]["diff"] == [
        {"field": "name", "target": "Renamed in Tryton", "source": expected_name}
    ]
    assert "no longer exists" in by_kind["missingC-1002"]["reason"]
    assert by_kind["orphanedC-1004"]["reason"].startswith("source_deleted")
    assert by_kind["orphaned"]["reason"].startswith("unlinked")
    assert str(local_id) not in {item["target_id"] for item in report["drift"]}  # outside unlinked_match
    # all others in sync, C-1010's too: it is archived, so its party is inactive and no list read returns it
    assert not world.party("C-1010")["active"]  # type: ignore[index]
    # and C-1098's, whose e-mail contact mechanism Tryton never got (the customer has no e-mail)
    assert report["in_sync"] == len(CUSTOMERS) - 3 + 1 and report["uncompared_fields"] == []

    scheduled_run(world)
    assert (drift_gauge("missing"), drift_gauge("different"), drift_gauge("orphaned")) == (1, 1, 2)
    assert drift_gauge("unmappable") == 1
    last_run = REGISTRY.get_sample_value("isthmus_reconcile_last_run_timestamp_seconds", {"route": ROUTE})
    assert last_run is not None and last_run > 0

    heal = isthmus(world, "reconcile", "--route", ROUTE, "--heal", "--wait", "60", "--json")
    healed = json.loads(heal.out)["routes"][0]["heal"]
    assert heal.code == 1, heal.output  # the orphans and the unmappable customer are left, by design
    assert healed["re_emitted"] == ["C-1003"] and list(healed["re_created"]) == ["C-1002"]
    assert healed["failed"] == {} and healed["not_applied"] == []
    assert world.party("C-1003")["name"] == expected_name  # type: ignore[index]
    assert world.party_id("C-1002") == int(healed["re_created"]["C-1002"]) != deleted_id

    code, after = reconcile_json(world)
    assert code == 1
    assert drift_of(after) == {
        "orphaned": [("C-1004", str(orphan_id)), (None, str(walk_in_id))],
        "unmappable": [(NAMELESS, None)],
    }
    assert world.party("C-1004") is not None  # orphans are reported, never deleted
    scheduled_run(world)
    assert (drift_gauge("missing"), drift_gauge("different"), drift_gauge("orphaned")) == (0, 0, 2)
    text = isthmus(world, "reconcile", "crm.customer")
    assert text.code == 1 and "drift: 2 orphaned, 1 unmappable" in text.out, text.out


def test_replay_shows_the_field_diff_and_applies_it_through_the_route(synced: World) -> None:
    world = synced
    world.rename_party("C-1005", "Wrong name")
    company = world.crm.customer("C-1005")["company"]  # type: ignore[index]

    dry = isthmus(world, "replay", "--record", "crm:customer:C-1005", "--dry-run")
    assert dry.code == 0, dry.output
    assert "FIELD" in dry.out and "Wrong name" in dry.out and company in dry.out, dry.out
    assert world.party("C-1005")["name"] == "Wrong name"  # type: ignore[index]

    run = isthmus(world, "replay", "--record", "crm:customer:C-1005", "--json", "--timeout", "60")
    outcome = json.loads(run.out)
    assert run.code == 0, run.output
    assert outcome["diff"] == [{"field": "name", "target": "Wrong name", "source": company}]
    assert outcome["action"] == "applied" and outcome["remaining_diff"] == []
    assert outcome["correlation_id"].startswith("replay-")
    assert world.party("C-1005")["name"] == company  # type: ignore[index]

    missing = isthmus(world, "replay", "--record", "crm:customer:C-4040", "--json")
    assert missing.code == 1 and json.loads(missing.out)["action"] == "not-found"


class ScheduledWorker(Worker):
    """The worker with the lines this change asks to add to Worker.build/start/stop (see reconcile_scheduler)."""

    reconcile_scheduler: ReconcileScheduler | None = None

    def build(self) -> None:
        super().build()
        if self.run_sources and self.config.model.reconcile:
            self.reconcile_scheduler = ReconcileScheduler(self.config, self.store, self._new_broker, self._adapter)

    def start(self) -> ScheduledWorker:
        super().start()
        if self.reconcile_scheduler is not None:
            self.reconcile_scheduler.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.reconcile_scheduler is not None:
            self.reconcile_scheduler.stop(timeout_s)
        super().stop(timeout_s)


def test_the_worker_reconciles_on_schedule_and_heals(synced: World) -> None:
    world = synced
    world.rename_party("C-1007", "Drifted on a schedule")
    company = world.crm.customer("C-1007")["company"]  # type: ignore[index]
    world.until_listed(world.party_id("C-1007"))
    config = load_config(world.config_path)
    config.model.reconcile[ROUTE].every, config.model.reconcile[ROUTE].heal = "1s", True
    before = REGISTRY.get_sample_value("isthmus_reconcile_last_run_timestamp_seconds", {"route": ROUTE}) or 0.0
    worker = ScheduledWorker(config, run_routes=False, serve_health=False).start()  # the module's worker applies
    try:
        wait_for(lambda: world.party("C-1007")["name"] == company, 30, "the scheduled heal")  # type: ignore[index]
        last = REGISTRY.get_sample_value("isthmus_reconcile_last_run_timestamp_seconds", {"route": ROUTE})
        assert last is not None and last > before
        healed = REGISTRY.get_sample_value("isthmus_reconcile_healed_records_total", {"route": ROUTE})
        assert healed is not None and healed >= 1
        assert worker.reconcile_scheduler is not None and worker.reconcile_scheduler.alive()
    finally:
        worker.stop()
    assert worker.reconcile_scheduler is not None and not worker.reconcile_scheduler.alive()


def test_replay_without_a_worker_waits_then_applies_in_process(synced: World) -> None:
    world = synced
    world.stop_worker()  # last test of the module: from here on nothing consumes the route
    world.rename_party("C-1006", "Nobody fixes me")
    company = world.crm.customer("C-1006")["company"]  # type: ignore[index]

    waited = isthmus(world, "replay", "--record", "crm:customer:C-1006", "--json", "--timeout", "1")
    assert waited.code == 1 and json.loads(waited.out)["action"] == "timed-out", waited.output
    assert world.party("C-1006")["name"] == "Nobody fixes me"  # type: ignore[index]

    run = isthmus(world, "replay", "--record", "crm:customer:C-1006", "--in-process", "--json", "--timeout", "60")
    assert run.code == 0, run.output
    assert json.loads(run.out)["action"] == "applied"
    wait_for(lambda: world.party("C-1006")["name"] == company, 5, "the replayed name")  # type: ignore[index]


def test_reconcile_names_what_it_cannot_reconcile(synced: World) -> None:
    unknown = isthmus(synced, "reconcile", "invoice")
    assert unknown.code == 2 and "no route takes records of 'invoice'" in unknown.err
    assert isthmus(synced, "reconcile", "--route", "customers").code == 2
