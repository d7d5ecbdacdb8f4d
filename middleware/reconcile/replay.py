"""`isthmus replay --record SYSTEM:ENTITY:ID`: re-sync one record and show what it changes.

The record is read afresh from its source system (`read_one`, or a full read filtered by
id), mapped with the route's chain as the route would map it, and compared with the
target's current record (found through the cross-reference) field by field (`middleware.reconcile.diff`).
Unless it is a dry run, it is then applied *by the route*: published onto the route's queue
only, as the poller's envelope with a fresh version (`<version>+replay-<run>`: a new
idempotency key, so it is not skipped as a duplicate) and correlation id `replay-<run>`.

Applying through the route rather than writing directly keeps every guarantee the route
gives (one record's changes in order, the stale check, retries, dead-lettering, the
cross-reference and applied key recorded in one transaction). The command waits, up to
`timeout_s`, until the route recorded the message as applied (or dead-lettered it), then
reads the target again to verify. A running worker applies it; `in_process=True` makes this
process consume the route's queue itself meanwhile, for when no worker runs (it then also
applies whatever else waits on that queue, as any worker of the route would).

One case cannot go through the route: a linked target record that was deleted (the route
would update it by its old id and fail). It is re-created through the route's writer and
the link re-pointed, as reconciliation's heal does (`reconcile.recreate_targets`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from middleware.adapter import Adapter, Reader, SourceRecord, read_record, stored_form
from middleware.broker.base import Broker
from middleware.config import LoadedConfig
from middleware.errors import ConfigError, Problem
from middleware.reconcile.diff import FieldDiff, compare
from middleware.reconcile.engine import (
    Drift,
    RoutePlan,
    plans_for_record,
    recreate_targets,
    resend_message,
    show_value,
    text_table,
    wait_applied,
)
from middleware.runtime.chains import build_route_mapper
from middleware.runtime.route import RouteProcessor
from middleware.store.base import RecordRef, Store

FAILED_ACTIONS = frozenset({"not-found", "unmappable", "failed", "dead-lettered", "timed-out", "still-differs"})


@dataclass
class ReplayOutcome:
    """What `replay` found and did; `action` says which, `ok` whether the user got what they asked for."""

    record: str
    route: str
    target: str
    action: str  # dry-run, applied, re-created, filtered, not-found, unmappable, failed, dead-lettered, timed-out
    detail: str = ""
    target_id: str | None = None
    target_exists: bool | None = None  # None: the target's entity cannot be read
    diffs: list[FieldDiff] = field(default_factory=list)
    uncompared: set[str] = field(default_factory=set)
    correlation_id: str | None = None
    remaining: list[FieldDiff] | None = None  # the diff after applying (verification); None: not verified

    @property
    def ok(self) -> bool:
        return self.action not in FAILED_ACTIONS

    def as_dict(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "route": self.route,
            "target": self.target,
            "target_id": self.target_id,
            "target_exists": self.target_exists,
            "diff": [d.as_dict() for d in self.diffs],
            "uncompared_fields": sorted(self.uncompared),
            "action": self.action,
            "detail": self.detail,
            "correlation_id": self.correlation_id,
            "remaining_diff": None if self.remaining is None else [d.as_dict() for d in self.remaining],
        }


def parse_record_ref(text: str) -> tuple[str, str, str]:
    """`crm:customer:C-1001` → (system, entity, id); the id may itself contain colons."""
    parts = text.split(":", 2)
    if len(parts) != 3 or not all(part.strip() for part in parts):
        raise ConfigError(
            Problem(f"--record {text!r} is not SYSTEM:ENTITY:ID", hint="e.g. --record crm:customer:C-1001")
        )
    system, entity, record_id = (part.strip() for part in parts)
    return system, entity, record_id


def choose_plan(config: LoadedConfig, system: str, entity: str, route: str | None) -> RoutePlan:
    plans = plans_for_record(config, system, entity, route)
    if not plans:
        raise ConfigError(
            Problem(
                f"no route takes records of {system}.{entity}",
                hint="check the SYSTEM:ENTITY part against the config's sources and routes",
            )
        )
    if len(plans) > 1:
        names = ", ".join(p.name for p in plans)
        raise ConfigError(
            Problem(f"several routes take {system}.{entity} records: {names}", hint="choose one with --route")
        )
    return plans[0]


def replay_record(
    config: LoadedConfig,
    record_text: str,
    store: Store,
    adapter: Callable[[str], Adapter],
    broker: Callable[[], Broker],
    *,
    route: str | None = None,
    dry_run: bool = False,
    timeout_s: float = 30.0,
    in_process: bool = False,
) -> ReplayOutcome:
    """Read, map and diff one record; unless `dry_run`, apply it through its route and verify."""
    system, entity, record_id = parse_record_ref(record_text)
    plan = choose_plan(config, system, entity, route)
    to = plan.route.to
    outcome = ReplayOutcome(f"{system}:{entity}:{record_id}", plan.name, plan.target_label, "dry-run")
    record = read_record(adapter(system).reader(), entity, record_id)
    if record is None:
        outcome.action, outcome.detail = "not-found", f"{system} has no {entity} {record_id!r}"
        return outcome
    map_record, _label = build_route_mapper(config, plan.route.mappings, store)
    try:
        mapped = map_record(record.data)
    except Exception as exc:  # MappingError, a missing xref, a transform bug: the route would not write it
        outcome.action, outcome.detail = "unmappable", f"{type(exc).__name__}: {exc}"
        return outcome
    if mapped is None:
        outcome.action, outcome.detail = "filtered", f"the mapping of route {plan.name} skips this record (when:)"
        return outcome
    source_ref = RecordRef(system, entity, record_id)
    target_reader = adapter(to.system).reader()
    readable = _readable(config, to.system, to.entity)
    outcome.target_id, current = _linked_target(store, target_reader, plan, source_ref, readable)
    outcome.target_exists = None if not readable else (current is not None if outcome.target_id else False)
    expected = stored_form(target_reader, to.entity, mapped) if readable else mapped
    comparison = compare(expected, current.data if current else None, plan.settings.ignore_fields)
    outcome.diffs, outcome.uncompared = comparison.diffs, comparison.uncompared
    if dry_run:
        outcome.detail = "nothing was sent"
        return outcome

    run_id = uuid.uuid4().hex[:12]
    outcome.correlation_id = f"replay-{run_id}"
    if outcome.target_id is not None and outcome.target_exists is False:
        drift = Drift("missing", record_id, outcome.target_id, "deleted", target_deleted=True, record=record)
        drift.mapped = mapped
        writer = adapter(to.system).writer()
        recreated, failed = recreate_targets(plan, store, writer, [drift], run_id, origin="replay")
        if failed:
            outcome.action, outcome.detail = "failed", failed[record_id]
            return outcome
        outcome.action = "re-created"
        outcome.detail = f"{plan.target_label} {outcome.target_id} was deleted; created {recreated[record_id]}"
    else:
        handle = broker()  # the caller's: it closes it
        _apply_through_route(config, plan, store, adapter, handle, record, run_id, timeout_s, in_process, outcome)
        if not outcome.ok:
            return outcome
    if readable:  # verify: read the linked target again
        _target_id, after = _linked_target(store, target_reader, plan, source_ref, readable)
        outcome.remaining = compare(expected, after.data if after else None, plan.settings.ignore_fields).diffs
        if outcome.remaining:
            fields = ", ".join(d.path for d in outcome.remaining)
            outcome.action, outcome.detail = "still-differs", f"applied, but the target still differs in {fields}"
    return outcome


def _readable(config: LoadedConfig, system: str, entity: str) -> bool:
    """Whether the config gives `system`.`entity` read settings (the same test the config load makes)."""
    entities = getattr(config.systems[system][1], "entities", None)
    spec = entities.get(entity) if isinstance(entities, dict) else None
    return spec is not None and getattr(spec, "read", None) is not None


def _linked_target(
    store: Store, reader: Reader, plan: RoutePlan, source_ref: RecordRef, readable: bool
) -> tuple[str | None, SourceRecord | None]:
    """(the linked target id, its record now); the record is None without a link, when deleted, or unreadable."""
    to = plan.route.to
    link = store.lookup(source_ref, to.system)
    if link is None or link.entity != to.entity:
        return None, None
    return link.id, read_record(reader, to.entity, link.id) if readable else None


def _apply_through_route(
    config: LoadedConfig,
    plan: RoutePlan,
    store: Store,
    adapter: Callable[[str], Adapter],
    broker: Broker,
    record: SourceRecord,
    run_id: str,
    timeout_s: float,
    in_process: bool,
    outcome: ReplayOutcome,
) -> None:
    broker.setup_route(plan.name, plan.route.on, plan.route.queue_options())
    message, envelope = resend_message(plan.feed, record, "replay", run_id)
    broker.send(plan.name, [message])
    ids, keys = {message.message_id: record.record_id}, {record.record_id: envelope.idempotency_key}
    deadline = time.monotonic() + timeout_s
    applied: set[str] = set()
    dead: dict[str, str] = {}
    if in_process:
        map_record, label = build_route_mapper(config, plan.route.mappings, store)
        writer = adapter(plan.route.to.system).writer()
        processor = RouteProcessor(plan.route, broker, store, writer, map_record, label)
        while time.monotonic() < deadline and not applied and not dead:
            deliveries = broker.fetch(plan.name, plan.route.batch_size, 0.5)
            if deliveries:
                processor.process(deliveries)
            applied, dead = wait_applied(store, broker, plan.name, ids, keys, 0)
    else:
        applied, dead = wait_applied(store, broker, plan.name, ids, keys, timeout_s)
    if record.record_id in applied:
        outcome.action, outcome.detail = "applied", f"applied by route {plan.name}"
    elif record.record_id in dead:
        outcome.action, outcome.detail = "dead-lettered", dead[record.record_id]
    else:
        outcome.action = "timed-out"
        outcome.detail = (
            f"sent onto route {plan.name}, not applied within {timeout_s:g}s: is a worker running for it? "
            "(it stays queued; --in-process applies it from here)"
        )


def render_outcome(outcome: ReplayOutcome) -> str:
    before = f"BEFORE ({outcome.target} {outcome.target_id})" if outcome.target_id else f"BEFORE ({outcome.target})"
    looked_up = outcome.action not in ("not-found", "unmappable", "filtered")
    target = f"{outcome.target} {outcome.target_id or '(new)'}" if looked_up else outcome.target
    lines = [f"record {outcome.record} → route {outcome.route} → {target}"]
    if outcome.target_exists is None and outcome.target_id is not None:
        lines.append(f"  {outcome.target} cannot be read here (no read settings): no diff shown")
    elif looked_up:
        if outcome.target_id is None:
            lines.append(f"  no {outcome.target} record is linked yet: the route creates one")
        elif outcome.target_exists is False:
            lines.append(f"  the linked {outcome.target} {outcome.target_id} no longer exists: it is re-created")
        if outcome.diffs:
            rows = [[d.path, show_value(d.target), show_value(d.source)] for d in outcome.diffs]
            lines.extend("  " + line for line in text_table(["FIELD", before, "AFTER (from the source)"], rows))
        else:
            lines.append("  no field differs: the record is re-sent as it is")
        if outcome.uncompared:
            lines.append(
                f"  not compared (the target's read does not return them): {', '.join(sorted(outcome.uncompared))}"
            )
    tail = f"{outcome.action}: {outcome.detail}" if outcome.detail else outcome.action
    if outcome.correlation_id:
        tail += f" (correlation id {outcome.correlation_id})"
    lines.append(tail)
    if outcome.remaining == [] and outcome.action in ("applied", "re-created"):
        lines.append("verified: the target record now matches the source")
    return "\n".join(lines)
