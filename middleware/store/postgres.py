"""PostgreSQL state store: shared by workers on several hosts.

URL: `postgresql://user[:password]@host[:port]/db[?schema=NAME&...]`. `schema` is ours, not
libpq's, so it is removed before connecting; when given, the schema is created and put on
the search path, which lets deployments (and tests) keep their tables apart in one database.

Each thread has its own connection (psycopg connections are not for concurrent use). Every
method is one transaction, committed before it returns. A call that fails because the
connection dropped (server restart, failover) reconnects and runs once more: every method
is idempotent, so repeating it is safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from middleware.redact import redact_url as redact
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

T = TypeVar("T")

# Any fixed number works as long as every Isthmus process uses the same one.
_DDL_LOCK_ID = 0x15_7E_05

_LINK_SQL = link_statements("%s")
_SYNC_SQL = SyncSql("%s")
_IDENTITY_SQL = IdentitySql("%s")


def split_schema(url: str) -> tuple[str, str | None]:
    """(URL libpq accepts, schema or None): the `schema` query parameter removed."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for name, value in query if name == "schema"), None)
    rest = urlencode([(name, value) for name, value in query if name != "schema"])
    return urlunsplit(parts._replace(query=rest)), (schema or None)


class PostgresStore:
    """The Store protocol on PostgreSQL; see the module docstring for the guarantees."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conninfo, self.schema = split_schema(url)
        self._local = threading.local()
        self._all: list[psycopg.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        self._run(self._create_tables)

    # ----- connections ----------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=False)
        except psycopg.OperationalError as exc:
            # libpq messages do not contain the password, but name the store without it anyway.
            raise psycopg.OperationalError(f"cannot connect to state store {redact(self.url)}: {exc}") from None
        if self.schema:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            conn.commit()
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _connection(self) -> psycopg.Connection:
        if self._closed:
            raise RuntimeError(f"state store {redact(self.url)} is closed")
        conn: psycopg.Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _discard(self, conn: psycopg.Connection) -> None:
        with self._all_lock:
            if conn in self._all:
                self._all.remove(conn)
        conn.close()
        self._local.conn = None

    def _run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """Run `work` in one transaction and commit; once more after a lost connection."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                result = work(conn)
                conn.commit()
                return result
            except psycopg.OperationalError:
                # Also covers deadlocks and serialization failures, which a retry resolves.
                if conn.broken or conn.closed:
                    self._discard(conn)
                else:
                    conn.rollback()
                if attempt == 2:
                    raise
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise
        raise AssertionError("unreachable")

    def _create_tables(self, conn: psycopg.Connection) -> None:
        # Serialises concurrent first starts: IF NOT EXISTS alone can still collide on the catalog.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK_ID,))
        if self.schema:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
        for statement in [
            *store_tables("DOUBLE PRECISION", without_rowid=False),
            *ddl("DOUBLE PRECISION"),
            *identity_ddl("DOUBLE PRECISION"),
        ]:
            conn.execute(statement)  # type: ignore[arg-type]  # constant SQL

    # ----- xref -----------------------------------------------------------------------
    def link(self, a: RecordRef, b: RecordRef) -> None:
        self._run(lambda conn: write_link(conn, _LINK_SQL, a, b))

    def lookup(self, ref: RecordRef, other_system: str) -> RecordRef | None:
        def work(conn: psycopg.Connection) -> tuple[str, str] | None:
            return conn.execute(  # type: ignore[return-value]
                "SELECT dst_entity, dst_id FROM xref "
                "WHERE src_system = %s AND src_entity = %s AND src_id = %s AND dst_system = %s",
                (ref.system, ref.entity, ref.id, other_system),
            ).fetchone()

        row = self._run(work)
        return RecordRef(other_system, row[0], row[1]) if row else None

    def lookup_many(self, refs: Sequence[RecordRef], other_system: str) -> dict[RecordRef, RecordRef]:
        unique = list(dict.fromkeys(refs))
        if not unique:
            return {}

        def work(conn: psycopg.Connection) -> list[tuple[str, str, str, str, str]]:
            return conn.execute(  # type: ignore[return-value]
                "SELECT x.s, x.e, x.i, xref.dst_entity, xref.dst_id "
                "FROM unnest(%s::text[], %s::text[], %s::text[]) AS x(s, e, i) "
                "JOIN xref ON xref.src_system = x.s AND xref.src_entity = x.e AND xref.src_id = x.i "
                "AND xref.dst_system = %s",
                ([r.system for r in unique], [r.entity for r in unique], [r.id for r in unique], other_system),
            ).fetchall()

        return {RecordRef(s, e, i): RecordRef(other_system, de, di) for s, e, i, de, di in self._run(work)}

    # ----- watermarks -----------------------------------------------------------------
    def get_watermark(self, name: str) -> str | None:
        def work(conn: psycopg.Connection) -> str | None:
            row = conn.execute("SELECT value FROM watermarks WHERE name = %s", (name,)).fetchone()
            return row[0] if row else None

        return self._run(work)

    def set_watermark(self, name: str, value: str) -> None:
        def work(conn: psycopg.Connection) -> None:
            conn.execute(
                "INSERT INTO watermarks (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                (name, value),
            )

        self._run(work)

    # ----- idempotency ----------------------------------------------------------------
    def applied(self, route: str, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        wanted = list(keys)

        def work(conn: psycopg.Connection) -> set[str]:
            rows = conn.execute("SELECT key FROM applied WHERE route = %s AND key = ANY(%s)", (route, wanted))
            return {row[0] for row in rows}

        return self._run(work)

    def latest_versions(self, route: str, record_keys: Sequence[str]) -> dict[str, float]:
        if not record_keys:
            return {}
        wanted = list(dict.fromkeys(record_keys))

        def work(conn: psycopg.Connection) -> dict[str, float]:
            rows = conn.execute(
                "SELECT record_key, changed_at FROM record_versions WHERE route = %s AND record_key = ANY(%s)",
                (route, wanted),
            )
            return {row[0]: float(row[1]) for row in rows}

        return self._run(work)

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
        # Sorted: concurrent batches then take index locks in the same order and cannot deadlock.
        ordered = sorted(set(keys))
        ordered_links = sorted(links, key=lambda pair: (pair[0].system, pair[0].entity, pair[0].id))
        ordered_versions = sorted((versions or {}).items())

        def work(conn: psycopg.Connection) -> None:
            for a, b in ordered_links:
                write_link(conn, _LINK_SQL, a, b)
            if ordered:
                conn.execute(
                    "INSERT INTO applied (route, key) SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING",
                    (route, ordered),
                )
            if ordered_versions:
                conn.execute(
                    "INSERT INTO record_versions (route, record_key, changed_at) "
                    "SELECT %s, k, t FROM unnest(%s::text[], %s::float8[]) AS v(k, t) "
                    "ON CONFLICT (route, record_key) DO UPDATE "
                    "SET changed_at = GREATEST(record_versions.changed_at, EXCLUDED.changed_at)",
                    (route, [k for k, _ in ordered_versions], [t for _, t in ordered_versions]),
                )
            if sync is not None:
                _SYNC_SQL.write_sync(conn, sync, time.time())
            if identity:
                _IDENTITY_SQL.write(conn, identity, time.time())

        self._run(work)

    # ----- target-record identity -----------------------------------------------------------
    def claim_identities(
        self, identities: Sequence[TargetIdentity], claimant: str, lease_s: float
    ) -> dict[TargetIdentity, IdentityClaim]:
        if not identities:
            return {}
        # Read committed: a concurrent insert of the same identity waits for the first claimant's
        # commit, then finds its row; the take-over and the read see the latest committed row.
        return self._run(lambda conn: _IDENTITY_SQL.claim(conn, identities, claimant, time.time(), lease_s))

    def path_fingerprints(
        self, sources: Sequence[RecordRef], target_system: str, target_entity: str
    ) -> dict[RecordRef, PathFingerprint]:
        if not sources:
            return {}
        return self._run(lambda conn: _IDENTITY_SQL.read_fingerprints(conn, sources, target_system, target_entity))

    # ----- two-way sync -----------------------------------------------------------------
    def echo_stamps(self, refs: Sequence[RecordRef]) -> dict[RecordRef, EchoStamp]:
        return self._run(lambda conn: _SYNC_SQL.read_stamps(conn, refs))

    def sync_states(self, pairs: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self._run(lambda conn: _SYNC_SQL.read_states(conn, pairs))

    def lock_pairs(self, pairs: Sequence[str], owner: str, ttl_s: float) -> set[str]:
        if not pairs:
            return set()
        return self._run(lambda conn: _SYNC_SQL.take_locks(conn, pairs, owner, time.time(), ttl_s))

    def unlock_pairs(self, pairs: Sequence[str], owner: str) -> None:
        if pairs:
            self._run(lambda conn: _SYNC_SQL.release_locks(conn, pairs, owner))

    def conflicts(
        self,
        *,
        route: str | None = None,
        status: str | None = "open",
        ids: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[ConflictRecord]:
        return self._run(lambda conn: _SYNC_SQL.read_conflicts(conn, route, status, ids, limit))

    def put_conflicts(self, records: Sequence[ConflictRecord]) -> None:
        if records:
            self._run(lambda conn: _SYNC_SQL.put_conflicts(conn, records))

    def count_open_conflicts(self, route: str) -> int:
        return self._run(lambda conn: int(conn.execute(_SYNC_SQL.open_count, (route,)).fetchone()[0]))  # type: ignore[arg-type,index]

    # ----- flow runs --------------------------------------------------------------------
    def get_flow_run(self, flow: str, key: str) -> FlowRunRecord | None:
        def work(conn: psycopg.Connection) -> FlowRunRecord | None:
            row = conn.execute(_FLOW_RUN_SELECT + " WHERE flow = %s AND key = %s", (flow, key)).fetchone()
            return FlowRunRecord(*row) if row else None

        return self._run(work)

    def save_flow_run(self, run: FlowRunRecord) -> bool:
        now = time.time()

        def work(conn: psycopg.Connection) -> bool:
            sql, params = save_flow_run_statement(run, now, "%s")
            cursor = conn.execute(sql, params)
            return cursor.rowcount == 1

        saved = self._run(work)
        if saved:
            run.revision += 1
            run.updated_at = now
        return saved

    def list_flow_runs(
        self, flow: str | None = None, key: str | None = None, statuses: Sequence[str] = (), limit: int = 100
    ) -> list[FlowRunRecord]:
        where, params = _flow_run_filter(flow, key, statuses, "%s")

        def work(conn: psycopg.Connection) -> list[FlowRunRecord]:
            rows = conn.execute(
                f"{_FLOW_RUN_SELECT}{where} ORDER BY updated_at DESC, flow, key LIMIT %s",  # type: ignore[arg-type]
                (*params, limit),
            ).fetchall()
            return [FlowRunRecord(*row) for row in rows]

        return self._run(work)

    def put_flow_signal(self, flow: str, key: str, signal: str, payload: str) -> None:
        def work(conn: psycopg.Connection) -> None:
            conn.execute(
                "INSERT INTO flow_signals (flow, key, signal, payload, received_at) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (flow, key, signal) DO UPDATE SET payload = EXCLUDED.payload, "
                "received_at = EXCLUDED.received_at",
                (flow, key, signal, payload, time.time()),
            )

        self._run(work)

    def flow_signals(self, flow: str, key: str) -> dict[str, str]:
        def work(conn: psycopg.Connection) -> dict[str, str]:
            rows = conn.execute(
                "SELECT signal, payload FROM flow_signals WHERE flow = %s AND key = %s", (flow, key)
            ).fetchall()
            return {row[0]: row[1] for row in rows}

        return self._run(work)

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self.url)!r})"
