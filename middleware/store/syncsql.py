"""Two-way sync bookkeeping in SQL, shared by the SQLite and PostgreSQL stores.

Four tables (see `middleware.sync.twoway` for what they mean to a route):

* `echo_stamps` — per record Isthmus wrote: the content hash of what it wrote, the fields, the
  route that wrote it and when, so the change it causes is recognised when it is read back;
* `sync_state` — per linked pair of records: the JSON field timeline both directions decide on;
* `sync_locks` — a short lease per pair, so the two routes of a pair never decide on it at once;
* `conflicts` — every conflict found: open ones (parked, manual policy) and decided ones.

Only the placeholder (`?` or `%s`) and two column types differ between the databases.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from middleware.store.base import ConflictRecord, EchoStamp, RecordRef, SyncWrite
from middleware.store.sql_filters import where_clause


def ddl(real: str) -> list[str]:
    """CREATE statements; `real` is the floating-point column type of the database."""
    return [
        f"""CREATE TABLE IF NOT EXISTS echo_stamps (
            system       TEXT NOT NULL,
            entity       TEXT NOT NULL,
            record_id    TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            fields       TEXT NOT NULL,
            origin       TEXT NOT NULL,
            written_at   {real} NOT NULL,
            PRIMARY KEY (system, entity, record_id)
        )""",
        f"""CREATE TABLE IF NOT EXISTS sync_state (
            pair       TEXT PRIMARY KEY,
            state      TEXT NOT NULL,
            updated_at {real} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS sync_locks (
            pair       TEXT PRIMARY KEY,
            owner      TEXT NOT NULL,
            expires_at {real} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS conflicts (
            id          TEXT PRIMARY KEY,
            route       TEXT NOT NULL,
            pair        TEXT NOT NULL,
            field       TEXT NOT NULL,
            policy      TEXT NOT NULL,
            status      TEXT NOT NULL,
            detected_at {real} NOT NULL,
            resolved_at {real},
            detail      TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS conflicts_by_status ON conflicts (status, route, detected_at)",
    ]


class _Executes(Protocol):
    def execute(self, query: Any, params: Any = ...) -> Any: ...


class SyncSql:
    """The statements, written with one database's placeholder."""

    def __init__(self, p: str) -> None:
        self.p = p
        self.stamp_get = (
            "SELECT content_hash, fields, origin, written_at FROM echo_stamps "
            f"WHERE system = {p} AND entity = {p} AND record_id = {p}"
        )
        self.stamp_put = (
            "INSERT INTO echo_stamps (system, entity, record_id, content_hash, fields, origin, written_at) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (system, entity, record_id) DO UPDATE SET "
            "content_hash = excluded.content_hash, fields = excluded.fields, origin = excluded.origin, "
            "written_at = excluded.written_at"
        )
        self.stamp_drop = f"DELETE FROM echo_stamps WHERE system = {p} AND entity = {p} AND record_id = {p}"
        self.state_get = f"SELECT state FROM sync_state WHERE pair = {p}"
        self.state_put = (
            f"INSERT INTO sync_state (pair, state, updated_at) VALUES ({p}, {p}, {p}) "
            "ON CONFLICT (pair) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at"
        )
        # Taken when free, expired, or already ours (a retried batch renews its own lease).
        self.lock_take = (
            f"INSERT INTO sync_locks (pair, owner, expires_at) VALUES ({p}, {p}, {p}) "
            "ON CONFLICT (pair) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
            f"WHERE sync_locks.owner = excluded.owner OR sync_locks.expires_at < {p}"
        )
        self.lock_release = f"DELETE FROM sync_locks WHERE pair = {p} AND owner = {p}"
        self.conflict_put = (
            "INSERT INTO conflicts (id, route, pair, field, policy, status, detected_at, resolved_at, detail) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (id) DO UPDATE SET "
            "status = excluded.status, resolved_at = excluded.resolved_at, detail = excluded.detail, "
            "policy = excluded.policy"
        )
        self.conflict_columns = "id, route, pair, field, policy, status, detected_at, resolved_at, detail"
        self.open_count = f"SELECT count(*) FROM conflicts WHERE status = 'open' AND route = {p}"

    # ----- reads ----------------------------------------------------------------------------
    def read_stamps(self, conn: _Executes, refs: Sequence[RecordRef]) -> dict[RecordRef, EchoStamp]:
        found: dict[RecordRef, EchoStamp] = {}
        for ref in dict.fromkeys(refs):
            row = conn.execute(self.stamp_get, (ref.system, ref.entity, ref.id)).fetchone()
            if row:
                found[ref] = EchoStamp(ref, row[0], tuple(json.loads(row[1])), row[2], float(row[3]))
        return found

    def read_states(self, conn: _Executes, pairs: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for pair in dict.fromkeys(pairs):
            row = conn.execute(self.state_get, (pair,)).fetchone()
            if row:
                found[pair] = json.loads(row[0])
        return found

    def read_conflicts(
        self,
        conn: _Executes,
        route: str | None,
        status: str | None,
        ids: Sequence[str] | None,
        limit: int,
    ) -> list[ConflictRecord]:
        if ids is not None and not ids:
            return []  # asked for none of them, not for all
        clause, params = where_clause(self.p, {"route": route, "status": status}, {"id": ids or ()})
        rows = conn.execute(
            f"SELECT {self.conflict_columns} FROM conflicts{clause} ORDER BY detected_at, id LIMIT {int(limit)}",
            params,
        ).fetchall()
        return [
            ConflictRecord(
                id=row[0],
                route=row[1],
                pair=row[2],
                field=row[3],
                policy=row[4],
                status=row[5],
                detected_at=float(row[6]),
                resolved_at=None if row[7] is None else float(row[7]),
                detail=json.loads(row[8]),
            )
            for row in rows
        ]

    # ----- writes (inside the caller's transaction) -----------------------------------------
    def take_locks(self, conn: _Executes, pairs: Sequence[str], owner: str, now: float, ttl_s: float) -> set[str]:
        taken: set[str] = set()
        for pair in sorted(set(pairs)):  # one order everywhere: two batches cannot deadlock
            cursor = conn.execute(self.lock_take, (pair, owner, now + ttl_s, now))
            if cursor.rowcount:
                taken.add(pair)
        return taken

    def release_locks(self, conn: _Executes, pairs: Sequence[str], owner: str) -> None:
        for pair in sorted(set(pairs)):
            conn.execute(self.lock_release, (pair, owner))

    def put_conflicts(self, conn: _Executes, records: Sequence[ConflictRecord]) -> None:
        for c in records:
            conn.execute(
                self.conflict_put,
                (
                    c.id,
                    c.route,
                    c.pair,
                    c.field,
                    c.policy,
                    c.status,
                    c.detected_at,
                    c.resolved_at,
                    json.dumps(c.detail, sort_keys=True),
                ),
            )

    def write_sync(self, conn: _Executes, sync: SyncWrite, now: float) -> None:
        """Everything a batch learned about its pairs, in the caller's transaction."""
        for ref in sync.dropped_stamps:
            conn.execute(self.stamp_drop, (ref.system, ref.entity, ref.id))
        for stamp in sync.stamps:
            ref = stamp.ref
            conn.execute(
                self.stamp_put,
                (
                    ref.system,
                    ref.entity,
                    ref.id,
                    stamp.content_hash,
                    json.dumps(list(stamp.fields)),
                    stamp.origin,
                    stamp.written_at,
                ),
            )
        for pair in sorted(sync.states):
            conn.execute(self.state_put, (pair, json.dumps(sync.states[pair], sort_keys=True), now))
        self.put_conflicts(conn, sync.conflicts)
        if sync.released_locks:
            self.release_locks(conn, sync.released_locks, sync.lock_owner)


def sync_is_empty(sync: SyncWrite | None) -> bool:
    return sync is None or not (
        sync.stamps or sync.dropped_stamps or sync.states or sync.conflicts or sync.released_locks
    )
