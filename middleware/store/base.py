"""The state store: ID cross-references, poll watermarks, applied-message keys and two-way sync state.

SQLite by default (`sqlite:///path.db`), PostgreSQL by URL (`postgresql://...`). All
methods are safe to call from several threads (each implementation serialises or pools
connections) and several processes (the database does the locking). Every write is
committed before the method returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class RecordRef:
    """A record in one system: (system, entity, id), e.g. ('crm', 'customer', 'C-1001')."""

    system: str
    entity: str
    id: str


@dataclass
class FlowRunRecord:
    """One run of a flow for one business key (middleware/flows): where it stands, as stored.

    `state` is the run's JSON (its input, step outputs and trail), opaque to the store.
    `revision` is the revision it was read at (0 for a run not stored yet); `save_flow_run`
    writes only over that revision and then increments it, so two workers advancing the
    same run cannot overwrite each other's progress.
    """

    flow: str
    key: str
    run_id: str
    status: str  # running | waiting | compensating | completed | failed
    position: int  # index of the next step (or compensation) to run
    state: str
    waiting_for: str | None = None
    revision: int = 0
    updated_at: float = 0.0


@dataclass(frozen=True)
class EchoStamp:
    """What a route last wrote to one record, so the change it causes is known when read back.

    `content_hash` is `middleware.sync.echo.content_hash` of the canonical values of `fields`
    (the synced fields the writes changed); `written_at` is Unix time taken just before the
    write; `origin` is the route that wrote."""

    ref: RecordRef
    content_hash: str
    fields: tuple[str, ...]
    origin: str
    written_at: float


@dataclass
class ConflictRecord:
    """One conflict on one field of one linked pair: open (parked for review) or resolved.

    `detail` holds both versions (`sides`: system -> ref, value, changed_at), the routes of
    the pair, and for a resolved conflict who won and how (`resolution`)."""

    id: str
    route: str
    pair: str
    field: str
    policy: str
    status: str  # "open" or "resolved"
    detected_at: float
    detail: dict[str, Any]
    resolved_at: float | None = None


@dataclass
class SyncWrite:
    """Two-way bookkeeping a batch commits together with its applied keys (see `mark_applied`)."""

    stamps: Sequence[EchoStamp] = ()
    dropped_stamps: Sequence[RecordRef] = ()
    states: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    conflicts: Sequence[ConflictRecord] = ()
    lock_owner: str = ""
    released_locks: Sequence[str] = ()


@dataclass(frozen=True)
class TargetIdentity:
    """A target record by what identifies it in the business: (system, entity, business key).

    E.g. ('tryton', 'sale', 'SO-5001'): every route, path (webhook, poll, replay, heal, flow
    step) and worker process that writes this sale writes this identity, so the store can
    let exactly one of them create it (see `Store.claim_identities`)."""

    system: str
    entity: str
    key: str


ClaimStatus = Literal["new", "recover", "linked", "held"]


@dataclass(frozen=True)
class IdentityClaim:
    """What `claim_identities` answered for one identity.

    * `new` — the claim is the caller's and no record was claimed before: create it;
    * `recover` — the caller took over a claim left without a target id (its claimant died, or
      its write failed): the record may exist in the target, so find it by key before creating;
    * `linked` — the record exists (`target_id`): update it, never create it;
    * `held` — another writer holds a live claim: wait for it, or retry later.
    """

    identity: TargetIdentity
    status: ClaimStatus
    target_id: str | None
    claimant: str
    claimed_at: float


@dataclass(frozen=True)
class PathFingerprint:
    """What was last written to one target entity for one source record, and by which path.

    `content_hash` is the hash of the mapped record; `path` is the route and message type that
    wrote it (e.g. `deals_won:deal.won`). A message of another path (the poll after the webhook,
    another route of the same record) that maps to the same content is skipped as
    `duplicate_path`."""

    source: RecordRef
    target_system: str
    target_entity: str
    content_hash: str
    path: str = ""


@dataclass
class IdentityWrite:
    """Target-identity bookkeeping a batch commits together with its applied keys (`mark_applied`).

    `linked`: identity → the target id its record has now (set on the claim, whoever held it);
    `expired`: claims of `claimant` whose write failed, left unlinked but expired at once, so the
    next claimant finds the record by key before creating (the failed write may have landed);
    `fingerprints`: what was written per source record and target entity."""

    claimant: str = ""
    linked: Sequence[tuple[TargetIdentity, str]] = ()
    expired: Sequence[TargetIdentity] = ()
    fingerprints: Sequence[PathFingerprint] = ()

    def __bool__(self) -> bool:
        return bool(self.linked or self.expired or self.fingerprints)


class Store(Protocol):
    url: str

    def link(self, a: RecordRef, b: RecordRef) -> None:
        """Record that `a` and `b` are the same thing; both directions; re-linking updates."""

    def lookup(self, ref: RecordRef, other_system: str) -> RecordRef | None:
        """The record in `other_system` linked to `ref`, if any."""

    def lookup_many(self, refs: Sequence[RecordRef], other_system: str) -> dict[RecordRef, RecordRef]:
        """`lookup` for a whole batch in one round trip; refs without a link are left out."""

    def get_watermark(self, name: str) -> str | None: ...

    def set_watermark(self, name: str, value: str) -> None: ...

    def applied(self, route: str, keys: Sequence[str]) -> set[str]:
        """Which of `keys` were already applied on `route` (idempotency)."""

    def latest_versions(self, route: str, record_keys: Sequence[str]) -> dict[str, float]:
        """The newest source change time (Unix seconds) applied on `route` per record key; records
        never applied are left out. The route skips a change older than this one (stale)."""

    def mark_applied(
        self,
        route: str,
        keys: Sequence[str],
        links: Sequence[tuple[RecordRef, RecordRef]] = (),
        versions: Mapping[str, float] | None = None,
        sync: SyncWrite | None = None,
        identity: IdentityWrite | None = None,
    ) -> None:
        """Remember `keys` as applied on `route`, record `links` (as `link` does) and raise each
        record's latest version to at least `versions[record_key]` (never lowers it), in one
        transaction: a batch costs one durable commit, and everything it learned lands together.
        A two-way route adds its `sync` bookkeeping (echo stamps, pair states, conflicts,
        released pair locks) to that same transaction, and every route its `identity`
        bookkeeping (claims linked to the records created, claims expired, path fingerprints)."""

    # ----- target-record identity (middleware/runtime/identity.py) -----------------------------
    def claim_identities(
        self, identities: Sequence[TargetIdentity], claimant: str, lease_s: float
    ) -> dict[TargetIdentity, IdentityClaim]:
        """Claim each identity for `claimant`, atomically per identity, in one transaction.

        A free identity is claimed (`new`); one whose claim has no target id and is expired
        (older than `lease_s`) or is already `claimant`'s is taken over (`recover`); one with a
        target id is answered `linked`; one under another claimant's live lease `held`. The
        claim row is unique on (system, entity, key): two processes, or two hosts on
        PostgreSQL, racing for one identity get `new` exactly once."""

    def path_fingerprints(
        self, sources: Sequence[RecordRef], target_system: str, target_entity: str
    ) -> dict[RecordRef, PathFingerprint]:
        """What was last written to `target_system`/`target_entity` per source record; records never
        written there are left out."""

    # ----- two-way sync (middleware/sync/twoway.py) ------------------------------------------------
    def echo_stamps(self, refs: Sequence[RecordRef]) -> dict[RecordRef, EchoStamp]:
        """The stamps of these records, where a route wrote one; others are left out."""

    def sync_states(self, pairs: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The JSON state of these linked pairs; pairs never synced are left out."""

    def lock_pairs(self, pairs: Sequence[str], owner: str, ttl_s: float) -> set[str]:
        """Take a lease of `ttl_s` on each pair that is free, expired or already `owner`'s; return
        those taken. So the two routes of a pair decide on it one at a time."""

    def unlock_pairs(self, pairs: Sequence[str], owner: str) -> None:
        """Release `owner`'s leases on `pairs` (leases of other owners are left alone)."""

    def conflicts(
        self,
        *,
        route: str | None = None,
        status: str | None = "open",
        ids: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[ConflictRecord]:
        """Conflicts, oldest first: open ones by default, `status=None` for all; `ids` picks some."""

    def put_conflicts(self, records: Sequence[ConflictRecord]) -> None:
        """Insert or update conflicts by id (`isthmus conflicts resolve` marks one resolved)."""

    def count_open_conflicts(self, route: str) -> int:
        """Open conflicts found by `route` (the `isthmus_conflicts_open` gauge)."""

    def get_flow_run(self, flow: str, key: str) -> FlowRunRecord | None:
        """The run of `flow` for business key `key`, if any."""

    def save_flow_run(self, run: FlowRunRecord) -> bool:
        """Store `run` if it is still at `run.revision` (0: if no run for its flow and key exists);
        on success `run.revision` is incremented and True returned; False when another writer got
        there first (the caller reloads)."""

    def list_flow_runs(
        self, flow: str | None = None, key: str | None = None, statuses: Sequence[str] = (), limit: int = 100
    ) -> list[FlowRunRecord]:
        """Runs, most recently updated first, optionally only of one flow, key or some statuses."""

    def put_flow_signal(self, flow: str, key: str, signal: str, payload: str) -> None:
        """Remember the latest `signal` (JSON `payload`) for the run of `flow` with `key` (replaces an older one)."""

    def flow_signals(self, flow: str, key: str) -> dict[str, str]:
        """Signal name → its latest JSON payload, for the run of `flow` with `key`."""

    def close(self) -> None: ...
