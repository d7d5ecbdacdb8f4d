"""Running flows: one run per flow and business key, advanced step by step and kept in the store.

A run's progress is its trail: after every step the run is saved (position, outputs, a trail
entry), so a redelivered message resumes where the last one stopped and every step runs to
completion at least once — steps are idempotent (xref lookups, writes by key, operations that
read state first, emits with a stable idempotency key), so a step repeated after a crash
changes nothing more. Saves compare the run's revision: a second worker advancing the same run
gets a transient error and its message comes back later instead of overwriting progress.

Outcomes, per message:

* a step raises `TransientError` → the message is retried (route policy); the run keeps its
  position and `last_error`;
* a step fails otherwise (`kind: fail`, a refusal, a mapping error, a plugin bug) → the flow
  compensates: the `compensate:` steps of the steps already done, in reverse order, then the
  flow's `on_error:` steps (e.g. a clear status to the CRM); the run ends `failed` with the
  error on its trail and the message is acked — the failure is reported, not dead-lettered;
* a step waits for a signal → the run is `waiting` and the message is acked; the signal's
  message resumes it.

Signals are stored when they arrive (the latest per name and key), whether or not a run waits
for them: a run that reaches `wait_for` later finds it there. A run about to park saves
`waiting` and then looks once more, so a signal that arrives meanwhile is never missed.
"""

from __future__ import annotations

import json
import threading
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any

import structlog

from middleware.errors import MappingError, PermanentError, TransientError
from middleware.mapping import to_json_ready
from middleware.mapping.conditions import key_text
from middleware.store.base import FlowRunRecord

from .model import CompiledFlow, CompiledStep, FlowFailure, FlowServices, StepRun, Wait

log = structlog.get_logger("isthmus.flows")

TERMINAL = ("completed", "failed")
TRAIL_LIMIT = 200  # entries kept per run (the oldest go first)
_LOCK_STRIPES = 64


