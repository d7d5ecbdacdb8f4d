"""SIGKILL the worker mid-stream, again and again: nothing lost, nothing applied twice."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.demo.sample_crm import SampleCrm
from deploy.demo.sample_erp import SampleErp
from tests.e2e.harness import customers_only_config, sample_systems, start_worker_process, wait_until

CUSTOMERS = 400


@pytest.fixture
def systems() -> Iterator[tuple[SampleCrm, SampleErp]]:
    with sample_systems(erp_latency_s=0.003) as both:  # keep writes in flight when the kill lands
        yield both


@pytest.mark.slow
def test_sigkilled_worker_loses_nothing_and_applies_nothing_twice(
    systems: tuple[SampleCrm, SampleErp], tmp_path: Path
) -> None:
    crm, erp = systems
    config = customers_only_config(tmp_path, crm, CUSTOMERS, f"embedded:///{tmp_path}/broker.db?visibility_timeout=2")
    log = tmp_path / "worker.log"
    kills = 0
    worker = start_worker_process(config, crm, erp, log)
    try:
        for threshold in (40, 140, 260):
            wait_until(lambda t=threshold: erp.state(with_effects=False)["accounts"] >= t, 60, f"{threshold} accounts")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            kills += 1
            # change some records while the worker is down: they must sync after restart
            crm.upsert_customer({"customer_no": f"C-{1001 + kills}", "company": f"Changed While Down {kills}"})
            worker = start_worker_process(config, crm, erp, log)
        wait_until(lambda: erp.state(with_effects=False)["accounts"] >= CUSTOMERS, 90, "every customer")
        wait_until(
            lambda: (
                {a["account_name"] for a in erp.accounts.values()}
                >= {f"Changed While Down {k}" for k in range(1, kills + 1)}
            ),
            30,
            "changes made while the worker was down",
        )
        time.sleep(1.0)  # let any redelivery that would double-apply happen
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
    state = erp.state()
    refs = [a["external_ref"] for a in erp.accounts.values()]
    assert kills == 3
    twice = sorted({r for r in refs if refs.count(r) > 1})
    effects = [e for e in state["effects"] if any(e["key"].startswith(f"crm:customer:{r}@") for r in twice)]
    assert len(refs) == CUSTOMERS == len(set(refs)), f"created twice: {twice}; their writes: {effects}"
    assert set(refs) == {f"C-{1001 + i}" for i in range(CUSTOMERS)}
    assert max(state["applied_counts"].values()) == 1, "a write was applied twice"
    assert worker.returncode == 0, log.read_text()[-2000:]
