"""The two-way decisions, with the processing order chosen by the test (no Tryton, no threads).

Two in-memory systems stand in for the CRM and the ERP: `a` keeps items as {sku, name,
description, price}, `b` as {code, title, text, amount} with four decimals, so the echo of a
write is only recognisable on the canonical form. Real RouteProcessors on a real embedded
broker and SQLite store apply the messages; the test "polls" a system by publishing its
record's current state, and runs the two routes in the order each case needs — which the
end-to-end tests against Tryton leave to the threads.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from middleware.adapter import WriteRequest, WriteResult
from middleware.broker import open_broker
from middleware.broker.base import Broker, OutgoingMessage
from middleware.config import RetryPolicy, RouteConfig, TargetSpec
from middleware.entities import Customer, Product
from middleware.mapping import load_mappings
from middleware.message import Envelope, Source
from middleware.ops.conflicts import resolve
from middleware.runtime.route import RouteProcessor
from middleware.store import open_store
from middleware.store.base import RecordRef, Store
from middleware.sync.config import ConflictsConfig, TwoWayConfig
from middleware.sync.echo import CanonicalFields, content_hash

MAPPINGS = {
    "a_item_to_canonical.yaml": """
mapping: a_item_to_canonical
source: a.item
target: Product
fields:
  sku: sku
  name: name
  description: description
  list_price: {from: price, transform: "decimal(2)"}
""",
    "canonical_to_a_item.yaml": """
mapping: canonical_to_a_item
source: Product
target: a.item
fields:
  sku: sku
  name: name
  description: description
  price: {from: list_price, transform: "decimal(2)"}
""",
    "b_item_to_canonical.yaml": """
mapping: b_item_to_canonical
source: b.item
target: Product
fields:
  sku: code
  name: title
  description: text
  list_price: {from: amount, transform: "decimal(4)"}
""",
    "canonical_to_b_item.yaml": """
mapping: canonical_to_b_item
source: Product
target: b.item
fields:
  code: sku
  title: name
  text: description
  amount: {from: list_price, transform: "decimal(4)"}
""",
}
FIELDS = ["name", "description", "list_price"]


class FakeSystem:
    """Records by key with a change time; writes merge like the sample CRM's PATCH does."""

    def __init__(self, name: str, key: str) -> None:
        self.name, self.key = name, key
        self.records: dict[str, dict[str, Any]] = {}
        self.writes: list[dict[str, Any]] = []

    def edit(self, key: str, **fields: Any) -> None:
        """A user's change."""
        self.records.setdefault(key, {self.key: key}).update(fields)
        self.records[key]["changed_at"] = time.time()
        time.sleep(0.01)  # the next change is clearly later

    def write_batch(self, requests: Sequence[WriteRequest]) -> list[WriteResult]:
        results = []
        for request in requests:
            key = request.target_id or request.record[self.key]
            self.writes.append(dict(request.record))
            self.records.setdefault(key, {self.key: key}).update(request.record)
            self.records[key]["changed_at"] = time.time()
            results.append(WriteResult("ok", target_id=key))
        time.sleep(0.01)
        return results

    def message(self, key: str) -> OutgoingMessage:
        """What its poller would publish: the record as it is now."""
        record = dict(self.records[key])
        changed = datetime.fromtimestamp(record["changed_at"], UTC)
        envelope = Envelope(
            type=f"item.{self.name}_changed",
            source=Source(system=self.name, entity="item", record_id=key, version=changed.isoformat()),
            occurred_at=changed,
            payload=record,
        )
        return OutgoingMessage(envelope.type, envelope.to_bytes(), key=envelope.record_key)


