"""REST adapter, writing: classification, target ids, modes, ordering, headers, Decimals, check()."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import pytest
from http_stub import Answer, Seen
from pydantic import ValidationError

from adapters.rest import RestAdapter, RestSystemConfig
from adapters.rest.payload import encode_json
from adapters.rest.transport import parse_retry_after
from middleware.adapter import WriteRequest

UPSERT = {"mode": "upsert", "method": "PUT", "path": "/things/{key}", "key_field": "no", "id_path": "data.id"}


def writer_for(url: str, write: dict[str, Any], **system: Any) -> RestAdapter:
    config = {"base_url": url, "timeout_s": 2, **system, "entities": {"thing": {"write": write}}}
    return RestAdapter("dst", RestSystemConfig.model_validate(config))


def request(no: str = "T-1", key: str | None = None, **fields: Any) -> WriteRequest:
    return WriteRequest(
        entity="thing",
        record={"no": no, **fields},
        key=key or f"src:thing:{no}@1",
        correlation_id="corr-1",
    )


def test_ok_write_returns_the_target_id_from_the_response(stub_server) -> None:
    server = stub_server(lambda seen: Answer(201, {"data": {"id": 991}}))
    (result,) = writer_for(server.url, UPSERT).writer().write_batch([request()])
    assert (result.outcome, result.target_id, result.status) == ("ok", "991", 201)


def test_write_sends_idempotency_key_correlation_id_and_json(stub_server) -> None:
    server = stub_server(lambda seen: Answer(200, {"data": {"id": 1}}))
    writer_for(server.url, UPSERT).writer().write_batch([request(key="crm:customer:T-1@4", name="Ann")])
    seen = server.seen[0]
    assert seen.method == "PUT" and seen.path == "/things/T-1"
    assert seen.headers["idempotency-key"] == "crm:customer:T-1@4"
    assert seen.headers["x-correlation-id"] == "corr-1"
    assert seen.headers["content-type"] == "application/json"
    assert seen.json() == {"no": "T-1", "name": "Ann"}


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_client_errors_are_permanent_with_the_response_excerpt(stub_server, status) -> None:
    server = stub_server(lambda seen: Answer(status, {"error": "field x is invalid " + "y" * 1000}))
    (result,) = writer_for(server.url, UPSERT).writer().write_batch([request()])
    assert result.outcome == "permanent" and result.status == status
    assert "field x is invalid" in result.error and len(result.error) < 400


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_server_errors_and_throttling_are_transient(stub_server, status) -> None:
    server = stub_server(lambda seen: Answer(status, {"error": "busy"}))
    (result,) = writer_for(server.url, UPSERT).writer().write_batch([request()])
    assert result.outcome == "transient" and result.status == status and result.retry_after is None


def test_retry_after_in_seconds_is_returned(stub_server) -> None:
    server = stub_server(lambda seen: Answer(503, {"error": "maintenance"}, {"Retry-After": "12"}))
    (result,) = writer_for(server.url, UPSERT).writer().write_batch([request()])
    assert result.outcome == "transient" and result.retry_after == 12


def test_retry_after_as_http_date_is_returned_in_seconds(stub_server) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    server = stub_server(lambda seen: Answer(429, {"error": "slow down"}, {"Retry-After": when}))
    (result,) = writer_for(server.url, UPSERT).writer().write_batch([request()])
    assert result.outcome == "transient" and result.retry_after is not None and 25 <= result.retry_after <= 30


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3") == 3
    assert parse_retry_after("nonsense") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past: retry now


def test_timeout_is_transient(stub_server) -> None:
    server = stub_server(lambda seen: Answer(200, {}, delay_s=1.0))
    (result,) = writer_for(server.url, UPSERT, timeout_s=0.2).writer().write_batch([request()])
    assert result.outcome == "transient" and "Timeout" in result.error


def test_upsert_fills_placeholders_url_quoted_and_drops_url_only_fields(stub_server) -> None:
    server = stub_server(lambda seen: Answer(200, {}))
    write = {"mode": "upsert", "method": "PATCH", "path": "/orders/{order_id}", "drop_fields": ["order_id"]}
    adapter = writer_for(server.url, write)
    (result,) = adapter.writer().write_batch(
        [WriteRequest(entity="thing", record={"order_id": "SO 5/1", "status": "x"}, key="k")]
    )
    assert result.outcome == "ok"
    assert server.seen[0].method == "PATCH" and server.seen[0].path == "/orders/SO%205%2F1"
    assert server.seen[0].json() == {"status": "x"}


def test_missing_placeholder_field_is_permanent_and_sends_nothing(stub_server) -> None:
    server = stub_server(lambda seen: Answer(200, {}))
    adapter = writer_for(server.url, UPSERT)
    (result,) = adapter.writer().write_batch([WriteRequest(entity="thing", record={"name": "no key"}, key="k")])
    assert result.outcome == "permanent" and "'no'" in result.error and server.seen == []


def test_create_or_update_creates_without_target_id_and_updates_with_it(stub_server) -> None:
    server = stub_server(lambda seen: Answer(201 if seen.method == "POST" else 200, {"id": "A7"}))
    write = {
        "mode": "create_or_update",
        "create": {"method": "POST", "path": "/accounts"},
        "update": {"method": "PUT", "path": "/accounts/{target_id}"},
        "id_path": "id",
    }
    adapter = writer_for(server.url, write)
    created, updated = adapter.writer().write_batch(
        [
            request("T-1"),
            WriteRequest(entity="thing", record={"no": "T-2"}, key="src:thing:T-2@1", target_id="A7"),
        ]
    )
    assert (created.outcome, created.target_id) == ("ok", "A7")
    assert (updated.outcome, updated.target_id) == ("ok", "A7")
    assert sorted((s.method, s.path) for s in server.seen) == [("POST", "/accounts"), ("PUT", "/accounts/A7")]


def test_same_record_requests_apply_in_order_while_others_run_concurrently(stub_server) -> None:
    lock = threading.Lock()
    in_flight = {"now": 0, "max": 0}
    rng = random.Random(3)

    def respond(seen: Seen) -> Answer:
        with lock:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
        time.sleep(rng.uniform(0.0, 0.01))
        with lock:
            in_flight["now"] -= 1
        return Answer(200, {"data": {"id": seen.path}})

    server = stub_server(respond)
    adapter = writer_for(server.url, UPSERT, concurrency=8)
    batch = [request(f"T-{n}", key=f"src:thing:T-{n}@{v}", v=v) for v in range(1, 6) for n in range(6)]
    results = adapter.writer().write_batch(batch)
    assert [r.target_id for r in results] == [f"/things/T-{n}" for v in range(1, 6) for n in range(6)]
    for n in range(6):
        versions = [s.json()["v"] for s in server.seen if s.path == f"/things/T-{n}"]
        assert versions == [1, 2, 3, 4, 5]
    assert in_flight["max"] > 1
    adapter.close()


def test_creates_of_one_record_share_a_lane_by_record_identity(stub_server) -> None:
    order: list[str] = []

    def respond(seen: Seen) -> Answer:
        time.sleep(0.005 if seen.headers["idempotency-key"].endswith("@1") else 0)
        order.append(seen.headers["idempotency-key"])
        return Answer(201, {"id": "x"})

    server = stub_server(respond)
    write = {
        "mode": "create_or_update",
        "create": {"method": "POST", "path": "/accounts"},
        "update": {"method": "PUT", "path": "/accounts/{target_id}"},
    }
    batch = [
        request("T-1", key="crm:c:T-1@1"),
        request("T-2", key="crm:c:T-2@1"),
        request("T-1", key="crm:c:T-1@2"),
    ]
    writer_for(server.url, write).writer().write_batch(batch)
    assert order.index("crm:c:T-1@1") < order.index("crm:c:T-1@2")


def test_json_encoding_keeps_decimals_exact_and_writes_dates_iso() -> None:
    body = encode_json(
        {
            "price": Decimal("19.90"),
            "qty": Decimal("2"),
            "big": Decimal("1E+3"),
            "d": date(2026, 1, 2),
            "n": None,
        }
    )
    assert body == b'{"price":19.90,"qty":2,"big":1E+3,"d":"2026-01-02","n":null}'
    assert json.loads(body, parse_float=Decimal)["price"] == Decimal("19.90")
    with pytest.raises(ValueError):
        encode_json({"x": Decimal("NaN")})


def test_decimal_amounts_reach_the_sample_erp_exactly(erp) -> None:
    config = {
        "base_url": erp.url,
        "entities": {
            name: {
                "write": {
                    "mode": "create_or_update",
                    "create": {"method": "POST", "path": path},
                    "update": {"method": "PUT", "path": path + "/{target_id}"},
                    "id_path": "id",
                }
            }
            for name, path in [("account", "/api/accounts"), ("sales_order", "/api/sales-orders")]
        },
    }
    adapter = RestAdapter("erp", RestSystemConfig.model_validate(config))
    (account,) = adapter.writer().write_batch(
        [WriteRequest(entity="account", record={"account_name": "Acme GmbH"}, key="crm:customer:C-1@1")]
    )
    assert account.outcome == "ok" and account.target_id == "A000001"
    order = {
        "account_id": account.target_id,
        "external_ref": "SO-5001",
        "order_date": date(2026, 11, 24),
        "currency": "EUR",
        "lines": [{"line_no": 1, "item": "WIDGET-1", "quantity": Decimal("2"), "unit_price": Decimal("19.90")}],
    }
    (created,) = adapter.writer().write_batch(
        [WriteRequest(entity="sales_order", record=order, key="crm:order:SO-5001@1")]
    )
    assert created.outcome == "ok" and created.target_id == "SO00001"
    stored = erp.sales_order("SO00001")
    assert stored is not None and stored["lines"][0]["unit_price"] == Decimal("19.90")
    assert stored["order_date"] == "2026-11-24"

    (rejected,) = adapter.writer().write_batch(
        [WriteRequest(entity="account", record={"account_name": ""}, key="crm:customer:C-2@1")]
    )
    assert rejected.outcome == "permanent" and "account_name is required" in rejected.error
    adapter.close()


def test_check_reports_reachable_and_authenticated(crm) -> None:
    good = RestAdapter("crm", {"base_url": crm.url, "auth": {"type": "bearer", "token": "crm-secret-token"}})
    bad = RestAdapter("crm", {"base_url": crm.url, "auth": {"type": "bearer", "token": "wrong"}})
    assert (good.check().reachable, good.check().authenticated) == (True, True)
    result = bad.check()
    assert (result.reachable, result.authenticated) == (True, False)
    assert "wrong" not in result.detail


def test_check_uses_the_health_path(stub_server) -> None:
    server = stub_server(lambda seen: Answer(200, {"ok": True}))
    RestAdapter("x", {"base_url": server.url + "/", "health_path": "/health"}).check()
    assert server.seen[0].path == "/health"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"base_url": "ftp://x"}, "http://"),
        ({"base_url": "http://x", "auth": {"type": "oauth"}}, "does not match any of the expected tags"),
        ({"base_url": "http://x", "concurrency": 20, "max_connections": 4}, "exceeds max_connections"),
        ({"base_url": "http://x", "entities": {"a": {"write": {"mode": "upsert"}}}}, "needs 'path'"),
        (
            {"base_url": "http://x", "entities": {"a": {"write": {"mode": "upsert", "path": "/a/{key}"}}}},
            "key_field",
        ),
        (
            {"base_url": "http://x", "entities": {"a": {"write": {"mode": "create_or_update"}}}},
            "needs both 'create' and 'update'",
        ),
        (
            {
                "base_url": "http://x",
                "entities": {"a": {"read": {"path": "x", "id_field": "i", "updated_field": "u"}}},
            },
            "must start with '/'",
        ),
    ],
)
def test_config_mistakes_fail_at_load(settings, message) -> None:
    with pytest.raises(ValidationError, match=message):
        RestSystemConfig.model_validate(settings)


def test_two_versions_of_a_new_record_in_one_batch_create_it_once_then_update(erp) -> None:
    config = {
        "base_url": erp.url,
        "concurrency": 4,
        "entities": {
            "account": {
                "write": {
                    "mode": "create_or_update",
                    "create": {"method": "POST", "path": "/api/accounts"},
                    "update": {"method": "PUT", "path": "/api/accounts/{target_id}"},
                    "id_path": "id",
                }
            }
        },
    }
    adapter = RestAdapter("erp", RestSystemConfig.model_validate(config))
    first, second, other = adapter.writer().write_batch(
        [
            WriteRequest(entity="account", record={"account_name": "Acme v1"}, key="crm:customer:C-1@1"),
            WriteRequest(entity="account", record={"account_name": "Acme v2"}, key="crm:customer:C-1@2"),
            WriteRequest(entity="account", record={"account_name": "Initech"}, key="crm:customer:C-2@1"),
        ]
    )
    assert first.outcome == second.outcome == other.outcome == "ok"
    assert first.target_id == second.target_id != other.target_id
    names = sorted(a["account_name"] for a in erp.accounts.values())
    assert names == ["Acme v2", "Initech"], "the second version created a second account"
    adapter.close()
