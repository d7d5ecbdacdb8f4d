"""The SAMPLE CRM's customer and product writes, as the two-way routes use them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from deploy.demo.sample_crm import SampleCrm

AUTH = {"Authorization": "Bearer t"}


@pytest.fixture
def crm() -> Iterator[SampleCrm]:
    service = SampleCrm(token="t").start()
    yield service
    service.stop()


def patch(crm: SampleCrm, path: str, body: object, key: str | None = None) -> requests.Response:
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    return requests.patch(crm.url + path, json=body, headers=headers, timeout=5)


def test_patch_creates_then_merges_and_moves_the_version_like_a_user_edit(crm: SampleCrm) -> None:
    created = patch(crm, "/api/customers/C-7", {"company": "Acme", "billing": {"city": "Berlin"}}, key="k1").json()
    assert (created["customer_no"], created["version"]) == ("C-7", 1)
    changed = patch(crm, "/api/customers/C-7", {"email": "a@acme.example"}, key="k2").json()
    assert changed["company"] == "Acme" and changed["email"] == "a@acme.example" and changed["version"] == 2
    assert changed["updated_at"] > created["updated_at"]
    again = patch(crm, "/api/customers/C-7", {"email": "a@acme.example"}, key="k2")
    assert again.json()["version"] == 2  # a repeated key is answered, not applied
    state = crm.state()
    assert state["api_writes"] == {"customer": 2, "product": 0} and state["duplicates"] == 1
    assert [e["fields"] for e in state["effects"]] == [["billing", "company"], ["email"]]
    listed = requests.get(crm.url + "/api/customers", headers=AUTH, timeout=5).json()["data"]
    assert [c["customer_no"] for c in listed] == ["C-7"]


def test_products_are_listed_by_change_time_and_keys_must_match_the_path(crm: SampleCrm) -> None:
    crm.upsert_product({"sku": "W-1", "name": "Widget", "list_price": "19.90"})
    assert patch(crm, "/api/products/W-2", {"sku": "W-2", "name": "Gadget"}).status_code == 200
    assert patch(crm, "/api/products/W-3", {"sku": "W-4"}).status_code == 400
    assert patch(crm, "/api/products/W-3", ["not", "an", "object"]).status_code == 400
    since = crm.product("W-2")["updated_at"]  # type: ignore[index]
    later = requests.get(crm.url + "/api/products", params={"updated_since": since}, headers=AUTH, timeout=5)
    assert [p["sku"] for p in later.json()["data"]] == ["W-2"]
    assert requests.get(crm.url + "/api/products/W-1", headers=AUTH, timeout=5).json()["active"] is True
    assert crm.state()["api_writes"] == {"customer": 0, "product": 1}