class FlowEngine:
    """Starts, resumes and signals the runs of one flow. Thread-safe; one per flow per worker."""

    def __init__(self, flow: CompiledFlow, services: FlowServices) -> None:
        self.flow = flow
        self.services = services
        self.store = services.store
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    def _lock(self, key: str) -> threading.Lock:
        return self._locks[zlib.crc32(key.encode()) % _LOCK_STRIPES]

    # ----- messages ---------------------------------------------------------------------------
    def start(self, record: dict[str, Any], message_key: str, correlation_id: str = "") -> str:
        """Start (or resume) the run for this input; returns what happened (for logs and tests)."""
        flow = self.flow
        if flow.when is not None and not flow.when(record):
            return "skipped"
        key = key_text(flow.key(record))
        if not key:
            raise PermanentError(f"flow {flow.name!r}: the input has no {flow.key_path!r} (the run's key)")
        with self._lock(key):
            run = self.store.get_flow_run(flow.name, key)
            if run is None:
                run, state = self._new_run(key, record, message_key, correlation_id, previous={})
                self._save(run, state)
                log.info("flow_run_started", flow=flow.name, key=key, run_id=run.run_id, correlation_id=correlation_id)
                return self._advance(run, state)
            state = json.loads(run.state)
            if state.get("input_key") == message_key:
                return run.status if run.status in TERMINAL else self._advance(run, state)
            if flow.on_new_version == "restart":
                if run.status not in TERMINAL:
                    raise TransientError(
                        f"flow {flow.name!r}: the run for {key!r} is still {run.status}; the newer input waits"
                    )
                revision = run.revision
                run, state = self._new_run(key, record, message_key, correlation_id, previous=state.get("record"))
                run.revision = revision
                self._save(run, state)
                log.info(
                    "flow_run_restarted", flow=flow.name, key=key, run_id=run.run_id, correlation_id=correlation_id
                )
                return self._advance(run, state)
            _trail(state, "input", "ignored", f"a newer input ({message_key}) arrived; this flow ignores it")
            self._save_quietly(run, state)
            log.info("flow_input_ignored", flow=flow.name, key=key, status=run.status, message_key=message_key)
            return "ignored"

    def signal(self, name: str, record: dict[str, Any], message_key: str = "") -> str:
        """Store signal `name` for its run and resume the run if it waits for it."""
        flow = self.flow
        key = key_text(flow.signals[name](record))
        if not key:
            log.info("flow_signal_unkeyed", flow=flow.name, signal=name, message_key=message_key)
            return "unkeyed"
        self.store.put_flow_signal(flow.name, key, name, json.dumps(to_json_ready(record)))
        with self._lock(key):
            run = self.store.get_flow_run(flow.name, key)
            if run is None or run.status != "waiting" or run.waiting_for != name:
                return "stored"
            log.info("flow_signal_received", flow=flow.name, key=key, signal=name, run_id=run.run_id)
            return self._advance(run, json.loads(run.state))

    # ----- advancing ----------------------------------------------------------------------------
    def _log(self, run: FlowRunRecord, state: dict[str, Any]) -> Any:
        """A logger bound to the run: every line carries flow, key, run id and the correlation id."""
        return log.bind(flow=self.flow.name, key=run.key, run_id=run.run_id, correlation_id=state.get("correlation_id"))

    def _advance(self, run: FlowRunRecord, state: dict[str, Any]) -> str:
        flow = self.flow
        logger = self._log(run, state)
        signals = self._signals(run.key)
        while True:
            if run.status == "compensating":
                return self._compensate(run, state, signals)
            if run.position >= len(flow.steps):
                run.status, run.waiting_for = "completed", None
                _trail(state, "flow", "completed")
                self._save(run, state)
                logger.info("flow_run_completed")
                return "completed"
            step = flow.steps[run.position]
            context = self._context(run, state, signals)
            if step.when is not None and not step.when(context):
                _trail(state, step.name, "skipped")
                run.position += 1
                self._save(run, state)
                continue
            try:
                outcome = step.action.run(self._step_run(run, state, step, context))
            except TransientError as exc:
                state["last_error"] = f"{step.name}: {exc}"
                self._save_quietly(run, state)
                logger.warning("flow_step_retrying", step=step.name, error=str(exc))
                raise
            except Exception as exc:  # noqa: BLE001 - every other failure fails the step: the flow compensates
                self._fail(run, state, step, exc)
                continue
            if isinstance(outcome, Wait):
                if run.status == "waiting" and run.waiting_for == outcome.signal:
                    return "waiting"  # looked again after parking: still nothing
                run.status, run.waiting_for = "waiting", outcome.signal
                _trail(state, step.name, "waiting", f"for signal {outcome.signal!r}")
                self._save(run, state)
                logger.info("flow_run_waiting", step=step.name, signal=outcome.signal)
                continue  # look once more: a signal stored while this step looked is seen now
            state["steps"][step.name] = outcome
            state["last_error"] = None
            run.status, run.waiting_for = "running", None
            _trail(state, step.name, "done")
            run.position += 1
            self._save(run, state)
            logger.info("flow_step_done", step=step.name)

    def _fail(self, run: FlowRunRecord, state: dict[str, Any], step: CompiledStep, exc: Exception) -> None:
        if isinstance(exc, FlowFailure):
            code, reason = exc.code, exc.reason
        elif isinstance(exc, MappingError | PermanentError):
            code, reason = "failed", str(exc)
        else:
            code, reason = "failed", f"{type(exc).__name__}: {exc}"
        done = [s for s in self.flow.steps if s.name in state["steps"] and s.compensate is not None]
        plan = [s.compensate.name for s in reversed(done) if s.compensate is not None]
        plan += [s.name for s in self.flow.on_error]
        state["error"] = {"step": step.name, "code": code, "reason": reason}
        state["plan"] = plan
        state["last_error"] = None
        run.status, run.position, run.waiting_for = "compensating", 0, None
        _trail(state, step.name, "failed", f"{code}: {reason}")
        self._save(run, state)
        self._log(run, state).warning("flow_step_failed", step=step.name, code=code, reason=reason, compensations=plan)

    def _compensate(self, run: FlowRunRecord, state: dict[str, Any], signals: dict[str, Any]) -> str:
        plan: list[str] = state.get("plan") or []
        while run.position < len(plan):
            step = self.flow.by_name[plan[run.position]]
            context = self._context(run, state, signals)
            if step.when is not None and not step.when(context):
                _trail(state, step.name, "skipped")
            else:
                try:
                    outcome = step.action.run(self._step_run(run, state, step, context))
                except TransientError as exc:
                    state["last_error"] = f"{step.name}: {exc}"
                    self._save_quietly(run, state)
                    raise
                except Exception as exc:  # noqa: BLE001 - a failed compensation is reported, the rest still run
                    problem = (
                        str(exc) if isinstance(exc, MappingError | PermanentError) else f"{type(exc).__name__}: {exc}"
                    )
                    state.setdefault("compensation_errors", []).append({"step": step.name, "error": problem})
                    _trail(state, step.name, "compensation_failed", problem)
                    self._log(run, state).error("flow_compensation_failed", step=step.name, error=problem)
                else:
                    state["steps"][step.name] = outcome if not isinstance(outcome, Wait) else {}
                    _trail(state, step.name, "done")
            state["last_error"] = None
            run.position += 1
            self._save(run, state)
        run.status = "failed"
        error = state.get("error") or {}
        _trail(state, "flow", "failed", f"{error.get('code')}: {error.get('reason')}")
        self._save(run, state)
        self._log(run, state).warning(
            "flow_run_failed", step=error.get("step"), code=error.get("code"), reason=error.get("reason")
        )
        return "failed"

    # ----- state --------------------------------------------------------------------------------
    def _new_run(
        self, key: str, record: dict[str, Any], message_key: str, correlation_id: str, previous: Any
    ) -> tuple[FlowRunRecord, dict[str, Any]]:
        run_id = uuid.uuid4().hex[:12]
        state: dict[str, Any] = {
            "record": to_json_ready(record),
            "input_key": message_key,
            "correlation_id": correlation_id,
            "previous": previous or {},
            "started_at": _now(),
            "steps": {},
            "error": None,
            "last_error": None,
            "trail": [],
        }
        _trail(state, "flow", "started", message_key)
        return FlowRunRecord(self.flow.name, key, run_id, "running", 0, ""), state

    def _context(self, run: FlowRunRecord, state: dict[str, Any], signals: dict[str, Any]) -> dict[str, Any]:
        return {
            "record": state["record"],
            "key": run.key,
            "previous": state.get("previous") or {},
            "steps": state["steps"],
            "signals": signals,
            "error": state.get("error") or {},
            "now": _now(),
            "run": {"id": run.run_id, "started_at": state.get("started_at"), "status": run.status},
        }

    def _step_run(
        self, run: FlowRunRecord, state: dict[str, Any], step: CompiledStep, context: dict[str, Any]
    ) -> StepRun:
        return StepRun(
            self.flow.name, run.key, run.run_id, step.name, state.get("correlation_id") or "", context, self.services
        )

    def _signals(self, key: str) -> dict[str, Any]:
        if not self.flow.signals:
            return {}
        return {name: json.loads(payload) for name, payload in self.store.flow_signals(self.flow.name, key).items()}

    def _save(self, run: FlowRunRecord, state: dict[str, Any]) -> None:
        run.state = json.dumps(state, default=str)
        if not self.store.save_flow_run(run):
            raise TransientError(
                f"flow {self.flow.name!r}: the run for {run.key!r} was changed by another worker; retrying"
            )

    def _save_quietly(self, run: FlowRunRecord, state: dict[str, Any]) -> None:
        """Save what is only informative (last error, an ignored input); losing it to a race is fine."""
        run.state = json.dumps(state, default=str)
        self.store.save_flow_run(run)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _trail(state: dict[str, Any], step: str, event: str, detail: str = "") -> None:
    trail = state.setdefault("trail", [])
    entry = {"at": _now(), "step": step, "event": event}
    if detail:
        entry["detail"] = detail
    trail.append(entry)
    if len(trail) > TRAIL_LIMIT:
        del trail[: len(trail) - TRAIL_LIMIT]
