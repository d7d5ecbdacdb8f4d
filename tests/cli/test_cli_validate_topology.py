"""`isthmus validate --config` refuses a topology that loses data (issue 12, point 4).

A two-way pair owns the records it syncs: the pair compares what each side holds and
writes only what changed. A route outside the pair writing the same entity (here: a
customer webhook with its own route to ERP accounts) writes behind the pair's back, and
the pair then copies whatever that route wrote — a blank address from a partial payload —
back over the CRM. `validate` must say so before anything runs: exit 1, `file:line:col`
at the offending route, the route and the pair named, and a hint.

The safe shape of the same topology — the webhook feeding the pair's own route, as
tests/e2e/topology.py runs it — validates.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.cli.cli_runner import RunIsthmus
from tests.e2e.topology import RouteNames, topology_config

UNSAFE_ROUTE = "customer_webhook_to_erp"


@pytest.fixture
def topology_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DEMO_CRM_URL": "http://127.0.0.1:8801",
        "DEMO_CRM_TOKEN": "validate-token",
        "DEMO_ERP_URL": "http://127.0.0.1:8802",
        "CRM_WEBHOOK_SECRET": "validate-secret",
        "TOPOLOGY_WEBHOOK_PORT": "0",
    }.items():
        monkeypatch.setenv(name, value)


def _unsafe_config(directory: Path) -> tuple[Path, str]:
    """The topology plus a customer webhook of its own whose route writes ERP accounts outside the pair."""
    safe = topology_config(directory, broker="embedded://broker.db", store="sqlite://state.db", names=RouteNames())
    config = yaml.safe_load(safe.read_text(encoding="utf-8"))
    endpoints = config["webhooks"]["endpoints"]
    endpoints["crm_new_customer_events"] = {
        **endpoints["crm_customer_events"],
        "path": "/webhooks/crm/new-customers",
        "message_type": "customer.created",
    }
    config["routes"].append(
        {
            "name": UNSAFE_ROUTE,
            "on": ["customer.created"],
            "from_system": "crm",
            "mappings": ["crm_customer_to_canonical", "canonical_customer_to_erp"],
            "to": {"system": "erp", "entity": "account"},
        }
    )
    text = yaml.safe_dump(config, sort_keys=False)
    path = directory / "unsafe.yaml"
    path.write_text(text, encoding="utf-8")
    return path, text


def test_a_route_outside_a_two_way_pair_writing_the_pairs_entity_is_refused_with_its_place_and_a_hint(
    isthmus: RunIsthmus, tmp_path: Path, topology_env: None
) -> None:
    path, text = _unsafe_config(tmp_path)
    run = isthmus("validate", "--config", path)
    run.assert_no_traceback()
    assert run.code == 1, f"validate accepted a route writing the pair's entity outside the pair:\n{run.output}"
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines, 1) if line.strip() == f"- name: {UNSAFE_ROUTE}")
    # the route's block ends before the next list item or top-level key
    last = next((i - 1 for i, line in enumerate(lines, 1) if i > first and not line.startswith(" ")), len(lines))
    located = [
        (int(m.group(1)), line)
        for line in run.err.splitlines()
        if (m := re.match(rf"{re.escape(str(path))}:(\d+):\d+: ", line))
    ]
    about = [(n, line) for n, line in located if UNSAFE_ROUTE in line and first <= n <= last]
    assert about, (
        f"no problem located in route {UNSAFE_ROUTE!r} (lines {first}-{last} of {path}) naming it:\n{run.err}"
    )
    line_no, message = about[0]
    assert "customers_crm_to_erp" in message or "customers_erp_to_crm" in message, (
        f"the problem does not name the two-way pair that owns erp.account: {message}"
    )
    after = run.err.splitlines()[run.err.splitlines().index(message) + 1 :]
    assert after and after[0].strip().startswith("hint:"), f"no hint under the problem:\n{run.err}"


def test_the_safe_topology_webhook_and_poll_feeding_the_pairs_own_route_validates(
    isthmus: RunIsthmus, tmp_path: Path, topology_env: None
) -> None:
    path = topology_config(tmp_path, broker="embedded://broker.db", store="sqlite://state.db", names=RouteNames())
    run = isthmus("validate", "--config", path)
    run.assert_no_traceback()
    assert run.code == 0, run.output
