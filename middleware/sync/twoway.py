"""Loop-free two-way sync: one direction of a pair of routes (CRM → ERP and ERP → CRM).

A route with `two_way:` splits its mapping chain at the canonical entity: the *head* maps the
source system's record into it (e.g. Tryton party → Customer), the *tail* maps a canonical
record into the target's write body (Customer → CRM customer). Both routes of a pair keep
one shared **pair state** in the store, keyed by the two linked records, and decide on a pair
one at a time (a lease in the store: `lock_pairs`). What they rely on:

**Per field, per system, a short timeline** of the values Isthmus knows that system held:
`u` entries are values read from the system (a user's change, at the record's change time),
`s` entries are values Isthmus wrote (at the time the write started). Plus the *agreed* value
(the one both systems should hold, with the source change time it came from and the system)
and, when a manual conflict is open, the id that parks the field.

**Echo suppression.** Every write stamps the target record (`EchoStamp`: content hash of the
canonical values of the fields written, see `middleware.sync.echo`). When the other route reads
that record back, a change whose stamped fields hash the same and whose other fields equal
what that system already held is our own echo: it is acked without effect
(`isthmus_messages_skipped_total{reason="echo"}`). The stamp is kept — so every read-back
of the write is recognised (a poller may see it more than once, Tryton's writer may take
several calls) — until the next write to the record extends it or the first real change read
from the record drops it (a user who later sets the same values again is then not mistaken
for an echo). A field whose value is one Isthmus wrote after the change time, with no user
change since, is also ours (a read-back whose timestamp runs a little behind our clock).

**Changes and conflicts.** A field read from system X that differs from what X held at the
change's time (its timeline) is a user change in X. It is a **conflict** when

* Isthmus wrote that field into X *after* the change's time (the write overwrote it: both
  systems changed the field and neither saw the other's change), or
* the field is owned by the other system (`{owner: Y}`): a change by the non-owner.

A change to the value already agreed is no conflict. The field's policy decides (see
`middleware.sync.conflicts`): the winner becomes the agreed value; a parked (manual) field is not
written either way until resolved. Then the route **converges**: every synced field whose
agreed value the target does not hold is written to the target (only the changed target
fields: the tail is applied to "what the target holds" and to "what it should hold" and only
the differing top-level fields are sent, so a concurrent change of another field in the
target is never overwritten), and every field the source system no longer holds is sent back
to it as a **correction** message on the peer route's queue.

Control messages (`isthmus_sync.correction`, `isthmus_sync.resolution`) carry field names
(and a resolution's chosen value), never a native record: the route rebuilds the write from
the pair's last canonical record. They bypass the stale check and do not move a record's
version.

Limits: a change made in a system after its last poll and overwritten by an Isthmus write of
the same field before the next poll is never seen by any poll (neither the sample CRM's API
nor Tryton's `write` as the adapter calls it is conditional); change times of different
systems are compared, so their clocks must agree (NTP) for last-writer-wins.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from middleware.adapter import WriteRequest, WriteResult
from middleware.broker.base import Delivery, OutgoingMessage
from middleware.errors import ConfigError, MappingError, Problem, TransientError
from middleware.message import Envelope, Source
from middleware.observability import CONFLICTS_OPEN, CONFLICTS_TOTAL, MESSAGES_SKIPPED
from middleware.store.base import ConflictRecord, EchoStamp, RecordRef, Store, SyncWrite
from middleware.sync.config import FieldPolicy, TwoWayConfig
from middleware.sync.conflicts import iso, new_conflict_id
from middleware.sync.echo import CanonicalFields, content_hash

if TYPE_CHECKING:
    from middleware.config import RouteConfig
    from middleware.mapping import CompiledMapping, MappingChain

log = structlog.get_logger("isthmus.twoway")

CORRECTION = "isthmus_sync.correction"
RESOLUTION = "isthmus_sync.resolution"
CONTROL_TYPES = frozenset({CORRECTION, RESOLUTION})
CONTROL_KEY = "isthmus_sync"

TIMELINE_LENGTH = 12  # entries kept per field and system
ECHO_SKEW_S = 5.0  # a value we wrote this long after a change's time still counts as ours
DEFER_S = 0.3  # a message whose pair the other route holds is tried again after this

Mapper = Callable[[dict[str, Any], Any], dict[str, Any] | None]  # (record, mapping context)


def ref_text(ref: RecordRef) -> str:
    return f"{ref.system}:{ref.entity}:{ref.id}"


def parse_ref(text: str) -> RecordRef:
    system, entity, record_id = text.split(":", 2)
    return RecordRef(system, entity, record_id)


def pair_key(a: RecordRef, b: RecordRef) -> str:
    """The same key from both routes of a pair: the two records, ordered."""
    return "|".join(sorted((ref_text(a), ref_text(b))))


# ----- the pair state (JSON in the store) ---------------------------------------------------


class PairState:
    """The JSON a pair keeps: refs, last canonical record per system, and per field its timeline.

    ```
    {"refs": {"crm": "crm:customer:C-1", "tryton": "tryton:party:7"},
     "canonical": {"crm": {...}, "tryton": {...}},
     "fields": {"name": {"agreed": [value, changed_at, system], "parked": null,
                         "tl": {"crm": [[at, value, "u"], ...], "tryton": [[at, value, "s"], ...]}}}}
    ```
    """

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = data or {"refs": {}, "canonical": {}, "fields": {}}
        self.data.setdefault("refs", {})
        self.data.setdefault("canonical", {})
        self.data.setdefault("fields", {})

    def field(self, name: str) -> dict[str, Any]:
        entry: dict[str, Any] = self.data["fields"].setdefault(name, {"agreed": None, "parked": None, "tl": {}})
        entry.setdefault("tl", {})
        return entry

    @staticmethod
    def timeline(entry: dict[str, Any], system: str) -> list[list[Any]]:
        found: list[list[Any]] = entry["tl"].setdefault(system, [])
        return found

    def add(self, name: str, system: str, at: float, value: Any, origin: str) -> None:
        line = self.timeline(self.field(name), system)
        line.append([at, value, origin])
        line.sort(key=lambda e: e[0])
        del line[:-TIMELINE_LENGTH]

    def current(self, name: str, system: str) -> tuple[bool, Any]:
        """(known, value) the system holds now, as far as Isthmus knows."""
        line = self.timeline(self.field(name), system)
        return (True, line[-1][1]) if line else (False, None)

    def held_at(self, name: str, system: str, moment: float) -> tuple[bool, Any]:
        """(known, value) the system held at `moment` (its first known value before the timeline)."""
        line = self.timeline(self.field(name), system)
        if not line:
            return False, None
        before = [e for e in line if e[0] <= moment]
        return True, (before[-1][1] if before else line[0][1])

    def changed_after(self, name: str, system: str, moment: float) -> bool:
        """A user change of the field in `system` is known from after `moment` (it supersedes)."""
        return any(e[2] == "u" and e[0] > moment for e in self.timeline(self.field(name), system))

    def written_after(self, name: str, system: str, moment: float) -> bool:
        return any(e[2] == "s" and e[0] > moment for e in self.timeline(self.field(name), system))

    def ours(self, name: str, system: str, value: Any, moment: float) -> bool:
        """`value` is one Isthmus wrote into `system` no earlier than ECHO_SKEW_S before `moment`,
        with no user change known after that write."""
        line = self.timeline(self.field(name), system)
        for index, (at, written, origin) in enumerate(line):
            later = line[index + 1 :]
            if origin == "s" and written == value and at > moment - ECHO_SKEW_S and all(e[2] != "u" for e in later):
                return True
        return False


# ----- one message in a batch ---------------------------------------------------------------


@dataclass
class Work:
    """One message of a two-way batch: what was decided, and what to record once it is written."""

    delivery: Delivery
    envelope: Envelope
    source: RecordRef
    control: dict[str, Any] | None = None  # the payload's isthmus_sync part
    canonical: dict[str, Any] | None = None
    target: RecordRef | None = None
    lock: str = ""  # the pair key (or "new|<source>" before the first write)
    state: PairState | None = None
    initial: bool = False
    values: dict[str, Any] = field(default_factory=dict)  # normal values of the synced fields (changes)
    to_write: dict[str, Any] = field(default_factory=dict)  # synced field → normal value for the target
    corrections: list[str] = field(default_factory=list)  # fields to send back to the source system
    conflicts: list[ConflictRecord] = field(default_factory=list)
    counted: list[str] = field(default_factory=list)  # policies of conflicts found (metrics)
    drop_stamp: bool = False
    request: WriteRequest | None = None
    reason: str = ""  # why nothing is written: echo, unchanged, conflict
    state_changed: bool = False


@dataclass
class TwoWayBatch:
    """What `TwoWaySync.plan` hands back to the route."""

    writes: list[Work] = field(default_factory=list)  # each has a request
    quiet: list[Work] = field(default_factory=list)  # acked without a write (state may change)
    deferred: list[Delivery] = field(default_factory=list)  # their pair is held: try again shortly
    failed: list[tuple[Work, Exception]] = field(default_factory=list)  # mapping errors (DLQ or retry)
    locks: set[str] = field(default_factory=set)
    stamps: dict[RecordRef, EchoStamp] = field(default_factory=dict)
    write_started: float = 0.0


@dataclass
class Finished:
    """What the route commits after the writes: bookkeeping, corrections to publish, counts."""

    sync: SyncWrite
    corrections: list[OutgoingMessage]
    links: list[tuple[RecordRef, RecordRef]]
    applied: list[Work]  # written, or acked without a write
    conflicts_changed: bool


# ----- control messages ---------------------------------------------------------------------


def _control_envelope(kind: str, source: RecordRef, version: str, body: dict[str, Any], at: float) -> OutgoingMessage:
    from datetime import UTC, datetime

    envelope = Envelope(
        type=kind,
        source=Source(system=source.system, entity=source.entity, record_id=source.id, version=version),
        occurred_at=datetime.fromtimestamp(at, UTC),
        payload={CONTROL_KEY: body},
    )
    return OutgoingMessage(kind, envelope.to_bytes(), message_id=str(envelope.message_id), key=envelope.record_key)


def resolution_message(
    route: RouteConfig, source_ref: str, record: ConflictRecord, chosen: str, value: Any, at: float
) -> OutgoingMessage:
    """The message that tells `route` to write a resolved conflict's value to its target."""
    body = {"kind": "resolution", "conflict": record.id, "field": record.field, "value": value, "take": chosen}
    return _control_envelope(RESOLUTION, parse_ref(source_ref), f"resolution:{record.id}", body, at)


