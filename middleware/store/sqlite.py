"""SQLite state store: one file, shared safely by the threads and processes of one host.

Durability and sharing come from SQLite itself: WAL journal (readers never block the
writer), `synchronous=FULL` (a write is on disk when the method returns) and a 30 s busy
timeout (other processes wait for the write lock instead of failing). Writes use
`BEGIN IMMEDIATE` so the lock is taken up front; a deferred transaction that reads and
then writes can fail with "database is locked" without ever calling the busy handler.

Threads share one connection behind a lock. SQLite admits one writer per file anyway, and
one connection avoids both per-thread setup and the sleep-and-retry of the busy handler
between threads of the same process, so batches of `applied`/`mark_applied` are faster.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from middleware.errors import DataFileError
from middleware.store.base import (
    ConflictRecord,
    EchoStamp,
    FlowRunRecord,
    IdentityClaim,
    IdentityWrite,
    PathFingerprint,
    RecordRef,
    SyncWrite,
    TargetIdentity,
)
from middleware.store.flowsql import FLOW_RUN_SELECT as _FLOW_RUN_SELECT
from middleware.store.flowsql import flow_run_filter as _flow_run_filter
from middleware.store.flowsql import save_flow_run_statement
from middleware.store.identitysql import IdentitySql
from middleware.store.identitysql import ddl as identity_ddl
from middleware.store.links import link_statements, write_link
from middleware.store.syncsql import SyncSql, ddl, sync_is_empty
from middleware.store.tables import store_tables

BUSY_TIMEOUT_MS = 30_000
# Well under SQLITE_MAX_VARIABLE_NUMBER even on old builds (999), leaving room for `route`.
_IN_CHUNK = 500

# Re-linking `a` to `b` must leave no row pointing at `a` from b's system (or at `b` from
# a's system) other than the new pair, so stale reverse links disappear with the old link.
_LINK_SQL = link_statements("?")
_SYNC_SQL = SyncSql("?")
_IDENTITY_SQL = IdentitySql("?")
_LOOKUP = (
    "SELECT dst_entity, dst_id FROM xref WHERE src_system = ? AND src_entity = ? AND src_id = ? AND dst_system = ?"
)


def _damaged(path: str, exc: sqlite3.DatabaseError) -> DataFileError:
    """The error for a state file that will not open: SQLite's own message names no file."""
    if isinstance(exc, sqlite3.OperationalError):  # locked, unreadable, disk full: not damage
        return DataFileError(
            f"cannot open the state store file {path}: {exc}; check its permissions, the free disk space, and "
            "that no other program holds it locked",
            file=path,
        )
    return DataFileError(
        f"the state store file {path} is damaged ({exc}). Stop every worker using it, then restore it from a "
        f"backup, or recover what is readable with `sqlite3 {path} .recover`. Starting with an empty store "
        "instead (delete the file and its -wal/-shm files) forgets every cross-reference and watermark: "
        "records would be created again in the targets",
        file=path,
    )


