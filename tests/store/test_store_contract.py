"""The Store contract, run against SQLite and a real PostgreSQL.

Each behaviour here is one the worker relies on: links answer both ways and follow
re-links, watermarks survive restarts, and a key marked applied is never applied twice —
across threads, processes and reopenings.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from middleware.redact import redact_url as redact
from middleware.store import RecordRef, Store, open_store
from middleware.store.postgres import PostgresStore, split_schema
from middleware.store.sqlite import SqliteStore

REPO_ROOT = Path(__file__).resolve().parents[2]

C1 = RecordRef("crm", "customer", "C-1")
A1 = RecordRef("erp", "party", "A-1")
A2 = RecordRef("erp", "party", "A-2")

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path, unique_name: str) -> Iterator[StoreFactory]:
    """Opens (and reopens) a store on one isolated location; closes everything afterwards."""
    opened: list[Store] = []
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/state/store.db"
    else:
        base_url: str = request.getfixturevalue("postgres_url")
        url = f"{base_url}{'&' if '?' in base_url else '?'}schema={unique_name}"

    def factory() -> Store:
        store = open_store(url)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()
    if request.param == "postgres":
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(unique_name)))


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    return store_factory()


# ----- xref -------------------------------------------------------------------------------
def test_link_answers_in_both_directions(store: Store) -> None:
    store.link(C1, A1)
    assert store.lookup(C1, "erp") == A1
    assert store.lookup(A1, "crm") == C1


def test_relinking_replaces_the_old_link_and_its_reverse(store: Store) -> None:
    store.link(C1, A1)
    store.link(C1, A2)
    assert store.lookup(C1, "erp") == A2
    assert store.lookup(A2, "crm") == C1
    assert store.lookup(A1, "crm") is None


def test_relinking_the_other_side_drops_the_stale_forward_link(store: Store) -> None:
    c2 = RecordRef("crm", "customer", "C-2")
    store.link(C1, A1)
    store.link(c2, A1)
    assert store.lookup(A1, "crm") == c2
    assert store.lookup(c2, "erp") == A1
    assert store.lookup(C1, "erp") is None


def test_linking_twice_is_harmless(store: Store) -> None:
    store.link(C1, A1)
    store.link(C1, A1)
    assert store.lookup(C1, "erp") == A1
    assert store.lookup(A1, "crm") == C1


def test_lookup_misses_return_none(store: Store) -> None:
    assert store.lookup(C1, "erp") is None
    store.link(C1, A1)
    assert store.lookup(C1, "billing") is None
    assert store.lookup(RecordRef("crm", "contact", "C-1"), "erp") is None


def test_links_to_several_systems_are_independent(store: Store) -> None:
    b1 = RecordRef("billing", "account", "B-1")
    store.link(C1, A1)
    store.link(C1, b1)
    assert store.lookup(C1, "erp") == A1
    assert store.lookup(C1, "billing") == b1


# ----- watermarks -------------------------------------------------------------------------
def test_watermarks_get_set_and_overwrite(store: Store) -> None:
    assert store.get_watermark("source:crm") is None
    store.set_watermark("source:crm", "2024-01-01T00:00:00Z")
    store.set_watermark("source:erp", "42")
    assert store.get_watermark("source:crm") == "2024-01-01T00:00:00Z"
    store.set_watermark("source:crm", "2024-02-01T00:00:00Z")
    assert store.get_watermark("source:crm") == "2024-02-01T00:00:00Z"
    assert store.get_watermark("source:erp") == "42"


# ----- idempotency ------------------------------------------------------------------------
def test_marking_applied_is_idempotent(store: Store) -> None:
    assert store.applied("r", ["k1", "k2"]) == set()
    store.mark_applied("r", ["k1", "k2", "k1"])
    store.mark_applied("r", ["k2", "k3"])
    assert store.applied("r", ["k1", "k2", "k3", "k4"]) == {"k1", "k2", "k3"}
    assert store.applied("r", []) == set()
    store.mark_applied("r", [])


def test_applied_keys_are_per_route(store: Store) -> None:
    store.mark_applied("crm-to-erp", ["k1"])
    assert store.applied("erp-to-crm", ["k1"]) == set()
    assert store.applied("crm-to-erp", ["k1"]) == {"k1"}


def test_batch_of_5000_keys(store: Store) -> None:
    keys = [f"msg-{i}" for i in range(5000)]
    store.mark_applied("r", keys[::2])
    assert store.applied("r", keys) == set(keys[::2])
    store.mark_applied("r", keys)
    assert store.applied("r", keys) == set(keys)


# ----- concurrency and durability ---------------------------------------------------------
def test_threads_marking_disjoint_ranges_are_all_visible(store: Store) -> None:
    errors: list[BaseException] = []

    def mark(thread: int) -> None:
        try:
            for batch in range(10):
                keys = [f"t{thread}-{batch}-{i}" for i in range(100)]
                assert store.applied("r", keys) == set()
                store.mark_applied("r", keys)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=mark, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    every = [f"t{t}-{b}-{i}" for t in range(8) for b in range(10) for i in range(100)]
    assert store.applied("r", every) == set(every)


def test_data_survives_close_and_reopen(store_factory: StoreFactory) -> None:
    first = store_factory()
    first.link(C1, A1)
    first.set_watermark("source:crm", "w1")
    first.mark_applied("r", ["k1"])
    first.close()
    second = store_factory()
    assert second.lookup(A1, "crm") == C1
    assert second.get_watermark("source:crm") == "w1"
    assert second.applied("r", ["k1", "k2"]) == {"k1"}


_WRITER = textwrap.dedent(
    """
    import sys
    from middleware.store import RecordRef
    from middleware.store.sqlite import SqliteStore

    path, proc = sys.argv[1], sys.argv[2]
    store = SqliteStore(path)
    for batch in range(100):
        keys = [f"p{proc}-{batch}-{i}" for i in range(20)]
        store.applied("r", keys)
        store.mark_applied("r", keys)
        store.link(RecordRef("crm", "c", f"{proc}-{batch}"), RecordRef("erp", "p", f"{proc}-{batch}"))
        store.set_watermark(f"w{proc}", str(batch))
    store.close()
    """
)


def test_processes_share_one_sqlite_file_without_lock_errors(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "state.db"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(n)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, stderr) in zip(procs, results, strict=True):
        assert proc.returncode == 0, stderr
    store = SqliteStore(str(path))
    try:
        every = [f"p{p}-{b}-{i}" for p in range(4) for b in range(100) for i in range(20)]
        assert store.applied("r", every) == set(every)
        assert all(store.get_watermark(f"w{p}") == "99" for p in range(4))
        assert store.lookup(RecordRef("erp", "p", "3-99"), "crm") == RecordRef("crm", "c", "3-99")
    finally:
        store.close()


def test_sqlite_store_uses_wal_and_full_sync(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "a" / "b" / "state.db"))
    try:
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()


# ----- PostgreSQL specifics ---------------------------------------------------------------
@pytest.fixture
def pg_schema_url(postgres_url: str, unique_name: str) -> Iterator[str]:
    yield f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={unique_name}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(unique_name)))


@pytest.mark.postgres
def test_postgres_stores_starting_together_all_succeed(pg_schema_url: str) -> None:
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        barrier.wait()
        try:
            stores.append(PostgresStore(pg_schema_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []


@pytest.mark.postgres
def test_postgres_store_reconnects_after_the_connection_is_killed(pg_schema_url: str, postgres_url: str) -> None:
    store = PostgresStore(pg_schema_url)
    try:
        store.set_watermark("w", "1")
        pid = store._connection().info.backend_pid
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert store.get_watermark("w") == "1"
        store.mark_applied("r", ["k"])
        assert store.applied("r", ["k"]) == {"k"}
    finally:
        store.close()


def test_postgres_url_loses_schema_and_hides_password() -> None:
    assert split_schema("postgresql://u:pw@h:5432/db?schema=s1&sslmode=disable") == (
        "postgresql://u:pw@h:5432/db?sslmode=disable",
        "s1",
    )
    assert split_schema("postgresql://u@h/db") == ("postgresql://u@h/db", None)
    assert "pw" not in redact("postgresql://u:pw@h:5432/db?schema=s1")
    assert "sekrit" not in redact("postgresql://u@h/db?password=sekrit")


# ----- open_store URLs --------------------------------------------------------------------
def test_relative_sqlite_url_is_under_base_dir(tmp_path: Path) -> None:
    store = open_store("sqlite://.isthmus/state.db?ignored=1", base_dir=tmp_path)
    try:
        assert isinstance(store, SqliteStore)
        assert Path(store.path) == tmp_path / ".isthmus" / "state.db"
        assert store.url == "sqlite://.isthmus/state.db?ignored=1"
        assert (tmp_path / ".isthmus" / "state.db").exists()
    finally:
        store.close()


def test_relative_sqlite_url_without_base_dir_is_under_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite://rel/state.db")
    try:
        assert (tmp_path / "rel" / "state.db").exists()
    finally:
        store.close()


@pytest.mark.parametrize("slashes", ["/", "//"])
def test_absolute_sqlite_url_ignores_base_dir(tmp_path: Path, slashes: str) -> None:
    target = tmp_path / "abs" / "state.db"
    store = open_store(f"sqlite://{slashes}{str(target).lstrip('/')}", base_dir=tmp_path / "elsewhere")
    try:
        assert isinstance(store, SqliteStore)
        assert Path(store.path) == target
        assert target.exists()
    finally:
        store.close()


@pytest.mark.parametrize("url", ["mysql://u@h/db", "state.db", "sqlite:/x.db"])
def test_unknown_store_url_scheme_is_an_error(url: str) -> None:
    with pytest.raises(ValueError, match="unknown store URL scheme"):
        open_store(url)


def test_lookup_many_answers_a_batch_like_lookup_does(store: Store) -> None:
    for n in range(0, 300, 2):  # every second customer is linked
        store.link(RecordRef("crm", "customer", f"C-{n}"), RecordRef("erp", "account", f"A-{n}"))
    store.link(RecordRef("crm", "order", "C-1"), RecordRef("erp", "sales_order", "SO-1"))  # same id, other entity
    refs = [RecordRef("crm", "customer", f"C-{n}") for n in range(300)] + [RecordRef("crm", "order", "C-1")]
    found = store.lookup_many([*refs, refs[0]], "erp")
    assert found == {ref: hit for ref in refs if (hit := store.lookup(ref, "erp")) is not None}
    assert len(found) == 151 and found[RecordRef("crm", "order", "C-1")] == RecordRef("erp", "sales_order", "SO-1")
    assert store.lookup_many([], "erp") == {}


def test_latest_versions_only_move_forward_and_are_per_route(store: Store) -> None:
    store.mark_applied("r1", ["k@2"], versions={"crm:customer:C-1": 200.5, "crm:customer:C-2": 10.0})
    store.mark_applied("r1", ["k@1"], versions={"crm:customer:C-1": 100.0})  # late and older: ignored
    store.mark_applied("r2", [], versions={"crm:customer:C-1": 50.0})
    assert store.latest_versions("r1", ["crm:customer:C-1", "crm:customer:C-2", "crm:customer:C-3"]) == {
        "crm:customer:C-1": 200.5,
        "crm:customer:C-2": 10.0,
    }
    assert store.latest_versions("r2", ["crm:customer:C-1"]) == {"crm:customer:C-1": 50.0}
    assert store.latest_versions("r1", []) == {}


def test_latest_versions_for_a_large_batch(store: Store) -> None:
    versions = {f"crm:customer:C-{n}": float(n) for n in range(1_200)}
    store.mark_applied("r", [], versions=versions)
    assert store.latest_versions("r", list(versions)) == versions
