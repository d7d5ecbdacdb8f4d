"""The two-way part of the Store contract, on SQLite and a real PostgreSQL.

Two-way routes (middleware/sync/twoway.py) rely on: echo stamps that a batch writes with its
applied keys and that a later batch reads back, pair states kept as JSON, pair leases that
only one owner holds at a time (until they expire), and conflicts that can be listed,
counted and resolved by id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from middleware.store import RecordRef, Store, open_store
from middleware.store.base import ConflictRecord, EchoStamp, SyncWrite

StoreFactory = Callable[[], Store]

PARTY = RecordRef("tryton", "party", "7")
CUSTOMER = RecordRef("crm", "customer", "C-1")
PAIR = "crm:customer:C-1|tryton:party:7"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path, unique_name: str) -> Iterator[StoreFactory]:
    """Opens stores on one isolated location (a file, or a schema); closes and drops them afterwards."""
    opened: list[Store] = []
    base_url = ""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/state/store.db"
    else:
        base_url = request.getfixturevalue("postgres_url")
        url = f"{base_url}{'&' if '?' in base_url else '?'}schema={unique_name}"

    def factory() -> Store:
        opened.append(open_store(url))
        return opened[-1]

    yield factory
    for one in opened:
        one.close()
    if base_url:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(unique_name)))


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    return store_factory()


def _conflict(cid: str, route: str = "customers_crm_to_tryton", at: float = 1.0) -> ConflictRecord:
    return ConflictRecord(
        id=cid,
        route=route,
        pair=PAIR,
        field="phone",
        policy="manual",
        status="open",
        detected_at=at,
        detail={"sides": {"crm": {"value": "+49 1"}, "tryton": {"value": "+49 2"}}},
    )


def test_echo_stamps_land_with_the_batch_and_are_replaced_or_dropped(store: Store) -> None:
    stamp = EchoStamp(PARTY, "h1", ("name", "email"), "customers_crm_to_tryton", 100.5)
    store.mark_applied("r", ["k1"], sync=SyncWrite(stamps=[stamp]))
    assert store.echo_stamps([PARTY, CUSTOMER]) == {PARTY: stamp}
    assert store.applied("r", ["k1"]) == {"k1"}
    newer = EchoStamp(PARTY, "h2", ("phone",), "customers_crm_to_tryton", 101.0)
    store.mark_applied("r", [], sync=SyncWrite(stamps=[newer]))
    assert store.echo_stamps([PARTY]) == {PARTY: newer}
    store.mark_applied("r", [], sync=SyncWrite(dropped_stamps=[PARTY]))
    assert store.echo_stamps([PARTY]) == {}


def test_pair_states_round_trip_as_json(store: Store) -> None:
    state = {"refs": {"crm": "crm:customer:C-1"}, "fields": {"name": {"agreed": ["Acme", 1.5, "crm"]}}}
    store.mark_applied("r", [], sync=SyncWrite(states={PAIR: state}))
    assert store.sync_states([PAIR, "other"]) == {PAIR: state}
    state["fields"]["name"]["agreed"] = ["Acme AG", 2.5, "tryton"]
    store.mark_applied("r", [], sync=SyncWrite(states={PAIR: state}))
    assert store.sync_states([PAIR])[PAIR]["fields"]["name"]["agreed"] == ["Acme AG", 2.5, "tryton"]


def test_a_pair_lease_has_one_owner_until_released_or_expired(store: Store) -> None:
    assert store.lock_pairs([PAIR, "p2"], "route-a", 30) == {PAIR, "p2"}
    assert store.lock_pairs([PAIR, "p3"], "route-b", 30) == {"p3"}
    assert store.lock_pairs([PAIR], "route-a", 30) == {PAIR}  # the owner renews its own lease
    store.unlock_pairs([PAIR], "route-b")  # not route-b's: nothing happens
    assert store.lock_pairs([PAIR], "route-b", 30) == set()
    store.mark_applied("r", ["k"], sync=SyncWrite(lock_owner="route-a", released_locks=[PAIR]))
    assert store.lock_pairs([PAIR], "route-b", 0.2) == {PAIR}
    time.sleep(0.3)
    assert store.lock_pairs([PAIR], "route-a", 30) == {PAIR}  # route-b's lease expired
    store.unlock_pairs([PAIR, "p2"], "route-a")
    assert store.lock_pairs([PAIR, "p2"], "route-c", 30) == {PAIR, "p2"}


def test_concurrent_owners_never_hold_one_pair_together(store_factory: StoreFactory) -> None:
    stores = [store_factory(), store_factory()]
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    turns = {"a": 0, "b": 0}
    barrier = threading.Barrier(2)

    def contend(s: Store, owner: str) -> None:
        barrier.wait()
        deadline = time.monotonic() + 10
        while turns[owner] < 15 and time.monotonic() < deadline:
            if s.lock_pairs([PAIR], owner, 30):
                inside.append(owner)
                if len(inside) > 1:
                    overlaps.append(tuple(inside))
                time.sleep(0.002)
                inside.remove(owner)
                turns[owner] += 1
                s.unlock_pairs([PAIR], owner)

    threads = [threading.Thread(target=contend, args=(s, o)) for s, o in zip(stores, ("a", "b"), strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
    assert turns == {"a": 15, "b": 15}


def test_conflicts_are_listed_counted_and_resolved_by_id(store: Store) -> None:
    store.mark_applied("r", [], sync=SyncWrite(conflicts=[_conflict("c-1", at=1.0), _conflict("c-2", at=2.0)]))
    store.put_conflicts([_conflict("c-3", route="customers_tryton_to_crm", at=3.0)])
    assert [c.id for c in store.conflicts()] == ["c-1", "c-2", "c-3"]
    assert [c.id for c in store.conflicts(route="customers_tryton_to_crm")] == ["c-3"]
    assert store.count_open_conflicts("customers_crm_to_tryton") == 2
    (one,) = store.conflicts(ids=["c-2"])
    assert one.detail["sides"]["tryton"]["value"] == "+49 2" and one.policy == "manual"
    one.status, one.resolved_at = "resolved", 9.0
    one.detail["resolution"] = {"take": "crm", "value": "+49 1"}
    store.put_conflicts([one])
    assert [c.id for c in store.conflicts()] == ["c-1", "c-3"]
    (again,) = store.conflicts(status="resolved")
    assert again.resolved_at == 9.0 and again.detail["resolution"]["take"] == "crm"
    assert len(store.conflicts(status=None)) == 3
    assert store.conflicts(ids=[]) == []
    assert store.count_open_conflicts("customers_crm_to_tryton") == 1
