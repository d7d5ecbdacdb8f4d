"""`isthmus status`: what an operator sees in a terminal, read from the workers' /metrics."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from deploy.demo.sample_crm import SampleCrm
from deploy.demo.sample_erp import SampleErp
from middleware.cli.main import main
from middleware.config import load_config
from middleware.errors import ConfigError
from middleware.observability.metrics import LAG_BUCKETS
from middleware.ops.status import (
    Labels,
    Scrape,
    Snapshot,
    bucket_quantile,
    combine,
    endpoints_from_config,
    metrics_url,
    render,
    run_status,
)
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


ROUTE_COLUMNS = (
    "route", "state", "in/s", "out/s", "failed/s", "consumed", "produced", "failed", "retried",
    "dead-lettered", "queue", "DLQ", "lag p50", "lag p99", "last success",
)  # fmt: skip
# Route names as long as the demo's (23 characters at most), figures of a worker that ran for days.
DEMO_ROUTES = ("customers_crm_to_erp", "orders_crm_to_erp", "order_status_erp_to_crm", "customers_to_erp_down")
STARTED = 1_700_000_000.0
LAG_SHARE = {0.05: 0.1, 0.1: 0.3, 0.25: 0.6, 0.5: 0.8, 1: 0.9, 2.5: 0.97, 5: 0.995}  # cumulative, per bucket


def _busy_samples(progress: float) -> dict[tuple[str, Labels], float]:
    """What a long-running worker's /metrics holds; `progress` scales the counters between two reads."""
    samples: dict[tuple[str, Labels], float] = {}
    for route in DEMO_ROUTES:
        down = route.endswith("_down")
        labels: Labels = (("route", route),)
        transient: Labels = (*labels, ("error_class", "TransientError"))
        samples[("isthmus_messages_consumed_total", labels)] = 1_234_567 * progress
        samples[("isthmus_messages_produced_total", labels)] = 0.0 if down else 1_230_000 * progress
        samples[("isthmus_messages_retried_total", labels)] = 45_678 * progress
        if down:
            samples[("isthmus_messages_failed_total", transient)] = 98_765 * progress
            samples[("isthmus_messages_dead_lettered_total", transient)] = 12_345 * progress
        for le in (*LAG_BUCKETS, float("inf")):  # nothing applied on the route that is down: no lag
            share = 0.0 if down else LAG_SHARE.get(le, 1.0)
            bucket = ("isthmus_end_to_end_lag_seconds_bucket", (*labels, ("le", str(le))))
            samples[bucket] = 1_230_000 * progress * share
        samples[("isthmus_queue_depth", labels)] = 123_456
        samples[("isthmus_dlq_size", labels)] = 12_345 if down else 0
        samples[("isthmus_last_success_timestamp_seconds", labels)] = 0.0 if down else STARTED
    return samples


def _busy_view(width: int) -> list[str]:
    """The status screen of that worker, rates over 2 s, as drawn in a terminal `width` wide."""
    url = "http://127.0.0.1:9464/metrics"
    before: Snapshot = combine([Scrape(url, _busy_samples(1.0))], at=STARTED + 100)
    now: Snapshot = combine([Scrape(url, _busy_samples(1.001))], at=STARTED + 102)
    console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)
    console.print(render(now, before))
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined,no-any-return]


def _routes_table(lines: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(header cells, route → its cells) of the Routes table; cells stand two spaces apart."""
    header_at = lines.index(next(line for line in lines if line.startswith(" route ")))
    header = re.split(r"\s{2,}", lines[header_at].strip())
    rows = {
        line.split()[0]: re.split(r"\s{2,}", line.strip())
        for line in lines[header_at + 2 : header_at + 2 + len(DEMO_ROUTES)]
    }
    return header, rows


def test_status_fits_an_80_column_terminal_one_line_per_route() -> None:
    lines = _busy_view(80)
    assert max(len(line) for line in lines) <= 80
    header, rows = _routes_table(lines)
    assert {"route", "in/s", "failed", "DLQ", "lag p99"} <= set(header)
    assert sorted(rows) == sorted(DEMO_ROUTES)  # each route on one line of its own
    for route, cells in rows.items():
        assert len(cells) == len(header), f"{route}: {cells} under {header}"  # nothing folded or wrapped
    down = dict(zip(header, rows["customers_to_erp_down"], strict=True))
    assert (down["in/s"], down["failed"], down["DLQ"], down["lag p99"]) == ("617", "98,864", "12,345", "–")
    healthy = dict(zip(header, rows["customers_crm_to_erp"], strict=True))
    assert (healthy["failed"], healthy["DLQ"], healthy["lag p99"]) == ("0", "0", "4.5 s")
    hidden = next(line for line in lines if line.startswith("not shown at 80 columns:"))
    assert "consumed" in hidden and "lag p99" not in hidden  # what was left out is named


def test_status_at_160_columns_shows_every_column() -> None:
    lines = _busy_view(160)
    assert max(len(line) for line in lines) <= 160
    header, rows = _routes_table(lines)
    assert header == list(ROUTE_COLUMNS)
    assert sorted(rows) == sorted(DEMO_ROUTES)
    for route, cells in rows.items():
        assert len(cells) == len(ROUTE_COLUMNS), f"{route}: {cells}"
    healthy = dict(zip(header, rows["customers_crm_to_erp"], strict=True))
    assert (healthy["consumed"], healthy["state"], healthy["last success"]) == ("1,235,802", "syncing", "102.0 s ago")
    assert not any(line.startswith("not shown") for line in lines)


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
