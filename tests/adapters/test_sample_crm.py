"""SAMPLE CRM: deterministic seed, paging and filtering, PATCH idempotency, auth, standalone run."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from deploy.demo.sample_crm import SampleCrm

REPO = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Bearer crm-secret-token"}


def get(crm: SampleCrm, path: str, **params: Any) -> requests.Response:
    return requests.get(crm.url + path, params=params, headers=AUTH, timeout=5)


def patch(crm: SampleCrm, order_no: str, body: Any, key: str | None = None) -> requests.Response:
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    return requests.patch(f"{crm.url}/api/orders/{order_no}", json=body, headers=headers, timeout=5)


def test_seed_is_deterministic() -> None:
    first, second = SampleCrm(), SampleCrm()
    assert first.seed(20, 3, seed=7) == second.seed(20, 3, seed=7)
    assert first.customers.rows == second.customers.rows
    assert first.orders.rows == second.orders.rows


def test_seed_has_archived_customers_open_and_lost_orders_and_the_bad_records() -> None:
    crm = SampleCrm()
    summary = crm.seed(customers=30, orders_per_customer=3, seed=1)
    assert summary["customers"] == 30 and summary["orders"] == 29 * 3  # the bad customer has no orders
    customers = crm.customers.rows.values()
    orders = list(crm.orders.rows.values())
    assert any(c["status"] == "archived" for c in customers)
    assert {o["stage"] for o in orders} == {"won", "open", "lost"}
    (bad_customer,) = summary["bad_records"]["customers"]
    assert crm.customers.rows[bad_customer]["company"] == ""
    (bad_order,) = summary["bad_records"]["orders"]
    assert crm.orders.rows[bad_order]["lines"][0]["qty"] == "abc"
    assert crm.orders.rows[bad_order]["stage"] == "won"
    assert all(datetime.fromisoformat(c["updated_at"]).utcoffset() == timedelta(hours=8) for c in customers)


def test_seed_without_bad_records_is_all_valid() -> None:
    crm = SampleCrm()
    summary = crm.seed(customers=10, orders_per_customer=2, seed=1, with_bad_records=False)
    assert summary["bad_records"] == {"customers": [], "orders": []}
    assert all(c["company"] for c in crm.customers.rows.values())
    assert all(line["qty"].isdigit() for o in crm.orders.rows.values() for line in o["lines"])


def test_pages_list_every_record_once_sorted_by_updated_at_then_id(crm) -> None:
    crm.seed(customers=23, orders_per_customer=0, seed=2)
    crm.upsert_customer({"customer_no": "C-1001", "tier": "gold"})  # moves to the end
    seen, page = [], 1
    while True:
        body = get(crm, "/api/customers", page=page, page_size=5).json()
        assert body["page"] == page
        seen.extend(body["data"])
        if not body["has_more"]:
            break
        page += 1
    assert page == 5 and len(seen) == 23
    keys = [(datetime.fromisoformat(c["updated_at"]), c["customer_no"]) for c in seen]
    assert keys == sorted(keys) and seen[-1]["customer_no"] == "C-1001" and seen[-1]["version"] == 2


def test_updated_since_compares_moments_across_offsets(crm) -> None:
    crm.seed(customers=5, orders_per_customer=2, seed=3, with_bad_records=False)
    orders = get(crm, "/api/orders", page_size=100).json()["data"]
    pivot = datetime.fromisoformat(orders[4]["updated_at"])
    as_utc = pivot.astimezone(UTC).isoformat()
    for since in (orders[4]["updated_at"], as_utc, as_utc.replace("+00:00", "Z")):
        later = get(crm, "/api/orders", updated_since=since).json()["data"]
        assert [o["order_no"] for o in later] == [o["order_no"] for o in orders[4:]]  # >= since
    assert get(crm, "/api/orders", updated_since="yesterday").status_code == 400


def test_upsert_bumps_version_and_updated_at(crm) -> None:
    crm.seed(customers=2, orders_per_customer=1, seed=4, with_bad_records=False)
    before = crm.order("SO-5001")
    after = crm.upsert_order({"order_no": "SO-5001", "stage": "lost"})
    assert after["version"] == before["version"] + 1
    assert datetime.fromisoformat(after["updated_at"]) > datetime.fromisoformat(before["updated_at"])
    assert after["stage"] == "lost" and after["lines"] == before["lines"]
    created = crm.upsert_customer({"customer_no": "C-9", "company": "New"})
    assert created["version"] == 1


def test_patch_sets_the_erp_status_once_per_idempotency_key(crm) -> None:
    crm.seed(customers=2, orders_per_customer=1, seed=5, with_bad_records=False)
    version = crm.order("SO-5001")["version"]
    body = {"erp_status": "shipped", "erp_status_at": "2026-11-24T12:00:00+00:00"}
    first = patch(crm, "SO-5001", body, key="erp:status:SO1@3")
    again = patch(crm, "SO-5001", body, key="erp:status:SO1@3")
    assert first.status_code == again.status_code == 200
    assert first.json()["erp_status"] == "shipped" and again.json() == first.json()
    assert first.json()["version"] == version  # integration-owned fields do not echo back as changes
    state = get(crm, "/admin/state").json()
    assert state["duplicates"] == 1 and state["applied_counts"] == {"erp:status:SO1@3": 1}
    assert [e["id"] for e in state["effects"]] == ["SO-5001"]
    assert state["effects"][0]["key"] == "erp:status:SO1@3"


def test_patch_rejects_unknown_orders_and_statuses(crm) -> None:
    crm.seed(customers=2, orders_per_customer=1, seed=5, with_bad_records=False)
    assert patch(crm, "SO-404", {"erp_status": "shipped"}).status_code == 404
    bad = patch(crm, "SO-5001", {"erp_status": "teleported"})
    assert bad.status_code == 400 and "erp_status" in bad.json()["error"]
    assert crm.state()["effects"] == []


def test_api_needs_the_bearer_token_but_admin_does_not(crm) -> None:
    assert requests.get(crm.url + "/api/customers", timeout=5).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert requests.get(crm.url + "/api/customers", headers=wrong, timeout=5).status_code == 401
    assert get(crm, "/api/customers").status_code == 200
    assert requests.get(crm.url + "/admin/state", timeout=5).status_code == 200


def test_admin_endpoints_seed_and_upsert_over_http(crm) -> None:
    seeded = requests.post(crm.url + "/admin/seed", json={"customers": 4, "orders_per_customer": 1}, timeout=5)
    assert seeded.status_code == 200 and seeded.json()["customers"] == 4
    changed = requests.post(crm.url + "/admin/customers", json={"customer_no": "C-1001", "tier": "bronze"}, timeout=5)
    assert changed.json()["version"] == 2
    state = requests.get(crm.url + "/admin/state", timeout=5).json()
    assert (state["customers"], state["orders"]) == (4, 3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_runs_standalone_with_python_dash_m() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.demo.sample_crm", "--port", str(port), "--customers", "3"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                state = requests.get(f"http://127.0.0.1:{port}/admin/state", timeout=1).json()
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "sample CRM did not start"
                time.sleep(0.1)
        assert state["customers"] == 3
    finally:
        process.terminate()
        process.wait(10)