class Pair:
    """Systems a and b, and the routes a_to_b and b_to_a between them."""

    def __init__(self, tmp_path: Path, conflicts: dict[str, Any]) -> None:
        folder = tmp_path / "mappings"
        folder.mkdir()
        for name, text in MAPPINGS.items():
            (folder / name).write_text(text.lstrip(), encoding="utf-8")
        mapping_set = load_mappings([folder])
        self.broker: Broker = open_broker(f"embedded:///{tmp_path}/broker.db")
        self.store: Store = open_store(f"sqlite:///{tmp_path}/state.db")
        self.a, self.b = FakeSystem("a", "sku"), FakeSystem("b", "code")
        policy = ConflictsConfig.model_validate(conflicts)
        self.routes: dict[str, RouteProcessor] = {}
        for source, target, peer in ((self.a, self.b, "b_to_a"), (self.b, self.a, "a_to_b")):
            name = f"{source.name}_to_{target.name}"
            ids = [f"{source.name}_item_to_canonical", f"canonical_to_{target.name}_item"]
            config = RouteConfig(
                name=name,
                on=[f"item.{source.name}_changed"],
                from_system=source.name,
                mappings=ids,
                to=TargetSpec(system=target.name, entity="item"),
                retry=RetryPolicy(max_attempts=3, initial_delay_s=0.05, max_delay_s=0.1),
                two_way=TwoWayConfig(peer=peer, fields=FIELDS, conflicts=policy),
            )
            self.broker.setup_route(name, config.on)
            self.routes[name] = RouteProcessor(
                config, self.broker, self.store, target, lambda r: r, name, mapping=mapping_set.chain(ids)
            )

    def poll(self, system: FakeSystem, key: str) -> None:
        route = "a_to_b" if system is self.a else "b_to_a"
        self.broker.send(route, [system.message(key)])

    def run(self, route: str) -> int:
        """Apply what waits on `route` (corrections from the other route included)."""
        applied = 0
        while deliveries := self.broker.fetch(route, 50, 0.05):
            applied += self.routes[route].process(deliveries).applied
        return applied

    def settle(self) -> None:
        """Poll both systems and run both routes until nothing moves (echoes included)."""
        for _ in range(6):
            for key in list(self.a.records):
                self.poll(self.a, key)
            for key in list(self.b.records):
                self.poll(self.b, key)
            if not (self.run("a_to_b") + self.run("b_to_a")):
                return
        raise AssertionError("the pair did not settle: something loops")

    def close(self) -> None:
        self.broker.close()
        self.store.close()


@pytest.fixture
def pair(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pair]:
    conflicts = getattr(request, "param", {"default": "last_writer_wins"})
    made = Pair(tmp_path, conflicts)
    yield made
    made.close()


def synced_item(pair: Pair) -> None:
    pair.a.edit("W-1", name="Widget", description="Blue", price="19.90")
    pair.poll(pair.a, "W-1")
    assert pair.run("a_to_b") == 1
    assert pair.b.records["W-1"]["amount"] == "19.9000"
    pair.settle()


def test_a_write_read_back_from_the_other_system_is_an_echo(pair: Pair) -> None:
    synced_item(pair)
    ref = RecordRef("b", "item", "W-1")
    (stamp,) = pair.store.echo_stamps([ref]).values()
    assert stamp.origin == "a_to_b" and set(stamp.fields) == set(FIELDS)
    writes = len(pair.a.writes), len(pair.b.writes)
    echoes = REGISTRY.get_sample_value("isthmus_messages_skipped_total", {"route": "b_to_a", "reason": "echo"}) or 0
    for _ in range(2):  # b's 19.9000 is a's 19.90; the stamp stays for every read-back of the write
        pair.b.records["W-1"]["changed_at"] = time.time()  # b touched it again (a new version, same content)
        pair.poll(pair.b, "W-1")
        pair.run("b_to_a")
    assert (len(pair.a.writes), len(pair.b.writes)) == writes
    assert REGISTRY.get_sample_value("isthmus_messages_skipped_total", {"route": "b_to_a", "reason": "echo"}) == (
        echoes + 2
    )
    assert pair.store.echo_stamps([ref]) == {ref: stamp}
    pair.b.edit("W-1", text="Red")  # a real change drops the stamp
    pair.poll(pair.b, "W-1")
    pair.run("b_to_a")
    assert pair.store.echo_stamps([ref]) == {}
    assert pair.a.records["W-1"]["description"] == "Red"


