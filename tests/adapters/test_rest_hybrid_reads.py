"""REST reads for CRMs without a changed-since filter, against the real sample CRM over HTTP.

Several record lists in one answer, a server filter that knows days only, and snapshot
reads that stream page by page (one page ahead, never the whole list) and can be limited
to a periodic reconciliation pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.rest import RestAdapter, RestSystemConfig
from deploy.demo.sample_crm import SampleCrm
from middleware.adapter import ReadPage


@pytest.fixture
def crm() -> Iterator[SampleCrm]:
    server = SampleCrm().start()
    server.seed(customers=40, orders_per_customer=0, with_bad_records=False)
    yield server
    server.stop()


def adapter(url: str, read: dict[str, Any]) -> RestAdapter:
    return RestAdapter("crm", {"base_url": url, "entities": {"account": {"read": read}}})


def read(rest: RestAdapter, watermark: str | None = None) -> list[ReadPage]:
    return list(rest.reader().read_changes("account", watermark))


def ids(pages: list[ReadPage]) -> list[str]:
    return [r.record_id for page in pages for r in page.records]


def test_records_come_from_every_list_of_one_answer(crm: SampleCrm) -> None:
    rest = adapter(
        crm.url,
        {
            "path": "/api/directory",
            "records_path": ["active", "archived"],
            "id_field": "customer_no",
            "incremental": "snapshot",
            "pagination": {"type": "page", "page_size": 7},
        },
    )
    pages = read(rest)
    assert sorted(ids(pages)) == sorted(crm.customers.rows)  # archived ones (every 10th) too, each once
    archived = {k for k, row in crm.customers.rows.items() if row["status"] == "archived"}
    assert archived and archived <= set(ids(pages))


def test_a_missing_list_is_empty_but_a_list_of_the_wrong_kind_fails(crm: SampleCrm) -> None:
    spec = {"path": "/api/directory", "id_field": "customer_no", "incremental": "snapshot"}
    assert len(ids(read(adapter(crm.url, {**spec, "records_path": ["active", "prospects"]})))) == 36
    with pytest.raises(Exception, match="records_path 'page'"):
        read(adapter(crm.url, {**spec, "records_path": ["active", "page"]}))
    with pytest.raises(ValidationError, match="empty list"):
        RestSystemConfig.model_validate(
            {"base_url": crm.url, "entities": {"a": {"read": {**spec, "records_path": []}}}}
        )


def test_a_day_filter_is_sent_as_the_day_and_the_watermark_stays_exact() -> None:
    crm = SampleCrm(day_filter=True).start()  # updated_since=YYYY-MM-DD only, in CRM time (+08:00)
    try:
        crm.seed(customers=30, orders_per_customer=0, with_bad_records=False)
        spec = {
            "path": "/api/customers",
            "records_path": "data",
            "id_field": "customer_no",
            "updated_field": "updated_at",
            "since_param": "updated_since",
            "since_format": "date",
            "since_timezone": "Asia/Shanghai",
            "pagination": {"type": "page", "page_size": 8},
        }
        rest = adapter(crm.url, spec)
        everything = read(rest)
        assert len(ids(everything)) == 30
        rows = sorted(crm.customers.rows.values(), key=lambda r: r["updated_at"])
        middle = datetime.fromisoformat(rows[20]["updated_at"])
        watermark = middle.astimezone().isoformat()
        since = read(rest, watermark)
        # the CRM answered the whole day (it would answer 400 to a time); older records were dropped here
        assert ids(since) == [r["customer_no"] for r in rows[20:]]
        newest = datetime.fromisoformat(rows[-1]["updated_at"])
        assert datetime.fromisoformat(since[-1].watermark or "") == newest  # exact, not the day
        assert datetime.fromisoformat(everything[-1].watermark or "") == newest
    finally:
        crm.stop()


def test_day_filter_settings_are_checked_at_load() -> None:
    base = {"path": "/x", "id_field": "id", "updated_field": "u", "since_param": "since"}
    with pytest.raises(ValidationError, match="unknown time zone"):
        RestSystemConfig.model_validate(
            {
                "base_url": "http://h",
                "entities": {"a": {"read": {**base, "since_format": "date", "since_timezone": "Mars/Base"}}},
            }
        )
    with pytest.raises(ValidationError, match="since_timezone goes with since_format: date"):
        RestSystemConfig.model_validate(
            {"base_url": "http://h", "entities": {"a": {"read": {**base, "since_timezone": "UTC"}}}}
        )


SNAPSHOT = {
    "path": "/api/accounts",
    "records_path": "data",
    "id_field": "customer_no",
    "incremental": "snapshot",
    "pagination": {"type": "page", "page_size": 4},
}


def test_a_snapshot_read_streams_at_most_one_page_ahead(crm: SampleCrm) -> None:
    rest = adapter(crm.url, SNAPSHOT)
    pages = rest.reader().read_changes("account", None)
    first = next(pages)
    assert len(first.records) == 4
    time.sleep(0.5)  # the read-ahead thread has had every chance to run on
    asked = crm.api_reads["/api/accounts"]
    assert asked <= 3, f"{asked} of 10 pages fetched while the caller held the first: the list is being buffered"
    rest_of_it = list(pages)
    assert crm.api_reads["/api/accounts"] == 10  # 10 pages of 4, the last flagged has_more: false
    assert len([r for p in rest_of_it for r in p.records]) == 36


def test_a_snapshot_pass_runs_at_most_every_snapshot_every(crm: SampleCrm) -> None:
    rest = adapter(crm.url, {**SNAPSHOT, "snapshot_every": "1h"})
    reader = rest.reader()
    now = [1_000_000.0]
    reader.clock = lambda: now[0]
    first = read(rest)
    watermark = first[-1].watermark
    assert len(ids(first)) == 40 and watermark is not None
    crm.upsert_customer({"customer_no": "C-1005", "company": "Changed Between Passes"})
    asked = crm.api_reads["/api/accounts"]

    now[0] += 1800  # half an hour later: webhooks carry the changes, the poll sends nothing
    quiet = read(rest, watermark)
    assert ids(quiet) == [] and quiet[-1].watermark == watermark
    assert crm.api_reads["/api/accounts"] == asked

    now[0] += 1801  # the hour is over: one reconciliation pass finds what changed
    passed = read(rest, watermark)
    assert ids(passed) == ["C-1005"]
    assert passed[-1].watermark != watermark and crm.api_reads["/api/accounts"] > asked
    assert ids(read(rest, passed[-1].watermark)) == []  # and the next poll is quiet again
