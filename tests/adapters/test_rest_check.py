"""REST adapter `check`: reachability, authentication, API version and permissions — never a write."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from http_stub import Answer, Seen
from token_api import CLIENT_ID, CLIENT_SECRET, TokenApi

from adapters.rest import RestAdapter

SAFE_METHODS = {"GET", "OPTIONS", "HEAD"}


@pytest.fixture
def api() -> Iterator[TokenApi]:
    server = TokenApi(version="3.1.4")
    yield server
    server.stop()


def oauth2(secret: str = CLIENT_SECRET) -> dict[str, Any]:
    auth = {"type": "oauth2_client_credentials", "token_url": "/oauth/token"}
    return {**auth, "client_id": CLIENT_ID, "client_secret": secret}


def things(write_check: dict[str, str] | None = None, **read: Any) -> dict[str, Any]:
    write: dict[str, Any] = {"mode": "create_or_update", "id_path": "id"}
    write |= {"create": {"method": "POST", "path": "/api/things"}, "update": {"method": "PUT", "path": "/api/t/{id}"}}
    if write_check:
        write["check"] = write_check
    spec = {"path": "/api/things", "records_path": "things", "id_field": "id", "updated_field": "updated"}
    return {"thing": {"read": {**spec, **read}, "write": write}}


def permission(result: Any, access: str, entity: str = "thing") -> dict[str, Any]:
    (found,) = [p for p in result.extra["permissions"] if p["access"] == access and p["entity"] == entity]
    return dict(found)


def test_check_with_oauth2_reports_version_and_permissions_and_sends_only_safe_requests(api: TokenApi) -> None:
    adapter = RestAdapter(
        "things",
        {
            "base_url": api.url,
            "auth": oauth2(),
            "version": {"path": "/api/version", "field": "build.api_version"},
            "entities": things(pagination={"type": "offset", "limit": 500}),
        },
    )
    result = adapter.check()
    assert (result.reachable, result.authenticated) == (True, True)
    assert result.extra["version"] == "3.1.4" and "API version 3.1.4" in result.detail
    read = permission(result, "read")
    assert read["ok"] is True and read["status"] == 200
    write = permission(result, "write")
    assert write["ok"] is None and "never writes" in write["detail"]
    api_requests = [s for s in api.server.seen if s.path != "/oauth/token"]
    assert {s.method for s in api_requests} <= SAFE_METHODS
    (probe,) = [s for s in api_requests if s.path == "/api/things"]
    assert probe.query == {"offset": "0", "limit": "1"}  # one record, not a page of 500
    assert api.written == []


def test_check_reads_the_version_from_a_header(api: TokenApi) -> None:
    adapter = RestAdapter(
        "things",
        {"base_url": api.url, "auth": oauth2(), "health_path": "/api/version", "version": {"header": "X-Api-Version"}},
    )
    assert adapter.check().extra["version"] == "3.1.4"


def test_check_with_refused_client_credentials_is_not_authenticated_and_hides_the_secret(api: TokenApi) -> None:
    result = RestAdapter("things", {"base_url": api.url, "auth": oauth2("wrong-secret-1")}).check()
    assert (result.reachable, result.authenticated) == (True, False)
    assert "invalid_client" in result.detail and "wrong-secret-1" not in result.detail


def test_write_probe_with_options_reports_the_allowed_methods(api: TokenApi) -> None:
    adapter = RestAdapter(
        "things",
        {"base_url": api.url, "auth": oauth2(), "entities": things({"method": "OPTIONS", "path": "/api/things"})},
    )
    write = permission(adapter.check(), "write")
    assert write["ok"] is False and "PUT" in write["detail"]  # Allow: GET, POST, OPTIONS — no PUT
    assert api.written == []


def test_refused_and_missing_endpoints_are_reported_per_entity(stub_server) -> None:
    def respond(seen: Seen) -> Answer:
        return {
            "/": Answer(200, {"ok": True}),
            "/api/contacts": Answer(200, []),
            "/api/invoices": Answer(403, {"error": "scope invoices.read missing"}),
            "/api/orders": Answer(404, {"error": "not found"}),
            "/api/accounts": Answer(204, None),
        }.get(seen.path, Answer(500, {}))

    server = stub_server(respond)
    read = {"id_field": "id", "updated_field": "u"}
    adapter = RestAdapter(
        "crm",
        {
            "base_url": server.url,
            "entities": {
                "contact": {"read": {"path": "/api/contacts", **read}},
                "invoice": {"read": {"path": "/api/invoices", **read}},
                "order": {"read": {"path": "/api/orders", **read}},
                "account": {
                    "write": {"mode": "upsert", "path": "/api/accounts/{id}", "check": {"path": "/api/accounts"}}
                },
            },
        },
    )
    result = adapter.check()
    assert result.authenticated is True
    assert permission(result, "read", "contact")["ok"] is True
    assert (
        permission(result, "read", "invoice")["ok"] is False
        and "403" in permission(result, "read", "invoice")["detail"]
    )
    assert (
        permission(result, "read", "order")["ok"] is False
        and "no such endpoint" in permission(result, "read", "order")["detail"]
    )
    assert permission(result, "write", "account")["ok"] is True
    assert {s.method for s in server.seen} <= SAFE_METHODS
