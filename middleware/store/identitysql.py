"""Target-record identity in SQL, shared by the SQLite and PostgreSQL stores.

Two tables (see `middleware.runtime.identity` for what a route does with them):

* `target_claims` — one row per target record identity (system, entity, business key): who
  claimed it and when, and, once created, its target id. The primary key is what makes
  find-or-create atomic across routes, processes and hosts: only one transaction can insert
  the row, every other one sees it (PostgreSQL makes a concurrent insert wait for the first
  to commit; SQLite has one writer at a time).
* `path_fingerprints` — per source record and target entity, the content hash of what was
  last written, so the same change arriving by a second path (webhook, then poll) is skipped.

Only the placeholder (`?` or `%s`) and the floating-point column type differ between the databases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from middleware.store.base import IdentityClaim, IdentityWrite, PathFingerprint, RecordRef, TargetIdentity


def ddl(real: str) -> list[str]:
    """CREATE statements; `real` is the floating-point column type of the database."""
    return [
        f"""CREATE TABLE IF NOT EXISTS target_claims (
            system       TEXT NOT NULL,
            entity       TEXT NOT NULL,
            business_key TEXT NOT NULL,
            claimant     TEXT NOT NULL,
            claimed_at   {real} NOT NULL,
            target_id    TEXT,
            PRIMARY KEY (system, entity, business_key)
        )""",
        f"""CREATE TABLE IF NOT EXISTS path_fingerprints (
            src_system   TEXT NOT NULL,
            src_entity   TEXT NOT NULL,
            src_id       TEXT NOT NULL,
            dst_system   TEXT NOT NULL,
            dst_entity   TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            path         TEXT NOT NULL,
            written_at   {real} NOT NULL,
            PRIMARY KEY (src_system, src_entity, src_id, dst_system, dst_entity)
        )""",
    ]


class _Executes(Protocol):
    def execute(self, query: Any, params: Any = ...) -> Any: ...


class IdentitySql:
    """The statements, written with one database's placeholder."""

    def __init__(self, p: str) -> None:
        where = f"system = {p} AND entity = {p} AND business_key = {p}"
        self.insert = (
            "INSERT INTO target_claims (system, entity, business_key, claimant, claimed_at, target_id) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, NULL) ON CONFLICT (system, entity, business_key) DO NOTHING"
        )
        # An unlinked claim is taken over when it is ours already or its lease ran out.
        self.take_over = (
            f"UPDATE target_claims SET claimant = {p}, claimed_at = {p} "
            f"WHERE {where} AND target_id IS NULL AND (claimant = {p} OR claimed_at < {p})"
        )
        self.read = f"SELECT claimant, claimed_at, target_id FROM target_claims WHERE {where}"
        self.link = (
            "INSERT INTO target_claims (system, entity, business_key, claimant, claimed_at, target_id) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (system, entity, business_key) "
            "DO UPDATE SET target_id = excluded.target_id"
        )
        self.expire = f"UPDATE target_claims SET claimed_at = 0 WHERE {where} AND claimant = {p} AND target_id IS NULL"
        self.fingerprint_get = (
            f"SELECT content_hash, path FROM path_fingerprints WHERE src_system = {p} AND src_entity = {p} "
            f"AND src_id = {p} AND dst_system = {p} AND dst_entity = {p}"
        )
        self.fingerprint_put = (
            "INSERT INTO path_fingerprints (src_system, src_entity, src_id, dst_system, dst_entity, content_hash, "
            f"path, written_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}) "
            "ON CONFLICT (src_system, src_entity, src_id, dst_system, dst_entity) "
            "DO UPDATE SET content_hash = excluded.content_hash, path = excluded.path, written_at = excluded.written_at"
        )

    def claim(
        self, conn: _Executes, identities: Sequence[TargetIdentity], claimant: str, now: float, lease_s: float
    ) -> dict[TargetIdentity, IdentityClaim]:
        """Claim each identity in the caller's transaction (see `Store.claim_identities`).

        One order everywhere (sorted), so two batches claiming overlapping identities on
        PostgreSQL wait for each other instead of deadlocking."""
        answers: dict[TargetIdentity, IdentityClaim] = {}
        for identity in sorted(set(identities), key=_order):
            key = (identity.system, identity.entity, identity.key)
            if conn.execute(self.insert, (*key, claimant, now)).rowcount == 1:
                answers[identity] = IdentityClaim(identity, "new", None, claimant, now)
                continue
            if conn.execute(self.take_over, (claimant, now, *key, claimant, now - lease_s)).rowcount == 1:
                answers[identity] = IdentityClaim(identity, "recover", None, claimant, now)
                continue
            row = conn.execute(self.read, key).fetchone()
            if row is None:  # deleted between the statements (an operator): free again
                conn.execute(self.insert, (*key, claimant, now))
                answers[identity] = IdentityClaim(identity, "new", None, claimant, now)
            elif row[2] is not None:
                answers[identity] = IdentityClaim(identity, "linked", str(row[2]), str(row[0]), float(row[1]))
            else:
                answers[identity] = IdentityClaim(identity, "held", None, str(row[0]), float(row[1]))
        return answers

    def read_fingerprints(
        self, conn: _Executes, sources: Sequence[RecordRef], target_system: str, target_entity: str
    ) -> dict[RecordRef, PathFingerprint]:
        found: dict[RecordRef, PathFingerprint] = {}
        for ref in dict.fromkeys(sources):
            row = conn.execute(
                self.fingerprint_get, (ref.system, ref.entity, ref.id, target_system, target_entity)
            ).fetchone()
            if row:
                found[ref] = PathFingerprint(ref, target_system, target_entity, str(row[0]), str(row[1]))
        return found

    def write(self, conn: _Executes, identity: IdentityWrite, now: float) -> None:
        """A batch's identity bookkeeping, in the caller's transaction (sorted: no deadlocks)."""
        for target, target_id in sorted(identity.linked, key=lambda pair: _order(pair[0])):
            conn.execute(self.link, (target.system, target.entity, target.key, identity.claimant, now, target_id))
        for target in sorted(identity.expired, key=_order):
            conn.execute(self.expire, (target.system, target.entity, target.key, identity.claimant))
        ordered = sorted(identity.fingerprints, key=lambda f: (f.source.system, f.source.entity, f.source.id))
        for fp in ordered:
            src = fp.source
            conn.execute(
                self.fingerprint_put,
                (src.system, src.entity, src.id, fp.target_system, fp.target_entity, fp.content_hash, fp.path, now),
            )


def _order(identity: TargetIdentity) -> tuple[str, str, str]:
    return identity.system, identity.entity, identity.key