def test_only_the_changed_fields_are_written(pair: Pair) -> None:
    synced_item(pair)
    pair.b.edit("W-1", text="Red")
    pair.poll(pair.b, "W-1")
    pair.run("b_to_a")
    assert pair.a.writes[-1] == {"description": "Red"}  # the target id comes from the xref
    pair.settle()
    assert len(pair.a.writes) == 1 and len(pair.b.writes) == 1


@pytest.mark.parametrize("first_applied", ["a_to_b", "b_to_a"])
@pytest.mark.parametrize("later", ["a", "b"])
def test_last_writer_wins_in_any_order(pair: Pair, first_applied: str, later: str) -> None:
    synced_item(pair)
    earlier = "b" if later == "a" else "a"
    systems = {"a": (pair.a, "name"), "b": (pair.b, "title")}
    for side in (earlier, later):
        system, field = systems[side]
        system.edit("W-1", **{field: f"Named in {side}"})
    pair.poll(pair.a, "W-1")
    pair.poll(pair.b, "W-1")
    pair.run(first_applied)
    pair.run("b_to_a" if first_applied == "a_to_b" else "a_to_b")
    pair.settle()
    assert pair.a.records["W-1"]["name"] == pair.b.records["W-1"]["title"] == f"Named in {later}"
    (conflict,) = pair.store.conflicts(status=None)
    assert conflict.policy == "last_writer_wins" and conflict.detail["resolution"]["take"] == later


@pytest.mark.parametrize("pair", [{"fields": {"list_price": {"owner": "b"}}}], indirect=True)
@pytest.mark.parametrize("first_applied", ["a_to_b", "b_to_a"])
def test_the_owner_wins_even_when_it_wrote_first(pair: Pair, first_applied: str) -> None:
    synced_item(pair)
    pair.b.edit("W-1", amount="21.0000")
    pair.a.edit("W-1", price="25.00")  # later, but a does not own the price
    pair.poll(pair.a, "W-1")
    pair.poll(pair.b, "W-1")
    pair.run(first_applied)
    pair.settle()
    assert (pair.a.records["W-1"]["price"], pair.b.records["W-1"]["amount"]) == ("21.00", "21.0000")


@pytest.mark.parametrize("pair", [{"fields": {"description": "manual"}}], indirect=True)
def test_a_manual_field_is_parked_and_nothing_is_written_for_it(pair: Pair) -> None:
    synced_item(pair)
    pair.a.edit("W-1", description="Green")
    pair.b.edit("W-1", text="Yellow", title="Widget 2")  # the title is no conflict: it flows
    pair.poll(pair.a, "W-1")
    pair.poll(pair.b, "W-1")
    pair.run("a_to_b")  # a's Green reaches b first and overwrites Yellow, unseen
    pair.run("b_to_a")  # b's Yellow predates that write: both changed it -> parked
    pair.settle()
    (conflict,) = pair.store.conflicts()
    assert conflict.field == "description" and conflict.status == "open"
    assert {k: v["value"] for k, v in conflict.detail["sides"].items()} == {"a": "Green", "b": "Yellow"}
    assert pair.a.records["W-1"]["name"] == "Widget 2"
    writes = len(pair.a.writes), len(pair.b.writes)
    pair.b.edit("W-1", text="Orange")  # still parked: the open conflict shows the newest version
    pair.settle()
    assert (len(pair.a.writes), len(pair.b.writes)) == writes
    (conflict,) = pair.store.conflicts()
    assert conflict.detail["sides"]["b"]["value"] == "Orange"


