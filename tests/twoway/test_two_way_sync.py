"""Two-way sync between the sample CRM and a real Tryton, through a real Worker, without loops.

Every test runs deploy/demo/tryton_two_way.yaml (polls shortened) against the session's trytond
and a sample CRM on loopback. "Concurrent" edits are made while the worker is stopped, so that
both changes are waiting when it starts: both routes read them and neither saw the other's, the
situation a conflict policy is for. Which route applies its change first is up to the threads;
the outcome must not depend on it.

A loop would show as writes that keep coming: each test ends by watching both systems for
several poll intervals and asserting that nothing more is written to either.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from middleware.broker.base import dlq_name
from tests.twoway.conftest import REPO, TwoWay, wait_until

pytestmark = pytest.mark.slow  # a real trytond and worker: end to end

ISTHMUS = str(Path(sys.executable).parent / "isthmus")
POLICIES = {  # the demo's customer policies, with the phone parked for review instead of CRM-owned
    "default": "last_writer_wins",
    "fields": {"name": {"owner": "crm"}, "email": {"owner": "crm"}, "payment_terms": {"owner": "tryton"},
               "phone": "manual"},
}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def synced(two_way: TwoWay, number: str, timeout_s: float = 30) -> dict[str, Any]:
    """Wait for a new CRM customer to be a Tryton party, and for the party's echo to be handled."""
    party = wait_until(lambda: two_way.party(number), timeout_s, f"party {number} in Tryton")
    wait_until(lambda: _caught_up(two_way, number), timeout_s, "both sources to read the last changes")
    return party


def _idle(two_way: TwoWay) -> bool:
    worker = two_way.worker
    assert worker is not None
    return all(worker.broker.depth(route.name) == 0 for route in worker.config.model.routes)


def _caught_up(two_way: TwoWay, number: str) -> bool:
    """Both pollers have read the record's latest change and every route has handled it."""
    worker = two_way.worker
    assert worker is not None
    party, customer = two_way.party(number), two_way.crm_customer(number)
    tryton_mark = worker.store.get_watermark("source:tryton_parties")
    crm_mark = worker.store.get_watermark("source:crm_customers")
    if not (party and customer and tryton_mark and crm_mark):
        return False
    changed = party["write_date"].replace(tzinfo=UTC)
    return (
        datetime.fromisoformat(tryton_mark) >= changed
        and datetime.fromisoformat(crm_mark) >= datetime.fromisoformat(customer["updated_at"])
        and _idle(two_way)
    )


def assert_quiet(two_way: TwoWay, number: str, seconds: float = 2.0) -> None:
    """No more writes to either system for several poll intervals: nothing loops."""
    wait_until(lambda: _caught_up(two_way, number), 30, "both sources to read the last changes")
    crm_writes, party = two_way.crm_writes(), two_way.party(number)
    crm_version = two_way.crm_customer(number)["version"]
    time.sleep(seconds)
    wait_until(lambda: _caught_up(two_way, number), 30, "both sources to read the last changes")
    assert two_way.crm_writes() == crm_writes, "Isthmus kept writing to the CRM"
    assert two_way.crm_customer(number)["version"] == crm_version
    assert two_way.party(number)["write_date"] == party["write_date"], "Isthmus kept writing to Tryton"
    worker = two_way.worker
    assert worker is not None
    for route in worker.config.model.routes:
        assert worker.broker.depth(dlq_name(route.name)) == 0, route.name


def both_sides(two_way: TwoWay, number: str) -> dict[str, Any]:
    customer, party = two_way.crm_customer(number), two_way.party(number)
    return {
        "crm": {"name": customer["company"], "email": customer["email"], "phone": customer["phone"],
                "city": customer["billing"]["city"], "payment_terms": customer.get("payment_terms")},
        "tryton": {"name": party["name"], "email": party["email"], "phone": party["phone"],
                   "city": party["addresses."][0]["city"], "payment_terms": party["customer_payment_term."]["name"]},
    }


def agree(two_way: TwoWay, number: str, **expected: Any) -> bool:
    sides = both_sides(two_way, number)
    return all(sides[system][k] == v for system in sides for k, v in expected.items())


