"""deploy/grafana/: the dashboard Grafana provisions is well formed and covers what operators watch.

Grafana itself does not run here (it is not a Debian package); what Prometheus answers to
each panel query is checked in test_prometheus_real.py.
"""

from __future__ import annotations

from typing import Any

import yaml

from tests.observability.promserver import DASHBOARD, GRAFANA_DASHBOARDS, GRAFANA_DATASOURCE, dashboard, panels


def _overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return not (
        a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"] or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"]
    )


def test_provisioning_points_grafana_at_the_dashboard_and_its_datasource() -> None:
    datasources = yaml.safe_load(GRAFANA_DATASOURCE.read_text(encoding="utf-8"))["datasources"]
    providers = yaml.safe_load(GRAFANA_DASHBOARDS.read_text(encoding="utf-8"))["providers"]
    assert providers[0]["type"] == "file"
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert DASHBOARD.parent.name == "dashboards" and DASHBOARD.name == "isthmus.json"
    (source,) = datasources
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    board = dashboard()
    used = {p["datasource"]["uid"] for p in panels(board)} | {
        t["datasource"]["uid"] for p in panels(board) for t in p["targets"]
    }
    assert used == {source["uid"]}


def test_dashboard_is_well_formed_and_covers_what_operators_watch() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    every: list[dict[str, Any]] = list(board["panels"])
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids))
    for i, a in enumerate(every):
        assert a["gridPos"]["x"] + a["gridPos"]["w"] <= 24
        for b in every[i + 1 :]:
            assert not _overlaps(a["gridPos"], b["gridPos"]), (a["title"], b["title"])
    for panel in panels(board):
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)) and all(t["expr"].strip() for t in panel["targets"])
    exprs = " ".join(t["expr"] for p in panels(board) for t in p["targets"])
    titles = " ".join(p["title"].lower() for p in every)  # rows and panels
    for needed in (
        "isthmus_last_success_timestamp_seconds",
        "isthmus_messages_produced_total",
        "histogram_quantile(0.5, sum by (route, le) (rate(isthmus_end_to_end_lag_seconds_bucket",
        "histogram_quantile(0.99, sum by (route, le) (rate(isthmus_end_to_end_lag_seconds_bucket",
        "sum by (route, error_class) (rate(isthmus_messages_failed_total",
        "isthmus_dlq_size",
        "isthmus_adapter_call_seconds_bucket",
        'isthmus_adapter_calls_total{outcome!="ok"}',
        'isthmus_adapter_calls_total{status="429"}',
        'up{job="isthmus-worker"}',
    ):
        assert needed in exprs, needed
    for topic in ("sync status", "throughput", "lag p50 / p99", "error class", "dlq size", "adapter", "budget"):
        assert topic in titles, topic
