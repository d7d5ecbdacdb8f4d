"""A real Tryton for the adapter tests: `trytond` on SQLite, started once per session.

The database is prepared once and cached (see adapters/tryton/localserver.py: about 30–60 s
on a cold cache, a file copy afterwards); each session gets its own copy and its own
server on a free loopback port. trytond and its modules come from the test extras; when
they are missing the tests are skipped with the reason, or fail under
ISTHMUS_REQUIRE_SERVICES=1 (as in CI).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from adapters.tryton import TrytonAdapter
from adapters.tryton.localserver import LocalTryton, TrytonUnavailable, trytond_available

REQUIRE_SERVICES = os.environ.get("ISTHMUS_REQUIRE_SERVICES") == "1"

ENTITIES = {
    "party": {"read": {}, "write": {"key_field": "code"}},
    "product": {"read": {}, "write": {"key_field": "code"}},
    "sale": {"read": {}, "write": {"key_field": "reference", "workflow": "reserve"}},
    "shipment": {"read": {}},
    "invoice": {"read": {}},
    "stock": {"read": {"warehouses": ["WH"]}},
}


def _unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"ISTHMUS_REQUIRE_SERVICES=1 and Tryton is unavailable: {reason}", pytrace=False)
    pytest.skip(f"Tryton unavailable: {reason}")


@pytest.fixture(scope="session")
def tryton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTryton]:
    reason = trytond_available()
    if reason:
        _unavailable(reason)
    server = LocalTryton(tmp_path_factory.mktemp("tryton"))
    try:
        server.start()
    except TrytonUnavailable as exc:
        _unavailable(str(exc))
    yield server
    server.stop()


@pytest.fixture
def adapter(tryton: LocalTryton) -> Iterator[TrytonAdapter]:
    """An adapter on the session's Tryton; settle_s 0 so tests need not wait for reads."""
    settings = tryton.system_settings(ENTITIES)
    settings["settle_s"] = 0
    instance = TrytonAdapter("tryton", settings)
    yield instance
    instance.close()


@pytest.fixture
def tag() -> str:
    """A short unique tag: records of different tests never share a code."""
    return uuid.uuid4().hex[:6].upper()
