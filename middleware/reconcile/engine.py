"""Reconciliation: does the target hold what the route would have written, record by record?

Defined per route (`isthmus reconcile`, and on a schedule by the worker, see
`middleware.reconcile.scheduler`). One run:

1. reads every record of the route's source (the feed that publishes what the route
   consumes; its reader with no watermark) and every record of the route's target entity;
2. pairs them through the cross-reference store (source id ↔ target id, both directions);
   a linked record a list read did not return is looked up by id before it counts as gone
   (list reads leave records out: Tryton lists active records only, and no read returns
   changes younger than the reader's settle time);
3. links what a half-done create left unlinked: a source record without a cross-reference
   whose mapped business key (`key_field`, default the target entity's `write.key_field`)
   names a target record no link points at is linked to it (the cross-reference is written,
   as the route would have written it) and compared like any linked pair — so a target
   created by a worker killed before it recorded the link is not "missing", and `--heal`
   does not create it a second time;
4. maps each source record with the route's mapping chain, exactly as the route does
   (cross-references from the store), and compares the result with its target record on
   the fields the mapping writes (`middleware.reconcile.diff`: normalised, content-hashed, field-level);
5. reports drift by kind:

   * **missing** — a source record with no cross-reference (never synced, or its creation
     failed) and no target record with its business key, or whose linked target record no
     longer exists;
   * **different** — the target record differs on mapped fields (the diff says where);
   * **orphaned** — a target record whose linked source record no longer exists
     (`source_deleted`), or, with `orphans: all`, a target record no link points at
     (`unlinked`; `unlinked_match` narrows which ones count, e.g. the codes the route makes);
   * **unmappable** — the mapping fails on the source record (it is in the DLQ too; fix the
     data or the mapping).

`heal` re-emits the source record of every missing and different record onto the route's
queue only (not to every route of its type), as the poller's envelope with a fresh version
(`<version>+reconcile-<run>`), so the idempotency key is new and the route applies it, and
with the record's own change time, so the stale check still refuses to move the target back
in time. The run's correlation id (`reconcile-<run>`) and the `isthmus-origin` header say
where the message came from. A missing record whose linked target was deleted cannot go
through the route (it would update the deleted record by its id and be dead-lettered): it is
re-created through the route's writer, and the cross-reference re-pointed, in one store
transaction, as the route would record it.

Orphans are reported, never deleted: a target record without a live source may carry data
the source never had (orders, invoices in an ERP), may have been made on purpose in the
target, or may be linked to a source record that a list read could not see; deleting is a
decision for a person.

Limits: both sides are read whole into memory (fine for tens of thousands of records);
reconciliation suits routes that keep cross-references (record sync), not event routes
such as status write-backs.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog

from middleware.adapter import Adapter, Reader, SourceRecord, Writer, WriteRequest, read_record, stored_form
from middleware.broker.base import H_ERROR, H_ERROR_CLASS, H_ORIGIN, Broker, OutgoingMessage, dlq_name
from middleware.config import Feed, LoadedConfig, ReconcileConfig, RouteConfig, feeds, feeds_of, route_consumes
from middleware.errors import ConfigError, IsthmusError, Problem
from middleware.mapping.patterns import glob_matches
from middleware.message import Envelope, Source, utc_now
from middleware.problems import did_you_mean
from middleware.reconcile.diff import FieldDiff, compare, normalise
from middleware.runtime.chains import build_route_mapper
from middleware.runtime.identity import business_key
from middleware.store.base import IdentityWrite, RecordRef, Store, TargetIdentity

log = structlog.get_logger("isthmus.reconcile")

Kind = Literal["missing", "different", "orphaned", "unmappable"]
KINDS: tuple[Kind, ...] = ("missing", "different", "orphaned", "unmappable")
MapFunction = Callable[[dict[str, Any]], dict[str, Any] | None]


# ----- which route, which feed ---------------------------------------------------------------


@dataclass(frozen=True)
class RoutePlan:
    """A route as reconciliation sees it: where its records come from, where they go, the settings."""

    route: RouteConfig
    feed: Feed
    settings: ReconcileConfig

    @property
    def name(self) -> str:
        return self.route.name

    @property
    def source_label(self) -> str:
        return f"{self.feed.system}.{self.feed.entity}"

    @property
    def target_label(self) -> str:
        return f"{self.route.to.system}.{self.route.to.entity}"


def plan_route(config: LoadedConfig, name: str) -> RoutePlan:
    """The plan of route `name`; ConfigError when there is no such route or no single feed."""
    routes = {route.name: route for route in config.model.routes}
    route = routes.get(name)
    if route is None:
        raise ConfigError(Problem(f"no route {name!r}", None, "", did_you_mean(name, list(routes))))
    settings = config.model.reconcile.get(name) or ReconcileConfig()
    if settings.source is not None:
        named = [feed for feed in feeds(config.model) if feed.name == settings.source]
        if not named:
            raise ConfigError(f"reconcile.{name}.source: no source or webhook endpoint {settings.source!r}")
        consumed = [feed for feed in named if route_consumes(route, feed)]  # emits_by: one feed per kind
        return RoutePlan(route, (consumed or named)[0], settings)
    candidates = feeds_of(config.model, route)
    if len(candidates) != 1:
        found = ", ".join(feed.name for feed in candidates) or "none"
        raise ConfigError(
            Problem(
                f"route {name!r} is fed by {len(candidates)} sources ({found}); reconciliation compares one",
                None,
                "",
                f"set reconcile.{name}.source in the config",
            )
        )
    return RoutePlan(route, candidates[0], settings)


def plans_for(config: LoadedConfig, entity: str | None = None, route: str | None = None) -> list[RoutePlan]:
    """Plans of `route`, or of every route whose source entity is `entity` (`customer` or `crm.customer`)."""
    if route is not None:
        plan = plan_route(config, route)
        if entity is not None and entity not in (plan.feed.entity, plan.source_label):
            raise ConfigError(f"route {route!r} reconciles {plan.source_label}, not {entity!r}")
        return [plan]
    if entity is None:
        raise ConfigError(Problem("name an entity or --route", hint="e.g. isthmus reconcile customer"))
    plans: list[RoutePlan] = []
    known: set[str] = set()
    for candidate in config.model.routes:
        for feed in feeds_of(config.model, candidate):
            known.update((feed.entity, f"{feed.system}.{feed.entity}"))
            if entity in (feed.entity, f"{feed.system}.{feed.entity}"):
                plans.append(plan_route(config, candidate.name))
                break
    if not plans:
        raise ConfigError(
            Problem(f"no route takes records of {entity!r}", None, "", did_you_mean(entity, sorted(known)))
        )
    return plans


def plans_for_record(config: LoadedConfig, system: str, entity: str, route: str | None = None) -> list[RoutePlan]:
    """The routes that take records of `system`.`entity` (only `route` when given)."""
    if route is not None:
        plan = plan_route(config, route)
        if (plan.feed.system, plan.feed.entity) != (system, entity):
            raise ConfigError(f"route {route!r} takes records of {plan.source_label}, not {system}.{entity}")
        return [plan]
    plans = []
    for candidate in config.model.routes:
        if any((f.system, f.entity) == (system, entity) for f in feeds_of(config.model, candidate)):
            plans.append(plan_route(config, candidate.name))
    return plans


# ----- the report --------------------------------------------------------------------------------


@dataclass
class Drift:
    """One record out of sync. `record` and `mapped` are kept for healing, not reported."""

    kind: Kind
    source_id: str | None
    target_id: str | None
    reason: str
    diffs: list[FieldDiff] = field(default_factory=list)
    source_hash: str | None = None
    target_hash: str | None = None
    target_deleted: bool = False
    record: SourceRecord | None = field(default=None, repr=False)
    mapped: dict[str, Any] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "source_id": self.source_id,
            "target_id": self.target_id,
            "reason": self.reason,
        }
        if self.kind == "different":
            out["diff"] = [d.as_dict() for d in self.diffs]
            out["source_hash"] = self.source_hash
            out["target_hash"] = self.target_hash
        return out


@dataclass
class HealResult:
    """What `heal` did: re-emitted messages (source id → idempotency key), re-created targets, failures."""

    correlation_id: str
    emitted: dict[str, str] = field(default_factory=dict)
    message_ids: dict[str, str] = field(default_factory=dict)  # message id → source id
    recreated: dict[str, str] = field(default_factory=dict)  # source id → new target id
    failed: dict[str, str] = field(default_factory=dict)  # source id → why
    waited: bool = False
    pending: set[str] = field(default_factory=set)  # source ids not applied by the end of the wait

    def as_dict(self) -> dict[str, Any]:
        return {
            "correlation_id": self.correlation_id,
            "re_emitted": sorted(self.emitted),
            "re_created": dict(sorted(self.recreated.items())),
            "failed": dict(sorted(self.failed.items())),
            "waited": self.waited,
            "not_applied": sorted(self.pending),
        }


@dataclass
class ReconcileReport:
    route: str
    source: str
    target: str
    started_at: datetime
    finished_at: datetime | None = None
    source_records: int = 0
    target_records: int = 0
    compared: int = 0
    in_sync: int = 0
    filtered: int = 0
    linked: dict[str, str] = field(default_factory=dict)  # source id → target id, linked by business key
    drift: list[Drift] = field(default_factory=list)
    uncompared: set[str] = field(default_factory=set)
    heal: HealResult | None = None

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(KINDS, 0)
        for item in self.drift:
            counts[item.kind] += 1
        return counts

    def unresolved(self) -> list[Drift]:
        """Drift a heal did not take care of (all of it when there was no heal)."""
        if self.heal is None:
            return list(self.drift)
        heal = self.heal
        not_healed = heal.failed.keys() | heal.pending
        return [d for d in self.drift if d.kind in ("orphaned", "unmappable") or d.source_id in not_healed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "source": self.source,
            "target": self.target,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "source_records": self.source_records,
            "target_records": self.target_records,
            "compared": self.compared,
            "in_sync": self.in_sync,
            "filtered": self.filtered,
            "linked_by_key": dict(sorted(self.linked.items())),
            "counts": self.counts(),
            "drift": [item.as_dict() for item in self.drift],
            "uncompared_fields": sorted(self.uncompared),
            "heal": self.heal.as_dict() if self.heal else None,
        }


# ----- one run ------------------------------------------------------------------------------------


def _id_order(record_id: str) -> tuple[int, int, str]:
    return (0, int(record_id), "") if record_id.isdigit() else (1, 0, record_id)


def _drift_order(item: Drift) -> tuple[Any, ...]:
    """By kind, then source id (unlinked orphans last), then target id."""
    source, target = item.source_id, item.target_id
    return (KINDS.index(item.kind), source is None, _id_order(source or ""), _id_order(target or ""))


def read_all(reader: Reader, entity: str) -> dict[str, SourceRecord]:
    """Every record of `entity` (a read from no watermark); a record read twice keeps its last version."""
    records: dict[str, SourceRecord] = {}
    for page in reader.read_changes(entity, None):
        for record in page.records:
            records[record.record_id] = record
    return records


class Reconciler:
    """Reconciles one route; `run()` compares, `heal()` re-emits. Safe to run again at any time."""

    def __init__(
        self,
        config: LoadedConfig,
        plan: RoutePlan,
        store: Store,
        adapter: Callable[[str], Adapter],
        map_record: MapFunction | None = None,
    ) -> None:
        self.plan = plan
        self.store = store
        self.source = adapter(plan.feed.system)
        self.target = adapter(plan.route.to.system)
        self.source_reader = self.source.reader()
        self.target_reader = self.target.reader()
        self._adapter = adapter
        self.key_field = plan.settings.key_field or target_key_field(config, plan.route)
        self.map_record = map_record or build_route_mapper(config, plan.route.mappings, store)[0]

    def run(self) -> ReconcileReport:
        plan, feed, to = self.plan, self.plan.feed, self.plan.route.to
        settings = plan.settings
        report = ReconcileReport(plan.name, plan.source_label, plan.target_label, utc_now())
        sources = read_all(self.source_reader, feed.entity)
        targets = read_all(self.target_reader, to.entity)
        report.source_records, report.target_records = len(sources), len(targets)

        found = self.store.lookup_many([RecordRef(feed.system, feed.entity, i) for i in sources], to.system)
        forward = {ref.id: other.id for ref, other in found.items() if other.entity == to.entity}
        found = self.store.lookup_many([RecordRef(to.system, to.entity, i) for i in targets], feed.system)
        backward = {ref.id: other.id for ref, other in found.items() if other.entity == feed.entity}

        gone_targets: set[str] = set()
        for unlisted in sorted(set(forward.values()) - targets.keys(), key=_id_order):
            confirmed = read_record(self.target, to.entity, unlisted)
            if confirmed is None:
                gone_targets.add(unlisted)
            else:
                targets[unlisted] = confirmed
        gone_sources: set[str] = set()
        for unlisted in sorted(set(backward.values()) - sources.keys(), key=_id_order):
            confirmed = read_record(self.source, feed.entity, unlisted)
            if confirmed is None:
                gone_sources.add(unlisted)
            else:
                sources[unlisted] = confirmed
                forward[unlisted] = next(t for t, s in backward.items() if s == unlisted)

        paired: set[str] = set()
        unlinked = self._unlinked_by_key(targets, backward, set(forward.values()))
        ignore = frozenset(settings.ignore_fields)
        for source_id in sorted(sources, key=_id_order):
            record = sources[source_id]
            target_id = forward.get(source_id)
            if target_id is not None:
                paired.add(target_id)
            try:
                mapped = self.map_record(record.data)
            except Exception as exc:  # MappingError, a missing xref, or a bug in a transform: the run goes on
                report.drift.append(Drift("unmappable", source_id, target_id, f"{type(exc).__name__}: {exc}"))
                continue
            if mapped is None:
                report.filtered += 1
                continue
            if target_id is None and self.key_field is not None:
                target_id = unlinked.pop(normalise(mapped.get(self.key_field)), None)
                if target_id is not None:
                    self.store.link(
                        RecordRef(feed.system, feed.entity, source_id), RecordRef(to.system, to.entity, target_id)
                    )
                    forward[source_id] = target_id
                    paired.add(target_id)
                    report.linked[source_id] = target_id
                    log.info(
                        "record_linked_by_key",
                        route=plan.name,
                        source_id=source_id,
                        target_id=target_id,
                        key_field=self.key_field,
                    )
            if target_id is None:
                reason = f"no cross-reference to {to.system}: never synced, or its creation failed"
                report.drift.append(Drift("missing", source_id, None, reason, record=record, mapped=mapped))
                continue
            if target_id in gone_targets:
                reason = f"linked {to.system} {to.entity} {target_id} no longer exists"
                report.drift.append(
                    Drift("missing", source_id, target_id, reason, target_deleted=True, record=record, mapped=mapped)
                )
                continue
            expected = stored_form(self.target, to.entity, mapped)
            comparison = compare(expected, targets[target_id].data, ignore)
            report.compared += 1
            report.uncompared |= comparison.uncompared
            if comparison.in_sync:
                report.in_sync += 1
                continue
            fields = ", ".join(d.path for d in comparison.diffs)
            report.drift.append(
                Drift(
                    "different",
                    source_id,
                    target_id,
                    f"differs in {fields}",
                    diffs=comparison.diffs,
                    source_hash=comparison.source_hash,
                    target_hash=comparison.target_hash,
                    record=record,
                    mapped=mapped,
                )
            )

        if settings.orphans != "none":
            for orphan in sorted(targets.keys() - paired, key=_id_order):
                linked = backward.get(orphan)
                if linked is not None:
                    if linked in gone_sources:
                        reason = f"source_deleted: {feed.system} {feed.entity} {linked} no longer exists"
                        report.drift.append(Drift("orphaned", linked, orphan, reason))
                elif settings.orphans == "all" and _matches(targets[orphan].data, settings.unlinked_match):
                    reason = f"unlinked: no {feed.system} record links to it (made in {to.system}, or link lost)"
                    report.drift.append(Drift("orphaned", None, orphan, reason))
        report.drift.sort(key=_drift_order)
        report.finished_at = utc_now()
        counts = report.counts()
        log.info("route_reconciled", route=plan.name, in_sync=report.in_sync, **counts)
        return report

    def _unlinked_by_key(
        self, targets: dict[str, SourceRecord], backward: dict[str, str], linked: set[str]
    ) -> dict[Any, str]:
        """Normalised business key → id of the listed target records no cross-reference points at.

        A key held by two such records names neither: linking one of them would be a guess.
        """
        if self.key_field is None:
            return {}
        found: dict[Any, str] = {}
        ambiguous: set[Any] = set()
        for target_id, record in targets.items():
            if target_id in backward or target_id in linked:
                continue
            key = normalise(record.data.get(self.key_field))
            if key is None or isinstance(key, dict | list):
                continue
            if key in found:
                ambiguous.add(key)
            found[key] = target_id
        for key in ambiguous:
            del found[key]
        return found

    # ----- healing -------------------------------------------------------------------------------

    def heal(self, report: ReconcileReport, broker: Broker, *, wait_s: float = 0.0) -> HealResult:
        """Re-emit the missing and different records onto the route (re-create deleted targets).

        With `wait_s`, wait that long for the route to apply them (a worker must be running).
        """
        run_id = uuid.uuid4().hex[:12]
        result = HealResult(correlation_id=f"reconcile-{run_id}")
        todo = [d for d in report.drift if d.kind in ("missing", "different") and d.record is not None]
        recreate = [d for d in todo if d.target_deleted]
        messages: list[OutgoingMessage] = []
        for item in todo:
            if item.target_deleted:
                continue
            assert item.record is not None and item.source_id is not None
            message, envelope = resend_message(self.plan.feed, item.record, "reconcile", run_id)
            messages.append(message)
            result.emitted[item.source_id] = envelope.idempotency_key
            result.message_ids[message.message_id] = item.source_id
        if messages:
            route = self.plan.route
            broker.setup_route(route.name, route.on, route.queue_options())  # idempotent; send must know shards
            broker.send(route.name, messages)
        if recreate:
            writer = self._adapter(self.plan.route.to.system).writer()
            recreated, failed = recreate_targets(self.plan, self.store, writer, recreate, run_id)
            result.recreated.update(recreated)
            result.failed.update(failed)
        log.info(
            "route_healed",
            route=self.plan.name,
            correlation_id=result.correlation_id,
            re_emitted=len(result.emitted),
            re_created=len(result.recreated),
            failed=len(result.failed),
        )
        report.heal = result
        if wait_s > 0 and result.emitted:
            result.waited = True
            applied, dead = wait_applied(self.store, broker, self.plan.name, result.message_ids, result.emitted, wait_s)
            for source_id in result.emitted:
                if source_id in dead:
                    result.failed[source_id] = f"dead-lettered: {dead[source_id]}"
                elif source_id not in applied:
                    result.pending.add(source_id)
        return result


def target_key_field(config: LoadedConfig, route: RouteConfig) -> str | None:
    """The business key the route's target entity is written by (`write.key_field` of its adapter config).

    Adapters that have one (Tryton, REST upsert) find an existing record by it; others return None.
    """
    if route.to.flow is not None or route.to.system not in config.systems:
        return None
    entities = getattr(config.systems[route.to.system][1], "entities", None)
    spec = entities.get(route.to.entity) if isinstance(entities, dict) else None
    key = getattr(getattr(spec, "write", None), "key_field", None)
    return key if isinstance(key, str) and key else None


def _matches(data: dict[str, Any], patterns: dict[str, str]) -> bool:
    for path, pattern in patterns.items():
        value: Any = data
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None or not glob_matches(pattern, str(value)):
            return False
    return True


# ----- re-emitting and re-creating ---------------------------------------------------------------


def resend_message(feed: Feed, record: SourceRecord, origin: str, run_id: str) -> tuple[OutgoingMessage, Envelope]:
    """The poller's envelope for `record`, with a fresh version and its provenance (`origin`, run id).

    The version `<version>+<origin>-<run>` makes a new idempotency key, so the route applies
    the record again; `occurred_at` stays the record's change time, so the route's stale check
    still keeps a newer change that was applied meanwhile.
    """
    envelope = Envelope(
        type=feed.emits,
        source=Source(
            system=feed.system,
            entity=feed.entity,
            record_id=record.record_id,
            version=f"{record.version or 'unversioned'}+{origin}-{run_id}",
        ),
        occurred_at=record.occurred_at,
        correlation_id=f"{origin}-{run_id}",
        payload=record.data,
    )
    message = OutgoingMessage(
        feed.emits,
        envelope.to_bytes(),
        headers={H_ORIGIN: f"{origin}:{run_id}"},
        message_id=str(envelope.message_id),
        key=envelope.record_key,
    )
    return message, envelope


def recreate_targets(
    plan: RoutePlan, store: Store, writer: Writer, items: Sequence[Drift], run_id: str, origin: str = "reconcile"
) -> tuple[dict[str, str], dict[str, str]]:
    """Create target records whose linked record was deleted, and re-point the links.

    The route would address the deleted record by its id (the cross-reference still names
    it) and fail; the store has no unlink. So these few writes go straight through the
    route's writer without a target id (it creates, or finds the record by its key field), and
    the new link, applied key and change time are recorded in one transaction, as the route
    records its own writes; a route keyed by a business key has its identity claim re-pointed
    at the new record in the same transaction (else other writers would update the deleted one).
    Failures are returned, not retried: the next heal tries again.
    """
    feed, to = plan.feed, plan.route.to
    requests: list[WriteRequest] = []
    envelopes: list[Envelope] = []
    for item in items:
        assert item.record is not None and item.mapped is not None
        _message, envelope = resend_message(feed, item.record, origin, run_id)
        envelopes.append(envelope)
        requests.append(WriteRequest(to.entity, item.mapped, envelope.idempotency_key, None, envelope.correlation_id))
    try:
        results = writer.write_batch(requests)
    except IsthmusError as exc:
        return {}, {e.source.record_id: f"re-create failed: {exc}" for e in envelopes}
    recreated: dict[str, str] = {}
    failed: dict[str, str] = {}
    for envelope, request, outcome in zip(envelopes, requests, results, strict=True):
        source_id = envelope.source.record_id
        if outcome.outcome != "ok" or not outcome.target_id:
            failed[source_id] = f"re-create failed ({outcome.outcome}): {outcome.error or 'no target id returned'}"
            continue
        source_ref = RecordRef(feed.system, feed.entity, source_id)
        target_ref = RecordRef(to.system, to.entity, str(outcome.target_id))
        versions = {envelope.record_key: envelope.occurred_at.timestamp()} if plan.route.skip_stale else None
        key = business_key(request.record, to.key_fields) if to.key_fields else None
        identity = (
            IdentityWrite(f"{origin}-{run_id}", linked=[(TargetIdentity(to.system, to.entity, key), target_ref.id)])
            if key is not None
            else None
        )
        store.mark_applied(plan.name, [request.key], [(source_ref, target_ref)], versions, identity=identity)
        recreated[source_id] = str(outcome.target_id)
    return recreated, failed


def wait_applied(
    store: Store,
    broker: Broker,
    route: str,
    message_ids: dict[str, str],
    keys: dict[str, str],
    timeout_s: float,
) -> tuple[set[str], dict[str, str]]:
    """Wait until the route applied (or dead-lettered) re-emitted messages; (applied, dead-lettered) source ids.

    `message_ids` maps message id → source id, `keys` source id → idempotency key. "Applied"
    means the route recorded the key: written, or skipped (stale, filtered) on purpose.
    """
    deadline = time.monotonic() + timeout_s
    applied: set[str] = set()
    dead: dict[str, str] = {}
    next_dlq_look = 0.0
    by_key = {key: source_id for source_id, key in keys.items()}
    while True:
        waiting = [key for key, source_id in by_key.items() if source_id not in applied and source_id not in dead]
        if not waiting:
            break
        applied.update(by_key[key] for key in store.applied(route, waiting))
        now = time.monotonic()
        if now >= next_dlq_look:
            next_dlq_look = now + 2.0
            for letter in broker.browse(dlq_name(route), 10_000):
                source_id = message_ids.get(letter.message_id)
                if source_id is not None and source_id not in applied:
                    dead[source_id] = f"{letter.headers.get(H_ERROR_CLASS, '')}: {letter.headers.get(H_ERROR, '')}"
        if now >= deadline or len(applied) + len(dead) >= len(by_key):
            break
        time.sleep(0.2)
    return applied, dead


# ----- what a command opens ----------------------------------------------------------------------


class Connections:
    """The store, adapters and brokers one command uses, opened on first use; `close()` closes them all."""

    def __init__(self, config: LoadedConfig) -> None:
        from middleware.store import open_store

        self.config = config
        self.store: Store = open_store(config.model.store, base_dir=config.base_dir)
        self._adapters: dict[str, Adapter] = {}
        self._brokers: list[Broker] = []

    def adapter(self, system: str) -> Adapter:
        from middleware.adapter import load_adapter_class

        if system not in self._adapters:
            type_name, settings = self.config.systems[system]
            self._adapters[system] = load_adapter_class(type_name)(system, settings)
        return self._adapters[system]

    def new_broker(self) -> Broker:
        from middleware.broker import open_broker

        broker = open_broker(self.config.model.broker, base_dir=self.config.base_dir)
        self._brokers.append(broker)
        return broker

    def broker(self) -> Broker:
        return self._brokers[0] if self._brokers else self.new_broker()

    def close(self) -> None:
        for adapter in self._adapters.values():
            adapter.close()
        for broker in self._brokers:
            broker.close()
        self.store.close()


# ----- showing it -------------------------------------------------------------------------------


def show_value(value: Any, limit: int = 60) -> str:
    if value is None:
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def text_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    body = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in body) for i in range(len(headers))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in body]


def render_report(report: ReconcileReport) -> str:
    lines = [
        f"route {report.route}: {report.source} → {report.target}",
        f"  read {report.source_records} source and {report.target_records} target records; "
        f"{report.compared} pairs compared, {report.in_sync} in sync"
        + (f"; {report.filtered} filtered out by the mapping" if report.filtered else ""),
    ]
    if report.linked:
        pairs = ", ".join(f"{s} → {t}" for s, t in sorted(report.linked.items()))
        lines.append(f"  linked by business key (found in the target, the link was missing): {pairs}")
    if report.uncompared:
        lines.append(f"  not compared (the target's read does not return them): {', '.join(sorted(report.uncompared))}")
    if report.drift:
        rows: list[list[str]] = []
        for item in report.drift:
            rows.append([item.kind, item.source_id or "-", item.target_id or "-", item.reason])
            for diff in item.diffs:
                rows.append(["", "", "", f"  {diff.path}: {show_value(diff.target)} → {show_value(diff.source)}"])
        lines.extend("  " + line for line in text_table(["KIND", "SOURCE", "TARGET", "DETAIL"], rows))
    counts = report.counts()
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    lines.append(f"  drift: {summary}" if summary else "  in sync")
    heal = report.heal
    if heal is not None:
        lines.append(
            f"  healed: {len(heal.emitted)} re-emitted onto route {report.route}, {len(heal.recreated)} re-created "
            f"(correlation id {heal.correlation_id})"
        )
        if heal.waited:
            applied = len(heal.emitted) - len(heal.pending) - len([s for s in heal.emitted if s in heal.failed])
            lines.append(f"  applied by the route: {applied} of {len(heal.emitted)}")
        for source_id, why in sorted(heal.failed.items()):
            lines.append(f"  not healed: {source_id}: {why}")
        for source_id in sorted(heal.pending):
            lines.append(f"  not applied yet: {source_id} (is a worker running for route {report.route}?)")
    return "\n".join(lines)