def test_an_older_change_read_after_our_write_is_still_a_conflict(pair: Pair) -> None:
    """A change that our write overwrote may reach us after the read-back of that write."""
    synced_item(pair)
    pair.a.edit("W-1", name="Old change in a")
    stale = pair.a.message("W-1")  # read before our write below overwrites it
    pair.b.edit("W-1", title="Newer change in b")
    pair.poll(pair.b, "W-1")
    pair.run("b_to_a")  # writes b's title over a's change
    pair.poll(pair.a, "W-1")  # the read-back of that write comes first ...
    pair.run("a_to_b")
    pair.broker.send("a_to_b", [stale])  # ... then the overwritten change
    pair.run("a_to_b")
    pair.settle()
    assert pair.a.records["W-1"]["name"] == pair.b.records["W-1"]["title"] == "Newer change in b"
    (conflict,) = pair.store.conflicts(status=None)
    assert conflict.detail["resolution"]["take"] == "b"


def test_canonical_values_hash_alike_whichever_system_they_come_from() -> None:
    product = CanonicalFields(Product, FIELDS)
    from_a = product.values({"sku": "W", "name": "Widget", "list_price": "19.90", "description": ""})
    from_b = product.values({"sku": "W", "name": "Widget", "list_price": "19.9000"})
    assert from_a == from_b == {"name": "Widget", "description": None, "list_price": "19.9"}
    assert content_hash(from_a, FIELDS) == content_hash(from_b, reversed(FIELDS))
    customer = CanonicalFields(Customer, ["addresses", "active"])
    crm = customer.values({"active": True, "addresses": [{"kind": "billing", "city": "Berlin", "street": None}]})
    erp = customer.values({"active": True, "addresses": [{"city": "Berlin", "kind": "billing"}]})
    assert crm == erp
    assert product.values({"list_price": "10"})["list_price"] == product.values({"list_price": "1E+1"})["list_price"]


@pytest.mark.parametrize("pair", [{"fields": {"description": "manual"}}], indirect=True)
def test_a_resolution_goes_through_both_routes_and_unparks_the_field(pair: Pair) -> None:
    synced_item(pair)
    pair.a.edit("W-1", description="Green")
    pair.b.edit("W-1", text="Yellow")
    pair.poll(pair.a, "W-1")
    pair.poll(pair.b, "W-1")
    pair.run("b_to_a")
    pair.run("a_to_b")
    pair.settle()
    (conflict,) = pair.store.conflicts()
    config = SimpleNamespace(model=SimpleNamespace(routes=[p.config for p in pair.routes.values()]))
    resolve(config, pair.store, pair.broker, conflict.id, 'value="Teal"')  # type: ignore[arg-type]
    pair.settle()
    assert pair.a.records["W-1"]["description"] == pair.b.records["W-1"]["text"] == "Teal"
    assert pair.store.conflicts() == []
    (done,) = pair.store.conflicts(status="resolved")
    assert done.detail["resolution"]["take"] == "value" and done.detail["resolution"]["value"] == "Teal"
    assert REGISTRY.get_sample_value("isthmus_conflicts_open", {"route": conflict.route}) == 0
    pair.a.edit("W-1", description="Teal and green")  # unparked: changes flow again
    pair.settle()
    assert pair.b.records["W-1"]["text"] == "Teal and green"


def test_a_partial_record_changes_what_it_carries_and_blanks_nothing(pair: Pair) -> None:
    """A webhook-style payload with only some fields: the absent ones are unknown, not blank."""
    synced_item(pair)
    pair.b.edit("W-1", title="Widget XL")
    partial = Envelope(
        type="item.b_changed",
        source=Source(system="b", entity="item", record_id="W-1", version="partial-1"),
        occurred_at=datetime.now(UTC),
        payload={"code": "W-1", "title": "Widget XL"},  # no text, no amount
    )
    pair.broker.send("b_to_a", [OutgoingMessage(partial.type, partial.to_bytes(), key=partial.record_key)])
    pair.run("b_to_a")
    assert pair.a.writes[-1] == {"name": "Widget XL"}
    pair.settle()
    assert pair.a.records["W-1"]["description"] == "Blue" and pair.a.records["W-1"]["price"] == "19.90"
    assert pair.b.records["W-1"]["text"] == "Blue" and pair.b.records["W-1"]["amount"] == "19.9000"
    assert pair.b.records["W-1"]["title"] == "Widget XL"
