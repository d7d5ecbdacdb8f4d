"""One target record, one identity: find-or-create through the state store, and one change per path.

**Target-record identity** (pattern: an idempotent receiver on the target side). A route whose
target has a business key (`to: {key: reference}`, or the adapter's own key field) writes each
record under the identity `(target system, target entity, business key)`, whatever route,
source path (webhook, poll, replay, heal) or worker process produced the write. Creating is
*claim → create → link*:

1. **claim** — `Store.claim_identities` inserts a row unique on the identity; exactly one
   writer gets `new`, on one host (SQLite) or several (PostgreSQL);
2. **create** — only the claimant creates; a writer that finds the claim *linked* updates the
   record the claimant created instead; one that finds it *held* waits (bounded, `wait_s`),
   then retries the message later without spending an attempt;
3. **link** — the target id is stored on the claim (and the xref source→target as before) in the
   batch's `mark_applied` transaction, with its applied keys.

A claim still unlinked after its lease (`to.claim_lease_s`) — its claimant was killed between
claim and link — is taken over by the next writer as `recover`: that writer asks the target
for the record by key first (`KeyFinder.find_by_key`) and updates what it finds, creating only
when the target has nothing. A writer whose write failed expires its claims at once, so the
retry recovers without waiting for the lease.

What repeats after a SIGKILL, and why it is harmless:

* after the claim, before the create: nothing was written; the next writer takes the claim over
  after the lease, finds nothing by key, creates;
* after the create, before `mark_applied` commits: the record exists but neither claim nor xref
  says so, and the message was not acked; the redelivery (or another route's message) waits
  for the lease, finds the record by key and updates it with the same content — one record;
* after the commit, before the ack: the redelivery's key is applied (skipped as `duplicate`).

Limits: a write still in flight at the target when its lease runs out (a target slower than
`claim_lease_s`), or a target that cannot be searched right after a create (search indexes
that lag), can still be created twice; the lease must exceed the slowest batch write. Routes
of a two-way pair keep their own bookkeeping (middleware/sync) and do not claim.

**One source record, many paths** (`duplicate_path`). What a route writes for one source record
to one target entity is fingerprinted (a content hash of the mapped record) and stored with the
batch. A later message about the same source record that maps to the same content — the poll
finding what the webhook already brought, under another idempotency key — is skipped as
`isthmus_messages_skipped_total{reason="duplicate_path"}`, across routes writing that entity and
across processes. Two arrivals processed at the very same moment both write (the second as an
update, thanks to the identity): the check is an optimisation, never what prevents duplicates.
A message re-emitted on purpose (`isthmus-origin` header: reconcile heal, replay) is never
skipped: it exists to write the content again.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from middleware.adapter import KeyFinder, Writer, WriteRequest
from middleware.errors import TransientError
from middleware.store.base import IdentityClaim, RecordRef, Store, TargetIdentity

log = structlog.get_logger("isthmus.identity")

CLAIM_WAIT_S = 2.0  # how long a batch waits for claims another writer holds before retrying them later
_POLL_S = (0.02, 0.05, 0.1, 0.2)


class IdentityHeldError(TransientError):
    """Another writer holds the claim on this record's identity: retried later, without spending an
    attempt (waiting for another writer is no failure), and at the latest when the lease runs out
    (`lease_left_s`: then the next writer takes the claim over)."""

    def __init__(self, message: str, *, system: str = "", retry_after: float | None = None, lease_left_s: float = 0.0):
        super().__init__(message, system=system, retry_after=retry_after)
        self.lease_left_s = lease_left_s


def business_key(record: dict[str, Any], fields: Sequence[str]) -> str | None:
    """The business key of a mapped record: its key field's value (several: a JSON list); None when
    a key field is missing or empty, so the record is written without an identity, as before."""
    values: list[Any] = []
    for name in fields:
        value: Any = record
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None or value == "" or isinstance(value, dict | list):
            return None
        values.append(value)
    if len(values) == 1:
        return str(values[0])
    return json.dumps([str(v) for v in values])


def content_hash(record: dict[str, Any]) -> str:
    """A stable hash of a mapped record (keys sorted; decimals and dates as their text)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def process_claimant(label: str) -> str:
    """host:pid:label: who holds a claim, readable by an operator; each batch adds its own suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{label}"


@dataclass
class ClaimBatch:
    """What claiming decided for a batch's requests (by index into the requests given).

    `identities`: the identity of every request that has one; `claimed`: the identities this
    batch holds unlinked (linked on success, expired on failure); `linked`: requests that became
    updates of a record another writer created; `held`: requests to retry later with the delay
    to wait; `failed`: requests whose record could not be looked for."""

    claimant: str
    identities: dict[int, TargetIdentity] = field(default_factory=dict)
    claimed: set[TargetIdentity] = field(default_factory=set)
    linked: set[int] = field(default_factory=set)
    held: dict[int, IdentityHeldError] = field(default_factory=dict)
    failed: dict[int, TransientError] = field(default_factory=dict)


class TargetIdentities:
    """Claims the identities of one route's (or step's) target records; see the module docstring."""

    def __init__(
        self,
        store: Store,
        writer: Writer,
        system: str,
        entity: str,
        key_fields: Sequence[str],
        *,
        lease_s: float,
        owner: str,
        wait_s: float = CLAIM_WAIT_S,
    ) -> None:
        self.store = store
        self.writer = writer
        self.system = system
        self.entity = entity
        self.key_fields = tuple(key_fields)
        self.lease_s = lease_s
        self.wait_s = wait_s
        self.owner = process_claimant(owner)

    def identity(self, record: dict[str, Any]) -> TargetIdentity | None:
        key = business_key(record, self.key_fields)
        return TargetIdentity(self.system, self.entity, key) if key is not None else None

    def claim(self, requests: Sequence[WriteRequest], sources: Sequence[RecordRef]) -> ClaimBatch:
        """Decide, for every request without a target id, whether it creates, updates or waits.

        Sets `target_id` on requests that must update (a linked claim, or a record found by key
        on recovery). Requests that already have a target id (the xref knows it) get an identity
        only, so the claim is linked to it when the write lands."""
        batch = ClaimBatch(claimant=f"{self.owner}:{uuid.uuid4().hex[:12]}")
        wanted: dict[TargetIdentity, list[int]] = {}
        source_of: dict[TargetIdentity, RecordRef] = {}
        for index, request in enumerate(requests):
            identity = self.identity(request.record)
            if identity is None:
                continue
            batch.identities[index] = identity
            if request.target_id is not None:
                continue
            first = source_of.setdefault(identity, sources[index])
            if first != sources[index]:
                # another source record of this batch creates the same target record: after it
                batch.held[index] = IdentityHeldError(
                    f"{self.entity} {identity.key!r} is being created for {first.system} {first.entity} "
                    f"{first.id!r} in the same batch",
                    system=self.system,
                    retry_after=0.2,
                )
                continue
            wanted.setdefault(identity, []).append(index)
        if not wanted:
            return batch
        answers = self._claim_waiting(list(wanted), batch.claimant)
        recover: list[TargetIdentity] = []
        for identity, answer in answers.items():
            indexes = wanted[identity]
            if answer.status == "linked":
                for index in indexes:
                    requests[index].target_id = answer.target_id
                    batch.linked.add(index)
            elif answer.status == "held":
                remaining = max(0.0, answer.claimed_at + self.lease_s - time.time())
                for index in indexes:
                    batch.held[index] = IdentityHeldError(
                        f"{self.entity} {identity.key!r} is being created by {answer.claimant} (claim lease "
                        f"{remaining:.0f}s left); retried when it is linked",
                        system=self.system,
                        retry_after=max(0.2, min(remaining, self.wait_s)),
                        lease_left_s=remaining,
                    )
            else:
                batch.claimed.add(identity)
                if answer.status == "recover":
                    recover.append(identity)
        if recover:
            self._recover(recover, wanted, requests, batch)
        return batch

    def _claim_waiting(self, identities: list[TargetIdentity], claimant: str) -> dict[TargetIdentity, IdentityClaim]:
        """Claim all; poll the held ones until they are linked, taken over or `wait_s` is spent."""
        answers = self.store.claim_identities(identities, claimant, self.lease_s)
        deadline = time.monotonic() + self.wait_s
        rounds = 0
        while True:
            held = [identity for identity, answer in answers.items() if answer.status == "held"]
            if not held or time.monotonic() >= deadline:
                return answers
            time.sleep(_POLL_S[min(rounds, len(_POLL_S) - 1)])
            rounds += 1
            answers.update(self.store.claim_identities(held, claimant, self.lease_s))

    def _recover(
        self,
        identities: list[TargetIdentity],
        wanted: dict[TargetIdentity, list[int]],
        requests: Sequence[WriteRequest],
        batch: ClaimBatch,
    ) -> None:
        """Claims taken over from a writer that died or failed: find the record by key before creating."""
        if not isinstance(self.writer, KeyFinder):
            return  # validation refuses a `key:` on such targets; a default key implies a finder
        records = [requests[wanted[identity][0]].record for identity in identities]
        try:
            found = self.writer.find_by_key(self.entity, records)
        except TransientError as exc:
            for identity in identities:
                for index in wanted[identity]:
                    batch.failed[index] = exc
            return
        for identity, target_id in zip(identities, found, strict=True):
            log.info(
                "identity_claim_recovered",
                system=self.system,
                entity=self.entity,
                key=identity.key,
                found=target_id,
            )
            if target_id is not None:
                for index in wanted[identity]:
                    requests[index].target_id = target_id
