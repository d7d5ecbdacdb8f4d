"""The Tryton adapter passes the shared adapter contract, against the real trytond's parties.

Parties are seeded over JSON-RPC directly (not through the adapter), read by change time and
written found by `code`. Faults: a closed port, and the scripted stub server standing in for
Tryton, answering 503 or 400 with the request body echoed back (the login carries the
password).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from http_faults import HttpFaults
from http_stub import Respond, StubServer

from adapters.tryton import TrytonAdapter
from adapters.tryton.localserver import LocalTryton
from adapters.tryton.rpc import TrytonRpc
from middleware.testing.adapter_contract import adapter_contract_tests

SERVER_CLOCK_S = 1.1  # Tryton's change times have one-second resolution


class TrytonKit(HttpFaults):
    adapter_class = TrytonAdapter
    entity = "party"

    def __init__(self, tryton: LocalTryton, closed_port: int, stub_server: Callable[[Respond], StubServer]) -> None:
        super().__init__(closed_port, stub_server)
        self.tryton = tryton
        self.rpc = TrytonRpc(tryton.url, tryton.database, tryton.username, tryton.password, system="contract-kit")

    def settings(self, url: str | None = None) -> dict[str, Any]:
        settings = self.tryton.system_settings({"party": {"read": {}, "write": {"key_field": "code"}}})
        settings.update(settle_s=0, timeout_s=5)
        if url is not None:
            settings["url"] = url
        return settings

    def secrets(self) -> list[str]:
        return [self.tryton.password]

    def seed(self, tag: str, count: int) -> list[str]:
        rows = [{"name": f"Seeded {tag}", "code": f"S-{tag}-{n}"} for n in range(count)]
        ids = self.rpc.model("party.party", "create", rows)
        time.sleep(SERVER_CLOCK_S)
        return [str(i) for i in ids]

    def record(self, tag: str, version: int) -> dict[str, Any]:
        return {"name": self.name(tag, version), "code": f"K-{tag}"}

    def bad_record(self, tag: str) -> dict[str, Any]:
        return {**self.record(tag, 1), "colour": "blue"}  # party.party has no such field

    def stored_name(self, target_id: str) -> str | None:
        if not target_id.isdigit():
            return None
        rows = self.rpc.model("party.party", "read", [int(target_id)], ["name"])
        return str(rows[0]["name"]) if rows else None

    def count(self, tag: str) -> int:
        return int(self.rpc.model("party.party", "search_count", [("name", "ilike", f"%{tag}%")]))

    def close(self) -> None:
        self.rpc.close()


@pytest.fixture
def tryton_kit(
    tryton: LocalTryton, closed_port: int, stub_server: Callable[[Respond], StubServer]
) -> Iterator[TrytonKit]:
    kit = TrytonKit(tryton, closed_port, stub_server)
    yield kit
    kit.close()


TestTrytonContract = adapter_contract_tests("tryton_kit")
pytestmark = pytest.mark.timeout(300)
