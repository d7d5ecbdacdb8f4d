"""The flow engine's promises, on the real SQLite store and embedded broker (no ERP needed).

The flow used here is made of built-in steps (wait_for, emit, fail) and the test plugin's
`stamp` step, which counts its calls, so "a step ran once" can be checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from middleware.adapter import Adapter
from middleware.broker import open_broker
from middleware.broker.base import Broker, OutgoingMessage
from middleware.errors import TransientError
from middleware.flows import FlowEngine, compile_flow
from middleware.flows.runner import WorkerFlowServices
from middleware.flows.steps import plugin_kinds
from middleware.mapping import load_mappings
from middleware.message import Envelope
from middleware.store import open_store
from middleware.store.base import Store
from middleware.yamlsource import load_yaml_text

REPO = Path(__file__).resolve().parents[2]

FLOW = """
flow: demo
key: id
on_new_version: {on_new_version}
signals:
  go: {{key: id}}
steps:
  - name: first
    kind: stamp
    params: {{prefix: {{const: "A-"}}, initials: {{from: record.name, transform: initials}}}}
    compensate: {{name: unstamp, kind: emit, type: demo.undone, fields: {{id: key, stamp: steps.first.stamp}}}}
  - name: gate
    kind: wait_for
    signal: go
    until: {{field: signals.go.ok, equals: true}}
  - name: refuse
    kind: stamp
    when: {{field: record.refuse, exists: true}}
    params: {{refuse: record.refuse}}
  - name: done
    kind: emit
    type: demo.done
    fields: {{id: key, stamp: steps.first.stamp, by: steps.gate.by}}
on_error:
  - name: report
    kind: emit
    type: demo.failed
    fields: {{id: key, code: error.code, reason: error.reason, step: error.step}}
"""


class Services(WorkerFlowServices):
    """The worker's services, with a publish that can be made to fail (a broker outage)."""

    outage = 0

    def publish(self, messages: list[OutgoingMessage]) -> None:
        if self.outage:
            self.outage -= 1
            raise TransientError("broker unreachable (test)")
        super().publish(messages)


@pytest.fixture
def world(tmp_path: Path, test_plugins: Path) -> Iterator[dict[str, Any]]:
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    broker = open_broker(f"embedded:///{tmp_path}/broker.db")
    broker.setup_route("demo_out", ["demo.*"])
    brokers: list[Broker] = [broker]

    def new_broker() -> Broker:
        brokers.append(open_broker(f"embedded:///{tmp_path}/broker.db"))
        return brokers[-1]

    def no_adapter(system: str) -> Adapter:
        raise AssertionError(f"this flow uses no system, asked for {system}")

    services = Services(store, no_adapter, new_broker)
    yield {"store": store, "broker": broker, "services": services, "stamp": plugin_kinds()["stamp"].__self__}  # type: ignore[attr-defined]
    for handle in brokers:
        handle.close()
    store.close()


def engine(world: dict[str, Any], on_new_version: str = "ignore") -> FlowEngine:
    flow, problems = compile_flow(
        load_yaml_text(FLOW.format(on_new_version=on_new_version), "demo.yaml"), load_mappings([REPO / "mappings"]), {}
    )
    assert not problems, problems
    assert flow is not None
    return FlowEngine(flow, world["services"])


def emitted(world: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(d.routing_key, Envelope.from_bytes(d.body).payload) for d in world["broker"].browse("demo_out", 100)]


def trail(store: Store, key: str) -> list[tuple[str, str]]:
    run = store.get_flow_run("demo", key)
    assert run is not None
    return [(e["step"], e["event"]) for e in json.loads(run.state)["trail"]]


def test_a_run_parks_at_wait_for_and_its_signal_resumes_it(world: dict[str, Any]) -> None:
    demo = engine(world)
    assert demo.start({"id": "K1", "name": "flow gamma"}, "in:K1@1") == "waiting"
    assert world["store"].get_flow_run("demo", "K1").waiting_for == "go"
    assert demo.signal("go", {"id": "K1", "ok": False}) == "waiting"  # `until` not met: still parked
    assert demo.signal("go", {"id": "K1", "ok": True, "by": "ops"}) == "completed"
    assert emitted(world) == [("demo.done", {"id": "K1", "stamp": "A-FG", "by": "ops"})]


