"""Fixtures of the chaos tests: the recording ERP, a route of one's own on the shared RabbitMQ,
and a private RabbitMQ node that a test may stop and start.

The shared broker comes from the `amqp_url` fixture (tests/conftest.py: skipped when absent,
a failure under ISTHMUS_REQUIRE_SERVICES=1). The private node needs the local RabbitMQ
installation (see rabbit_node.py); without it the restart test is skipped, or fails under
ISTHMUS_REQUIRE_SERVICES=1. It is skipped, whatever the setting, when ISTHMUS_TEST_AMQP_URL
names a broker on another host: that setup says the RabbitMQ under test lives elsewhere.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlparse

import pika
import pytest

from tests.chaos.harness import ChaosRoute, new_chaos_route
from tests.chaos.rabbit_node import PrivateRabbitNode, rabbit_command
from tests.chaos.recording_erp import RecordingErp

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
REQUIRE_SERVICES = os.environ.get("ISTHMUS_REQUIRE_SERVICES") == "1"  # as in tests/conftest.py


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: sends 20,000 messages through real workers while something breaks (about 1-2 min each)"
    )


@pytest.fixture(autouse=True)
def quiet_pika() -> Iterator[None]:
    """pika logs every connection the chaos breaks, with tracebacks; the chaos is on purpose."""
    logger = logging.getLogger("pika")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


@pytest.fixture
def recording_erp() -> Iterator[RecordingErp]:
    target = RecordingErp().start()
    yield target
    target.stop()


@pytest.fixture
def shared_chaos_route(amqp_url: str, consistent_hash: None) -> Iterator[ChaosRoute]:
    """A route of this test's own on the shared broker; its queues and exchanges go afterwards."""
    chaos = new_chaos_route(amqp_url)
    yield chaos
    delete_topology(amqp_url, chaos.route)


def delete_topology(amqp_url: str, token: str) -> None:
    """Delete every queue and exchange whose name holds `token` (route, shards, retry steps,
    DLQ, exchanges). Names come from `rabbitmqctl` when the broker is the local one (the
    topology grows with route options), else from the names the current topology uses."""
    queues = [token, f"{token}.dlq", f"{token}.retry"]
    exchanges = [token, f"{token}.unrouted", f"{token}.shards"]
    ctl = shutil.which("rabbitmqctl")
    if ctl and urlparse(amqp_url).hostname in LOCAL_HOSTS:
        for what, names in (("list_queues", queues), ("list_exchanges", exchanges)):
            with suppress(OSError, subprocess.SubprocessError):
                listed = subprocess.run(
                    [ctl, what, "-q", "--no-table-headers", "name"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=True,
                ).stdout.split()
                names.extend(n for n in listed if token in n and n not in names)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url.split("?", 1)[0]))
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
    finally:
        connection.close()


@pytest.fixture
def private_rabbit(tmp_path: Path) -> Iterator[PrivateRabbitNode]:
    """A RabbitMQ node of this test's own, on free loopback ports; halted at teardown."""
    configured = os.environ.get("ISTHMUS_TEST_AMQP_URL")
    if configured and urlparse(configured).hostname not in LOCAL_HOSTS:
        pytest.skip(
            f"ISTHMUS_TEST_AMQP_URL names a broker on {urlparse(configured).hostname}: the RabbitMQ restart "
            "test starts (and restarts) a private node of the local RabbitMQ installation instead"
        )
    server, ctl = rabbit_command("rabbitmq-server"), rabbit_command("rabbitmqctl")
    if server is None or ctl is None:
        reason = (
            "the RabbitMQ restart test starts a private RabbitMQ node and needs rabbitmq-server and "
            "rabbitmqctl installed locally (on PATH or in /usr/lib/rabbitmq/bin); not found"
        )
        if REQUIRE_SERVICES:
            pytest.fail(f"ISTHMUS_REQUIRE_SERVICES=1 and {reason}", pytrace=False)
        pytest.skip(reason)
    node = PrivateRabbitNode(tmp_path / "rabbit", server, ctl)
    try:
        node.start()
        yield node
    finally:
        node.stop()
