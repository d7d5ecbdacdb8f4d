"""REST adapter, reading: Link-header pagination, per-endpoint record paths, the three incremental modes.

Servers are real loopback HTTP servers (`StubServer`) scripted per test. The snapshot mode
is also run through the real `SourcePoller`, SQLite state store and embedded broker, since
where its hashes live (the source's watermark in the store) is part of what it promises.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from http_stub import Answer, Seen
from pydantic import ValidationError

from adapters.rest import RestAdapter, RestSystemConfig
from middleware.broker import open_broker
from middleware.config import SourceConfig
from middleware.errors import PermanentError, TransientError
from middleware.message import Envelope
from middleware.runtime.poller import SourcePoller
from middleware.store import open_store

START = datetime(2026, 3, 1, tzinfo=UTC)
ROWS = [{"id": i, "name": f"row {i}", "updated": (START + timedelta(minutes=i)).isoformat()} for i in range(1, 8)]


def rest(url: str, entities: dict[str, Any]) -> RestAdapter:
    return RestAdapter("src", {"base_url": url, "timeout_s": 2, "entities": entities})


def pages(adapter: RestAdapter, entity: str = "thing", watermark: str | None = None) -> list[Any]:
    return list(adapter.reader().read_changes(entity, watermark))


def ids(read: list[Any]) -> list[str]:
    return [r.record_id for page in read for r in page.records]


# ----- Link header pagination -------------------------------------------------------------


def link_paged(size: int, absolute: bool) -> Any:
    def respond(seen: Seen) -> Answer:
        page = int(seen.query.get("page", "1"))
        rows = ROWS[(page - 1) * size : page * size]
        headers = {}
        if page * size < len(ROWS):
            target = f"/things?page={page + 1}&per_page={size}"
            if absolute:
                target = f"http://127.0.0.1:{seen.headers['host'].rpartition(':')[2]}{target}"
            headers["Link"] = f'<{target}>; rel="next", </things?page=1&per_page={size}>; rel="first"'
        return Answer(body=rows, headers=headers)

    return respond


@pytest.mark.parametrize("absolute", [False, True])
def test_link_pagination_follows_rel_next_until_there_is_none(stub_server, absolute: bool) -> None:
    server = stub_server(link_paged(3, absolute))
    read = {"path": "/things", "id_field": "id", "updated_field": "updated", "params": {"sort": "updated"}}
    read["pagination"] = {"type": "link", "size_param": "per_page", "page_size": 3}
    result = pages(rest(server.url, {"thing": {"read": read}}))
    assert ids(result) == [str(r["id"]) for r in ROWS]
    assert len(server.seen) == 3
    assert server.seen[0].query == {"sort": "updated", "per_page": "3"}  # the first request carries ours
    assert server.seen[1].query == {"page": "2", "per_page": "3"}  # the next ones are the server's links
    assert result[-1].watermark == (START + timedelta(minutes=7)).isoformat()


def test_link_pagination_refuses_a_next_link_to_another_origin(stub_server) -> None:
    server = stub_server(lambda seen: Answer(body=ROWS[:1], headers={"Link": '<http://evil.example/x>; rel="next"'}))
    read = {"path": "/things", "id_field": "id", "updated_field": "updated", "pagination": {"type": "link"}}
    with pytest.raises(PermanentError, match="another origin"):
        pages(rest(server.url, {"thing": {"read": read}}))
    assert len(server.seen) == 1


def test_link_pagination_with_a_server_side_since_filter_sends_it_on_the_first_request(stub_server) -> None:
    server = stub_server(link_paged(4, absolute=False))
    read = {"path": "/things", "id_field": "id", "updated_field": "updated", "since_param": "updated_since"}
    read["pagination"] = {"type": "link"}
    pages(rest(server.url, {"thing": {"read": read}}), watermark="2026-03-01T02:00:00+02:00")
    assert server.seen[0].query == {"updated_since": "2026-03-01T00:00:00+00:00"}


# ----- irregular envelopes, one per endpoint ------------------------------------------------


def test_each_endpoint_finds_its_records_at_its_own_path(stub_server) -> None:
    def respond(seen: Seen) -> Answer:
        if seen.path == "/contacts":
            return Answer(body={"data": {"items": ROWS[:2], "meta": {"count": 2}}})
        return Answer(body={"response": {"result": [{"records": ROWS[2:4]}]}})

    server = stub_server(respond)
    base = {"id_field": "id", "updated_field": "updated"}
    adapter = rest(
        server.url,
        {
            "contact": {"read": {"path": "/contacts", "records_path": "data.items", **base}},
            "invoice": {"read": {"path": "/invoices", "records_path": "response.result.0.records", **base}},
        },
    )
    assert ids(pages(adapter, "contact")) == ["1", "2"]
    assert ids(pages(adapter, "invoice")) == ["3", "4"]


# ----- incremental: server filter, client filter --------------------------------------------


def test_server_filter_mode_asks_the_api_for_changes_since_the_watermark(stub_server) -> None:
    server = stub_server(lambda seen: Answer(body=[r for r in ROWS if r["updated"] >= seen.query["changed_after"]]))
    read = {"path": "/things", "id_field": "id", "updated_field": "updated"}
    read |= {"incremental": "server_filter", "since_param": "changed_after"}
    result = pages(rest(server.url, {"thing": {"read": read}}), watermark=ROWS[4]["updated"])
    assert ids(result) == ["5", "6", "7"]
    assert server.seen[0].query["changed_after"] == ROWS[4]["updated"]


def test_client_filter_mode_reads_everything_and_keeps_changes_since_the_watermark(stub_server) -> None:
    server = stub_server(lambda seen: Answer(body={"rows": list(reversed(ROWS))}))  # no filter, any order
    read = {"path": "/things", "records_path": "rows", "id_field": "id", "updated_field": "updated"}
    adapter = rest(server.url, {"thing": {"read": {**read, "incremental": "client_filter"}}})
    result = pages(adapter, watermark=ROWS[4]["updated"])
    assert sorted(ids(result)) == ["5", "6", "7"]  # >= the watermark: the change at its instant is kept
    assert result[-1].watermark == ROWS[6]["updated"]
    assert "updated_since" not in server.seen[0].query and server.seen[0].query == {}


@pytest.mark.parametrize(
    ("read", "message"),
    [
        ({"incremental": "server_filter"}, "needs 'since_param'"),
        ({"incremental": "client_filter", "since_param": "since"}, "sends no since_param"),
        ({"incremental": "snapshot", "since_param": "since"}, "sends no since_param"),
        ({"updated_field": None}, "needs 'updated_field'"),
        ({"hash_exclude": ["fetched_at"]}, "applies to incremental 'snapshot' only"),
        ({"pagination": {"type": "link", "size_param": "per_page"}}, "both size_param and page_size"),
    ],
)
def test_incremental_and_pagination_mistakes_fail_at_load(read: dict[str, Any], message: str) -> None:
    spec = {"path": "/things", "id_field": "id", "updated_field": "updated", **read}
    with pytest.raises(ValidationError, match=message):
        RestSystemConfig.model_validate({"base_url": "http://x", "entities": {"thing": {"read": spec}}})


# ----- incremental: snapshot diff by content hash ---------------------------------------------


class Catalogue:
    """A list endpoint with neither an updated filter nor an updated time: offset-paged, 3 a page."""

    def __init__(self) -> None:
        self.items = {f"P-{i}": {"sku": f"P-{i}", "name": f"Product {i}", "price": "9.90"} for i in range(1, 8)}
        self.rendered_at = 0

    def respond(self, seen: Seen) -> Answer:
        offset, limit = int(seen.query["offset"]), int(seen.query["limit"])
        self.rendered_at += 1  # changes on every answer: left out of the hash by hash_exclude
        rows = [
            {**item, "rendered_at": self.rendered_at} for item in list(self.items.values())[offset : offset + limit]
        ]
        return Answer(body={"catalogue": {"entries": rows}})


SNAPSHOT_READ = {
    "path": "/catalogue",
    "records_path": "catalogue.entries",
    "id_field": "sku",
    "incremental": "snapshot",
    "hash_exclude": ["rendered_at"],
    "pagination": {"type": "offset", "limit": 3},
}


def test_snapshot_emits_everything_once_then_only_the_record_whose_content_changed(stub_server) -> None:
    catalogue = Catalogue()
    server = stub_server(catalogue.respond)
    adapter = rest(server.url, {"product": {"read": SNAPSHOT_READ}})
    first = pages(adapter, "product")
    assert sorted(ids(first)) == sorted(catalogue.items)
    assert all(page.watermark is None for page in first[:-1])  # hashes only after the last page
    watermark = first[-1].watermark
    assert first[-1].records == [] and watermark is not None and watermark.startswith("snapshot:v1:")

    again = pages(adapter, "product", watermark)
    assert ids(again) == [] and again[-1].watermark == watermark  # unchanged: nothing new to store

    catalogue.items["P-5"]["price"] = "11.50"
    changed = pages(adapter, "product", watermark)
    (record,) = [r for page in changed for r in page.records]
    assert record.record_id == "P-5" and record.data["price"] == "11.50"
    old_version = next(r.version for page in first for r in page.records if r.record_id == "P-5")
    assert record.version != old_version  # a new content hash: a new idempotency key downstream
    assert changed[-1].watermark != watermark


def test_snapshot_read_that_fails_half_way_keeps_the_previous_hashes(stub_server) -> None:
    catalogue = Catalogue()
    server = stub_server(catalogue.respond)
    adapter = rest(server.url, {"product": {"read": SNAPSHOT_READ}})
    watermark = pages(adapter, "product")[-1].watermark
    catalogue.items["P-1"]["name"] = "Renamed"
    server.respond = lambda seen: catalogue.respond(seen) if seen.query["offset"] == "0" else Answer(503, {})
    reader = adapter.reader().read_changes("product", watermark)
    first_page = next(reader)
    assert [r.record_id for r in first_page.records] == ["P-1"] and first_page.watermark is None
    with pytest.raises(TransientError, match="503"):
        next(reader)  # no watermark was handed out: the poller still holds the previous hashes
    server.respond = catalogue.respond
    retried = pages(adapter, "product", watermark)
    (again,) = [r for page in retried for r in page.records]
    assert (again.record_id, again.version) == ("P-1", first_page.records[0].version)  # same idempotency key


def test_snapshot_changes_survive_a_restart_through_the_poller_and_the_state_store(stub_server, tmp_path: Path) -> None:
    catalogue = Catalogue()
    server = stub_server(catalogue.respond)
    broker = open_broker(f"embedded:///{tmp_path / 'broker.db'}")
    broker.setup_route("products", ["product.upserted"])
    source = SourceConfig(name="catalogue", system="shop", entity="product", emits="product.upserted")

    def poll_once() -> list[Envelope]:
        store = open_store(f"sqlite:///{tmp_path / 'state.db'}")  # a fresh process's view of the state
        adapter = RestAdapter("shop", {"base_url": server.url, "entities": {"product": {"read": SNAPSHOT_READ}}})
        try:
            SourcePoller(source, adapter.reader(), broker, store).poll_once()
        finally:
            adapter.close()
            store.close()
        deliveries = broker.fetch("products", 100, 0.2)
        broker.ack(deliveries)
        return [Envelope.from_bytes(d.body) for d in deliveries]

    try:
        assert len(poll_once()) == 7
        assert poll_once() == []  # the hashes were persisted: a restart re-emits nothing
        catalogue.items["P-3"]["name"] = "Product 3, new label"
        (changed,) = poll_once()
        assert changed.source.record_id == "P-3" and changed.payload["name"] == "Product 3, new label"
        store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
        stored = store.get_watermark("source:catalogue")
        store.close()
        assert stored is not None and stored.startswith("snapshot:v1:")
        assert sorted(json.loads(stored.removeprefix("snapshot:v1:"))) == sorted(catalogue.items)
    finally:
        broker.close()
