"""Issue 12, end to end: the topology integrators run holds its guarantees under SIGKILL.

The SAMPLE CRM pushes signed webhooks (partial payloads: customers without address, won
orders without lines) AND is polled for the same customers and orders; a two-way pair keeps
CRM customers and ERP accounts in step; two `isthmus worker` processes run it all and are
SIGKILLed every 1.5 s, six times, while 100 customers and 100 won orders are created and
some are edited on both sides (tests/e2e/topology.py). At the end:

* every ERP account and every ERP sales order exists exactly once (by external_ref);
* no field was blanked by a partial payload: every CRM customer still has its billing
  address, every ERP account has it;
* `isthmus reconcile` finds every route in sync.

Once on the embedded broker with the SQLite store (one host), once on RabbitMQ with the
PostgreSQL store (several hosts).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.chaos.conftest import delete_topology
from tests.chaos.harness import with_exchange
from tests.e2e.topology import RouteNames, Topology


@pytest.fixture
def embedded_sqlite(tmp_path: Path) -> tuple[str, str, RouteNames]:
    return f"embedded:///{tmp_path}/broker.db?visibility_timeout=2", f"sqlite:///{tmp_path}/state.db", RouteNames()


@pytest.fixture
def rabbitmq_postgres(amqp_url: str, postgres_url: str, unique_name: str) -> Iterator[tuple[str, str, RouteNames]]:
    """A RabbitMQ exchange and route names of this test's own, and a PostgreSQL schema of its own."""
    store = f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={unique_name}"
    try:
        yield with_exchange(amqp_url, unique_name), store, RouteNames(f"_{unique_name}")
    finally:
        delete_topology(amqp_url, unique_name)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(unique_name)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "services",
    [
        pytest.param("embedded_sqlite", id="embedded-sqlite"),
        pytest.param("rabbitmq_postgres", id="rabbitmq-postgres", marks=[pytest.mark.rabbitmq, pytest.mark.postgres]),
    ],
)
def test_webhook_and_poll_with_a_two_way_pair_create_each_record_once_and_blank_nothing_under_sigkill(
    services: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, store, names = request.getfixturevalue(services)
    run = Topology(tmp_path, broker, store, names)
    for name, value in run.extra_env.items():  # the test reads the config too (queue depths)
        monkeypatch.setenv(name, value)
    try:
        try:
            run.run()
        finally:
            run.workers.stop()  # before the findings: reconcile reads a quiet system
        findings = run.findings()
        diagnostics = run.diagnostics()
    finally:
        run.stop()
    assert not findings, "the topology broke its guarantees:\n- " + "\n- ".join(findings) + "\n" + diagnostics
