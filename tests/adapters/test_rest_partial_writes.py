"""REST writes that carry part of a record: lists merged by key, and locked records classified.

A real loopback HTTP server holds records the way many CRMs do: PATCH merges top-level fields but
*replaces* a list it is given. A write that carries only the billing address must still leave
the shipping address in place: the writer reads the record (`read.item_path`) and merges the
list by the mapping's merge key before it sends it.
"""

from __future__ import annotations

import json
from typing import Any

from http_stub import Answer, Seen

from adapters.rest import RestAdapter, RestSystemConfig
from middleware.adapter import WriteRequest, merge_by_key

UPSERT = {"mode": "upsert", "method": "PATCH", "path": "/things/{key}", "key_field": "no", "id_path": "no"}
READ = {"path": "/things", "id_field": "no", "updated_field": "updated_at", "item_path": "/things/{id}"}


def adapter_for(url: str, write: dict[str, Any], read: dict[str, Any] | None = None) -> RestAdapter:
    entity: dict[str, Any] = {"write": write}
    if read is not None:
        entity["read"] = read
    config = {"base_url": url, "timeout_s": 2, "entities": {"thing": entity}}
    return RestAdapter("dst", RestSystemConfig.model_validate(config))


class Things:
    """PATCH merges the top level and replaces lists, like the sample CRM's `billing`."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def __call__(self, seen: Seen) -> Answer:
        key = seen.path.rsplit("/", 1)[-1]
        if seen.method == "GET":
            found = self.records.get(key)
            return Answer(200, found) if found is not None else Answer(404, {"error": "no such thing"})
        record = self.records.setdefault(key, {"no": key})
        record.update(json.loads(seen.body))
        return Answer(200, record)


def test_a_write_with_only_the_billing_address_keeps_the_shipping_one(stub_server) -> None:
    things = Things()
    things.records["T-1"] = {
        "no": "T-1",
        "name": "Acme",
        "addresses": [{"kind": "billing", "city": "Berlin"}, {"kind": "shipping", "city": "Potsdam"}],
    }
    server = stub_server(things)
    writer = adapter_for(server.url, UPSERT, READ).writer()
    request = WriteRequest(
        "thing",
        {"no": "T-1", "addresses": [{"kind": "billing", "city": "Hamburg"}]},
        key="crm:thing:T-1@2",
        merge={"addresses": "kind"},
    )
    (result,) = writer.write_batch([request])
    assert result.outcome == "ok", result.error
    assert things.records["T-1"]["addresses"] == [
        {"kind": "billing", "city": "Hamburg"},
        {"kind": "shipping", "city": "Potsdam"},
    ]
    assert things.records["T-1"]["name"] == "Acme"
    assert [s.method for s in server.seen] == ["GET", "PATCH"]


def test_a_new_record_is_written_as_it_is(stub_server) -> None:
    things = Things()
    server = stub_server(things)
    writer = adapter_for(server.url, UPSERT, READ).writer()
    request = WriteRequest(
        "thing", {"no": "T-2", "addresses": [{"kind": "billing"}]}, key="crm:thing:T-2@1", merge={"addresses": "kind"}
    )
    (result,) = writer.write_batch([request])
    assert result.outcome == "ok"
    assert things.records["T-2"]["addresses"] == [{"kind": "billing"}]


def test_a_configured_locked_answer_is_classified_as_locked(stub_server) -> None:
    server = stub_server(lambda seen: Answer(409, {"error": "record not editable in state closed"}))
    write = {**UPSERT, "locked": {"status": [409, 423], "body_contains": "not editable"}}
    (result,) = adapter_for(server.url, write).writer().write_batch(
        [WriteRequest("thing", {"no": "T-3"}, key="crm:thing:T-3@1")]
    )
    assert (result.outcome, result.locked, result.status) == ("permanent", True, 409)


def test_a_conflict_that_is_not_the_locked_answer_stays_a_plain_permanent_failure(stub_server) -> None:
    server = stub_server(lambda seen: Answer(409, {"error": "duplicate e-mail"}))
    write = {**UPSERT, "locked": {"status": [409], "body_contains": "not editable"}}
    (result,) = adapter_for(server.url, write).writer().write_batch(
        [WriteRequest("thing", {"no": "T-4"}, key="crm:thing:T-4@1")]
    )
    assert (result.outcome, result.locked) == ("permanent", False)


def test_merge_by_key_replaces_matching_items_appends_new_ones_and_keeps_the_rest() -> None:
    current = [{"kind": "billing", "city": "Berlin", "zip": "10115"}, {"kind": "shipping", "city": "Potsdam"}]
    written = [{"kind": "billing", "city": "Hamburg"}, {"kind": "other", "city": "Bonn"}]
    assert merge_by_key(current, written, "kind") == [
        {"kind": "billing", "city": "Hamburg", "zip": "10115"},
        {"kind": "shipping", "city": "Potsdam"},
        {"kind": "other", "city": "Bonn"},
    ]
    assert merge_by_key(None, written, "kind") == written


def test_skip_unchanged_sends_nothing_when_the_record_holds_the_write(stub_server) -> None:
    things = Things()
    things.records["T-5"] = {"no": "T-5", "name": "Acme", "limit": 19.9, "addresses": [{"kind": "billing"}]}
    server = stub_server(things)
    writer = adapter_for(server.url, {**UPSERT, "skip_unchanged": True}, READ).writer()
    same = WriteRequest("thing", {"no": "T-5", "name": "Acme", "limit": "19.90"}, key="crm:thing:T-5@2")
    (result,) = writer.write_batch([same])
    assert (result.outcome, result.unchanged, result.target_id) == ("ok", True, "T-5")
    assert [s.method for s in server.seen] == ["GET"]
    changed = WriteRequest("thing", {"no": "T-5", "name": "Acme AG"}, key="crm:thing:T-5@3")
    (result,) = writer.write_batch([changed])
    assert (result.outcome, result.unchanged) == ("ok", False)
    assert things.records["T-5"]["name"] == "Acme AG"


def test_skip_unchanged_needs_an_item_path_to_read_the_record() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as raised:
        adapter_for("http://127.0.0.1:1", {**UPSERT, "skip_unchanged": True})
    assert "read.item_path" in str(raised.value)