class SqliteStore:
    """The Store protocol on one SQLite file; see the module docstring for the guarantees."""

    def __init__(self, path: str, url: str | None = None) -> None:
        self.path = path
        self.url = url if url is not None else f"sqlite:///{Path(path).resolve()}"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (see module docstring).
            self._conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._enable_wal()
            self._conn.execute("PRAGMA synchronous = FULL")
            self._create_tables()
        except sqlite3.DatabaseError as exc:
            raise _damaged(path, exc) from None

    def _enable_wal(self) -> None:
        """Switch to WAL; retried because the switch can report "locked" without waiting."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _create_tables(self) -> None:
        with self._write() as conn:
            for statement in [*store_tables("REAL", without_rowid=True), *ddl("REAL"), *identity_ddl("REAL")]:
                conn.execute(statement)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the file's write lock from the start."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # ----- xref -----------------------------------------------------------------------
    def link(self, a: RecordRef, b: RecordRef) -> None:
        with self._write() as conn:
            write_link(conn, _LINK_SQL, a, b)

    def lookup(self, ref: RecordRef, other_system: str) -> RecordRef | None:
        with self._lock:
            row = self._conn.execute(_LOOKUP, (ref.system, ref.entity, ref.id, other_system)).fetchone()
        return RecordRef(other_system, row[0], row[1]) if row else None

    def lookup_many(self, refs: Sequence[RecordRef], other_system: str) -> dict[RecordRef, RecordRef]:
        found: dict[RecordRef, RecordRef] = {}
        with self._lock:  # one lock for the batch; each lookup is an index probe in this process
            for ref in dict.fromkeys(refs):
                row = self._conn.execute(_LOOKUP, (ref.system, ref.entity, ref.id, other_system)).fetchone()
                if row:
                    found[ref] = RecordRef(other_system, row[0], row[1])
        return found

    # ----- watermarks -----------------------------------------------------------------
    def get_watermark(self, name: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM watermarks WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_watermark(self, name: str, value: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO watermarks (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    # ----- idempotency ----------------------------------------------------------------
    def applied(self, route: str, keys: Sequence[str]) -> set[str]:
        unique = list(dict.fromkeys(keys))
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(unique), _IN_CHUNK):
                chunk = unique[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key FROM applied WHERE route = ? AND key IN ({marks})", (route, *chunk)
                )
                found.update(row[0] for row in rows)
        return found

    def latest_versions(self, route: str, record_keys: Sequence[str]) -> dict[str, float]:
        unique = list(dict.fromkeys(record_keys))
        found: dict[str, float] = {}
        with self._lock:
            for start in range(0, len(unique), _IN_CHUNK):
                chunk = unique[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT record_key, changed_at FROM record_versions WHERE route = ? AND record_key IN ({marks})",
                    (route, *chunk),
                )
                found.update((row[0], row[1]) for row in rows)
        return found

    def mark_applied(
        self,
        route: str,
        keys: Sequence[str],
        links: Sequence[tuple[RecordRef, RecordRef]] = (),
        versions: Mapping[str, float] | None = None,
        sync: SyncWrite | None = None,
        identity: IdentityWrite | None = None,
    ) -> None:
        if not keys and not links and not versions and sync_is_empty(sync) and not identity:
            return
        with self._write() as conn:
            for a, b in links:
                write_link(conn, _LINK_SQL, a, b)
            conn.executemany("INSERT OR IGNORE INTO applied (route, key) VALUES (?, ?)", ((route, key) for key in keys))
            conn.executemany(
                "INSERT INTO record_versions (route, record_key, changed_at) VALUES (?, ?, ?) "
                "ON CONFLICT (route, record_key) DO UPDATE SET changed_at = max(changed_at, excluded.changed_at)",
                ((route, key, at) for key, at in (versions or {}).items()),
            )
            if sync is not None:
                _SYNC_SQL.write_sync(conn, sync, time.time())
            if identity:
                _IDENTITY_SQL.write(conn, identity, time.time())

    # ----- target-record identity -----------------------------------------------------------
    def claim_identities(
        self, identities: Sequence[TargetIdentity], claimant: str, lease_s: float
    ) -> dict[TargetIdentity, IdentityClaim]:
        if not identities:
            return {}
        with self._write() as conn:  # BEGIN IMMEDIATE: one claimant at a time across processes
            return _IDENTITY_SQL.claim(conn, identities, claimant, time.time(), lease_s)

    def path_fingerprints(
        self, sources: Sequence[RecordRef], target_system: str, target_entity: str
    ) -> dict[RecordRef, PathFingerprint]:
        if not sources:
            return {}
        with self._lock:
            return _IDENTITY_SQL.read_fingerprints(self._conn, sources, target_system, target_entity)

    # ----- two-way sync -----------------------------------------------------------------
    def echo_stamps(self, refs: Sequence[RecordRef]) -> dict[RecordRef, EchoStamp]:
        with self._lock:
            return _SYNC_SQL.read_stamps(self._conn, refs)

    def sync_states(self, pairs: Sequence[str]) -> dict[str, dict[str, Any]]:
        with self._lock:
            return _SYNC_SQL.read_states(self._conn, pairs)

    def lock_pairs(self, pairs: Sequence[str], owner: str, ttl_s: float) -> set[str]:
        if not pairs:
            return set()
        with self._write() as conn:
            return _SYNC_SQL.take_locks(conn, pairs, owner, time.time(), ttl_s)

    def unlock_pairs(self, pairs: Sequence[str], owner: str) -> None:
        if not pairs:
            return
        with self._write() as conn:
            _SYNC_SQL.release_locks(conn, pairs, owner)

    def conflicts(
        self,
        *,
        route: str | None = None,
        status: str | None = "open",
        ids: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[ConflictRecord]:
        with self._lock:
            return _SYNC_SQL.read_conflicts(self._conn, route, status, ids, limit)

    def put_conflicts(self, records: Sequence[ConflictRecord]) -> None:
        if not records:
            return
        with self._write() as conn:
            _SYNC_SQL.put_conflicts(conn, records)

    def count_open_conflicts(self, route: str) -> int:
        with self._lock:
            return int(self._conn.execute(_SYNC_SQL.open_count, (route,)).fetchone()[0])

    # ----- flow runs --------------------------------------------------------------------
    def get_flow_run(self, flow: str, key: str) -> FlowRunRecord | None:
        with self._lock:
            row = self._conn.execute(_FLOW_RUN_SELECT + " WHERE flow = ? AND key = ?", (flow, key)).fetchone()
        return FlowRunRecord(*row) if row else None

    def save_flow_run(self, run: FlowRunRecord) -> bool:
        now = time.time()
        with self._write() as conn:
            sql, params = save_flow_run_statement(run, now, "?")
            cursor = conn.execute(sql, params)
            saved = cursor.rowcount == 1
        if saved:
            run.revision += 1
            run.updated_at = now
        return saved

    def list_flow_runs(
        self, flow: str | None = None, key: str | None = None, statuses: Sequence[str] = (), limit: int = 100
    ) -> list[FlowRunRecord]:
        where, params = _flow_run_filter(flow, key, statuses, "?")
        with self._lock:
            rows = self._conn.execute(
                f"{_FLOW_RUN_SELECT}{where} ORDER BY updated_at DESC, flow, key LIMIT ?", (*params, limit)
            ).fetchall()
        return [FlowRunRecord(*row) for row in rows]

    def put_flow_signal(self, flow: str, key: str, signal: str, payload: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO flow_signals (flow, key, signal, payload, received_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (flow, key, signal) DO UPDATE SET payload = excluded.payload, "
                "received_at = excluded.received_at",
                (flow, key, signal, payload, time.time()),
            )

    def flow_signals(self, flow: str, key: str) -> dict[str, str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT signal, payload FROM flow_signals WHERE flow = ? AND key = ?", (flow, key)
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"
