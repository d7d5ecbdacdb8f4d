"""The Tryton adapter against a real trytond: session, batched writes, the sale workflow, reads.

Each test pins one behaviour an integrator relies on. Records carry a unique tag so the
tests can share one server.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from adapters.tryton import TrytonAdapter
from adapters.tryton.localserver import LocalTryton
from adapters.tryton.rpc import decode, encode
from middleware.adapter import SourceRecord, WriteRequest


def party(tag: str, n: int, **extra: Any) -> WriteRequest:
    record = {
        "name": f"Customer {tag}-{n}",
        "code": f"C-{tag}-{n}",
        "addresses": [
            {"street": f"Hauptstr. {n}", "postal_code": "10115", "city": "Berlin", "country": {"code": "DE"}}
        ],
        "contact_mechanisms": [
            {"type": "email", "value": f"buyer{n}@{tag.lower()}.example"},
            {"type": "phone", "value": None},
        ],
        **extra,
    }
    return WriteRequest("party", record, key=f"crm/customer/C-{tag}-{n}@1")


def sale(tag: str, party_id: str, n: int = 1, target_id: str | None = None, qty: str = "3") -> WriteRequest:
    record = {
        "party": party_id,
        "reference": f"SO-{tag}-{n}",
        "sale_date": "2026-11-23",
        "currency": {"code": "EUR"},
        "lines": [{"product": {"code": "WIDGET-1"}, "quantity": qty, "unit_price": "19.90", "description": "Widget"}],
    }
    return WriteRequest("sale", record, key=f"crm/order/SO-{tag}-{n}@1", target_id=target_id)


def read_all(
    adapter: TrytonAdapter, entity: str, watermark: str | None = None
) -> tuple[list[SourceRecord], str | None]:
    records: list[SourceRecord] = []
    for page in adapter.reader().read_changes(entity, watermark):
        records.extend(page.records)
        watermark = page.watermark or watermark
    return records, watermark


def count_calls(adapter: TrytonAdapter) -> list[str]:
    """Record every RPC method the adapter sends from now on."""
    calls: list[str] = []
    post = adapter.rpc._post

    def spy(method: str, params: list[Any], auth: str | None) -> Any:
        calls.append(method)
        return post(method, params, auth)

    adapter.rpc._post = spy  # type: ignore[method-assign]
    return calls


def test_codec_carries_decimals_dates_and_datetimes_as_tryton_objects() -> None:
    moment = datetime(2026, 11, 24, 10, 0, 0, 123, tzinfo=UTC)
    body = encode({"a": Decimal("19.90"), "d": date(2026, 11, 23), "t": moment})
    assert b'"__class__":"Decimal","decimal":"19.90"' in body
    back = decode(body)
    assert back == {"a": Decimal("19.90"), "d": date(2026, 11, 23), "t": moment.replace(tzinfo=None)}


def test_check_logs_in_and_names_the_company(adapter: TrytonAdapter) -> None:
    result = adapter.check()
    assert result.reachable and result.authenticated
    assert "Isthmus Demo GmbH" in result.detail


def test_wrong_password_is_refused_without_echoing_it(tryton: LocalTryton) -> None:
    settings = tryton.system_settings({"party": {"write": {}}})
    settings["password"] = "not-the-password-123"
    adapter = TrytonAdapter("tryton", settings)
    try:
        result = adapter.check()
        assert result.reachable and result.authenticated is False
        assert "not-the-password-123" not in result.detail
        (written,) = adapter.writer().write_batch([WriteRequest("party", {"name": "X"}, key="k@1")])
        assert written.outcome == "permanent" and "refused" in written.error
    finally:
        adapter.close()


def test_ended_session_is_renewed_and_the_call_repeated(adapter: TrytonAdapter, tag: str) -> None:
    adapter.writer().write_batch([party(tag, 1)])
    assert adapter.rpc.logins == 1
    adapter.rpc.call("common.db.logout")  # the server forgets the session, as after expiry
    (written,) = adapter.writer().write_batch([party(tag, 2)])
    assert written.outcome == "ok"
    assert adapter.rpc.logins == 2


def test_new_parties_are_created_in_one_call_with_addresses_and_contacts(adapter: TrytonAdapter, tag: str) -> None:
    adapter.rpc.context  # noqa: B018 - log in and learn the models before counting
    adapter.writer().write_batch([party(tag, 0)])
    calls = count_calls(adapter)
    results = adapter.writer().write_batch([party(tag, n) for n in range(1, 51)])
    assert [r.outcome for r in results] == ["ok"] * 50
    assert calls.count("model.party.party.create") == 1
    ids = [int(r.target_id or 0) for r in results]
    rows = adapter.rpc.model("party.party", "read", ids[:1], ["code", "addresses.city", "contact_mechanisms.value"])
    assert rows[0]["code"] == f"C-{tag}-1"
    assert [a["city"] for a in rows[0]["addresses."]] == ["Berlin"]
    assert [c["value"] for c in rows[0]["contact_mechanisms."]] == [f"buyer1@{tag.lower()}.example"]  # no empty phone


def test_known_party_is_updated_not_duplicated_even_without_the_xref(adapter: TrytonAdapter, tag: str) -> None:
    (created,) = adapter.writer().write_batch([party(tag, 1)])
    renamed = party(tag, 1, name=f"Renamed {tag}")
    renamed.key = f"crm/customer/C-{tag}-1@2"
    (by_key,) = adapter.writer().write_batch([renamed])  # no target_id: found by its code
    assert by_key.outcome == "ok" and by_key.target_id == created.target_id
    moved = party(tag, 1, addresses=[{"city": "Hamburg", "country": {"code": "DE"}}])
    moved.target_id = created.target_id
    (by_xref,) = adapter.writer().write_batch([moved])
    assert by_xref.target_id == created.target_id
    found = adapter.rpc.model("party.party", "search_read", [("code", "=", f"C-{tag}-1")], 0, None, None,
                              ["name", "addresses.city"])
    assert len(found) == 1
    assert [a["city"] for a in found[0]["addresses."]] == ["Hamburg"]


def test_a_refused_record_is_permanent_and_the_rest_of_the_batch_lands(adapter: TrytonAdapter, tag: str) -> None:
    bad_country = party(tag, 2, addresses=[{"city": "Nowhere", "country": {"code": "XX"}}])
    bad_field = party(tag, 3, colour="blue")
    rejected = party(tag, 4, code=f"C-{tag}-1")  # Tryton keeps party codes unique
    results = adapter.writer().write_batch([party(tag, 1), bad_country, bad_field, rejected, party(tag, 5)])
    outcomes = [r.outcome for r in results]
    assert outcomes == ["ok", "permanent", "permanent", "permanent", "ok"]
    assert "no country.country with code='XX'" in results[1].error
    assert "has no field 'colour'" in results[2].error
    assert "UserError" in results[3].error and "code" in results[3].error  # Tryton's reason, sent alone


def test_product_is_created_as_a_salable_variant_found_by_its_code(adapter: TrytonAdapter, tag: str) -> None:
    record = {"code": f"P-{tag}", "name": f"Thing {tag}", "list_price": "12.50", "account_category": {"name": "Goods"}}
    (created,) = adapter.writer().write_batch([WriteRequest("product", record, key=f"p/P-{tag}@1")])
    assert created.outcome == "ok"
    (again,) = adapter.writer().write_batch(
        [WriteRequest("product", {**record, "list_price": "13.00"}, key=f"p/P-{tag}@2")]
    )
    assert again.target_id == created.target_id
    (row,) = adapter.rpc.model("product.product", "read", [int(created.target_id or 0)],
                               ["code", "salable", "sale_uom", "list_price_used"])
    assert row["code"] == f"P-{tag}" and row["salable"] and row["sale_uom"]
    assert row["list_price_used"] == Decimal("13.00")


def test_order_becomes_a_confirmed_sale_that_reserves_stock_and_ships(adapter: TrytonAdapter, tag: str) -> None:
    (customer,) = adapter.writer().write_batch([party(tag, 1)])
    before = _available(adapter, "WIDGET-1")
    (written,) = adapter.writer().write_batch([sale(tag, customer.target_id or "", qty="3")])
    assert written.outcome == "ok", written.error
    (row,) = adapter.rpc.model("sale.sale", "read", [int(written.target_id or 0)],
                               ["state", "shipments", "invoices", "total_amount", "invoice_address"])
    assert row["state"] == "processing"  # confirmed, and processed: shipment and invoice made
    assert row["invoice_address"] and row["total_amount"] == Decimal("71.04")  # 3 × 19.90 + 19 % VAT
    (shipment,) = adapter.rpc.model("stock.shipment.out", "read", row["shipments"], ["state"])
    assert shipment["state"] == "assigned"  # the stock is reserved
    assert _available(adapter, "WIDGET-1") == before - 3


def test_redelivered_order_creates_no_second_sale(adapter: TrytonAdapter, tag: str) -> None:
    (customer,) = adapter.writer().write_batch([party(tag, 1)])
    (first,) = adapter.writer().write_batch([sale(tag, customer.target_id or "")])
    (again,) = adapter.writer().write_batch([sale(tag, customer.target_id or "")])  # the ack was lost
    assert again.outcome == "ok" and again.target_id == first.target_id
    assert adapter.rpc.model("sale.sale", "search_count", [("reference", "=", f"SO-{tag}-1")]) == 1


def test_change_to_a_confirmed_sale_is_refused_with_its_state(adapter: TrytonAdapter, tag: str) -> None:
    (customer,) = adapter.writer().write_batch([party(tag, 1)])
    (first,) = adapter.writer().write_batch([sale(tag, customer.target_id or "")])
    (change,) = adapter.writer().write_batch([sale(tag, customer.target_id or "", target_id=first.target_id, qty="5")])
    assert change.outcome == "permanent"
    assert "is processing in Tryton" in change.error


def test_sale_for_an_unknown_product_is_refused_and_others_go_on(adapter: TrytonAdapter, tag: str) -> None:
    (customer,) = adapter.writer().write_batch([party(tag, 1)])
    unknown = sale(tag, customer.target_id or "", n=2)
    unknown.record["lines"][0]["product"] = {"code": "NO-SUCH-SKU"}
    good, bad = adapter.writer().write_batch([sale(tag, customer.target_id or "", n=1), unknown])
    assert good.outcome == "ok"
    assert bad.outcome == "permanent" and "no product.product with code='NO-SUCH-SKU'" in bad.error


def test_parties_are_read_incrementally_by_create_or_write_date(adapter: TrytonAdapter, tag: str) -> None:
    _, watermark = read_all(adapter, "party")
    results = adapter.writer().write_batch([party(tag, 1), party(tag, 2)])
    time.sleep(1.1)  # the server clock has one-second resolution
    records, watermark = read_all(adapter, "party", watermark)
    assert {r.data["code"] for r in records} >= {f"C-{tag}-1", f"C-{tag}-2"}
    first = next(r for r in records if r.data["code"] == f"C-{tag}-1")
    assert first.data["addresses"][0]["country"]["code"] == "DE"
    assert first.record_id == results[0].target_id
    changed = party(tag, 2, name=f"Changed {tag}")
    changed.target_id = results[1].target_id
    adapter.writer().write_batch([changed])
    time.sleep(1.1)
    again, _ = read_all(adapter, "party", watermark)
    # the watermark is inclusive: a record at its very instant is read again, with the same
    # version (so the same idempotency key); only the changed party has a new version
    seen = {(r.record_id, r.version) for r in records}
    new = [r.data["code"] for r in again if (r.record_id, r.version) not in seen]
    assert new == [f"C-{tag}-2"]


def test_shipment_invoice_and_stock_come_back_with_the_order_reference(adapter: TrytonAdapter, tag: str) -> None:
    _, shipments_mark = read_all(adapter, "shipment")
    _, invoices_mark = read_all(adapter, "invoice")
    _, stock_mark = read_all(adapter, "stock")
    (customer,) = adapter.writer().write_batch([party(tag, 1)])
    (written,) = adapter.writer().write_batch([sale(tag, customer.target_id or "", qty="2")])
    (row,) = adapter.rpc.model("sale.sale", "read", [int(written.target_id or 0)], ["invoices"])
    adapter.rpc.model("account.invoice", "post", row["invoices"])
    time.sleep(1.1)
    shipments, _ = read_all(adapter, "shipment", shipments_mark)
    mine = [s for s in shipments if s.data["outgoing_moves"][0]["sale"]["reference"] == f"SO-{tag}-1"]
    assert [s.data["state"] for s in mine] == ["assigned"]
    invoices, _ = read_all(adapter, "invoice", invoices_mark)
    (invoice,) = [i for i in invoices if i.data["sales"][0]["reference"] == f"SO-{tag}-1"]
    assert invoice.data["state"] == "posted"
    assert (invoice.data["untaxed_amount"], invoice.data["tax_amount"], invoice.data["total_amount"]) == (
        "39.80", "7.56", "47.36")
    levels, _ = read_all(adapter, "stock", stock_mark)
    widget = [lv.data for lv in levels if lv.data["code"] == "WIDGET-1"]
    assert widget and Decimal(widget[0]["reserved"]) >= 2
    assert Decimal(widget[0]["available"]) == Decimal(widget[0]["on_hand"]) - Decimal(widget[0]["reserved"])


def _available(adapter: TrytonAdapter, code: str) -> Decimal:
    (product,) = adapter.rpc.model("product.product", "search", [("code", "=", code)], 0, 1, None)
    (row,) = adapter.rpc.model("product.product", "read", [product], ["quantity"],
                               context={"locations": [_warehouse(adapter)], "stock_assign": True})
    return Decimal(str(row["quantity"]))


def _warehouse(adapter: TrytonAdapter) -> int:
    (found,) = adapter.rpc.model("stock.location", "search", [("code", "=", "WH")], 0, 1, None)
    return int(found)


pytestmark = pytest.mark.timeout(300)


def test_archived_customer_becomes_an_inactive_party_that_can_still_change(adapter: TrytonAdapter, tag: str) -> None:
    (created,) = adapter.writer().write_batch([party(tag, 1, active=False)])
    assert created.outcome == "ok", created.error
    renamed = party(tag, 1, name=f"Still archived {tag}", active=False)
    renamed.target_id = created.target_id
    (changed,) = adapter.writer().write_batch([renamed])
    assert changed.outcome == "ok", changed.error
    (row,) = adapter.rpc.model("party.party", "search_read", [("id", "=", int(created.target_id or 0))], 0, None,
                               None, ["name", "active"], context={"active_test": False})
    assert row["name"] == f"Still archived {tag}" and not row["active"]


def test_check_reports_the_tryton_version_and_the_access_each_entity_needs(adapter: TrytonAdapter) -> None:
    import trytond

    result = adapter.check()
    series = ".".join(trytond.__version__.split(".")[:2])
    assert result.extra["version"] == f"Tryton {series}"
    permissions = {(p["entity"], p["access"]): p for p in result.extra["permissions"]}
    assert permissions[("party", "write")]["ok"] is True  # admin may do everything
    assert permissions[("sale", "read")]["ok"] is True
    assert ("shipment", "write") not in permissions  # read-only entity: nothing to ask
    assert result.extra["access"]["sale.line"]["create"] is True


def test_check_names_the_access_rights_a_restricted_user_lacks(
    adapter: TrytonAdapter, tryton: LocalTryton, tag: str
) -> None:
    # a user in no group: Tryton's rules let everyone use parties, and only the Sales group use sales
    login, password = f"intake-{tag.lower()}", f"Pw-{tag}-long-enough-1"
    adapter.rpc.model("res.user", "create", [{"name": f"Clerk {tag}", "login": login, "password": password}])
    entities = {"party": {"read": {}, "write": {"key_field": "code"}}, "sale": {"read": {}, "write": {}}}
    settings = tryton.system_settings(entities)
    settings.update(username=login, password=password)
    restricted = TrytonAdapter("tryton", settings)
    try:
        result = restricted.check()
    finally:
        restricted.close()
    assert result.reachable and result.authenticated
    permissions = {(p["entity"], p["access"]): p for p in result.extra["permissions"]}
    assert permissions[("party", "write")]["ok"] is True
    assert permissions[("sale", "read")]["ok"] is False
    write = permissions[("sale", "write")]
    assert write["ok"] is False
    assert "create sale.sale" in write["detail"] and "write sale.line" in write["detail"] and login in write["detail"]


def test_a_source_with_start_now_publishes_only_changes_made_after_it_started(
    tryton: LocalTryton, tag: str, tmp_path: Any
) -> None:
    from middleware.broker import open_broker
    from middleware.config import SourceConfig
    from middleware.message import Envelope
    from middleware.runtime.poller import SourcePoller
    from middleware.store import open_store

    settings = tryton.system_settings({"party": {"read": {"start": "now"}, "write": {"key_field": "code"}}})
    settings["settle_s"] = 0
    erp = TrytonAdapter("tryton", settings)
    broker = open_broker(f"embedded:///{tmp_path}/broker.db")
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    broker.setup_route("parties", ["party.changed"])
    source = SourceConfig(name="tryton_parties", system="tryton", entity="party", emits="party.changed")
    poller = SourcePoller(source, erp.reader(), broker, store, capabilities=erp.capabilities)
    try:
        (old,) = erp.writer().write_batch([party(tag, 1)])  # exists before the source starts
        assert old.outcome == "ok"
        time.sleep(1.1)  # Tryton's change times have one-second steps on SQLite
        assert poller.poll_once() == 0
        started = store.get_watermark("source:tryton_parties")
        assert started is not None and datetime.fromisoformat(started) > datetime(2026, 1, 1, tzinfo=UTC)
        (new,) = erp.writer().write_batch([party(tag, 2)])
        assert new.outcome == "ok"
        published: list[str] = []
        deadline = time.monotonic() + 10
        while not published and time.monotonic() < deadline:
            poller.poll_once()
            deliveries = broker.fetch("parties", 100, 0.2)
            broker.ack(deliveries)
            published += [Envelope.from_bytes(d.body).payload["code"] for d in deliveries]
        assert published == [f"C-{tag}-2"]  # the party made before the start is not published
        everything = {r.data["code"] for r in read_all(erp, "party")[0]}
        assert f"C-{tag}-1" in everything  # a read from no watermark (reconciliation) still sees it
    finally:
        erp.close()
        broker.close()
        store.close()
