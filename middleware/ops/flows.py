"""What `isthmus flows` does: list and show runs, and deliver approvals to parked runs.

An approval is a message like any other: `isthmus flows approve SO-5001` publishes an
`approval.<flow>` envelope (payload: flow, key, decision, by, note, at) and a route of the
config delivers it to the flow as a signal, e.g.

```yaml
- name: approvals_to_order_to_cash
  on: [approval.order_to_cash]
  to: {flow: order_to_cash, signal: approval}
```

so approvals are durable, ordered with the rest, retried, and visible on the message trail.
The command refuses (exit 1) when no run of that key waits for a signal such a route feeds.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from middleware.broker.base import Broker, OutgoingMessage
from middleware.broker.topics import topic_matches
from middleware.config import LoadedConfig
from middleware.errors import IsthmusError
from middleware.flows.steps import EMITTED_SYSTEM
from middleware.message import Envelope, Source
from middleware.store.base import FlowRunRecord, Store


def approval_type(flow: str) -> str:
    """The message type `isthmus flows approve` publishes for runs of `flow`."""
    return f"approval.{flow}"


def summary(run: FlowRunRecord) -> dict[str, Any]:
    """One run as `isthmus flows list` shows it."""
    state = json.loads(run.state or "{}")
    trail = state.get("trail") or []
    last = trail[-1] if trail else {}
    error = state.get("error") or {}
    return {
        "flow": run.flow,
        "key": run.key,
        "run_id": run.run_id,
        "status": run.status,
        "waiting_for": run.waiting_for,
        "last_step": last.get("step"),
        "last_event": last.get("event"),
        "at": f"waiting for {run.waiting_for}" if run.waiting_for else f"{last.get('step')}: {last.get('event')}",
        "updated_at": datetime.fromtimestamp(run.updated_at, UTC).isoformat(timespec="seconds"),
        "error": f"{error.get('code')}: {error.get('reason')}" if error else None,
        "last_error": state.get("last_error"),
    }


def detail(run: FlowRunRecord) -> dict[str, Any]:
    """One run with its context and trail, as `isthmus flows show` prints it."""
    state = json.loads(run.state or "{}")
    return {**summary(run), "revision": run.revision, **{k: v for k, v in state.items() if k != "last_error"}}


@dataclass
class DecisionSent:
    run: FlowRunRecord
    message_id: str
    type: str


def send_decision(
    config: LoadedConfig,
    store: Store,
    broker: Broker,
    key: str,
    *,
    decision: str,
    flow: str | None = None,
    by: str = "",
    note: str = "",
) -> DecisionSent:
    """Publish an approval (or rejection) for the run of `key` that waits for one; IsthmusError if none does."""
    runs = store.list_flow_runs(flow=flow, key=key, limit=50)
    if not runs:
        where = f" of flow {flow!r}" if flow else ""
        raise IsthmusError(f"no flow run{where} with key {key!r}; `isthmus flows list` shows the runs")
    waiting = [run for run in runs if run.status == "waiting" and _approvals_reach(config, run)]
    if not waiting:
        states = "; ".join(
            f"{r.flow}: {r.status}" + (f" (waiting for {r.waiting_for})" if r.waiting_for else "") for r in runs
        )
        raise IsthmusError(f"nothing to approve for {key!r}: {states}")
    if len(waiting) > 1:
        names = ", ".join(r.flow for r in waiting)
        raise IsthmusError(f"runs of several flows wait for an approval of {key!r} ({names}); name one with --flow")
    run = waiting[0]
    state = json.loads(run.state or "{}")
    now = datetime.now(UTC)
    message_type = approval_type(run.flow)
    envelope = Envelope(
        type=message_type,
        source=Source(
            system=EMITTED_SYSTEM, entity="approval", record_id=f"{run.flow}:{key}", version=uuid.uuid4().hex
        ),
        occurred_at=now,
        correlation_id=state.get("correlation_id") or "",
        payload={"flow": run.flow, "key": key, "decision": decision, "by": by, "note": note, "at": now.isoformat()},
    )
    message_id = str(envelope.message_id)
    broker.publish([OutgoingMessage(message_type, envelope.to_bytes(), message_id=message_id, key=envelope.record_key)])
    return DecisionSent(run, message_id, message_type)


def _approvals_reach(config: LoadedConfig, run: FlowRunRecord) -> bool:
    """Whether a route carries `approval.<flow>` messages to the signal this run waits for."""
    wanted = approval_type(run.flow)
    return any(
        route.to.flow == run.flow
        and route.to.signal == run.waiting_for
        and any(topic_matches(pattern, wanted) for pattern in route.on)
        for route in config.model.routes
    )
