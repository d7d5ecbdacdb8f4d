"""Config load reads each adapter's declared capabilities: a source needs one that reads, a route
one that writes, a flow `call` step one that calls — refused with file:line:col and a hint.

All built-in adapters read and write, so the test installs a plugin distribution (a
`*.dist-info` with `entry_points.txt` on sys.path, as pip leaves one) with two small adapter
types: `feed` only reads, `sink` only writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from middleware.config import load_config
from middleware.errors import ConfigError, Problem

PLUGIN = '''\
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entities: dict[str, Any] = {}


class FeedAdapter:
    config_model: ClassVar[type[BaseModel]] = Settings
    capabilities: ClassVar[frozenset[str]] = frozenset({"read"})


class SinkAdapter:
    config_model: ClassVar[type[BaseModel]] = Settings
    capabilities: ClassVar[frozenset[str]] = frozenset({"write"})
'''
ENTRY_POINTS = """\
[isthmus.adapters]
feed = capability_test_adapters:FeedAdapter
sink = capability_test_adapters:SinkAdapter
"""

CONFIG = """\
mappings: []
systems:
  events: {type: feed}
  archive: {type: sink}
sources:
  - {name: from_archive, system: archive, entity: thing, emits: thing.changed}
routes:
  - name: to_events
    on: [thing.changed]
    mappings: [anything]
    to: {system: events, entity: thing}
"""


@pytest.fixture
def plugin_adapters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    info = site / "capability_test_adapters-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: capability-test-adapters\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / "capability_test_adapters.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(site))


def problems(tmp_path: Path) -> dict[str, Problem]:
    path = tmp_path / "isthmus.yaml"
    path.write_text(CONFIG)
    with pytest.raises(ConfigError) as caught:
        load_config(path, check_mappings=False)
    return {p.path: p for p in caught.value.problems}


def test_a_source_on_a_system_that_cannot_read_is_refused_with_its_place(
    plugin_adapters: None, tmp_path: Path
) -> None:
    problem = problems(tmp_path)["sources.0.system"]
    assert "system 'archive' (sink) cannot read" in problem.message
    assert problem.location is not None and (problem.location.line, problem.location.column) == (6, 34)
    assert problem.hint is not None and "feed" in problem.hint and "rest" in problem.hint


def test_a_route_to_a_system_that_cannot_write_is_refused_with_its_place(
    plugin_adapters: None, tmp_path: Path
) -> None:
    problem = problems(tmp_path)["routes.0.to.system"]
    assert "system 'events' (feed) cannot write" in problem.message
    assert problem.location is not None and problem.location.line == 11
    assert str(problem.location).startswith(str(tmp_path / "isthmus.yaml") + ":11:")
    assert problem.hint is not None and "sink" in problem.hint


def test_a_reconciled_route_whose_target_cannot_read_is_refused(plugin_adapters: None, tmp_path: Path) -> None:
    path = tmp_path / "isthmus.yaml"
    path.write_text(CONFIG.replace("to: {system: events, entity: thing}", "to: {system: archive, entity: thing}")
                    + "reconcile:\n  to_events: {source: from_archive}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, check_mappings=False)
    problem = next(p for p in caught.value.problems if p.path == "reconcile.to_events")
    assert "system 'archive' (sink) cannot read" in problem.message
    assert problem.location is not None and problem.location.line == 13


FLOW = """\
flow: capable
key: order_no
steps:
  - {name: a, kind: call, system: archive, operation: anything}
  - name: b
    kind: write
    target: {system: events, entity: thing}
    fields: {x: record.x}
"""


def test_flow_steps_on_systems_that_cannot_call_or_write_are_refused_with_their_place(
    plugin_adapters: None, tmp_path: Path
) -> None:
    (tmp_path / "mappings").mkdir()
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "capable.yaml").write_text(FLOW)
    path = tmp_path / "isthmus.yaml"
    path.write_text(
        "mappings: [mappings]\nflows: [flows]\nsystems:\n  events: {type: feed}\n  archive: {type: sink}\n"
        "routes:\n  - {name: start, on: [order.won], to: {flow: capable}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    found = {p.path: p for p in caught.value.problems}
    call, write = found["steps[0].system"], found["steps[1].target.system"]
    assert call.message == "system 'archive' (sink) offers no operations to call" and "'call'" in (call.hint or "")
    assert write.message.startswith("system 'events' (feed) cannot write")
    assert call.location is not None and call.location.file.endswith("capable.yaml") and call.location.line == 4
    assert write.location is not None and write.location.line == 7
