"""The target-identity part of the Store contract, on SQLite and a real PostgreSQL.

Routes (middleware/runtime/identity.py) rely on: one claimant per target identity, however
many routes, processes or hosts ask at once; a claim that says which record was created once
it is linked; a claim left unlinked by a dead or failed writer that the next claimant takes
over (after its lease, or at once when the writer expired it); path fingerprints per source
record and target entity, committed with the batch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from middleware.store import RecordRef, Store, open_store
from middleware.store.base import IdentityWrite, PathFingerprint, TargetIdentity

REPO_ROOT = Path(__file__).resolve().parents[2]
StoreFactory = Callable[[], Store]

SALE = TargetIdentity("tryton", "sale", "SO-5001")
OTHER = TargetIdentity("tryton", "sale", "SO-5002")
DEAL = RecordRef("crm", "deal", "D-1")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, unique_name: str) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/state/store.db"
        return
    base_url: str = request.getfixturevalue("postgres_url")
    yield f"{base_url}{'&' if '?' in base_url else '?'}schema={unique_name}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(unique_name)))


@pytest.fixture
def store_factory(store_url: str) -> Iterator[StoreFactory]:
    opened: list[Store] = []

    def factory() -> Store:
        opened.append(open_store(store_url))
        return opened[-1]

    yield factory
    for one in opened:
        one.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    return store_factory()


def test_the_first_claimant_creates_and_a_second_one_waits(store: Store) -> None:
    first = store.claim_identities([SALE], "worker-a", lease_s=30)
    second = store.claim_identities([SALE], "worker-b", lease_s=30)
    assert first[SALE].status == "new"
    assert second[SALE].status == "held"
    assert second[SALE].claimant == "worker-a"


def test_a_linked_claim_answers_the_record_created(store: Store) -> None:
    store.claim_identities([SALE], "worker-a", lease_s=30)
    store.mark_applied("r1", ["k1"], identity=IdentityWrite("worker-a", linked=[(SALE, "35")]))
    answer = store.claim_identities([SALE], "worker-b", lease_s=30)[SALE]
    assert (answer.status, answer.target_id) == ("linked", "35")


def test_a_claim_whose_lease_ran_out_is_taken_over_for_recovery(store: Store) -> None:
    store.claim_identities([SALE], "killed-worker", lease_s=30)
    time.sleep(0.05)
    answer = store.claim_identities([SALE], "worker-b", lease_s=0.01)[SALE]
    assert (answer.status, answer.claimant) == ("recover", "worker-b")
    assert store.claim_identities([SALE], "worker-c", lease_s=30)[SALE].status == "held"


def test_an_expired_claim_is_recovered_at_once_by_the_next_claimant(store: Store) -> None:
    store.claim_identities([SALE], "worker-a", lease_s=3600)
    store.mark_applied("r1", [], identity=IdentityWrite("worker-a", expired=[SALE]))
    assert store.claim_identities([SALE], "worker-b", lease_s=3600)[SALE].status == "recover"


def test_expiring_leaves_other_claimants_and_linked_claims_alone(store: Store) -> None:
    store.claim_identities([SALE, OTHER], "worker-a", lease_s=3600)
    store.mark_applied("r1", [], identity=IdentityWrite("worker-a", linked=[(OTHER, "9")]))
    store.mark_applied("r1", [], identity=IdentityWrite("worker-b", expired=[SALE]))
    store.mark_applied("r1", [], identity=IdentityWrite("worker-a", expired=[OTHER]))
    answers = store.claim_identities([SALE, OTHER], "worker-c", lease_s=3600)
    assert answers[SALE].status == "held"
    assert (answers[OTHER].status, answers[OTHER].target_id) == ("linked", "9")


def test_the_claimant_asking_again_recovers_its_own_claim(store: Store) -> None:
    store.claim_identities([SALE], "worker-a", lease_s=3600)
    assert store.claim_identities([SALE], "worker-a", lease_s=3600)[SALE].status == "recover"


def test_linking_again_repoints_the_claim(store: Store) -> None:
    store.mark_applied("r1", [], identity=IdentityWrite("heal", linked=[(SALE, "35")]))
    store.mark_applied("r1", [], identity=IdentityWrite("heal", linked=[(SALE, "36")]))
    assert store.claim_identities([SALE], "w", lease_s=1)[SALE].target_id == "36"


def test_identities_are_per_system_and_entity(store: Store) -> None:
    party = TargetIdentity("tryton", "party", "SO-5001")
    answers = store.claim_identities([SALE, party, TargetIdentity("erp", "sale", "SO-5001")], "w", lease_s=30)
    assert {a.status for a in answers.values()} == {"new"}


def test_identity_bookkeeping_lands_with_the_applied_keys(store_factory: StoreFactory) -> None:
    first = store_factory()
    fingerprint = PathFingerprint(DEAL, "tryton", "sale", "h1", "deals_won:deal.won")
    first.mark_applied("r1", ["k1"], identity=IdentityWrite("w", linked=[(SALE, "35")], fingerprints=[fingerprint]))
    first.close()
    again = store_factory()
    assert again.applied("r1", ["k1"]) == {"k1"}
    assert again.claim_identities([SALE], "x", lease_s=1)[SALE].target_id == "35"
    assert again.path_fingerprints([DEAL], "tryton", "sale") == {DEAL: fingerprint}


def test_path_fingerprints_are_per_target_entity_and_overwrite(store: Store) -> None:
    webhook = PathFingerprint(DEAL, "tryton", "sale", "h1", "won:deal.won")
    poll = PathFingerprint(DEAL, "tryton", "sale", "h2", "deals:deal.upserted")
    other = PathFingerprint(DEAL, "erp", "order", "h9", "deals:deal.upserted")
    for route, fingerprint in (("won", webhook), ("deals", poll), ("orders", other)):
        store.mark_applied(route, [], identity=IdentityWrite(fingerprints=[fingerprint]))
    assert store.path_fingerprints([DEAL, RecordRef("crm", "deal", "D-2")], "tryton", "sale") == {DEAL: poll}
    assert store.path_fingerprints([DEAL], "erp", "order") == {DEAL: other}
    assert store.path_fingerprints([DEAL], "erp", "invoice") == {}


_CLAIMER = textwrap.dedent(
    """
    import json, sys, time
    from middleware.store import open_store
    from middleware.store.base import IdentityWrite, TargetIdentity

    url, name, start_at, count, shift = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    store = open_store(url)
    # each racer starts elsewhere in the list and runs through all of it: every identity is contested
    identities = [TargetIdentity("tryton", "sale", f"SO-{(i + shift) % count}") for i in range(count)]
    time.sleep(max(0.0, start_at - time.time()))
    won = []
    for identity in identities:  # one at a time: the racers interleave claim by claim
        answer = store.claim_identities([identity], name, lease_s=3600)[identity]
        if answer.status == "new":
            won.append(identity.key)
            store.mark_applied("r", [], identity=IdentityWrite(name, linked=[(identity, name + identity.key)]))
    print(json.dumps(won))
    store.close()
    """
)


def test_processes_racing_for_the_same_identities_create_each_once(store_url: str) -> None:
    """Four processes (each its own connection: one SQLite file, or four PostgreSQL sessions)."""
    open_store(store_url).close()  # tables exist before the race
    count, start_at = 150, time.time() + 4.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, store_url, f"p{n}", str(start_at), str(count), str(n * count // 4)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    won: list[str] = []
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
        won.extend(json.loads(stdout))
    assert sorted(won) == sorted(f"SO-{i}" for i in range(count)), "an identity was claimed as new twice or never"
    store = open_store(store_url)
    try:
        answers = store.claim_identities([TargetIdentity("tryton", "sale", f"SO-{i}") for i in range(count)], "x", 1)
        assert {a.status for a in answers.values()} == {"linked"}
    finally:
        store.close()
