"""`isthmus status`: what an operator sees in a terminal, read from the workers' /metrics."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from deploy.demo.sample_crm import SampleCrm
from deploy.demo.sample_erp import SampleErp
from middleware.cli.main import main
from middleware.config import load_config
from middleware.errors import ConfigError
from middleware.ops.status import bucket_quantile, endpoints_from_config, metrics_url, run_status
from middleware.runtime.worker import Worker
from tests.e2e.harness import wait_until
from tests.observability.worker_config import FAILING_ROUTE, HEALTHY_ROUTE, closed_port, write_observed_config


def test_bucket_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 10.0, 0.5: 30.0, 1.0: 40.0, float("inf"): 40.0}
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (20 - 10) / 20)
    assert bucket_quantile(0.25, buckets) == pytest.approx(0.1)
    assert bucket_quantile(0.99, {0.1: 0.0, 1.0: 0.0, float("inf"): 5.0}) == 1.0  # in +Inf: highest bound
    assert bucket_quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None


def test_metrics_address_from_arguments_and_config(tmp_path: Path) -> None:
    assert metrics_url("127.0.0.1:9464") == "http://127.0.0.1:9464/metrics"
    assert metrics_url("http://worker:9464") == "http://worker:9464/metrics"
    assert metrics_url("http://worker:9464/custom") == "http://worker:9464/custom"
    assert endpoints_from_config(None) == ["http://127.0.0.1:9464/metrics"]
    config = tmp_path / "isthmus.yaml"
    config.write_text("observability: {host: 0.0.0.0, port: 9470}\nsystems: {crm: {token: '${UNSET_TOKEN}'}}\n")
    assert endpoints_from_config(config) == ["http://127.0.0.1:9470/metrics"]
    config.write_text("observability: {port: 0}\n")
    with pytest.raises(ConfigError, match="port is 0"):
        endpoints_from_config(config)


def test_status_of_an_unreachable_worker_says_so_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["status", "--url", f"127.0.0.1:{closed_port()}", "--interval", "0"])
    out = capsys.readouterr().out
    assert code == 1
    assert "unreachable" in out and "no worker answered" in out


@pytest.fixture
def busy_worker(sample_crm: SampleCrm, sample_erp: SampleErp, tmp_path: Path) -> Iterator[Worker]:
    config = load_config(write_observed_config(tmp_path, log_level="warning"))
    sample_crm.seed(customers=6, orders_per_customer=0, with_bad_records=False)
    with (tmp_path / "worker.log").open("w", encoding="utf-8") as log:
        worker = Worker(config, log_stream=log).start()
        try:
            wait_until(lambda: worker.stats[HEALTHY_ROUTE].applied >= 6, 30, "six customers applied")
            wait_until(lambda: worker.stats[FAILING_ROUTE].dead_lettered >= 6, 30, "six dead letters")
            yield worker
        finally:
            worker.stop()


@pytest.mark.slow
def test_status_shows_routes_rates_lag_errors_and_dlq_of_a_running_worker(
    busy_worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert busy_worker.health is not None
    url = f"127.0.0.1:{busy_worker.health.port}"
    wait_until(
        lambda: (
            main(["status", "--url", url, "--json"]) == 0
            and json.loads(capsys.readouterr().out)["routes"][FAILING_ROUTE]["dlq_size"] >= 6
        ),
        10,
        "the DLQ size gauge sampled",
    )

    console = Console(file=io.StringIO(), width=250, force_terminal=False, color_system=None)
    assert run_status([url], interval_s=0.2, console=console) == 0
    screen = console.file.getvalue()  # type: ignore[attr-defined]
    rows = {
        name: next(line for line in screen.splitlines() if f" {name} " in line)
        for name in (HEALTHY_ROUTE, FAILING_ROUTE)
    }
    assert "failing" in rows[FAILING_ROUTE]
    assert "failing" not in rows[HEALTHY_ROUTE] and "ago" in rows[HEALTHY_ROUTE]
    assert "never" in rows[FAILING_ROUTE]
    for heading in ("Routes", "Errors by class", "Sources and webhooks", "Adapter calls", "lag p99", "DLQ"):
        assert heading in screen
    assert "TransientError" in screen and "connection_error" not in screen  # classes, not statuses, per route
    assert "crm_customers" in screen and "erp_down" in screen

    assert main(["status", "--url", url, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    failing = figures["routes"][FAILING_ROUTE]
    assert failing["dlq_size"] >= 6 and failing["dead_lettered"]["TransientError"] >= 6
    assert figures["routes"][HEALTHY_ROUTE]["lag_p99_s"] is not None

    watched = Console(file=io.StringIO(), width=250, force_terminal=False, color_system=None)
    assert run_status([url], watch=True, interval_s=0.1, console=watched, frames=2) == 0
    assert HEALTHY_ROUTE in watched.file.getvalue()  # type: ignore[attr-defined]
