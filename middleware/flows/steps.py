"""The step kinds a flow is made of: the built-ins, and plugins from `isthmus.steps` entry points.

Built-ins (their settings are checked by `middleware.flows.spec`):

* `ensure` — the record stands in the target system: its id through the cross-reference, or
  created from `create:` (and linked) when the xref knows none; without `create:` it waits
  (transient) for another route to sync it. When the target finds records by a key field
  (Tryton `key_field`, REST `find:`), creating goes through the identity claim routes use
  (`middleware.runtime.identity`): a record a route or another run created under the same key
  is linked, not created twice.
* `write` — write a record built by mappings or inline fields through the target system's
  writer (update when the xref knows the target id, else create), and link the xref.
* `call` — an operation of an adapter that declares the `call` capability (a
  `middleware.adapter.Caller`, e.g. Tryton's `sale.confirm`), with arguments built in the
  mapping language.
* `wait_for` — park the run until a signal (a message routed to the flow as that signal, e.g.
  an approval or an invoice) is there and satisfies `until:`.
* `emit` — publish a canonical message (routes then carry it, e.g. a status to the CRM).
* `fail` — stop the run with a code and a reason: the flow compensates.

A plugin is an `isthmus.steps` entry point naming a class (instantiated once, without
arguments), an object with a `run` method, or a function; it is called as
`run(params, step_run)` with the step's `params:` built from the context (mapping language)
and a `StepRun`, and returns a JSON object (its output) or None. It raises `FlowFailure`
to fail the step, `TransientError` to be retried.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Any

from middleware.adapter import Writer, WriteRequest, WriteResult, caller_of
from middleware.broker.base import OutgoingMessage
from middleware.errors import PermanentError, TransientError, XrefMissingError
from middleware.mapping import to_json_ready
from middleware.mapping.conditions import key_text
from middleware.mapping.paths import Getter
from middleware.message import Envelope, Source
from middleware.runtime.identity import IdentityHeldError, TargetIdentities
from middleware.store.base import IdentityWrite, RecordRef

from .model import FlowFailure, Predicate, RecordBuilder, StepRun, Template, Wait

BUILTIN_KINDS = ("ensure", "write", "call", "wait_for", "emit", "fail")
PLUGIN_GROUP = "isthmus.steps"
EMITTED_SYSTEM = "isthmus"  # source system of the messages flows emit

PluginFn = Callable[[dict[str, Any], StepRun], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Target:
    system: str
    entity: str


@dataclass(frozen=True)
class XrefRef:
    """The record a target record stands for: (system, entity, id read from the context)."""

    system: str
    entity: str
    id_path: str
    id: Getter

    def ref(self, step: StepRun) -> RecordRef:
        record_id = key_text(self.id(step.context))
        if not record_id:
            raise FlowFailure("missing_data", f"step {step.step!r}: {self.id_path!r} is empty (the {self.entity} id)")
        return RecordRef(self.system, self.entity, record_id)


def _write_one(step: StepRun, target: Target, record: dict[str, Any], target_id: str | None) -> WriteResult:
    """Write one record; a create refused once is tried once more (see below)."""
    writer: Writer = step.adapter(target.system).writer()
    request = WriteRequest(
        entity=target.entity,
        record=record,
        key=step.idempotency_key,
        target_id=target_id,
        correlation_id=step.correlation_id,
    )
    (result,) = writer.write_batch([request])
    if result.outcome == "permanent" and target_id is None:
        # Another route or flow may have created the same record a moment ago (a unique key then
        # refuses this create); writers that find records by key update it on a second try.
        (result,) = writer.write_batch([request])
    if result.outcome == "transient":
        raise TransientError(
            f"step {step.step!r}: {target.system} {target.entity}: {result.error}",
            system=target.system,
            status=result.status,
            retry_after=result.retry_after,
        )
    if result.outcome != "ok":
        raise PermanentError(f"{target.system} refused the {target.entity}: {result.error}", system=target.system)
    return result


def _built(builder: RecordBuilder, step: StepRun) -> dict[str, Any]:
    record = builder.build(step.context, step.services.mapping_context)
    if record is None:
        raise FlowFailure("skipped", f"step {step.step!r}: the mapping {builder.label!r} skipped the record")
    return record


ENSURE_CLAIM_LEASE_S = 60.0  # one record's create by a step takes far less


@dataclass
class Ensure:
    target: Target
    xref: XrefRef
    create: RecordBuilder | None
    key: tuple[str, ...] = ()  # the target's business key field(s); () = no identity claim
    claim_lease_s: float = ENSURE_CLAIM_LEASE_S

    def run(self, step: StepRun) -> dict[str, Any]:
        ref = self.xref.ref(step)
        found = step.store.lookup(ref, self.target.system)
        if found is not None:
            return {"id": found.id, "created": False}
        if self.create is None:
            raise XrefMissingError(
                f"step {step.step!r}: no {self.target.system} {self.target.entity} linked to {ref.system} "
                f"{ref.entity} {ref.id!r} yet (is it synced?)",
                from_system=ref.system,
                entity=ref.entity,
                record_id=ref.id,
                to_system=self.target.system,
            )
        record = _built(self.create, step)
        if self.key:
            return self._claimed_create(step, ref, record)
        result = _write_one(step, self.target, record, None)
        if not result.target_id:
            raise PermanentError(
                f"{self.target.system} did not say which {self.target.entity} it created", system=self.target.system
            )
        step.store.link(ref, RecordRef(self.target.system, self.target.entity, str(result.target_id)))
        return {"id": str(result.target_id), "created": True}

    def _claimed_create(self, step: StepRun, ref: RecordRef, record: dict[str, Any]) -> dict[str, Any]:
        """Find-or-create under the record's identity claim: link what another writer created (or
        what a killed one left, found by key), else create, link the claim and the xref together.

        After a SIGKILL between the create and the link, the step runs again (the run's progress
        was not saved): it waits for the claim's lease, finds the record by key and links it."""
        system, entity = self.target.system, self.target.entity
        identities = TargetIdentities(
            step.store,
            step.adapter(system).writer(),
            system,
            entity,
            self.key,
            lease_s=self.claim_lease_s,
            owner=f"flow:{step.flow}",
        )
        request = WriteRequest(entity, record, step.idempotency_key, None, step.correlation_id)
        claims = identities.claim([request], [ref])
        if 0 in claims.held:  # a flow retry spends an attempt: come back when the lease is over at the latest
            held = claims.held[0]
            raise IdentityHeldError(
                str(held), system=system, retry_after=max(held.retry_after or 0.0, held.lease_left_s)
            )
        if 0 in claims.failed:
            raise claims.failed[0]
        identity = claims.identities.get(0)
        done = f"flow:{step.flow}"
        if request.target_id is not None:  # linked by another writer, or found by key
            target = RecordRef(system, entity, request.target_id)
            linked = [(identity, request.target_id)] if identity is not None else []
            step.store.mark_applied(done, [], [(ref, target)], identity=IdentityWrite(claims.claimant, linked))
            return {"id": request.target_id, "created": False}
        try:
            result = _write_one(step, self.target, record, None)
            if not result.target_id:
                raise PermanentError(f"{system} did not say which {entity} it created", system=system)
        except BaseException:
            if identity is not None:
                step.store.mark_applied(done, [], identity=IdentityWrite(claims.claimant, expired=[identity]))
            raise
        target_id = str(result.target_id)
        linked = [(identity, target_id)] if identity is not None else []
        step.store.mark_applied(
            done, [], [(ref, RecordRef(system, entity, target_id))], identity=IdentityWrite(claims.claimant, linked)
        )
        return {"id": target_id, "created": True}