def correction_message(source: RecordRef, fields: Sequence[str], cause: str, at: float) -> OutgoingMessage:
    """The message that tells the peer route to write the agreed values of `fields` to its target."""
    digest = hashlib.sha256(f"{cause}|{','.join(sorted(fields))}".encode()).hexdigest()[:20]
    body = {"kind": "correction", "fields": sorted(fields), "cause": cause}
    return _control_envelope(CORRECTION, source, f"correction:{digest}", body, at)


# ----- the engine ---------------------------------------------------------------------------


def split_chain(mapping: CompiledMapping | MappingChain, route: str) -> tuple[Mapper, Mapper, type[Any]]:
    """(head, tail, canonical model) of a two-way route's mappings: split after the first mapping
    whose target is a canonical entity; each part maps one record (validated, JSON-ready)."""
    from middleware.mapping import CompiledMapping, compose

    mappings = [mapping] if isinstance(mapping, CompiledMapping) else list(mapping.mappings)
    cut = next((i for i, m in enumerate(mappings) if m.target_model is not None), None)
    if cut is None or cut == len(mappings) - 1:
        raise ConfigError(
            Problem(
                f"route {route!r} is two-way, so its mappings must pass through a canonical entity and go on to "
                f"the target: {' → '.join(m.id for m in mappings)}",
                hint="e.g. mappings: [crm_customer_to_canonical, canonical_customer_to_tryton_party]",
            )
        )
    head_part, tail_part = mappings[: cut + 1], mappings[cut + 1 :]
    head = head_part[0] if len(head_part) == 1 else compose(head_part)
    tail = tail_part[0] if len(tail_part) == 1 else compose(tail_part)
    model = mappings[cut].target_model
    assert model is not None
    return head.apply_validated, tail.apply_validated, model


