"""SAMPLE ERP: accounts and sales orders, idempotency, status progression, failure injection."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import requests

from deploy.demo.sample_erp import SampleErp


def post(erp: SampleErp, path: str, body: Any, key: str | None = None) -> requests.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return requests.post(erp.url + path, json=body, headers=headers, timeout=5)


def account(erp: SampleErp, name: str = "Acme GmbH", key: str | None = None) -> str:
    response = post(erp, "/api/accounts", {"account_name": name, "external_ref": "C-1"}, key)
    assert response.status_code == 201
    return str(response.json()["id"])


ORDER_LINES = [{"line_no": 1, "item": "WIDGET-1", "quantity": 2, "unit_price": 19.90}]


def sales_order(erp: SampleErp, account_id: str, ref: str, key: str | None = None) -> requests.Response:
    body = {"account_id": account_id, "external_ref": ref, "order_date": "2026-11-24", "currency": "EUR"}
    return post(erp, "/api/sales-orders", {**body, "lines": ORDER_LINES}, key)


def test_accounts_are_created_with_sequential_ids(erp) -> None:
    assert account(erp) == "A000001"
    response = post(erp, "/api/accounts", {"account_name": "Globex", "address": {"city": "Berlin"}})
    assert response.json()["id"] == "A000002" and response.json()["address"] == {"city": "Berlin"}


def test_account_without_name_is_rejected_with_400(erp) -> None:
    for body in ({"external_ref": "C-1"}, {"account_name": ""}, {"account_name": "   "}):
        response = post(erp, "/api/accounts", body)
        assert response.status_code == 400 and response.json() == {"error": "account_name is required"}
    assert erp.state()["accounts"] == 0 and erp.state()["effects"] == []


def test_repeated_idempotency_key_answers_the_same_and_applies_once(erp) -> None:
    first = post(erp, "/api/accounts", {"account_name": "Acme"}, key="crm:customer:C-1@1")
    again = post(erp, "/api/accounts", {"account_name": "Acme"}, key="crm:customer:C-1@1")
    assert (first.status_code, again.status_code) == (201, 201) and first.json() == again.json()
    state = requests.get(erp.url + "/admin/state", timeout=5).json()
    assert state["accounts"] == 1 and state["duplicates"] == 1
    assert state["applied_counts"] == {"crm:customer:C-1@1": 1}
    assert state["effects"] == [
        {
            "key": "crm:customer:C-1@1",
            "method": "POST",
            "path": "/api/accounts",
            "entity": "account",
            "id": "A000001",
        }
    ]


def test_without_dedupe_every_delivery_is_applied() -> None:
    erp = SampleErp(advance_every_s=0, dedupe=False).start()
    try:
        for _ in range(2):
            post(erp, "/api/accounts", {"account_name": "Acme"}, key="k1")
        assert erp.state()["applied_counts"] == {"k1": 2} and erp.state()["accounts"] == 2
    finally:
        erp.stop()


def test_accounts_are_updated_with_put(erp) -> None:
    account_id = account(erp)
    response = requests.put(f"{erp.url}/api/accounts/{account_id}", json={"email": "a@b.example"}, timeout=5)
    assert response.status_code == 200 and response.json()["email"] == "a@b.example"
    assert response.json()["account_name"] == "Acme GmbH" and response.json()["version"] == 2
    assert requests.put(f"{erp.url}/api/accounts/A999", json={}, timeout=5).status_code == 404


def test_sales_order_needs_a_known_account(erp) -> None:
    response = sales_order(erp, "A404", "SO-1")
    assert response.status_code == 422 and "account_id" in response.json()["error"]


def test_sales_order_is_created_new_with_exact_decimals(erp) -> None:
    raw = b'{"account_id": "%s", "lines": [{"item": "W", "quantity": 2, "unit_price": 19.90}]}' % account(erp).encode()
    response = requests.post(erp.url + "/api/sales-orders", data=raw, timeout=5)
    assert response.status_code == 201
    assert response.json()["id"] == "SO00001" and response.json()["status"] == "NEW"
    assert response.json()["lines"][0]["unit_price"] == "19.90"
    stored = erp.sales_order("SO00001")
    assert stored is not None and stored["lines"][0]["quantity"] == Decimal(2)


def test_sales_order_with_a_non_numeric_quantity_is_400(erp) -> None:
    body = {"account_id": account(erp), "lines": [{"item": "X", "quantity": "abc", "unit_price": 1}]}
    response = post(erp, "/api/sales-orders", body)
    assert response.status_code == 400 and "quantity" in response.json()["error"]


def test_sales_order_header_without_lines_is_created_but_empty_lines_are_400(erp) -> None:
    body = {"account_id": account(erp), "external_ref": "SO-1", "order_date": "2026-11-24", "currency": "EUR"}
    header = post(erp, "/api/sales-orders", body)
    assert header.status_code == 201 and header.json()["lines"] == []
    empty = post(erp, "/api/sales-orders", {**body, "external_ref": "SO-2", "lines": []})
    assert empty.status_code == 400 and "lines" in empty.json()["error"]
    later = requests.put(f"{erp.url}/api/sales-orders/{header.json()['id']}", json={"lines": ORDER_LINES}, timeout=5)
    assert later.status_code == 200 and later.json()["lines"][0]["item"] == "WIDGET-1"


def test_sales_orders_are_updated_with_put_but_keep_their_status(erp) -> None:
    sales_order(erp, account(erp), "SO-1")
    response = requests.put(f"{erp.url}/api/sales-orders/SO00001", json={"currency": "USD", "status": "INV"}, timeout=5)
    assert response.status_code == 200
    assert response.json()["currency"] == "USD" and response.json()["status"] == "NEW"


def test_accounts_and_sales_orders_are_listed_by_change_time(erp) -> None:
    first, second = account(erp, "First"), account(erp, "Second")
    requests.put(f"{erp.url}/api/accounts/{first}", json={"phone": "+49 1"}, timeout=5)  # moves to the end
    listed = requests.get(erp.url + "/api/accounts", timeout=5).json()
    assert [a["id"] for a in listed["items"]] == [second, first] and listed["total"] == 2
    assert listed["items"][1] == requests.get(f"{erp.url}/api/accounts/{first}", timeout=5).json()
    since = listed["items"][1]["changed_at"]
    later = requests.get(erp.url + "/api/accounts", params={"changed_since": since}, timeout=5).json()
    assert [a["id"] for a in later["items"]] == [first]  # changed_at >= changed_since
    page = requests.get(erp.url + "/api/accounts", params={"offset": 1, "limit": 1}, timeout=5).json()
    assert [a["id"] for a in page["items"]] == [first] and page["total"] == 2
    assert sales_order(erp, first, "SO-1").status_code == 201
    orders = requests.get(erp.url + "/api/sales-orders", timeout=5).json()["items"]
    assert [o["external_ref"] for o in orders] == ["SO-1"] and orders[0]["status"] == "NEW"
    assert requests.get(erp.url + "/api/accounts", params={"limit": 0}, timeout=5).status_code == 400
    by_ref = requests.get(erp.url + "/api/accounts", params={"external_ref": "C-1"}, timeout=5).json()["items"]
    assert [a["id"] for a in by_ref] == [first, second]  # both made by account(): oldest first
    assert requests.get(erp.url + "/api/sales-orders", params={"external_ref": "SO-9"}, timeout=5).json()["items"] == []


def status_feed(erp: SampleErp, **params: Any) -> Any:
    return requests.get(erp.url + "/api/order-status", params=params, timeout=5).json()


def test_status_advances_new_rsv_shp_inv_with_increasing_changed_at(erp) -> None:
    account_id = account(erp)
    for i in range(3):
        sales_order(erp, account_id, f"SO-{i}")
    history: list[tuple[str, str, int]] = []
    for expected in ("NEW", "RSV", "SHP", "INV"):
        items = status_feed(erp)["items"]
        assert {item["status"] for item in items} == {expected}
        history.extend((i["changed_at"], i["status"], i["version"]) for i in items)
        erp.advance_all()
    assert erp.advance_all() == 0  # invoiced orders stay invoiced
    moments = [datetime.fromisoformat(changed) for changed, _, _ in history]
    assert moments == sorted(moments) and len(set(moments)) == len(moments)
    assert all(m.utcoffset() == timedelta(0) for m in moments)
    assert [v for _, s, v in history if s == "INV"] == [4, 4, 4]


def test_status_feed_pages_by_offset_and_filters_by_changed_since(erp) -> None:
    account_id = account(erp)
    for i in range(7):
        sales_order(erp, account_id, f"SO-{i}")
    everything = status_feed(erp, limit=100)
    assert everything["total"] == 7
    paged = [item for offset in (0, 3, 6) for item in status_feed(erp, offset=offset, limit=3)["items"]]
    assert paged == everything["items"]
    keys = [(i["changed_at"], i["order_id"]) for i in paged]
    assert keys == sorted(keys)
    assert paged[0]["external_ref"] == "SO-0"

    erp.advance_all()
    pivot = status_feed(erp)["items"][2]["changed_at"]
    later = status_feed(erp, changed_since=pivot)
    assert later["total"] == 5 and later["items"][0]["changed_at"] == pivot


def test_status_advances_on_a_timer() -> None:
    erp = SampleErp(advance_every_s=0.05).start()
    try:
        sales_order(erp, account(erp), "SO-1")
        deadline = time.monotonic() + 5
        while (erp.sales_order("SO00001") or {}).get("status") != "INV":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        erp.stop()


def test_fail_next_answers_errors_with_retry_after_and_applies_nothing(erp) -> None:
    erp.fail_next(2, status=503, retry_after=1.5)
    for _ in range(2):
        failed = post(erp, "/api/accounts", {"account_name": "Acme"}, key="k")
        assert failed.status_code == 503 and failed.headers["Retry-After"] == "1.5"
    assert erp.state()["effects"] == []
    assert post(erp, "/api/accounts", {"account_name": "Acme"}, key="k").status_code == 201
    assert erp.state()["applied_counts"] == {"k": 1} and erp.state()["duplicates"] == 0


def test_admin_endpoints_inject_failures_latency_and_advance(erp) -> None:
    requests.post(erp.url + "/admin/fail-next", json={"n": 1, "status": 429}, timeout=5)
    assert post(erp, "/api/accounts", {"account_name": "Acme"}).status_code == 429
    requests.post(erp.url + "/admin/latency", json={"seconds": 0.2}, timeout=5)
    started = time.monotonic()
    account_id = account(erp)
    assert time.monotonic() - started >= 0.2
    erp.set_latency(0)
    sales_order(erp, account_id, "SO-1")
    assert requests.post(erp.url + "/admin/advance", timeout=5).json() == {"advanced": 1}
    assert requests.get(erp.url + "/admin/state", timeout=5).json()["statuses"] == {"RSV": 1}


def test_bearer_token_is_enforced_when_set() -> None:
    erp = SampleErp(token="erp-token", advance_every_s=0).start()
    try:
        assert post(erp, "/api/accounts", {"account_name": "A"}).status_code == 401
        ok = requests.post(
            erp.url + "/api/accounts",
            json={"account_name": "A"},
            headers={"Authorization": "Bearer erp-token"},
            timeout=5,
        )
        assert ok.status_code == 201
    finally:
        erp.stop()
