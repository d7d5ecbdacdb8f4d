"""Fixtures for real services: RabbitMQ, PostgreSQL, loopback HTTP servers.

Service resolution, in order: the URL in an environment variable
(ISTHMUS_TEST_AMQP_URL, ISTHMUS_TEST_POSTGRES_URL); the local service on 127.0.0.1; a
testcontainers container where a Docker engine answers; otherwise the test is skipped with
the reason — unless ISTHMUS_REQUIRE_SERVICES=1 (set by .ci/run), where that skip is a failure.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from urllib.parse import urlparse

import pytest

REQUIRE_SERVICES = os.environ.get("ISTHMUS_REQUIRE_SERVICES") == "1"
LOCAL_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _docker_available() -> bool:
    with suppress(Exception):
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
        return True
    return False


def _unavailable(what: str, tried: str) -> None:
    reason = (
        f"{what} not reachable (tried {tried}; no Docker engine for testcontainers). "
        f"Start it, or point the environment variable at one."
    )
    if REQUIRE_SERVICES:
        pytest.fail(f"ISTHMUS_REQUIRE_SERVICES=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def _service_url(
    what: str, url: str, default_port: int, container: Callable[[], AbstractContextManager[str]]
) -> Iterator[str]:
    """`url` when something listens there, else the URL of a testcontainers `container` while it
    runs, else skip (or fail, with ISTHMUS_REQUIRE_SERVICES=1) saying what was tried."""
    if _reachable(url, default_port):
        yield url
        return
    if _docker_available():
        with container() as container_url:
            yield container_url
        return
    _unavailable(what, url)


@contextmanager
def _rabbitmq_container() -> Iterator[str]:
    from testcontainers.rabbitmq import RabbitMqContainer  # type: ignore[import-untyped]

    with RabbitMqContainer("rabbitmq:3.13-management") as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5672)
        yield f"amqp://guest:guest@{host}:{port}/%2F"


@contextmanager
def _postgres_container() -> Iterator[str]:
    from testcontainers.postgres import PostgresContainer  # type: ignore[import-untyped]

    with PostgresContainer("postgres:16", driver=None) as container:
        yield container.get_connection_url()


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ URL: env var, local broker, or a testcontainers RabbitMQ."""
    url = os.environ.get("ISTHMUS_TEST_AMQP_URL", LOCAL_AMQP_URL)
    yield from _service_url("RabbitMQ", url, 5672, _rabbitmq_container)


@pytest.fixture(scope="session")
def consistent_hash(amqp_url: str) -> None:
    """Sharded routes need RabbitMQ's consistent-hash exchange plugin (.ci/run enables it)."""
    import pika

    from middleware.broker.rabbitmq_plugins import consistent_hash_missing

    missing = consistent_hash_missing(pika.URLParameters(amqp_url.split("?", 1)[0]))
    if missing is not None:
        reason = f"RabbitMQ at {amqp_url.split('@')[-1]} lacks the consistent-hash exchange: {missing}"
        if REQUIRE_SERVICES:
            pytest.fail(f"ISTHMUS_REQUIRE_SERVICES=1 and {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL: env var, local server, or a testcontainers PostgreSQL."""
    url = os.environ.get("ISTHMUS_TEST_POSTGRES_URL", LOCAL_POSTGRES_URL)
    yield from _service_url("PostgreSQL", url, 5432, _postgres_container)


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A test (or an in-process CLI run) that points logging at its own stream must not leave
    later tests writing into that stream once it is closed."""
    yield
    import structlog

    structlog.reset_defaults()


@pytest.fixture
def unique_name() -> str:
    """A short unique name so tests sharing one broker or database never collide."""
    return "t" + uuid.uuid4().hex[:10]
