"""Flow files are checked at load: every problem, with file:line:col, the path and a hint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from middleware.config import load_config
from middleware.errors import ConfigError, Problem
from middleware.yamlsource import load_yaml_file

REPO = Path(__file__).resolve().parents[2]
ORDER_TO_CASH = (REPO / "flows" / "order_to_cash.yaml").read_text()


def problems_of(tmp_path: Path, flow_text: str, routes: list[dict[str, Any]] | None = None) -> list[Problem]:
    (tmp_path / "flows").mkdir(exist_ok=True)
    (tmp_path / "flows" / "flow.yaml").write_text(flow_text)
    config = load_yaml_file(REPO / "deploy" / "demo" / "order_to_cash.yaml").data
    config["mappings"] = [str(REPO / "mappings")]
    config["flows"] = [str(tmp_path / "flows")]
    config["systems"]["tryton"]["password"] = "${TRYTON_PASSWORD}"
    if routes is not None:
        config["routes"] = routes
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        load_config(path)
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRYTON_PASSWORD", "x")


def test_the_shipped_flows_and_the_demo_config_load_cleanly() -> None:
    config = load_config(REPO / "deploy" / "demo" / "order_to_cash.yaml")
    assert [route.to.flow for route in config.model.routes if route.to.flow] == [
        "customer_master",
        "order_to_cash",
        "order_to_cash",
        "order_to_cash",
    ]


def test_an_inline_field_problem_points_into_the_flow_file(tmp_path: Path) -> None:
    text = ORDER_TO_CASH.replace(
        "invoice_number: steps.invoiced.invoice_number",
        "invoice_number: {from: steps.invoiced.invoice_number, transform: uper}",
    )
    (problem,) = problems_of(tmp_path, text)
    assert problem.message == "unknown transform 'uper' in 'uper'" and "upper" in problem.hint
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "transform: uper" in row)
    assert problem.location is not None and problem.location.line == line
    assert problem.path.startswith("steps[10].fields.invoice_number")


def test_an_emitted_entity_is_checked_against_the_canonical_model(tmp_path: Path) -> None:
    text = ORDER_TO_CASH.replace("status: {const: paid}", "status: {const: paid}\n      colour: {const: green}")
    (problem,) = problems_of(tmp_path, text)
    assert "colour" in problem.message and problem.path.startswith("steps[")


def test_steps_that_cannot_work_are_refused_with_hints(tmp_path: Path) -> None:
    text = """
flow: broken
key: order_no
signals: {approval: {key: key}}
steps:
  - {name: a, kind: call, system: crm, operation: sale.confirm}
  - {name: b, kind: write, target: {system: tryton, entity: invoice}, mappings: [crm_order_to_canonical]}
  - name: c
    kind: write
    target: {system: tryton, entity: party}
    mappings: [crm_order_to_canonical, canonical_customer_to_tryton_party]
  - {name: a, kind: emit, type: order_status.changed, fields: {x: {template: "{stepz.a.id}"}}}
  - {name: e, kind: fail, reason: "{steps.nope.id}", colour: red}
on_error:
  - {name: f, kind: wait_for, signal: approval}
"""
    found = {(p.path, p.message) for p in problems_of(tmp_path, text)}
    assert ("steps[0].system", "system 'crm' (rest) offers no operations to call") in found
    assert ("steps[1].target.entity", "entity 'invoice' of system 'tryton' has no 'write:' settings") in found
    assert any(path == "steps[2].mappings" and "produces 'SalesOrder'" in message for path, message in found)
    assert ("steps[3].name", "step name 'a' is already used") in found
    assert any("'stepz.a.id' does not start at the run's context" in message for _, message in found)
    assert ("steps[4].colour", "unknown key 'colour'") in found
    assert ("on_error[0].kind", "a compensation or error handler cannot wait") in found


def test_routes_to_unknown_flows_or_signals_are_refused(tmp_path: Path) -> None:
    routes = [
        {"name": "a", "on": ["sales_order.upserted"], "to": {"flow": "order_to_kash"}},
        {"name": "b", "on": ["invoice.changed"], "to": {"flow": "order_to_cash", "signal": "invoices"}},
        {"name": "c", "on": ["x.y"], "to": {"system": "crm"}},
    ]
    problems = problems_of(tmp_path, ORDER_TO_CASH, routes)
    assert [p.message for p in problems] == ["a route target needs 'system:' and 'entity:' (or 'flow:')"]
    del routes[2]
    found = {(p.path, p.message, p.hint) for p in problems_of(tmp_path, ORDER_TO_CASH, routes)}
    assert ("routes[0].to.flow", "no flow named 'order_to_kash'", "did you mean 'order_to_cash'?") in found
    assert ("routes[1].to.signal", "flow 'order_to_cash' has no signal 'invoices'", "did you mean 'invoice'?") in found


def test_only_a_route_to_a_flow_may_leave_out_its_mappings(tmp_path: Path) -> None:
    routes = [{"name": "a", "on": ["x.y"], "to": {"system": "crm", "entity": "order"}}]
    (problem,) = problems_of(tmp_path, ORDER_TO_CASH, routes)
    assert "only a route to a flow may leave it empty" in problem.message
