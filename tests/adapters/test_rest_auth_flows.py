"""REST adapter, token auth flows: OAuth2 client credentials and log-in-for-a-token, with expiry.

Each test runs against `TokenApi`, a real loopback HTTP server that issues expiring tokens
and refuses dead ones with 401, the way the SaaS APIs these flows exist for behave.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from http_stub import Answer, Seen
from token_api import CLIENT_ID, CLIENT_SECRET, PASSWORD, USER, TokenApi

from adapters.rest import RestAdapter
from adapters.rest.auth import AuthenticationFailed
from middleware.adapter import WriteRequest
from middleware.errors import PermanentError

READ = {"path": "/api/things", "records_path": "things", "id_field": "id", "updated_field": "updated"}
WRITE = {"mode": "upsert", "method": "POST", "path": "/api/things"}


@pytest.fixture
def api() -> Iterator[TokenApi]:
    server = TokenApi()
    yield server
    server.stop()


def oauth2(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "oauth2_client_credentials",
        "token_url": "/oauth/token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "things.read things.write",
        **overrides,
    }


def login(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "login",
        "path": "/api/login",
        "username": USER,
        "password": PASSWORD,
        "username_field": "user",
        "password_field": "pass",
        "extra_fields": {"tenant": "t1"},
        "token_path": "data.session",
        "expires_in_path": "data.ttl",
        "header": "X-Session",
        "prefix": "",
        **overrides,
    }


def adapter_for(api: TokenApi, auth: dict[str, Any], **system: Any) -> RestAdapter:
    return RestAdapter(
        "things",
        {
            "base_url": api.url,
            "timeout_s": 2,
            "auth": auth,
            "entities": {"thing": {"read": READ, "write": WRITE}},
            **system,
        },
    )


def read_ids(adapter: RestAdapter) -> list[str]:
    return [r.record_id for page in adapter.reader().read_changes("thing", None) for r in page.records]


def write(adapter: RestAdapter, count: int = 1) -> list[str]:
    requests = [WriteRequest("thing", {"name": f"n{i}"}, key=f"src:thing:{i}@1") for i in range(count)]
    return [r.outcome for r in adapter.writer().write_batch(requests)]


def test_oauth2_fetches_a_token_with_client_credentials_and_sends_it_as_bearer(api: TokenApi) -> None:
    adapter = adapter_for(api, oauth2())
    assert read_ids(adapter) == ["1", "2", "3"]
    (token_request,) = api.requests_to("POST", "/oauth/token")
    assert token_request.headers["authorization"].startswith("Basic ")  # RFC 6749 client_secret_basic
    assert b"grant_type=client_credentials" in token_request.body and b"scope=things.read" in token_request.body
    (read,) = api.requests_to("GET", "/api/things")
    assert read.headers["authorization"] == f"Bearer {api.issued[0]}"
    assert api.refused == []
    adapter.close()


def test_oauth2_client_secret_can_go_in_the_form_body(api: TokenApi) -> None:
    adapter = adapter_for(api, oauth2(client_auth="body"))
    assert read_ids(adapter) == ["1", "2", "3"]
    (token_request,) = api.requests_to("POST", "/oauth/token")
    assert "authorization" not in token_request.headers
    assert f"client_secret={CLIENT_SECRET}".encode() in token_request.body
    adapter.close()


def test_oauth2_token_is_reused_until_it_nears_expiry_then_renewed_before_the_api_refuses_it() -> None:
    api = TokenApi(lifetime_s=1.0)  # renewed after half its life at the latest
    try:
        adapter = adapter_for(api, oauth2(refresh_before_s=60))
        read_ids(adapter)
        read_ids(adapter)
        assert len(api.issued) == 1  # still fresh: no new token per request
        time.sleep(0.7)
        assert read_ids(adapter) == ["1", "2", "3"]
        assert len(api.issued) == 2
        assert api.refused == []  # renewed before expiry, not after a 401
        adapter.close()
    finally:
        api.stop()


def test_a_revoked_token_is_renewed_once_on_401_and_the_read_succeeds(api: TokenApi) -> None:
    adapter = adapter_for(api, oauth2())
    read_ids(adapter)
    api.revoke_all()
    assert read_ids(adapter) == ["1", "2", "3"]
    assert len(api.refused) == 1 and len(api.issued) == 2


def test_a_401_that_persists_after_one_renewal_is_a_permanent_error(api: TokenApi) -> None:
    adapter = adapter_for(api, oauth2(), entities={"thing": {"read": {**READ, "path": "/api/forbidden"}}})
    original = api.respond

    def always_401(seen: Seen) -> Answer:
        if seen.path == "/api/forbidden":
            api.refused.append(seen)
            return Answer(401, {"error": "no access"})
        return original(seen)

    api.server.respond = always_401
    with pytest.raises(PermanentError, match="401"):
        read_ids(adapter)
    assert len(api.refused) == 2  # the first try and exactly one retry with a renewed token
    assert len(api.issued) == 2


def test_refused_client_credentials_are_a_permanent_authentication_error_without_the_secret(api: TokenApi) -> None:
    adapter = adapter_for(api, oauth2(client_secret="not-the-secret-value"))
    with pytest.raises(AuthenticationFailed, match="authentication failed.*401.*invalid_client") as caught:
        read_ids(adapter)
    assert "not-the-secret-value" not in str(caught.value)
    assert api.requests_to("GET", "/api/things") == []  # no API call without a token


def test_writes_share_the_token_and_a_burst_of_401s_costs_one_renewal(api: TokenApi) -> None:
    adapter = adapter_for(api, oauth2(), concurrency=8)
    assert write(adapter) == ["ok"]
    api.revoke_all()
    assert write(adapter, 8) == ["ok"] * 8
    assert len(api.issued) == 2  # eight writes refused at once, one new token for all of them
    assert len(api.written) == 9
    adapter.close()


def test_login_flow_sends_credentials_reads_the_token_from_its_path_and_sends_it_in_the_header(api: TokenApi) -> None:
    adapter = adapter_for(api, login())
    assert read_ids(adapter) == ["1", "2", "3"]
    (login_request,) = api.requests_to("POST", "/api/login")
    assert login_request.json() == {"user": USER, "pass": PASSWORD, "tenant": "t1"}
    (read,) = api.requests_to("GET", "/api/things")
    assert read.headers["x-session"] == api.issued[0] and "authorization" not in read.headers
    adapter.close()


def test_login_flow_logs_in_again_when_the_session_expires() -> None:
    api = TokenApi(lifetime_s=1.0)
    try:
        adapter = adapter_for(api, login())
        read_ids(adapter)
        time.sleep(0.7)
        assert write(adapter) == ["ok"]
        assert len(api.requests_to("POST", "/api/login")) == 2
        assert api.refused == []
        adapter.close()
    finally:
        api.stop()


def test_login_flow_without_a_lifetime_logs_in_again_after_a_401(api: TokenApi) -> None:
    adapter = adapter_for(api, login(expires_in_path=None))
    read_ids(adapter)
    api.revoke_all()
    assert read_ids(adapter) == ["1", "2", "3"]
    assert len(api.requests_to("POST", "/api/login")) == 2 and len(api.refused) == 1


def test_wrong_login_is_a_permanent_write_result_and_nothing_is_written(api: TokenApi) -> None:
    adapter = adapter_for(api, login(password="wrong-password"))
    (result,) = adapter.writer().write_batch([WriteRequest("thing", {"name": "x"}, key="src:thing:x@1")])
    assert result.outcome == "permanent" and "authentication failed" in result.error
    assert "wrong-password" not in result.error
    assert api.written == []


def test_fetched_tokens_never_appear_in_error_messages(api: TokenApi) -> None:
    adapter = adapter_for(api, oauth2(), entities={"thing": {"read": {**READ, "path": "/api/echo"}}})
    original = api.respond

    def echo(seen: Seen) -> Answer:
        if seen.path == "/api/echo":
            return Answer(400, {"error": f"bad request from {seen.headers.get('authorization')}"})
        return original(seen)

    api.server.respond = echo
    with pytest.raises(PermanentError) as caught:
        read_ids(adapter)
    assert api.issued[0] not in str(caught.value) and "***" in str(caught.value)