@dataclass
class Write:
    target: Target
    xref: XrefRef | None
    record: RecordBuilder

    def run(self, step: StepRun) -> dict[str, Any]:
        ref = self.xref.ref(step) if self.xref is not None else None
        known = step.store.lookup(ref, self.target.system) if ref is not None else None
        result = _write_one(step, self.target, _built(self.record, step), known.id if known else None)
        target_id = str(result.target_id) if result.target_id else (known.id if known else None)
        if ref is not None and target_id and (known is None or known.id != target_id):
            step.store.link(ref, RecordRef(self.target.system, self.target.entity, target_id))
        return {"id": target_id}


@dataclass
class Call:
    system: str
    operation: str
    params: RecordBuilder | None

    def run(self, step: StepRun) -> dict[str, Any]:
        params = self.params.build(step.context, step.services.mapping_context) if self.params else {}
        caller = caller_of(step.adapter(self.system), self.system)  # the loader checked the declaration
        output = caller.call(self.operation, params or {}, step.correlation_id)
        if not isinstance(output, dict):
            raise PermanentError(f"{self.system} {self.operation} returned {type(output).__name__}, not an object")
        return to_json_ready(output)  # type: ignore[no-any-return]


@dataclass
class WaitFor:
    signal: str
    until: Predicate | None

    def run(self, step: StepRun) -> dict[str, Any] | Wait:
        # read the signals afresh: one may have arrived since the run was loaded
        fresh = {name: _json(payload) for name, payload in step.store.flow_signals(step.flow, step.key).items()}
        signals = step.context.setdefault("signals", {})
        signals.clear()
        signals.update(fresh)
        payload = fresh.get(self.signal)
        if payload is None or (self.until is not None and not self.until(step.context)):
            return Wait(self.signal)
        return payload if isinstance(payload, dict) else {"value": payload}


