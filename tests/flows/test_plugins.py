"""Plugins: a mapping transform (`isthmus.transforms`) and a flow step kind (`isthmus.steps`).

The plugin distribution (tests/flows/plugins) is installed as pip leaves one — a dist-info
with entry_points.txt on sys.path — and found through importlib.metadata, as any plugin is.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from deploy.demo.sample_crm import SampleCrm
from middleware.config import load_config
from middleware.errors import ConfigError
from middleware.flows import compile_flow
from middleware.flows.steps import plugin_kinds
from middleware.mapping import compile_mapping_text, load_mappings
from middleware.mapping.transforms import load_plugin_transforms
from middleware.runtime.worker import Worker
from middleware.store import open_store
from middleware.yamlsource import load_yaml_file, load_yaml_text
from tests.flows.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]

GREETING = """
flow: greeting
key: customer_no
steps:
  - name: stamp
    kind: stamp                        # the plugin's step kind
    params:
      prefix: {const: "CRM-"}
      initials: {from: record.company, transform: initials}   # the plugin's transform
"""


def test_a_plugin_transform_works_in_mapping_files(test_plugins: Path) -> None:
    mapping = compile_mapping_text(
        "mapping: short_names\nsource: crm.customer\ntarget: erp.account\n"
        "fields: {short: {from: company, transform: 'trim | initials'}}\n"
    )
    assert mapping.apply({"company": " acme widget works "}) == {"short": "AWW"}


def test_a_plugin_step_and_transform_run_in_a_flow_on_a_real_worker(
    test_plugins: Path, tmp_path: Path, crm: SampleCrm, monkeypatch: pytest.MonkeyPatch
) -> None:
    crm.seed(customers=3, orders_per_customer=0, with_bad_records=False)
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "greeting.yaml").write_text(GREETING)
    demo = load_yaml_file(REPO / "deploy" / "demo" / "isthmus.yaml").data
    config = {
        "broker": f"embedded:///{tmp_path}/broker.db",
        "store": f"sqlite:///{tmp_path}/state.db",
        "mappings": [str(REPO / "mappings")],
        "flows": [str(tmp_path / "flows")],
        "observability": {"port": 0, "log_format": "json", "log_level": "warning"},
        "systems": {"crm": demo["systems"]["crm"]},
        "sources": [
            {
                "name": "crm_customers",
                "system": "crm",
                "entity": "customer",
                "emits": "customer.upserted",
                "poll_interval_s": 0.2,
            }
        ],
        "routes": [
            {
                "name": "customers_to_greeting",
                "on": ["customer.upserted"],
                "from_system": "crm",
                "to": {"flow": "greeting"},
            }
        ],
    }
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setenv("DEMO_CRM_URL", crm.url)
    worker = Worker(load_config(path), serve_health=False).start()
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        wait_until(lambda: len(store.list_flow_runs("greeting", statuses=["completed"])) == 3, 20, "three runs")
        run = store.get_flow_run("greeting", "C-1001")
        assert run is not None
        stamp = json.loads(run.state)["steps"]["stamp"]
        company = crm.customer("C-1001")["company"]  # type: ignore[index]
        assert stamp == {
            "stamp": "CRM-" + "".join(w[0].upper() for w in company.split()),
            "key": "C-1001",
            "run": run.run_id,
        }
    finally:
        worker.stop()
        store.close()


def test_a_plugin_that_fails_to_load_is_named_where_it_is_used(tmp_path: Path) -> None:
    info = tmp_path / "isthmus_broken-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: isthmus-broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[isthmus.transforms]\nshout = no_such_module:shout\n\n[isthmus.steps]\nnotify = no_such_module:Notify\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        load_plugin_transforms(reload=True)
        plugin_kinds(reload=True)
        with pytest.raises(ConfigError) as caught:
            compile_mapping_text("mapping: m\nsource: a.b\ntarget: c.d\nfields: {x: {from: y, transform: shout}}\n")
        assert "no_such_module:shout" in caught.value.problems[0].hint
        flow, problems = compile_flow(
            load_yaml_text("flow: f\nkey: id\nsteps: [{name: s, kind: notify}]\n", "f.yaml"),
            load_mappings([REPO / "mappings"]),
            {},
        )
        assert flow is None and "unknown step kind 'notify'" in problems[0].message
        assert "ModuleNotFoundError" in problems[0].hint and str(problems[0].location) == "f.yaml:3:25"
    finally:
        sys.path.remove(str(tmp_path))
        load_plugin_transforms(reload=True)
        plugin_kinds(reload=True)


@pytest.fixture(autouse=True)
def _no_leftover_plugins() -> Iterator[None]:
    yield
    plugin_kinds(reload=True)
