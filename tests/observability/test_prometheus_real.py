"""The dashboard and the alerts, checked by a real Prometheus scraping real workers.

Two worker processes run the same config on one host, as operators scale them: one in this
process (sources, webhook, routes) and one `isthmus worker --no-sources --metrics-port P`
subprocess — two scrape targets of job isthmus-worker. Traffic flows from the sample CRM
(polled), through a signed webhook, into the sample ERP (which answers some writes with 429)
and into an ERP that is down (the deliberately failing route). Then every panel query of
deploy/grafana/dashboards/isthmus.json and every expression of deploy/prometheus/alerts.yml
is evaluated through Prometheus' HTTP API, and the alerts that must fire do.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from deploy.demo.sample_crm import SampleCrm
from deploy.demo.sample_erp import SampleErp
from middleware.config import load_config
from middleware.runtime.worker import Worker
from tests.observability.conftest import WEBHOOK_SECRET
from tests.observability.promserver import (
    ALERT_RULES,
    PROMETHEUS_CONFIG,
    PrometheusServer,
    alert_rules,
    as_bool_expr,
    dashboard,
    free_port,
    grafana_expr,
    labels_in_templates,
    panels,
    watched_expr,
)
from tests.observability.worker_config import (
    FAILING_ROUTE,
    HEALTHY_ROUTE,
    REPO,
    customer_event,
    post_webhook,
    write_observed_config,
)

pytestmark = pytest.mark.slow

CUSTOMERS = 12
HOOK_CUSTOMERS = 3


def wait_for(condition: Any, timeout_s: float, what: str, interval_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


def test_shipped_rules_and_scrape_config_pass_promtool(promtool_binary: str) -> None:
    for args in (["check", "rules", str(ALERT_RULES)], ["check", "config", str(PROMETHEUS_CONFIG)]):
        done = subprocess.run([promtool_binary, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture
def worker_in_process(sample_crm: SampleCrm, sample_erp: SampleErp, tmp_path: Path) -> Iterator[Worker]:
    config = load_config(write_observed_config(tmp_path))
    with (tmp_path / "worker-a.log").open("w", encoding="utf-8") as log:
        worker = Worker(config, log_stream=log).start()
        try:
            yield worker
        finally:
            worker.stop()


@pytest.fixture
def worker_subprocess(worker_in_process: Worker, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    with (tmp_path / "worker-b.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "middleware.cli.main", "worker", "--config", str(tmp_path / "isthmus.yaml")]
            + ["--no-sources", "--metrics-port", str(port)],
            cwd=REPO,
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield process, port
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)


@pytest.fixture
def prometheus(
    prometheus_binary: str,
    worker_in_process: Worker,
    worker_subprocess: tuple[subprocess.Popen[bytes], int],
    tmp_path: Path,
) -> Iterator[PrometheusServer]:
    assert worker_in_process.health is not None
    targets = [f"127.0.0.1:{worker_in_process.health.port}", f"127.0.0.1:{worker_subprocess[1]}"]
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    server = PrometheusServer(workdir, targets, prometheus_binary).start()
    try:
        yield server
    finally:
        server.stop()


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


def _legend_labels(legend: str) -> set[str]:
    import re

    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend or ""))


def test_dashboard_panels_and_alerts_evaluate_on_real_prometheus(
    prometheus: PrometheusServer,
    worker_in_process: Worker,
    worker_subprocess: tuple[subprocess.Popen[bytes], int],
    sample_crm: SampleCrm,
    sample_erp: SampleErp,
) -> None:
    process, port_b = worker_subprocess
    job = prometheus.job
    assert job == "isthmus-worker"
    wait_for(
        lambda: len(prometheus.query(f'up{{job="{job}"}} == 1')) == 2,
        60,
        "both worker processes scraped (up == 1)",
    )
    time.sleep(2)  # a few scrapes of the quiet state: the DLQ gauges start at 0 in Prometheus

    # traffic: polled CRM customers, signed webhook events, 429s from the ERP, and the ERP that is down
    sample_erp.fail_next(3, status=429, retry_after=0.05)
    sample_crm.seed(customers=CUSTOMERS, orders_per_customer=0, with_bad_records=False)
    assert worker_in_process.webhook is not None
    hook_url = worker_in_process.webhook.url
    events = [customer_event(f"H-{i}") for i in range(HOOK_CUSTOMERS)]
    assert post_webhook(hook_url, WEBHOOK_SECRET, events, correlation_id="corr-hook-1") == 202
    assert post_webhook(hook_url, "not-the-secret", events[:1]) == 401

    expected = CUSTOMERS + HOOK_CUSTOMERS
    wait_for(lambda: sample_erp.state(with_effects=False)["accounts"] == expected, 60, f"{expected} ERP accounts")
    wait_for(
        lambda: prometheus.query(f'sum(isthmus_messages_produced_total{{route="{HEALTHY_ROUTE}"}}) >= {expected}'),
        30,
        "Prometheus to have scraped every applied message",
    )
    wait_for(
        lambda: prometheus.query(f'max(isthmus_dlq_size{{route="{FAILING_ROUTE}"}}) >= {expected}'),
        60,
        "every message of the failing route in its DLQ, as Prometheus sees it",
    )
    time.sleep(3)  # a few more scrapes: rate() needs two samples of the series that appeared last

    # the two processes are two targets, and per-route sums add them up
    consumed = prometheus.query(f'isthmus_messages_consumed_total{{route="{HEALTHY_ROUTE}"}}')
    assert {s["metric"]["instance"] for s in consumed} == {
        f"127.0.0.1:{worker_in_process.health.port if worker_in_process.health else 0}",
        f"127.0.0.1:{port_b}",
    }

    info = prometheus.query(f'isthmus_route_info{{route="{FAILING_ROUTE}"}}')
    assert {(s["metric"]["to_system"], s["metric"]["to_entity"]) for s in info} == {("erp_down", "account")}

    # every panel query of the dashboard returns series, with the labels its legend names
    board = dashboard()
    checked = 0
    for panel in panels(board):
        for target in panel.get("targets", []):
            expr = grafana_expr(target["expr"])
            result = prometheus.query(expr)
            where = f"panel {panel['title']!r} query {target['refId']}: {expr}"
            assert result, f"{where} returned no series"
            assert _finite(result), f"{where} returned no finite value: {result}"
            for label in _legend_labels(target.get("legendFormat", "")):
                assert all(label in s["metric"] for s in result), f"{where}: legend names {label!r}, missing"
            checked += 1
    assert checked >= 20
    variable = board["templating"]["list"][0]
    assert variable["query"]["query"] == "label_values(isthmus_messages_consumed_total, route)"
    routes = requests.get(
        f"{prometheus.url}/api/v1/label/route/values",
        params={"match[]": "isthmus_messages_consumed_total"},
        timeout=10,
    ).json()["data"]
    assert {HEALTHY_ROUTE, FAILING_ROUTE} <= set(routes)

    # every alert expression evaluates to series carrying the labels its annotations use
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "IsthmusWorkerDown",
        "IsthmusDeadLetterQueueGrowing",
        "IsthmusLagAboveSLO",
        "IsthmusRouteNoSuccess",
        "IsthmusAdapterRateLimited",
    }
    for rule in rules:
        expr = as_bool_expr(watched_expr(rule["expr"]))
        result = prometheus.query(expr)
        assert result, f"alert {rule['alert']}: {expr} returned no series"
        needed = labels_in_templates(rule)
        for series in result:
            missing = {label for label in needed if label not in series["metric"]} - {"instance"}
            assert not missing, f"alert {rule['alert']}: annotations use {missing}, the series lack them"

    # the failing route fires its alerts; the healthy one does not
    wait_for(lambda: prometheus.firing("IsthmusRouteNoSuccess", route=FAILING_ROUTE), 30, "RouteNoSuccess firing")
    wait_for(lambda: prometheus.firing("IsthmusDeadLetterQueueGrowing", route=FAILING_ROUTE), 30, "DLQGrowing firing")
    wait_for(lambda: prometheus.firing("IsthmusAdapterRateLimited", system="erp"), 30, "AdapterRateLimited firing")
    assert not prometheus.firing("IsthmusRouteNoSuccess", route=HEALTHY_ROUTE)
    assert not prometheus.firing("IsthmusDeadLetterQueueGrowing", route=HEALTHY_ROUTE)
    assert not prometheus.firing("IsthmusWorkerDown")

    # a worker process dies: its target goes down and the alert names it
    process.kill()
    process.wait(10)
    wait_for(lambda: prometheus.firing("IsthmusWorkerDown", instance=f"127.0.0.1:{port_b}"), 30, "WorkerDown firing")
