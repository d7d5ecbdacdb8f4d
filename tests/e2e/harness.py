"""Shared pieces of the end-to-end tests: the sample systems, configs pointing at them, a worker
process, waiting."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from deploy.demo.sample_crm import SampleCrm
from deploy.demo.sample_erp import SampleErp
from middleware.demo.targets import expected_targets  # noqa: F401 - the e2e and SOAP tests import it from here
from middleware.yamlsource import load_yaml_file

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "deploy" / "demo" / "isthmus.yaml"


def write_config(
    directory: Path,
    *,
    broker: str,
    route_suffix: str = "",
    routes: list[str] | None = None,
    sources: list[str] | None = None,
    poll_interval_s: float = 0.2,
    retry: dict[str, Any] | None = None,
) -> Path:
    """The demo config, pointed at `broker` and a store in `directory`, optionally trimmed.

    `route_suffix` makes route (= queue) names unique on a shared RabbitMQ.
    """
    config = load_yaml_file(DEMO_CONFIG).data
    config["broker"] = broker
    config["store"] = f"sqlite:///{directory}/state.db"
    config["mappings"] = [str(REPO / "mappings")]
    config["observability"] = {"port": 0, "log_format": "json", "log_level": "warning", "depth_sample_interval_s": 0.5}
    if routes is not None:
        config["routes"] = [r for r in config["routes"] if r["name"] in routes]
    if sources is not None:
        config["sources"] = [s for s in config["sources"] if s["name"] in sources]
    for route in config["routes"]:
        route["name"] += route_suffix
        route["retry"] = retry or {"max_attempts": 8, "initial_delay_s": 0.1, "max_delay_s": 1.0}
    for source in config["sources"]:
        source["poll_interval_s"] = poll_interval_s
    path = directory / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def customers_only_config(directory: Path, crm: Any, customers: int, broker: str) -> Path:
    """Seed `customers` CRM customers (no orders, none broken) and a config syncing only them."""
    crm.seed(customers=customers, orders_per_customer=0, with_bad_records=False)
    return write_config(directory, broker=broker, routes=["customers_crm_to_erp"], sources=["crm_customers"])


@contextmanager
def sample_systems(erp_latency_s: float) -> Iterator[tuple[SampleCrm, SampleErp]]:
    """The sample CRM (with the demo's token) and ERP (no status steps), each ERP request held
    `erp_latency_s`: so a signal to the worker lands while writes are in flight."""
    crm = SampleCrm(token="demo-crm-token").start()
    erp = SampleErp(advance_every_s=0).start()
    erp.set_latency(erp_latency_s)
    try:
        yield crm, erp
    finally:
        crm.stop()
        erp.stop()


def start_worker_process(config: Path, crm: SampleCrm, erp: SampleErp, log: Path) -> subprocess.Popen[bytes]:
    """`isthmus worker --config CONFIG` in a process of its own (to be signalled), pointed at the
    sample systems, its output appended to `log`."""
    env = dict(os.environ, DEMO_CRM_URL=crm.url, DEMO_ERP_URL=erp.url, DEMO_CRM_TOKEN="demo-crm-token")
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "middleware.cli.main", "worker", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=sink,
        )