class TwoWaySync:
    """The two-way decisions of one route; the route still fetches, writes, acks and retries."""

    def __init__(
        self,
        route: RouteConfig,
        store: Store,
        mapping: CompiledMapping | MappingChain,
        context: Any = None,
    ) -> None:
        assert route.two_way is not None and route.from_system
        self.route = route
        self.config: TwoWayConfig = route.two_way
        self.store = store
        self.source_system = route.from_system
        self.target_system = route.to.system
        self.peer = self.config.peer
        head, tail, model = split_chain(mapping, route.name)
        self._head, self._tail = head, tail
        self.merge_keys: dict[str, str] = dict(getattr(mapping, "merge_keys", None) or {})
        self.context = context
        try:
            self.fields = CanonicalFields(model, self.config.fields)
        except ValueError as exc:
            raise ConfigError(
                Problem(f"route {route.name!r}: two_way.fields: {exc}", hint=f"fields of {model.__name__}")
            ) from None
        self.owner = f"{route.name}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._skipped = {r: MESSAGES_SKIPPED.labels(route.name, r) for r in ("echo", "unchanged", "conflict")}
        self._open_gauge = CONFLICTS_OPEN.labels(route.name)
        policies = {p.policy for p in [self.config.conflicts.default, *self.config.conflicts.fields.values()]}
        for policy in policies:  # series at 0 from the start, so rate() sees the first conflict
            CONFLICTS_TOTAL.labels(route.name, policy)
        self.refresh_open_gauge()

    # ----- helpers --------------------------------------------------------------------------
    def head(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        return self._head(payload, self.context)

    def tail(self, canonical: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self._tail(canonical, self.context)
        except (MappingError, TransientError):
            raise
        except Exception as exc:  # a bug in a transform must not stop the route
            raise MappingError(f"{type(exc).__name__}: {exc}") from exc

    def policy(self, name: str) -> FieldPolicy:
        return self.config.conflicts.policy_for(name)

    def refresh_open_gauge(self) -> None:
        try:
            self._open_gauge.set(self.store.count_open_conflicts(self.route.name))
        except Exception as exc:  # a metric must not stop the route
            log.warning("conflicts_gauge_failed", route=self.route.name, error=str(exc))

    def count_skip(self, reason: str) -> None:
        self._skipped[reason].inc()

    # ----- planning -------------------------------------------------------------------------
    def plan(self, items: Sequence[tuple[Delivery, Envelope]]) -> TwoWayBatch:
        """Map, lock, load and decide a batch; returns the writes to make and everything else."""
        batch = TwoWayBatch()
        works: list[Work] = []
        for delivery, envelope in items:
            src = envelope.source
            work = Work(delivery, envelope, RecordRef(src.system, src.entity, src.record_id))
            if envelope.type in CONTROL_TYPES:
                control = envelope.payload.get(CONTROL_KEY)
                if not isinstance(control, dict):
                    batch.failed.append((work, MappingError(f"{envelope.type} message without {CONTROL_KEY}")))
                    continue
                work.control = control
            else:
                try:
                    work.canonical = self.head(envelope.payload)
                except (MappingError, TransientError) as exc:
                    batch.failed.append((work, exc))
                    continue
                except Exception as exc:  # a bug in a transform must not stop the route
                    batch.failed.append((work, MappingError(f"{type(exc).__name__}: {exc}")))
                    continue
                if work.canonical is None:
                    work.reason = "filtered"
                    batch.quiet.append(work)
                    continue
            works.append(work)
        if not works:
            return batch
        known = self.store.lookup_many([w.source for w in works], self.target_system)
        for work in works:
            work.target = known.get(work.source)
            work.lock = pair_key(work.source, work.target) if work.target else "new|" + ref_text(work.source)
        chosen = self._one_per_pair(works, batch)
        if not chosen:
            return batch
        batch.locks = self.store.lock_pairs(sorted({w.lock for w in chosen}), self.owner, self.config.lock_ttl_s)
        mine = [w for w in chosen if w.lock in batch.locks]
        batch.deferred.extend(w.delivery for w in chosen if w.lock not in batch.locks)
        if not mine:
            return batch
        try:
            self._decide(mine, batch)
        except BaseException:
            self.store.unlock_pairs(sorted(batch.locks), self.owner)  # the caller never sees this batch
            raise
        return batch

    def _decide(self, mine: list[Work], batch: TwoWayBatch) -> None:
        states = self.store.sync_states([w.lock for w in mine if w.target is not None])
        refs = [w.source for w in mine] + [w.target for w in mine if w.target is not None]
        batch.stamps = self.store.echo_stamps(refs)
        for work in mine:
            data = states.get(work.lock)
            work.state = PairState(data) if data is not None else None
            try:
                if work.control is not None:
                    self._decide_control(work)
                else:
                    self._decide_change(work, batch.stamps.get(work.source))
                if work.to_write or work.initial:
                    self._build_request(work)
            except (MappingError, TransientError) as exc:  # anything else (the store) fails the batch
                batch.failed.append((work, exc))
                continue
            (batch.writes if work.request is not None else batch.quiet).append(work)

    def _one_per_pair(self, works: list[Work], batch: TwoWayBatch) -> list[Work]:
        """One message per pair per batch (each decision needs the state the one before it left);
        the others for a pair already taken wait for a later batch."""
        chosen: list[Work] = []
        taken: set[str] = set()
        for work in works:
            if work.lock in taken:
                batch.deferred.append(work.delivery)
                continue
            taken.add(work.lock)
            chosen.append(work)
        return chosen

    # ----- deciding -------------------------------------------------------------------------
    def _decide_change(self, work: Work, stamp: EchoStamp | None) -> None:
        assert work.canonical is not None
        source, target = self.source_system, self.target_system
        values = self.fields.values(work.canonical)
        # a synced field the record did not carry (a webhook's partial payload) is unknown: it is
        # neither a change nor something to write, and never compared as blank
        carried = self.fields.carried(work.canonical)
        work.values = {name: values[name] for name in carried}
        changed_at = work.envelope.occurred_at.timestamp()
        if work.target is None or work.state is None:
            # never synced two-way: create it in the target (or update it fully when linked already)
            work.initial = True
            work.to_write = dict(work.values)
            return
        state = work.state
        previous = state.data["canonical"].get(source)
        merged = {**previous, **work.canonical} if isinstance(previous, dict) else work.canonical
        state.data["canonical"][source] = merged
        state.data["refs"][source] = ref_text(work.source)
        state.data["refs"][target] = ref_text(work.target)
        work.state_changed = True
        stamp_matches = stamp is not None and stamp.content_hash == content_hash(values, stamp.fields)
        seen = state.data.setdefault("seen", {})
        # A newer read of a field came first: it showed what the system holds since. Kept per
        # field, because a partial read (a webhook without the address) shows nothing of the
        # fields it lacks; pair states from before that fall back to the record's newest read.
        seen_fields = state.data.setdefault("seen_fields", {})
        fallback = float(seen.get(source, float("-inf"))) if source not in seen_fields else float("-inf")
        seen_by_field = seen_fields.setdefault(source, {})
        seen[source] = max(changed_at, float(seen.get(source, changed_at)))
        user_changes: dict[str, tuple[Any, bool]] = {}
        for name in carried:
            value = values[name]
            older = changed_at < float(seen_by_field.get(name, fallback))
            seen_by_field[name] = max(changed_at, float(seen_by_field.get(name, changed_at)))
            if stamp_matches and stamp is not None and name in stamp.fields:
                continue
            known, held = state.held_at(name, source, changed_at)
            if known and value == held:
                continue
            if state.ours(name, source, value, changed_at) or state.changed_after(name, source, changed_at):
                continue
            late = state.written_after(name, source, changed_at)
            if older and not late:
                continue  # the newer read already showed what the system holds since
            state.add(name, source, changed_at, value, "u")
            user_changes[name] = (value, late)
        if user_changes and stamp is not None:
            work.drop_stamp = True
        for name, (value, late) in user_changes.items():
            self._apply_user_change(work, name, value, changed_at, late)
        self._converge(work, self.fields.fields)
        if not work.to_write:
            if work.counted or any(state.field(n).get("parked") for n in user_changes):
                work.reason = "conflict"
            elif user_changes:
                work.reason = "unchanged"
            else:
                work.reason = "echo" if stamp is not None else "unchanged"

    def _apply_user_change(self, work: Work, name: str, value: Any, changed_at: float, late: bool) -> None:
        state = work.state
        assert state is not None
        entry = state.field(name)
        source, target = self.source_system, self.target_system
        parked = entry.get("parked")
        if parked:
            self._update_parked(work, parked, name, value, changed_at)
            return
        agreed = entry.get("agreed")
        if agreed is None:
            entry["agreed"] = [value, changed_at, source]
            return
        if agreed[0] == value:
            return  # both systems changed it to the same value
        policy = self.policy(name)
        if late or (policy.policy == "owner" and policy.owner == target):
            self._conflict(work, name, value, changed_at, policy, agreed)
        else:
            entry["agreed"] = [value, changed_at, source]

    def _conflict(
        self, work: Work, name: str, value: Any, changed_at: float, policy: FieldPolicy, agreed: list[Any]
    ) -> None:
        state = work.state
        assert state is not None and work.target is not None
        entry = state.field(name)
        source, target = self.source_system, self.target_system
        other_value, other_at, other_system = agreed
        if policy.policy == "owner":
            source_wins = policy.owner == source
        elif policy.policy == "last_writer_wins":
            source_wins = changed_at > float(other_at)
        else:
            source_wins = False
        now = time.time()
        sides = {
            source: {
                "ref": ref_text(work.source),
                "value": value,
                "changed_at": iso(changed_at),
                "write_route": self.peer,
            },
            target: {
                "ref": ref_text(work.target),
                "value": other_value,
                "changed_at": iso(float(other_at)),
                "write_route": self.route.name,
                "from": other_system,
            },
        }
        record = ConflictRecord(
            id=new_conflict_id(),
            route=self.route.name,
            pair=work.lock,
            field=name,
            policy=policy.policy,
            status="open" if policy.policy == "manual" else "resolved",
            detected_at=now,
            detail={"sides": sides, "message": str(work.envelope.message_id)},
        )
        if policy.policy == "manual":
            entry["parked"] = record.id
        else:
            winner = source if source_wins else target
            if source_wins:
                entry["agreed"] = [value, changed_at, source]
            record.resolved_at = now
            record.detail["resolution"] = {
                "by": policy.describe(),
                "take": winner,
                "value": value if source_wins else other_value,
                "at": iso(now),
            }
        work.conflicts.append(record)
        work.counted.append(policy.policy)
        log.info(
            "conflict_detected",
            route=self.route.name,
            conflict=record.id,
            pair=work.lock,
            field=name,
            policy=policy.describe(),
            status=record.status,
            winner=(record.detail.get("resolution") or {}).get("take"),
            message_id=str(work.envelope.message_id),
            correlation_id=work.envelope.correlation_id,
        )

    def _update_parked(self, work: Work, conflict_id: str, name: str, value: Any, changed_at: float) -> None:
        """A parked field changed again: the open conflict shows the newest version of each side."""
        found = [c for c in work.conflicts if c.id == conflict_id] or self.store.conflicts(ids=[conflict_id])
        if not found:
            return
        record = found[0]
        side = record.detail.setdefault("sides", {}).setdefault(self.source_system, {})
        side.update({"value": value, "changed_at": iso(changed_at), "ref": ref_text(work.source)})
        side.setdefault("write_route", self.peer)
        if record not in work.conflicts:
            work.conflicts.append(record)

    def _converge(self, work: Work, names: Sequence[str], corrections: bool = True) -> None:
        """Write to the target every field whose agreed value it does not hold; send the others back."""
        state = work.state
        assert state is not None
        for name in names:
            entry = state.field(name)
            agreed = entry.get("agreed")
            if entry.get("parked") or agreed is None:
                continue
            known, held = state.current(name, self.target_system)
            if not known or held != agreed[0]:
                work.to_write[name] = agreed[0]
            if corrections:
                known, held = state.current(name, self.source_system)
                if not known or held != agreed[0]:
                    work.corrections.append(name)

    def _decide_control(self, work: Work) -> None:
        control = work.control
        assert control is not None
        state = work.state
        if state is None or work.target is None:
            work.reason = "unchanged"  # nothing synced for this pair: nothing to converge
            return
        kind = control.get("kind")
        if kind == "resolution":
            name = str(control.get("field"))
            conflict_id = str(control.get("conflict"))
            if name not in self.fields.fields:
                raise MappingError(f"resolution of conflict {conflict_id} names field {name!r}, which is not synced")
            entry = state.field(name)
            if entry.get("parked") == conflict_id:
                entry["parked"] = None
                entry["agreed"] = [self.fields.normalise(name, control.get("value")), time.time(), "resolution"]
                work.state_changed = True
            self._mark_resolved(work, conflict_id, control)
            self._converge(work, [name], corrections=False)
        else:
            names = [str(n) for n in control.get("fields") or [] if n in self.fields.fields]
            self._converge(work, names, corrections=False)
        if not work.to_write:
            work.reason = "unchanged"

    def _mark_resolved(self, work: Work, conflict_id: str, control: dict[str, Any]) -> None:
        found = self.store.conflicts(ids=[conflict_id], status=None)
        if not found or found[0].status != "open":
            return
        record = found[0]
        now = time.time()
        record.status, record.resolved_at = "resolved", now
        record.detail["resolution"] = {
            "by": "manual",
            "take": control.get("take"),
            "value": control.get("value"),
            "at": iso(now),
        }
        work.conflicts.append(record)

    # ----- the write ------------------------------------------------------------------------
    def _build_request(self, work: Work) -> None:
        """The target write: the whole record the first time, else only the target fields that change."""
        envelope = work.envelope
        if work.initial:
            assert work.canonical is not None
            record = self.tail(work.canonical)
            if record is None:
                work.reason, work.initial, work.to_write = "unchanged", False, {}
                return
        else:
            state = work.state
            assert state is not None
            base = state.data["canonical"].get(self.source_system) or state.data["canonical"].get(self.target_system)
            if not isinstance(base, dict):
                raise MappingError(f"pair {work.lock} has no canonical record to write from")
            holds = dict(base)
            for name in self.fields.fields:
                known, held = state.current(name, self.target_system)
                if known:
                    holds[name] = held
                elif name in work.to_write:
                    # never written into the target: `base` already carries this change, and
                    # comparing with it would find nothing to write (a field first seen in a
                    # whole record after a partial one created the target record)
                    holds.pop(name, None)
            wanted = {**holds, **work.to_write}
            new, old = self.tail(wanted), self.tail(holds)
            if new is None:
                work.reason, work.to_write = "unchanged", {}
                return
            old = old or {}
            record = {k: v for k, v in new.items() if k in self.config.write_always or old.get(k, _MISSING) != v}
            if not set(record) - set(self.config.write_always):
                work.reason, work.to_write = "unchanged", {}  # the target's write body does not carry them
                return
        work.request = WriteRequest(
            entity=self.route.to.entity,
            record=record,
            key=envelope.idempotency_key,
            target_id=work.target.id if work.target else None,
            correlation_id=envelope.correlation_id,
            merge=self.merge_keys,
        )

    # ----- after the writes -----------------------------------------------------------------
    def finish(self, batch: TwoWayBatch, results: Sequence[WriteResult]) -> Finished:
        """Bookkeeping for what landed (and for what needed no write), corrections to publish."""
        stamps: list[EchoStamp] = []
        dropped: list[RecordRef] = []
        states: dict[str, dict[str, Any]] = {}
        conflicts: list[ConflictRecord] = []
        corrections: list[OutgoingMessage] = []
        links: list[tuple[RecordRef, RecordRef]] = []
        applied: list[Work] = []
        written_at = batch.write_started or time.time()
        done: list[Work] = list(batch.quiet)
        for work, result in zip(batch.writes, results, strict=True):
            if result.outcome != "ok":
                continue
            if work.initial:
                target_id = result.target_id or (work.target.id if work.target else None)
                if target_id is None:  # the writer could not say which record it wrote: no pair to keep
                    log.warning("two_way_target_unknown", route=self.route.name, record=ref_text(work.source))
                    applied.append(work)
                    continue
                work.target = RecordRef(self.target_system, self.route.to.entity, str(target_id))
                links.append((work.source, work.target))
                work.state = self._initial_state(work, written_at)
            else:
                state = work.state
                assert state is not None
                for name, value in work.to_write.items():
                    state.add(name, self.target_system, written_at, value, "s")
            work.state_changed = True
            stamps.append(self._stamp(work, batch.stamps.get(work.target) if work.target else None, written_at))
            done.append(work)
        for work in done:
            if work.reason == "filtered" or work.state is None or work.target is None:
                applied.append(work)
                continue
            if work.state_changed:
                states[pair_key(work.source, work.target)] = work.state.data
            if work.drop_stamp:
                dropped.append(work.source)
            conflicts.extend(work.conflicts)
            if work.corrections and not work.initial:
                corrections.append(
                    correction_message(work.target, work.corrections, work.envelope.idempotency_key, time.time())
                )
            applied.append(work)
        sync = SyncWrite(
            stamps=stamps,
            dropped_stamps=[r for r in dropped if r not in {s.ref for s in stamps}],
            states=states,
            conflicts=conflicts,
            lock_owner=self.owner,
            released_locks=sorted(batch.locks),
        )
        resolved = any(w.control is not None and w.control.get("kind") == "resolution" for w in applied)
        return Finished(sync, corrections, links, applied, bool(conflicts) or resolved)

    def after_commit(self, finished: Finished) -> None:
        """Metrics, once the batch is durable (a batch redelivered after a crash counts once)."""
        for work in finished.applied:
            for policy in work.counted:
                CONFLICTS_TOTAL.labels(self.route.name, policy).inc()
        if finished.conflicts_changed:
            self.refresh_open_gauge()

    def _initial_state(self, work: Work, written_at: float) -> PairState:
        assert work.canonical is not None and work.target is not None
        source, target = self.source_system, self.target_system
        changed_at = work.envelope.occurred_at.timestamp()
        state = PairState()
        state.data["refs"] = {source: ref_text(work.source), target: ref_text(work.target)}
        state.data["canonical"] = {source: work.canonical}
        state.data["seen"] = {source: changed_at}
        state.data["seen_fields"] = {source: dict.fromkeys(work.values, changed_at)}
        for name, value in work.values.items():
            state.field(name)["agreed"] = [value, changed_at, source]
            state.add(name, source, changed_at, value, "u")
            state.add(name, target, written_at, value, "s")
        return state

    def _stamp(self, work: Work, previous: EchoStamp | None, written_at: float) -> EchoStamp:
        """The target record's stamp: the fields written now, plus those of the stamp before it."""
        assert work.target is not None and work.state is not None
        names = set(work.to_write)
        if previous is not None:
            names |= set(previous.fields)
        names &= set(self.fields.fields)
        holds = {name: work.state.current(name, self.target_system)[1] for name in names}
        return EchoStamp(work.target, content_hash(holds, names), tuple(sorted(names)), self.route.name, written_at)


class _Missing:
    pass


_MISSING = _Missing()
