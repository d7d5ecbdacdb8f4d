"""SIGTERM drains: the batch in hand finishes and is recorded, nothing is written twice.

A killed worker may leave one write that landed in the target but was never recorded as
applied; its redelivery is then absorbed by the target's idempotency key (the sample ERP
counts such repeats as `duplicates`). A worker stopped with SIGTERM must not leave even that:
it finishes the batch in hand — write, record, ack — and exits 0, so the restart repeats
nothing.
"""

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

CUSTOMERS = 300


@pytest.fixture
def systems() -> Iterator[tuple[SampleCrm, SampleErp]]:
    with sample_systems(erp_latency_s=0.01) as both:  # batches take a while, so SIGTERM lands mid-batch
        yield both


def _terminate(worker: subprocess.Popen[bytes]) -> tuple[int, float]:
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    try:
        code = worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError("the worker did not exit within 30 s of SIGTERM") from None
    return code, time.monotonic() - started


@pytest.mark.slow
def test_sigterm_finishes_the_batch_in_hand_and_restart_repeats_nothing(
    systems: tuple[SampleCrm, SampleErp], tmp_path: Path
) -> None:
    crm, erp = systems
    config = customers_only_config(tmp_path, crm, CUSTOMERS, f"embedded:///{tmp_path}/broker.db")
    log = tmp_path / "worker.log"
    worker = start_worker_process(config, crm, erp, log)
    wait_until(lambda: erp.state(with_effects=False)["accounts"] >= 50, 60, "the first accounts")
    code, took = _terminate(worker)
    assert code == 0, log.read_text()
    stopped_at = erp.state(with_effects=False)["accounts"]
    assert stopped_at < CUSTOMERS, "the worker finished everything before SIGTERM: nothing was drained"

    worker = start_worker_process(config, crm, erp, log)
    try:
        wait_until(lambda: erp.state(with_effects=False)["accounts"] >= CUSTOMERS, 90, "every customer")
        time.sleep(0.5)
    finally:
        code, _ = _terminate(worker)
    assert code == 0
    state = erp.state()
    refs = [a["external_ref"] for a in erp.accounts.values()]
    assert len(refs) == CUSTOMERS == len(set(refs))
    assert state["duplicates"] == 0, "a write was repeated: the drained batch was not recorded before exit"
    assert took < 30
