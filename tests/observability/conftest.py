"""Fixtures for the observability tests: the Prometheus binaries, the sample systems.

Prometheus comes from the Debian package `prometheus` (.ci/run installs it). Without it the
tests that need it are skipped with the reason — unless ISTHMUS_REQUIRE_SERVICES=1 (set by
.ci/run), where that skip is a failure, as for RabbitMQ and PostgreSQL in tests/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import structlog

from deploy.demo.sample_crm import SampleCrm
from deploy.demo.sample_erp import SampleErp
from tests.observability.promserver import binaries

REQUIRE_SERVICES = os.environ.get("ISTHMUS_REQUIRE_SERVICES") == "1"
CRM_TOKEN = "crm-token-7f3a9c51e2"
WEBHOOK_SECRET = "hook-secret-b8d2e4f6a1"


def _missing(what: str) -> None:
    reason = f"{what} not installed (Debian: apt-get install --no-install-recommends prometheus)"
    if REQUIRE_SERVICES:
        pytest.fail(f"ISTHMUS_REQUIRE_SERVICES=1 and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    prometheus, _ = binaries()
    if prometheus is None:
        _missing("the prometheus binary is")
    assert prometheus is not None
    return prometheus


@pytest.fixture(scope="session")
def promtool_binary() -> str:
    _, promtool = binaries()
    if promtool is None:
        _missing("promtool (from the prometheus package) is")
    assert promtool is not None
    return promtool


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Workers here log into files the test closes; later tests must not log into those."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def sample_erp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SampleErp]:
    service = SampleErp(advance_every_s=0).start()
    monkeypatch.setenv("DEMO_ERP_URL", service.url)
    yield service
    service.stop()


@pytest.fixture
def sample_crm(monkeypatch: pytest.MonkeyPatch) -> Iterator[SampleCrm]:
    service = SampleCrm(token=CRM_TOKEN).start()
    monkeypatch.setenv("DEMO_CRM_URL", service.url)
    monkeypatch.setenv("DEMO_CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
    yield service
    service.stop()
