"""REST adapter, reading: auth, pagination styles, records_path, watermarks, rate limits."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from http_stub import Answer, Seen

from adapters.rest import RestAdapter, RestSystemConfig
from middleware.errors import PermanentError, TransientError

RECORDS: list[dict[str, Any]] = [
    {
        "id": i,
        "name": f"r{i}",
        "updated": (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i)).isoformat(),
    }
    for i in range(1, 24)
]


def rest(url: str, read: dict[str, Any], **system: Any) -> RestAdapter:
    config = RestSystemConfig.model_validate(
        {
            "base_url": url,
            "timeout_s": 2,
            **system,
            "entities": {"thing": {"read": {"path": "/things", **read}}},
        }
    )
    return RestAdapter("src", config)


def read_all(adapter: RestAdapter, watermark: str | None = None) -> list[Any]:
    return list(adapter.reader().read_changes("thing", watermark))


BASIC_READ = {"id_field": "id", "updated_field": "updated"}


@pytest.mark.parametrize(
    ("auth", "header", "expected"),
    [
        ({"type": "bearer", "token": "tok-123"}, "authorization", "Bearer tok-123"),
        (
            {"type": "basic", "username": "ann", "password": "pw-xyz"},
            "authorization",
            "Basic " + base64.b64encode(b"ann:pw-xyz").decode(),
        ),
        ({"type": "api_key", "header": "X-Api-Token", "value": "key-789"}, "x-api-token", "key-789"),
        ({"type": "none"}, "authorization", None),
    ],
)
def test_each_auth_type_sends_its_header(stub_server, auth, header, expected) -> None:
    server = stub_server(lambda seen: Answer(body=[]))
    read_all(rest(server.url, BASIC_READ, auth=auth, headers={"X-Tenant": "t1"}))
    assert server.seen[0].headers.get(header) == expected
    assert server.seen[0].headers["x-tenant"] == "t1"


def paged(seen: Seen) -> Answer:
    page, size = int(seen.query["page"]), int(seen.query["page_size"])
    rows = RECORDS[(page - 1) * size : page * size]
    return Answer(body={"result": {"items": rows}})


def test_page_pagination_reads_every_page_until_a_short_one(stub_server) -> None:
    server = stub_server(paged)
    pagination = {"type": "page", "page_param": "page", "size_param": "page_size", "page_size": 5, "start": 1}
    pages = read_all(rest(server.url, {**BASIC_READ, "records_path": "result.items", "pagination": pagination}))
    assert [r.record_id for p in pages for r in p.records] == [str(r["id"]) for r in RECORDS]
    assert [s.query["page"] for s in server.seen] == ["1", "2", "3", "4", "5"]


def test_page_pagination_stops_on_an_empty_page(stub_server) -> None:
    rows = RECORDS[:10]

    def respond(seen: Seen) -> Answer:
        page = int(seen.query["p"])
        return Answer(body=rows[page * 5 : page * 5 + 5])

    server = stub_server(respond)
    pagination = {"type": "page", "page_param": "p", "size_param": "n", "page_size": 5, "start": 0}
    pages = read_all(rest(server.url, {**BASIC_READ, "pagination": pagination}))
    assert sum(len(p.records) for p in pages) == 10
    assert [s.query["p"] for s in server.seen] == ["0", "1", "2"]


def test_has_more_false_stops_paging(stub_server) -> None:
    server = stub_server(lambda seen: Answer(body={"data": RECORDS[:3], "has_more": False}))
    pagination = {"type": "page", "page_size": 3}
    pages = read_all(rest(server.url, {**BASIC_READ, "records_path": "data", "pagination": pagination}))
    assert len(pages) == 1 and len(server.seen) == 1


def test_offset_pagination_reads_every_page(stub_server) -> None:
    def respond(seen: Seen) -> Answer:
        offset, limit = int(seen.query["skip"]), int(seen.query["take"])
        return Answer(body={"items": RECORDS[offset : offset + limit], "total": len(RECORDS)})

    server = stub_server(respond)
    pagination = {"type": "offset", "offset_param": "skip", "limit_param": "take", "limit": 10}
    pages = read_all(rest(server.url, {**BASIC_READ, "records_path": "items", "pagination": pagination}))
    assert [r.record_id for p in pages for r in p.records] == [str(r["id"]) for r in RECORDS]
    assert [s.query["skip"] for s in server.seen] == ["0", "10", "20"]


def test_cursor_pagination_follows_the_cursor_until_there_is_none(stub_server) -> None:
    def respond(seen: Seen) -> Answer:
        start = int(seen.query.get("after", "0"))
        rows = RECORDS[start : start + 8]
        following = start + 8 if start + 8 < len(RECORDS) else None
        return Answer(body={"data": rows, "meta": {"next": None if following is None else str(following)}})

    server = stub_server(respond)
    pagination = {"type": "cursor", "cursor_param": "after", "cursor_path": "meta.next"}
    pages = read_all(rest(server.url, {**BASIC_READ, "records_path": "data", "pagination": pagination}))
    assert [r.record_id for p in pages for r in p.records] == [str(r["id"]) for r in RECORDS]
    assert [s.query.get("after") for s in server.seen] == [None, "8", "16"]


def test_no_pagination_makes_one_request_with_static_params(stub_server) -> None:
    server = stub_server(lambda seen: Answer(body=RECORDS))
    pages = read_all(rest(server.url, {**BASIC_READ, "params": {"fields": "all"}}))
    assert len(pages) == 1 and len(pages[0].records) == len(RECORDS)
    assert server.seen[0].query == {"fields": "all"}


def test_source_records_carry_id_version_and_aware_occurred_at(stub_server) -> None:
    body = [
        {"no": 7, "rev": 3, "changed": "2026-11-24T10:00:00+08:00"},
        {"no": 8, "changed": "2026-11-24T03:00:00"},
    ]
    server = stub_server(lambda seen: Answer(body=body))
    read = {"id_field": "no", "version_field": "rev", "updated_field": "changed"}
    (page,) = read_all(rest(server.url, read))
    first, second = page.records
    assert (first.record_id, first.version) == ("7", "3")
    assert first.occurred_at == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    assert first.data == body[0]
    assert second.version == "2026-11-24T03:00:00"  # no version field: the updated value is the version
    assert second.occurred_at.tzinfo is not None and second.occurred_at.hour == 3
    assert page.watermark == "2026-11-24T03:00:00+00:00"


def test_since_param_carries_the_watermark_normalized_to_utc(stub_server) -> None:
    server = stub_server(lambda seen: Answer(body=RECORDS[-2:]))
    pages = read_all(rest(server.url, {**BASIC_READ, "since_param": "changed_since"}), "2026-01-01T08:10:00+08:00")
    assert server.seen[0].query["changed_since"] == "2026-01-01T00:10:00+00:00"
    assert pages[0].watermark == datetime.fromisoformat(RECORDS[-1]["updated"]).isoformat()


def test_without_since_param_records_before_the_watermark_are_filtered_client_side(stub_server) -> None:
    server = stub_server(lambda seen: Answer(body=RECORDS))
    watermark = RECORDS[9]["updated"]
    pages = read_all(rest(server.url, BASIC_READ), watermark)
    assert [r.record_id for r in pages[0].records] == [str(r["id"]) for r in RECORDS[9:]]  # >= watermark kept
    assert server.seen[0].query == {}


def test_watermark_never_goes_back_on_an_empty_read(stub_server) -> None:
    server = stub_server(lambda seen: Answer(body=[]))
    (page,) = read_all(rest(server.url, {**BASIC_READ, "since_param": "since"}), "2026-05-01T00:00:00+00:00")
    assert page.records == [] and page.watermark == "2026-05-01T00:00:00+00:00"


def test_rate_limited_read_waits_for_retry_after_and_retries(stub_server) -> None:
    calls = {"n": 0}

    def respond(seen: Seen) -> Answer:
        calls["n"] += 1
        if calls["n"] <= 2:
            return Answer(429, {"error": "slow down"}, {"Retry-After": "0.05"})
        return Answer(body=RECORDS[:2])

    server = stub_server(respond)
    adapter = rest(server.url, BASIC_READ)
    slept: list[float] = []
    adapter.reader().sleep = slept.append
    pages = read_all(adapter)
    assert len(pages[0].records) == 2
    assert slept == [0.05, 0.05]


def test_rate_limit_that_does_not_end_raises_transient_with_retry_after(stub_server) -> None:
    server = stub_server(lambda seen: Answer(429, {"error": "slow down"}, {"Retry-After": "7"}))
    adapter = rest(server.url, {**BASIC_READ, "rate_limit_retries": 2, "max_retry_wait_s": 0.01})
    with pytest.raises(TransientError) as caught:
        read_all(adapter)
    assert caught.value.status == 429 and caught.value.retry_after == 7
    assert len(server.seen) == 3


def test_record_without_its_id_is_a_permanent_error(stub_server) -> None:
    server = stub_server(lambda seen: Answer(body=[{"name": "no id", "updated": "2026-01-01T00:00:00Z"}]))
    with pytest.raises(PermanentError, match="id field 'id'"):
        read_all(rest(server.url, BASIC_READ))


def crm_reader(crm, **read: Any) -> RestAdapter:
    config = {
        "base_url": crm.url,
        "auth": {"type": "bearer", "token": "crm-secret-token"},
        "entities": {
            "customer": {
                "read": {
                    "path": "/api/customers",
                    "records_path": "data",
                    "id_field": "customer_no",
                    "version_field": "version",
                    "updated_field": "updated_at",
                    "since_param": "updated_since",
                    "pagination": {"type": "page", "page_size": 7},
                    **read,
                }
            }
        },
    }
    return RestAdapter("crm", RestSystemConfig.model_validate(config))


def test_reading_the_sample_crm_pages_through_everything_and_resumes_from_the_watermark(crm) -> None:
    crm.seed(customers=30, orders_per_customer=0, seed=1)
    adapter = crm_reader(crm)
    pages = list(adapter.reader().read_changes("customer", None))
    ids = [r.record_id for p in pages for r in p.records]
    assert sorted(ids) == sorted(f"C-{1001 + i}" for i in range(30)) and len(set(ids)) == 30
    watermark = pages[-1].watermark
    assert watermark is not None and watermark.endswith("+00:00")

    changed = crm.upsert_customer({"customer_no": "C-1005", "tier": "gold"})
    again = list(adapter.reader().read_changes("customer", watermark))
    fresh = [r for p in again for r in p.records]
    assert fresh[-1].record_id == "C-1005" and fresh[-1].version == str(changed["version"])
    assert len(fresh) <= 2  # the record at the watermark itself may be re-read; nothing older
    adapter.close()


def test_a_record_changing_during_a_paged_read_does_not_hide_another(crm) -> None:
    crm.seed(customers=30, orders_per_customer=0, seed=1)
    pages = crm_reader(crm).reader().read_changes("customer", None)
    first = next(pages)
    crm.upsert_customer({"customer_no": first.records[0].record_id, "tier": "gold"})  # jumps to the end
    ids = [r.record_id for r in first.records] + [r.record_id for p in pages for r in p.records]
    assert set(ids) == {f"C-{1001 + i}" for i in range(30)}
    assert ids.count(first.records[0].record_id) == 2 and len(ids) == 31  # old and new version, no other repeat


def test_offset_paging_of_the_erp_status_feed_sees_every_order_while_statuses_advance(erp) -> None:
    account_id = requests.post(erp.url + "/api/accounts", json={"account_name": "A"}, timeout=5).json()["id"]
    for i in range(12):
        body = {
            "account_id": account_id,
            "external_ref": f"SO-{i}",
            "lines": [{"quantity": 1, "unit_price": 1}],
        }
        requests.post(erp.url + "/api/sales-orders", json=body, timeout=5)
    read = {
        "path": "/api/order-status",
        "records_path": "items",
        "id_field": "order_id",
        "version_field": "version",
        "updated_field": "changed_at",
        "since_param": "changed_since",
        "pagination": {"type": "offset", "limit": 5},
    }
    adapter = RestAdapter(
        "erp", RestSystemConfig.model_validate({"base_url": erp.url, "entities": {"s": {"read": read}}})
    )
    pages = adapter.reader().read_changes("s", None)
    first = next(pages)
    with erp.lock:  # the first order advances: it moves to the end of the feed
        erp._set_status("SO00001", {**erp.orders["SO00001"], "version": 2}, "RSV")
    seen = [(r.record_id, r.version) for r in first.records] + [
        (r.record_id, r.version) for p in pages for r in p.records
    ]
    assert {rid for rid, _ in seen} == {f"SO{i:05d}" for i in range(1, 13)}
    assert ("SO00001", "2") in seen
