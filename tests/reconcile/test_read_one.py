"""Reading one record by id: REST by `item_path` or a filtered full read, and the fallback for any reader."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.rest import RestAdapter
from deploy.demo.sample_crm import SampleCrm
from middleware.adapter import ReadPage, SourceRecord, read_record, stored_form

TOKEN = "read-one-token"


@pytest.fixture
def crm() -> Iterator[SampleCrm]:
    service = SampleCrm(token=TOKEN).start()
    service.seed(customers=7, orders_per_customer=0, with_bad_records=False)
    yield service
    service.stop()


def crm_adapter(crm: SampleCrm, **read: Any) -> RestAdapter:
    spec = {
        "path": "/api/customers",
        "records_path": "data",
        "id_field": "customer_no",
        "version_field": "version",
        "updated_field": "updated_at",
        "since_param": "updated_since",
        "pagination": {"type": "page", "page_size": 3, "start": 1},
        **read,
    }
    return RestAdapter(
        "crm",
        {"base_url": crm.url, "auth": {"type": "bearer", "token": TOKEN}, "entities": {"customer": {"read": spec}}},
    )


@pytest.mark.parametrize("read", [{"item_path": "/api/customers/{id}"}, {}], ids=["item_path", "full_read"])
def test_rest_reads_one_record_like_a_list_read_and_none_when_absent(crm: SampleCrm, read: dict[str, Any]) -> None:
    adapter = crm_adapter(crm, **read)
    try:
        listed = {r.record_id: r for page in adapter.reader().read_changes("customer", None) for r in page.records}
        one = adapter.reader().read_one("customer", "C-1006")  # on the second page of a list read
        assert one == listed["C-1006"]
        assert adapter.reader().read_one("customer", "C-4040") is None
    finally:
        adapter.close()


class ListOnlyReader:
    """A reader with only the required method, as a third-party adapter may have."""

    def __init__(self) -> None:
        moment = datetime(2026, 11, 24, tzinfo=UTC)
        self.pages = [
            [SourceRecord("1", "v1", moment, {"n": 1}), SourceRecord("2", "v1", moment, {"n": 2})],
            [SourceRecord("2", "v2", moment, {"n": 22})],
        ]

    def read_changes(self, entity: str, watermark: str | None) -> Iterator[ReadPage]:
        for records in self.pages:
            yield ReadPage(records, None)


class ListOnlyAdapter:
    """An adapter that declares only `read`: no read_one, no stored form."""

    capabilities = frozenset({"read"})

    def __init__(self) -> None:
        self._reader = ListOnlyReader()

    def reader(self) -> ListOnlyReader:
        return self._reader


def test_a_reader_without_read_one_is_read_whole_and_filtered() -> None:
    reader: Any = ListOnlyAdapter()
    found = read_record(reader, "thing", "2")
    assert found is not None and found.version == "v2"  # the last one read wins, as for a poller
    assert read_record(reader, "thing", "3") is None
    assert stored_form(reader, "thing", {"a": 1}) == {"a": 1}