@dataclass
class Emit:
    type: str
    payload: RecordBuilder

    def run(self, step: StepRun) -> dict[str, Any]:
        envelope = Envelope(
            type=self.type,
            # one version per run and step: a re-emit after a crash has the same idempotency key
            source=Source(
                system=EMITTED_SYSTEM, entity=step.flow, record_id=step.key, version=f"{step.run_id}.{step.step}"
            ),
            occurred_at=datetime.now(UTC),
            correlation_id=step.correlation_id,
            payload=_built(self.payload, step),
        )
        message = OutgoingMessage(
            self.type, envelope.to_bytes(), message_id=str(envelope.message_id), key=envelope.record_key
        )
        step.services.publish([message])
        return {"type": self.type, "message_id": message.message_id, "payload": envelope.payload}


@dataclass
class Fail:
    code: str
    reason: Template

    def run(self, step: StepRun) -> dict[str, Any]:
        raise FlowFailure(self.code, self.reason.render(step.context))


@dataclass
class RuleGate:
    """Decides once, where the rule stands in the flow, whether its steps apply (`steps.<rule>.applies`)."""

    predicate: Predicate

    def run(self, step: StepRun) -> dict[str, Any]:
        return {"applies": bool(self.predicate(step.context))}


@dataclass
class Plugin:
    kind: str
    fn: PluginFn
    params: RecordBuilder | None

    def run(self, step: StepRun) -> dict[str, Any]:
        params = self.params.build(step.context, step.services.mapping_context) if self.params else {}
        output = self.fn(params or {}, step)
        if output is None:
            return {}
        if not isinstance(output, dict):
            raise PermanentError(f"step kind {self.kind!r} returned {type(output).__name__}, not an object or None")
        return to_json_ready(output)  # type: ignore[no-any-return]


# ----- plugins ------------------------------------------------------------------------------
_plugins: dict[str, PluginFn] | None = None
PLUGIN_PROBLEMS: dict[str, str] = {}


def plugin_kinds(*, reload: bool = False) -> dict[str, PluginFn]:
    """Step kinds of installed `isthmus.steps` entry points (read once per process)."""
    global _plugins
    if _plugins is not None and not reload:
        return _plugins
    found: dict[str, PluginFn] = {}
    PLUGIN_PROBLEMS.clear()
    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.name in BUILTIN_KINDS:
            PLUGIN_PROBLEMS[ep.name] = f"plugin {ep.value!r} is ignored: {ep.name!r} is a built-in step kind"
            continue
        try:
            loaded = ep.load()
            target = loaded() if isinstance(loaded, type) else loaded
            fn = getattr(target, "run", target)
            if not callable(fn):
                raise TypeError("neither callable nor an object with a run(params, step) method")
        except Exception as exc:  # a broken plugin must not stop the others
            PLUGIN_PROBLEMS[ep.name] = f"plugin {ep.value!r} failed to load: {type(exc).__name__}: {exc}"
            continue
        found[ep.name] = fn
    _plugins = found
    return found


def _json(payload: str) -> Any:
    import json

    return json.loads(payload)