def test_a_signal_that_arrived_before_the_wait_is_found_there(world: dict[str, Any]) -> None:
    demo = engine(world)
    assert demo.signal("go", {"id": "K2", "ok": True, "by": "early"}) == "stored"  # no run yet
    assert demo.start({"id": "K2", "name": "x"}, "in:K2@1") == "completed"
    assert emitted(world)[0][1]["by"] == "early"


def test_a_redelivered_input_resumes_where_the_run_stopped_and_steps_run_once(world: dict[str, Any]) -> None:
    demo = engine(world)
    demo.signal("go", {"id": "K3", "ok": True, "by": "ops"})
    world["services"].outage = 1
    with pytest.raises(TransientError):  # the route retries this message later
        demo.start({"id": "K3", "name": "retry me"}, "in:K3@1")
    run = world["store"].get_flow_run("demo", "K3")
    assert run.status == "running" and "broker unreachable" in json.loads(run.state)["last_error"]
    assert demo.start({"id": "K3", "name": "retry me"}, "in:K3@1") == "completed"  # the redelivery
    assert demo.start({"id": "K3", "name": "retry me"}, "in:K3@1") == "completed"  # and again: nothing more
    assert world["stamp"].calls == 1
    assert [t for t in emitted(world) if t[0] == "demo.done"] == [
        ("demo.done", {"id": "K3", "stamp": "A-RM", "by": "ops"})
    ]


def test_a_failing_step_compensates_the_done_steps_then_reports(world: dict[str, Any]) -> None:
    demo = engine(world)
    demo.signal("go", {"id": "K4", "ok": True})
    assert demo.start({"id": "K4", "name": "no way", "refuse": "closed on sundays"}, "in:K4@1") == "failed"
    assert emitted(world) == [
        ("demo.undone", {"id": "K4", "stamp": "A-NW"}),
        (
            "demo.failed",
            {
                "id": "K4",
                "code": "stamp_refused",
                "reason": "the stamp refuses K4: closed on sundays",
                "step": "refuse",
            },
        ),
    ]
    assert trail(world["store"], "K4")[-4:] == [
        ("refuse", "failed"),
        ("unstamp", "done"),
        ("report", "done"),
        ("flow", "failed"),
    ]


def test_a_newer_input_is_ignored_or_restarts_the_run_as_the_flow_says(world: dict[str, Any]) -> None:
    ignoring = engine(world)
    ignoring.signal("go", {"id": "K5", "ok": True})
    assert ignoring.start({"id": "K5", "name": "one"}, "in:K5@1") == "completed"
    assert ignoring.start({"id": "K5", "name": "two"}, "in:K5@2") == "ignored"
    assert ("input", "ignored") in trail(world["store"], "K5")

    restarting = engine(world, on_new_version="restart")
    restarting.signal("go", {"id": "K6", "ok": False})
    assert restarting.start({"id": "K6", "name": "one"}, "in:K6@1") == "waiting"
    with pytest.raises(TransientError, match="still waiting"):  # the newer input waits for this run
        restarting.start({"id": "K6", "name": "two"}, "in:K6@2")
    restarting.signal("go", {"id": "K6", "ok": True})
    assert restarting.start({"id": "K6", "name": "two"}, "in:K6@2") == "completed"
    state = json.loads(world["store"].get_flow_run("demo", "K6").state)
    assert state["previous"]["name"] == "one" and state["record"]["name"] == "two"


def test_an_input_the_flow_does_not_take_or_without_a_key_is_refused_plainly(world: dict[str, Any]) -> None:
    from middleware.errors import PermanentError

    with pytest.raises(PermanentError, match="has no 'id'"):
        engine(world).start({"name": "no key"}, "in:?")
