"""Faults for the contract kits of adapters that reach their system at one URL (REST, Tryton).

`unreachable` points the URL at a closed loopback port; `server_error` and `client_error` at
a scripted stub server answering 503 or 400 with the request echoed back (see `echo`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from http_stub import Respond, StubServer, echo

from middleware.testing.adapter_contract import AdapterKit, Fault


class HttpFaults(AdapterKit):
    """An `AdapterKit` whose `settings(url)` can point the adapter at another base URL."""

    def __init__(self, closed_port: int, stub_server: Callable[[Respond], StubServer]) -> None:
        self.closed_port = closed_port
        self.stub_server = stub_server

    @abstractmethod
    def settings(self, url: str | None = None) -> dict[str, Any]:
        """The kit's settings, with the system's URL replaced by `url` when given."""

    @contextmanager
    def fault(self, kind: Fault) -> Iterator[dict[str, Any]]:
        if kind == "unreachable":
            yield self.settings(f"http://127.0.0.1:{self.closed_port}")
        else:
            yield self.settings(self.stub_server(echo(503 if kind == "server_error" else 400)).url)
