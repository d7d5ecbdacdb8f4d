"""Fixtures for adapter tests: the SAMPLE CRM and ERP, and small scripted HTTP servers.

`stub_server(respond)` starts a real loopback HTTP server (see http_stub.py) whose answers
come from a Python function.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from http_stub import Respond, StubServer

from deploy.demo.sample_crm import SampleCrm
from deploy.demo.sample_erp import SampleErp


@pytest.fixture
def stub_server() -> Iterator[Callable[[Respond], StubServer]]:
    started: list[StubServer] = []

    def start(respond: Respond) -> StubServer:
        server = StubServer(respond)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def crm() -> Iterator[SampleCrm]:
    service = SampleCrm(token="crm-secret-token").start()
    yield service
    service.stop()


@pytest.fixture
def erp() -> Iterator[SampleErp]:
    service = SampleErp(advance_every_s=0).start()
    yield service
    service.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
