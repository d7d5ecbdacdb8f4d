"""SOAP adapter, reading: watermarks passed as `since`, paging by limit, plain records, faults."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from legacy_erp import LegacyErp
from soap_settings import CUSTOMER_READ, AdapterFactory

from middleware.adapter import ReadPage
from middleware.errors import PermanentError, TransientError
from middleware.message import Envelope, Source

T0 = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)


def read(adapter: Any, entity: str = "customer", watermark: str | None = None) -> list[ReadPage]:
    return list(adapter.reader().read_changes(entity, watermark))


def ids(pages: list[ReadPage]) -> list[str]:
    return [record.record_id for page in pages for record in page.records]


def seed(erp: LegacyErp, count: int, step: timedelta = timedelta(minutes=1)) -> None:
    for i in range(count):
        erp.put_customer(f"K9{i:04d}", f"Customer {i}", T0 + step * i, credit_limit=Decimal("1000.50"))


def test_first_read_returns_every_customer_and_a_utc_watermark(legacy_erp, soap_adapter: AdapterFactory) -> None:
    seed(legacy_erp, 3)
    pages = read(soap_adapter(legacy_erp))
    assert ids(pages) == ["K90000", "K90001", "K90002"]
    assert pages[-1].watermark == "2026-01-15T10:02:00+00:00"
    assert legacy_erp.since_received == [datetime(1970, 1, 1, tzinfo=UTC)]  # initial_since


def test_incremental_read_passes_the_watermark_and_gets_only_later_changes(
    legacy_erp, soap_adapter: AdapterFactory
) -> None:
    seed(legacy_erp, 5)
    adapter = soap_adapter(legacy_erp)
    first = read(adapter)
    watermark = first[-1].watermark
    assert read(adapter, watermark=watermark) and ids(read(adapter, watermark=watermark)) == ["K90004"]  # inclusive
    legacy_erp.put_customer("K90001", "Changed", T0 + timedelta(hours=1))
    later = read(adapter, watermark=watermark)
    assert ids(later) == ["K90004", "K90001"]
    assert later[-1].watermark == "2026-01-15T11:00:00+00:00"
    assert legacy_erp.since_received[-1] == T0 + timedelta(minutes=4)


def test_records_are_plain_json_ready_data(legacy_erp, soap_adapter: AdapterFactory) -> None:
    legacy_erp.put_customer(
        "K1",
        "Acme",
        T0,
        credit_limit=Decimal("19.90"),
        blocked=False,
        address={"street": "Hauptstr. 1", "postcode": "10115", "city": "Berlin", "country": "DE"},
    )
    (page,) = read(soap_adapter(legacy_erp))
    (record,) = page.records
    assert record.version == "1" and record.occurred_at == T0
    data = record.data
    assert data["credit_limit"] == "19.90"  # exact, never the float 19.9
    assert data["updated_at"] == "2026-01-15T10:00:00+00:00"
    assert data["blocked"] is False and data["address"]["city"] == "Berlin" and data["email"] is None
    json.dumps(data)
    envelope = Envelope(
        type="customer.upserted",
        source=Source(system="legacy_erp", entity="customer", record_id=record.record_id),
        occurred_at=record.occurred_at,
        payload=data,
    )
    assert Envelope.from_bytes(envelope.to_bytes()).payload == data


def test_paging_by_limit_resumes_from_the_highest_updated_value_without_loss_or_repeats(
    legacy_erp, soap_adapter: AdapterFactory
) -> None:
    seed(legacy_erp, 7)
    # two records share the instant at the first page boundary
    legacy_erp.put_customer("K90003", "Customer 3", T0 + timedelta(minutes=2))
    adapter = soap_adapter(
        legacy_erp,
        entities={"customer": {"read": {**CUSTOMER_READ, "limit_argument": "max_records", "limit": 3}}},
    )
    pages = read(adapter)
    assert sorted(ids(pages)) == [f"K9{i:04d}" for i in range(7)]
    assert len(ids(pages)) == 7  # each once
    assert len(pages) >= 3
    assert pages[-1].watermark == "2026-01-15T10:06:00+00:00"
    # each page's watermark is safe to persist: never beyond a record not yet yielded
    yielded: set[str] = set()
    for page in pages:
        yielded.update(r.record_id for r in page.records)
        moment = datetime.fromisoformat(page.watermark or "")
        unseen = {c["customer_id"] for c in legacy_erp.customers.values() if c["updated_at"] < moment}
        assert unseen <= yielded


def test_a_full_page_sharing_one_moment_fails_with_a_hint(legacy_erp, soap_adapter: AdapterFactory) -> None:
    for i in range(4):
        legacy_erp.put_customer(f"K{i}", f"C{i}", T0)
    adapter = soap_adapter(
        legacy_erp,
        entities={"customer": {"read": {**CUSTOMER_READ, "limit_argument": "max_records", "limit": 2}}},
    )
    with pytest.raises(PermanentError, match=r"cannot page past them .* raise .*read\.limit"):
        read(adapter)


def test_since_is_formatted_in_the_naive_timezone_with_a_pattern(legacy_erp, soap_adapter: AdapterFactory) -> None:
    adapter = soap_adapter(
        legacy_erp,
        naive_timezone="Europe/Berlin",
        entities={"customer": {"read": {**CUSTOMER_READ, "since_format": "%Y-%m-%dT%H:%M:%S"}}},
    )
    read(adapter, watermark="2026-01-15T10:00:00+00:00")
    assert legacy_erp.since_received == [datetime(2026, 1, 15, 11, 0)]  # Berlin wall time, no offset


def test_timestamps_without_offset_are_read_in_the_naive_timezone(legacy_erp, soap_adapter: AdapterFactory) -> None:
    legacy_erp.put_customer("K1", "Acme", datetime(2026, 7, 1, 12, 0))  # the ERP writes local time, no offset
    (page,) = read(soap_adapter(legacy_erp, naive_timezone="Europe/Berlin"))
    assert page.records[0].occurred_at == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    assert page.watermark == "2026-07-01T10:00:00+00:00"


def test_single_record_answer_with_constant_arguments_filtered_by_watermark(
    legacy_erp, soap_adapter: AdapterFactory
) -> None:
    legacy_erp.put_stock("SKU-1", "WH-EAST", Decimal("12.500"), T0)
    adapter = soap_adapter(legacy_erp)
    (page,) = read(adapter, "stock")
    (record,) = page.records
    assert record.record_id == "SKU-1" and record.data["quantity"] == "12.500"
    assert record.version == "2026-01-15T10:00:00+00:00"  # no version_field: the updated value
    (later,) = read(adapter, "stock", watermark="2026-01-15T10:00:01+00:00")
    assert later.records == []  # no since_argument: older records are dropped here


def test_client_fault_on_read_is_permanent(legacy_erp, soap_adapter: AdapterFactory) -> None:
    with pytest.raises(PermanentError, match="SOAP fault Client.NotFound: unknown article 'SKU-1'"):
        read(soap_adapter(legacy_erp), "stock")


def test_read_timeout_is_transient(legacy_erp, soap_adapter: AdapterFactory) -> None:
    legacy_erp.hang_s = 5
    with pytest.raises(TransientError, match=r"timed out \(timeout 0.5s\)"):
        read(soap_adapter(legacy_erp, timeout_s=0.5))


def test_missing_id_field_names_the_fields_found(legacy_erp, soap_adapter: AdapterFactory) -> None:
    seed(legacy_erp, 1)
    adapter = soap_adapter(legacy_erp, entities={"customer": {"read": {**CUSTOMER_READ, "id_field": "cust_no"}}})
    with pytest.raises(PermanentError, match=r"no id field 'cust_no'; its fields: customer_id, external_ref"):
        read(adapter)


def test_unknown_operation_is_permanent_with_the_nearest_name(legacy_erp, soap_adapter: AdapterFactory) -> None:
    adapter = soap_adapter(
        legacy_erp, entities={"customer": {"read": {**CUSTOMER_READ, "operation": "ListCustomerChangedSince"}}}
    )
    with pytest.raises(PermanentError, match="did you mean 'ListCustomersChangedSince'"):
        read(adapter)


def test_reading_an_entity_without_read_settings_is_a_config_error(legacy_erp, soap_adapter: AdapterFactory) -> None:
    from middleware.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot read entity 'order'"):
        read(soap_adapter(legacy_erp), "order")
