"""A worker whose mapping holds a backtracking pattern keeps answering /healthz and SIGTERM.

Under Python's `re`, `^(a+)+$` against 41 a's and a b runs for hours in one C call holding
the GIL: every route, the webhook receiver, the health endpoint and the SIGTERM handler
stopped. With RE2 the record maps in microseconds and the worker stays an ordinary process.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from deploy.demo.sample_crm import SampleCrm
from deploy.demo.sample_erp import SampleErp
from tests.e2e.harness import REPO, wait_until, write_config

HOSTILE = "a" * 41 + "b"
PLAIN = "payment_terms: {from: payment_terms, transform: trim, default: null}"
BACKTRACKING = "payment_terms: {from: payment_terms, transform: \"trim | regex('^(a+)+$')\", default: null}"


@pytest.fixture
def systems() -> Iterator[tuple[SampleCrm, SampleErp]]:
    crm = SampleCrm(token="demo-crm-token").start()
    erp = SampleErp(advance_every_s=0).start()
    yield crm, erp
    crm.stop()
    erp.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.slow
def test_worker_with_a_backtracking_pattern_answers_healthz_and_sigterm(
    systems: tuple[SampleCrm, SampleErp], tmp_path: Path
) -> None:
    crm, erp = systems
    mappings = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", mappings)
    customer_mapping = mappings / "crm_customer_to_canonical.yaml"
    text = customer_mapping.read_text(encoding="utf-8")
    assert PLAIN in text
    customer_mapping.write_text(text.replace(PLAIN, BACKTRACKING), encoding="utf-8")
    crm.seed(customers=3, orders_per_customer=0, with_bad_records=False)
    crm.upsert_customer({"customer_no": "C-1002", "payment_terms": HOSTILE})

    config = write_config(
        tmp_path, broker=f"embedded:///{tmp_path}/broker.db", routes=["customers_crm_to_erp"], sources=["crm_customers"]
    )
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    port = _free_port()
    settings["mappings"] = [str(mappings)]
    settings["observability"]["port"] = port
    config.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")

    env = dict(os.environ, DEMO_CRM_URL=crm.url, DEMO_ERP_URL=erp.url, DEMO_CRM_TOKEN="demo-crm-token")
    log = tmp_path / "worker.log"
    with log.open("ab") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "middleware.cli.main", "worker", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=sink,
        )
    try:
        wait_until(lambda: _healthy(port), 30, "/healthz of the worker")
        wait_until(
            lambda: {a["external_ref"] for a in erp.accounts.values()} >= {"C-1001", "C-1002", "C-1003"},
            30,
            "the three customers in the ERP, the one with the hostile value included",
        )
        assert _healthy(port), "/healthz stopped answering after the hostile record"
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(15)
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker ignored SIGTERM for 15 s") from None
        assert code == 0, log.read_text()
        assert time.monotonic() - started < 15
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