def test_an_edit_on_either_side_reaches_the_other_and_does_not_come_back(two_way: TwoWay, tag: str) -> None:
    two_way.write_config()
    number = f"TW-A{tag}"
    two_way.new_customer(number)
    echoes = metric("isthmus_messages_skipped_total", route="customers_tryton_to_crm", reason="echo")
    two_way.start()
    synced(two_way, number)
    assert agree(two_way, number, name=f"Company {number}", city="Berlin", payment_terms="Direct")
    assert two_way.crm_writes() == 0, "the party created from the CRM customer was written back to the CRM"
    assert metric("isthmus_messages_skipped_total", route="customers_tryton_to_crm", reason="echo") > echoes

    # a CRM user renames the customer: Tryton gets it, the CRM gets nothing back
    two_way.crm.upsert_customer({"customer_no": number, "company": "Renamed in the CRM GmbH"})
    wait_until(lambda: two_way.party(number)["name"] == "Renamed in the CRM GmbH", 20, "the new name in Tryton")
    assert_quiet(two_way, number)
    assert two_way.crm_writes() == 0

    # a Tryton user moves the billing address: the CRM gets it once, Tryton nothing back
    party_before = two_way.party(number)
    two_way.edit_party(number, city="Hamburg")
    edited = two_way.party(number)["write_date"]
    assert edited != party_before["write_date"]
    wait_until(lambda: two_way.crm_customer(number)["billing"]["city"] == "Hamburg", 20, "Hamburg in the CRM")
    assert_quiet(two_way, number)
    assert two_way.crm_writes() == 1
    assert two_way.party(number)["write_date"] == edited, "the CRM's echo was written back to Tryton"
    changed = [e for e in two_way.crm.state()["effects"] if e.get("entity") == "customer"]
    assert [e["fields"] for e in changed] == [["billing"]]  # only what changed (the key is in the path)


def test_concurrent_edits_of_different_fields_both_land(two_way: TwoWay, tag: str) -> None:
    two_way.write_config()
    number = f"TW-B{tag}"
    two_way.new_customer(number)
    two_way.start()
    synced(two_way, number)
    two_way.stop()

    two_way.crm.upsert_customer({"customer_no": number, "email": "orders@new.example"})  # the CRM owns e-mail
    two_way.edit_party(number, city="Leipzig", payment_terms="Net 30 days")  # address: LWW; terms: Tryton's
    two_way.read_both()
    two_way.start()
    wait_until(
        lambda: agree(two_way, number, email="orders@new.example", city="Leipzig", payment_terms="Net 30 days"),
        30,
        "both edits on both sides",
    )
    assert_quiet(two_way, number)
    assert two_way.crm_writes() == 1  # Tryton's two changes, in one write; the CRM's e-mail never came back
    assert both_sides(two_way, number)["crm"]["name"] == f"Company {number}"


def test_the_owner_of_a_field_keeps_its_value_on_both_sides(two_way: TwoWay, tag: str) -> None:
    two_way.write_config()
    number = f"TW-C{tag}"
    two_way.new_customer(number)
    two_way.start()
    synced(two_way, number)
    owner_conflicts = metric("isthmus_conflicts_total", route="customers_tryton_to_crm", policy="owner")
    owner_conflicts += metric("isthmus_conflicts_total", route="customers_crm_to_tryton", policy="owner")
    two_way.stop()

    # the CRM owns the name: its rename stands although Tryton's came later
    two_way.crm.upsert_customer({"customer_no": number, "company": "Named by Sales AG"})
    time.sleep(0.2)
    two_way.edit_party(number, name="Named by Accounting AG")
    two_way.read_both()
    two_way.start()
    wait_until(lambda: agree(two_way, number, name="Named by Sales AG"), 30, "the CRM's name on both sides")
    assert_quiet(two_way, number)
    found = metric("isthmus_conflicts_total", route="customers_tryton_to_crm", policy="owner")
    found += metric("isthmus_conflicts_total", route="customers_crm_to_tryton", policy="owner")
    assert found == owner_conflicts + 1

    # a lone change by the non-owner is corrected back too: Tryton owns the payment terms
    two_way.crm.upsert_customer({"customer_no": number, "payment_terms": "Net 60 days"})
    wait_until(lambda: agree(two_way, number, payment_terms="Direct"), 30, "Tryton's terms back in the CRM")
    assert_quiet(two_way, number)


def test_last_writer_wins_whichever_side_wrote_last(two_way: TwoWay, tag: str) -> None:
    two_way.write_config()
    number = f"TW-D{tag}"
    two_way.new_customer(number)
    two_way.start()
    synced(two_way, number)
    before = sum(
        metric("isthmus_conflicts_total", route=r, policy="last_writer_wins")
        for r in ("customers_tryton_to_crm", "customers_crm_to_tryton")
    )
    for first, second, winner in (("crm", "tryton", "Köln"), ("tryton", "crm", "Mainz")):
        two_way.stop()
        loser = "Bonn" if winner == "Köln" else "Essen"
        for side, city in ((first, loser), (second, winner)):
            if side == "crm":
                customer = two_way.crm_customer(number)
                two_way.crm.upsert_customer({"customer_no": number, "billing": {**customer["billing"], "city": city}})
            else:
                two_way.edit_party(number, city=city)
            time.sleep(0.3)  # the second edit is clearly the later one
        two_way.read_both()
        two_way.start()
        wait_until(lambda w=winner: agree(two_way, number, city=w), 30, f"{winner} (written last, in {second})")
        assert_quiet(two_way, number)
    after = sum(
        metric("isthmus_conflicts_total", route=r, policy="last_writer_wins")
        for r in ("customers_tryton_to_crm", "customers_crm_to_tryton")
    )
    assert after == before + 2


