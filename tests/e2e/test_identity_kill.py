"""Two routes, two worker processes, repeated SIGKILLs: every target record is created once.

Both routes consume every CRM customer change and write the same ERP account (a fan-out, as a
webhook route and a poll route of one entity do). The sample ERP runs without its
Idempotency-Key dedupe, like targets that have none (Tryton): only the identity claim
(`to.key`, here the adapter's `key_field` with `find:`) stands between a change and a second
account. Each backend: embedded broker + SQLite store, RabbitMQ + PostgreSQL store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from deploy.demo.sample_crm import SampleCrm
from deploy.demo.sample_erp import SampleErp
from middleware.bench.rabbitmq import delete_topology
from middleware.store import open_store
from middleware.store.base import TargetIdentity
from tests.e2e.harness import REPO, wait_until, write_config

CUSTOMERS = 200
KILLS = 5
ROUTES = ("customers_crm_to_erp", "customers_crm_to_erp_twin")


@pytest.fixture
def systems() -> Iterator[tuple[SampleCrm, SampleErp]]:
    crm = SampleCrm(token="demo-crm-token").start()
    erp = SampleErp(advance_every_s=0, dedupe=False).start()
    erp.set_latency(0.004)  # keep writes in flight when a kill lands
    yield crm, erp
    crm.stop()
    erp.stop()


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path, unique_name: str) -> Iterator[tuple[str, str, str]]:
    """(broker URL, store URL, route suffix), each unique to the test."""
    if request.param == "embedded":
        yield f"embedded:///{tmp_path}/broker.db?visibility_timeout=2", f"sqlite:///{tmp_path}/state.db", ""
        return
    amqp_url: str = request.getfixturevalue("amqp_url")
    postgres_url: str = request.getfixturevalue("postgres_url")
    suffix, exchange = f"_{unique_name}", f"isthmus.{unique_name}"
    store = f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={unique_name}"
    yield f"{amqp_url}?exchange={exchange}", store, suffix
    delete_topology(amqp_url, [r + suffix for r in ROUTES], exchange)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(unique_name)))


def _config(directory: Path, broker: str, store: str, suffix: str) -> Path:
    path = write_config(
        directory,
        broker=broker,
        route_suffix=suffix,
        routes=["customers_crm_to_erp"],
        sources=["crm_customers"],
        retry={"max_attempts": 10, "initial_delay_s": 0.1, "max_delay_s": 1.0},
    )
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    config["store"] = store
    account = config["systems"]["erp"]["entities"]["account"]["write"]
    account["key_field"] = "external_ref"
    account["find"] = {"path": "/api/accounts", "param": "external_ref", "records_path": "items"}
    route = config["routes"][0]
    route["to"]["claim_lease_s"] = 3
    config["routes"].append({**route, "name": f"customers_crm_to_erp_twin{suffix}"})
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _start(config: Path, crm: SampleCrm, erp: SampleErp, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, DEMO_CRM_URL=crm.url, DEMO_ERP_URL=erp.url, DEMO_CRM_TOKEN="demo-crm-token")
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "middleware.cli.main", "worker", "--config", str(config), *extra],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=sink,
        )


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


@pytest.mark.slow
def test_two_routes_and_two_killed_workers_create_each_account_once(
    systems: tuple[SampleCrm, SampleErp], backend: tuple[str, str, str], tmp_path: Path
) -> None:
    crm, erp = systems
    broker, store_url, suffix = backend
    crm.seed(customers=CUSTOMERS, orders_per_customer=0, with_bad_records=False)
    config = _config(tmp_path, broker, store_url, suffix)
    log = tmp_path / "workers.log"
    roles: list[tuple[str, ...]] = [(), ("--no-sources",)]
    workers = [_start(config, crm, erp, log, *role) for role in roles]
    kills = 0
    try:
        for n, threshold in enumerate((15, 45, 80, 120, 160)):
            wait_until(lambda t=threshold: len(erp.accounts) >= t, 90, f"{threshold} accounts")
            victim = n % 2
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait(10)
            kills += 1
            workers[victim] = _start(config, crm, erp, log, *roles[victim])
        wait_until(lambda: len(erp.accounts) >= CUSTOMERS, 120, "every customer")
        time.sleep(7.0)  # leases (3 s) of killed claims run out; redeliveries and retries land
    finally:
        for worker in workers:
            _stop(worker)
    refs = [a["external_ref"] for a in list(erp.accounts.values())]
    twice = sorted({r for r in refs if refs.count(r) > 1})
    assert kills == KILLS
    assert not twice, f"created more than once: {twice[:10]} ({len(refs)} accounts)"
    assert set(refs) == {f"C-{1001 + i}" for i in range(CUSTOMERS)}
    store = open_store(store_url)
    try:
        ids = {a["external_ref"]: a["id"] for a in erp.accounts.values()}
        claims = store.claim_identities([TargetIdentity("erp", "account", ref) for ref in ids], "test", 3600)
        assert {c.identity.key: c.target_id for c in claims.values()} == ids, "a claim is not linked to its account"
    finally:
        store.close()
    for worker in workers:
        assert worker.returncode == 0, log.read_text()[-3000:]