def test_a_manual_conflict_is_parked_listed_and_resolved_through_the_cli(two_way: TwoWay, tag: str) -> None:
    config = two_way.write_config(conflicts=POLICIES)
    number = f"TW-E{tag}"
    two_way.new_customer(number)
    two_way.start()
    synced(two_way, number)
    two_way.stop()

    two_way.crm.upsert_customer({"customer_no": number, "phone": "+49 30 1111"})
    two_way.edit_party(number, phone="+49 30 2222")
    two_way.read_both()
    two_way.start()
    listed = wait_until(lambda: _conflicts(config, number), 30, "the phone conflict in `isthmus conflicts list`")
    (conflict,) = listed
    assert conflict["field"] == "phone" and conflict["policy"] == "manual" and conflict["status"] == "open"
    versions = {side: v["value"] for side, v in conflict["sides"].items()}
    assert versions == {"crm": "+49 30 1111", "tryton": "+49 30 2222"}
    route = conflict["route"]
    assert metric("isthmus_conflicts_open", route=route) == 1
    # parked: neither value is sent on; each side keeps what the first route wrote before the second change arrived
    assert_quiet(two_way, number)
    sides = both_sides(two_way, number)
    assert sides["crm"]["phone"] == sides["tryton"]["phone"]

    done = _cli(config, "conflicts", "resolve", conflict["id"], "--take", "crm")
    assert "resolved" in done.stdout
    wait_until(lambda: agree(two_way, number, phone="+49 30 1111"), 30, "the CRM's phone on both sides")
    assert_quiet(two_way, number)
    assert _conflicts(config, number) == []
    assert metric("isthmus_conflicts_open", route=route) == 0
    again = _cli(config, "conflicts", "resolve", conflict["id"], "--take", "tryton", check=False)
    assert again.returncode == 2 and "already resolved" in again.stderr

    # later changes of the field flow again
    two_way.edit_party(number, phone="+49 30 3333")
    wait_until(lambda: agree(two_way, number, phone="+49 30 3333"), 30, "Tryton's new phone in the CRM")
    assert_quiet(two_way, number)


def test_products_made_in_tryton_reach_the_crm_and_edits_flow_both_ways(two_way: TwoWay, tag: str) -> None:
    two_way.write_config()
    sku = f"TW-P{tag}"
    two_way.start()
    from middleware.adapter import WriteRequest

    (made,) = two_way.erp.writer().write_batch(
        [WriteRequest("product", {"code": sku, "name": "Gizmo", "list_price": Decimal("12.50"),
                                  "default_uom": {"name": "Unit"}, "account_category": {"name": "Goods"}}, "user")]
    )
    assert made.outcome == "ok", made.error
    product = wait_until(lambda: two_way.crm.product(sku), 30, "the product in the CRM")
    assert (product["name"], product["list_price"], product["active"]) == ("Gizmo", "12.50", True)
    wait_until(lambda: _idle(two_way), 30, "the routes to drain")
    time.sleep(1)
    assert two_way.crm_writes("product") == 1  # created once; the CRM's echo did not go back

    # a Tryton user sets the variant's price; a CRM user renames it
    two_way.erp.rpc.model("product.product", "write", [int(made.target_id or 0)], {"list_price": Decimal("13.90")})
    wait_until(lambda: (two_way.crm.product(sku) or {}).get("list_price") == "13.90", 30, "the new price in the CRM")
    two_way.crm.upsert_product({"sku": sku, "name": "Gizmo Pro"})
    wait_until(
        lambda: two_way.erp.rpc.model("product.product", "read", [int(made.target_id or 0)], ["name"])[0]["name"]
        == "Gizmo Pro",
        30,
        "the new name in Tryton",
    )
    wait_until(lambda: _idle(two_way), 30, "the routes to drain")
    writes = two_way.crm_writes("product")
    time.sleep(1.5)
    assert two_way.crm_writes("product") == writes == 2


def _cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [ISTHMUS, *args, "--config", str(config)],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _conflicts(config: Path, number: str) -> list[dict[str, Any]]:
    listed = json.loads(_cli(config, "conflicts", "list", "--json").stdout)
    return [c for c in listed if f"crm:customer:{number}" in c["pair"]]
