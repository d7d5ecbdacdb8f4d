"""One route's decisions: consume → map → write → ack, retry, or dead-letter.

Enterprise integration patterns, as Camel names them: the route is an **Idempotent Consumer**
(a message whose idempotency key is recorded as applied is acked without effect), a
**Message Translator** (the mapping chain), a **Dead Letter Channel** (what cannot be applied
goes to the route's DLQ with its reason) and a **Message Filter** that stands in for a
**Resequencer** (a record's change older than one already applied is skipped as stale, so the
target never goes back in time although brokers reorder around retries and handovers).

This is the one place where failures are turned into actions. Adapters and mappings only
classify (`TransientError`, `PermanentError`, `MappingError`, ...); here a transient
failure becomes a delayed retry until the route's `max_attempts`, everything else goes to
the dead-letter queue with its reason, and a message is acked only after its effect was
written to the target and its key recorded as applied.

A route whose target has a business key creates each target record once, whatever route, path
or process writes it (claim → create → link, `middleware.runtime.identity`), and skips a change
of a source record that a second path brings again with the same content (`duplicate_path`).

A route with `two_way:` hands its messages to `middleware.sync.twoway.TwoWaySync`, which decides what
to write (nothing for an echo of our own write, only the changed fields otherwise, a conflict's
winner) and what to send back to the source system as a correction; the writing, acking,
retrying and dead-lettering stay here, and the pair's bookkeeping is committed in the same
store transaction as the batch's applied keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog

from middleware.adapter import Writer, WriteRequest, WriteResult
from middleware.broker.base import (
    H_ATTEMPTS,
    H_DEAD_LETTERED_AT,
    H_ERROR,
    H_ERROR_CLASS,
    H_MAPPING,
    H_ORIGIN,
    H_ORIGINAL_QUEUE,
    H_ROUTE,
    Broker,
    Delivery,
)
from middleware.broker.topics import topic_matches
from middleware.config import RouteConfig
from middleware.errors import (
    ConfigError,
    MalformedMessageError,
    MappingError,
    PermanentError,
    RecordLockedError,
    TransientError,
    UnknownMessageTypeError,
)
from middleware.message import Envelope
from middleware.observability import (
    END_TO_END_LAG,
    LAST_SUCCESS,
    MESSAGES_CONSUMED,
    MESSAGES_DEAD_LETTERED,
    MESSAGES_FAILED,
    MESSAGES_PRODUCED,
    MESSAGES_RETRIED,
    MESSAGES_SKIPPED,
    PIPELINE_LAG,
    PROCESSING_SECONDS,
    ROUTE_INFO,
)
from middleware.runtime.identity import ClaimBatch, IdentityHeldError, TargetIdentities, content_hash
from middleware.runtime.retry import backoff_delay
from middleware.store.base import IdentityWrite, PathFingerprint, RecordRef, Store, SyncWrite, TargetIdentity
from middleware.sync.twoway import CONTROL_TYPES, DEFER_S, Finished, TwoWayBatch, TwoWaySync

if TYPE_CHECKING:
    from middleware.mapping import CompiledMapping, MappingChain

log = structlog.get_logger("isthmus.route")

MapFunction = Callable[[dict[str, Any]], dict[str, Any] | None]


@dataclass
class BatchOutcome:
    """What happened to one batch; the demo and tests read it, metrics count it."""

    applied: int = 0
    skipped: int = 0
    retried: int = 0
    dead_lettered: int = 0
    lags: list[float] = field(default_factory=list)

    # A running total keeps the latest lag samples only: enough for the demo's and the bench's
    # percentiles, and a worker's memory stays flat over millions of messages (the Prometheus
    # histogram has the full distribution).
    MAX_LAGS = 20_000

    def add(self, other: BatchOutcome) -> None:
        """Add a batch's outcome to a running total (the worker keeps one per route)."""
        self.applied += other.applied
        self.skipped += other.skipped
        self.retried += other.retried
        self.dead_lettered += other.dead_lettered
        self.lags.extend(other.lags)
        if len(self.lags) > 2 * self.MAX_LAGS:  # trimmed in chunks: amortised O(1) per sample
            del self.lags[: len(self.lags) - self.MAX_LAGS]


@dataclass
class _Pending:
    delivery: Delivery
    envelope: Envelope
    request: WriteRequest
    identity: TargetIdentity | None = None  # the target record's identity, when the route keys it
    fingerprint: str | None = None  # content hash of the mapped record (duplicate_path)


@dataclass
class _IdentityBook:
    """The batch's identity bookkeeping, committed with `mark_applied` (see `IdentityWrite`)."""

    claims: ClaimBatch | None = None
    linked: list[tuple[TargetIdentity, str]] = field(default_factory=list)
    expired: list[TargetIdentity] = field(default_factory=list)
    fingerprints: list[PathFingerprint] = field(default_factory=list)

    def write(self) -> IdentityWrite | None:
        claimant = self.claims.claimant if self.claims is not None else ""
        found = IdentityWrite(claimant, self.linked, self.expired, self.fingerprints)
        return found if found else None


class RouteProcessor:
    """Applies batches of deliveries for one route. Stateless between batches."""

    def __init__(
        self,
        config: RouteConfig,
        broker: Broker,
        store: Store,
        writer: Writer,
        map_record: MapFunction,
        mapping_label: str,
        *,
        mapping: CompiledMapping | MappingChain | None = None,
    ) -> None:
        self.config = config
        self.broker = broker
        self.store = store
        self.writer = writer
        self.map_record = map_record
        self.mapping_label = mapping_label
        # list fields the writer merges by item key (the last mapping's merge_key:), not replaces
        self.merge_keys: dict[str, str] = dict(
            getattr(mapping, "merge_keys", None) or getattr(map_record, "merge_keys", None) or {}
        )
        self._metrics: dict[str, Any] = {
            "consumed": MESSAGES_CONSUMED.labels(config.name),
            "produced": MESSAGES_PRODUCED.labels(config.name),
            "retried": MESSAGES_RETRIED.labels(config.name),
            "seconds": PROCESSING_SECONDS.labels(config.name),
            "lag": END_TO_END_LAG.labels(config.name),
            "pipeline_lag": PIPELINE_LAG.labels(config.name),
            "duplicate": MESSAGES_SKIPPED.labels(config.name, "duplicate"),
            "filtered": MESSAGES_SKIPPED.labels(config.name, "filtered"),
            "stale": MESSAGES_SKIPPED.labels(config.name, "stale"),
            "unchanged": MESSAGES_SKIPPED.labels(config.name, "unchanged"),
            "locked": MESSAGES_SKIPPED.labels(config.name, "locked"),
            "duplicate_path": MESSAGES_SKIPPED.labels(config.name, "duplicate_path"),
            "last": LAST_SUCCESS.labels(config.name),
        }
        ROUTE_INFO.labels(config.name, config.from_system or "", config.to.system, config.to.entity).set(1)
        self.when = route_condition(config)
        self.two_way: TwoWaySync | None = None
        if config.two_way is not None:
            self.two_way = self._two_way(mapping)
        self.identities: TargetIdentities | None = None
        if config.to.key_fields and config.to.flow is None and self.two_way is None:
            self.identities = TargetIdentities(
                store,
                writer,
                config.to.system,
                config.to.entity,
                config.to.key_fields,
                lease_s=config.to.claim_lease_s,
                owner=config.name,
            )

    def _two_way(self, mapping: CompiledMapping | MappingChain | None) -> TwoWaySync:
        """The route's two-way engine; it maps with its own split of the chain (source → canonical,
        canonical → target), compiled from the route's mappings unless given."""
        from middleware.mapping import StoreMappingContext

        if mapping is None:
            from middleware.runtime.chains import resolve_chain

            paths = self.config._mapping_paths
            if not paths:
                raise ConfigError(f"two-way route {self.config.name!r}: mapping paths unknown (use load_config)")
            mapping = resolve_chain(paths, self.config.mappings)
        return TwoWaySync(self.config, self.store, mapping, StoreMappingContext(self.store))

    @property
    def queue(self) -> str:
        return self.config.name

    def handles(self, envelope: Envelope) -> bool:
        if self.two_way is not None and envelope.type in CONTROL_TYPES:
            return envelope.source.system == self.config.from_system
        if self.config.from_system and envelope.source.system != self.config.from_system:
            return False
        return any(topic_matches(p, envelope.type) for p in self.config.on)

    def process(self, deliveries: Sequence[Delivery]) -> BatchOutcome:
        """Handle one fetched batch completely: every delivery is acked, retried or dead-lettered."""
        started = time.monotonic()
        outcome = BatchOutcome()
        route = self.config.name
        self._metrics["consumed"].inc(len(deliveries))
        to_ack: list[Delivery] = []
        moves: list[Callable[[], None]] = []  # retries and dead letters, made once the rest is durable
        parsed: list[tuple[Delivery, Envelope]] = []
        for delivery in deliveries:
            try:
                envelope = Envelope.from_bytes(delivery.body)
            except MalformedMessageError as exc:
                moves.append(partial(self._dead_letter, delivery, None, exc, outcome))
                continue
            if not self.handles(envelope):
                exc2 = UnknownMessageTypeError(
                    f"route {route!r} does not handle message type {envelope.type!r} from "
                    f"{envelope.source.system!r}; it handles {', '.join(self.config.on)}"
                )
                moves.append(partial(self._dead_letter, delivery, envelope, exc2, outcome))
                continue
            parsed.append((delivery, envelope))

        already = self.store.applied(route, [env.idempotency_key for _, env in parsed]) if parsed else set()
        # a two-way route decides per field on the pair's timeline, older changes included: an older
        # change may be a user's edit that a later write of ours overwrote (a conflict, not stale)
        check_stale = self.config.skip_stale and self.two_way is None and bool(parsed)
        newest = self.store.latest_versions(route, [env.record_key for _, env in parsed]) if check_stale else {}
        seen_in_batch: set[str] = set()
        pending: list[_Pending] = []
        skipped_keys: list[str] = []
        two_way_items: list[tuple[Delivery, Envelope]] = []
        for delivery, envelope in parsed:
            key = envelope.idempotency_key
            if key in already or key in seen_in_batch:
                self._metrics["duplicate"].inc()
                outcome.skipped += 1
                to_ack.append(delivery)
                continue
            seen_in_batch.add(key)
            if check_stale and self._is_stale(envelope, newest):
                outcome.skipped += 1
                skipped_keys.append(key)
                to_ack.append(delivery)
                continue
            if self.when is not None and not self._wanted(envelope):
                self._metrics["filtered"].inc()
                outcome.skipped += 1
                skipped_keys.append(key)
                to_ack.append(delivery)
                continue
            if self.two_way is not None:
                two_way_items.append((delivery, envelope))
                continue
            try:
                record = self.map_record(envelope.payload)
            except TransientError as exc:
                moves.append(partial(self._retry_or_dead_letter, delivery, envelope, exc, outcome))
                continue
            except MappingError as exc:
                moves.append(partial(self._dead_letter, delivery, envelope, exc, outcome))
                continue
            except Exception as exc:  # a bug in a transform must not stop the route
                moves.append(
                    partial(
                        self._dead_letter, delivery, envelope, MappingError(f"{type(exc).__name__}: {exc}"), outcome
                    )
                )
                continue
            if record is None:
                self._metrics["filtered"].inc()
                outcome.skipped += 1
                skipped_keys.append(key)
                to_ack.append(delivery)
                continue
            pending.append(
                _Pending(
                    delivery,
                    envelope,
                    WriteRequest(
                        entity=self.config.to.entity,
                        record=record,
                        key=key,
                        correlation_id=envelope.correlation_id,
                        merge=self.merge_keys,
                    ),
                )
            )
        # the target ids the cross-reference knows, for the whole batch in one round trip
        known = self.store.lookup_many([self._source_ref(p.envelope) for p in pending], self.config.to.system)
        for item in pending:
            target = known.get(self._source_ref(item.envelope))
            item.request.target_id = target.id if target else None

        applied_keys: list[str] = list(skipped_keys)
        links: list[tuple[RecordRef, RecordRef]] = []
        versions: dict[str, float] = {}
        book = _IdentityBook()
        pending = self._skip_duplicate_paths(pending, to_ack, applied_keys, versions, outcome)
        pending = self._claim_targets(pending, book, moves, outcome)
        if book.claims is not None and book.claims.linked:  # another writer created them meanwhile:
            pending = self._skip_duplicate_paths(pending, to_ack, applied_keys, versions, outcome)  # same content?
        plan: TwoWayBatch | None = None
        finished: Finished | None = None
        committed = False
        try:
            if two_way_items:
                assert self.two_way is not None
                plan = self._plan_two_way(two_way_items, moves, to_ack, applied_keys, outcome)
            requests = [p.request for p in pending] + ([w.request for w in plan.writes if w.request] if plan else [])
            results: list[WriteResult] = []
            if requests:
                if plan is not None:
                    plan.write_started = time.time()
                results = self._write(requests)
            now = datetime.now(UTC)
            for item, result in zip(pending, results[: len(pending)], strict=True):
                if result.outcome == "ok":
                    if result.target_id:
                        target_ref = RecordRef(self.config.to.system, self.config.to.entity, str(result.target_id))
                        links.append((self._source_ref(item.envelope), target_ref))
                    applied_keys.append(item.request.key)
                    record_key, changed = item.envelope.record_key, item.envelope.occurred_at.timestamp()
                    versions[record_key] = max(changed, versions.get(record_key, changed))
                    to_ack.append(item.delivery)
                    if result.unchanged:
                        self._unchanged(item.envelope, outcome)
                    else:
                        self._landed(item.envelope, now, outcome)
                    self._identity_landed(item, result, book)
                elif result.locked and self.config.on_locked != "dead_letter":
                    applied_keys.append(item.request.key)  # settled: a redelivery is not tried again
                    to_ack.append(item.delivery)
                    self._locked_skipped(item.envelope, result, outcome)
                else:
                    self._identity_failed(item, book)
                    moves.append(self._failed_write(item.delivery, item.envelope, result, outcome))
            sync: SyncWrite | None = None
            if plan is not None:
                finished = self._finish_two_way(
                    plan, results[len(pending) :], now, moves, to_ack, applied_keys, links, versions, outcome
                )
                sync = finished.sync
            # What landed is recorded and acked before any failed message is moved: a broker error
            # while retrying or dead-lettering one message must not make the batch's effects repeat.
            identity = book.write()
            if applied_keys or links or versions or sync is not None or identity is not None:
                self.store.mark_applied(
                    route,
                    applied_keys,
                    links,
                    versions if self.config.skip_stale else None,
                    sync=sync,
                    identity=identity,
                )
            committed = True
        finally:
            if plan is not None and plan.locks and not committed:
                self._release(plan)
        if finished is not None and self.two_way is not None:
            self.two_way.after_commit(finished)
        if to_ack:
            self.broker.ack(to_ack)
        if outcome.applied:
            self._metrics["produced"].inc(outcome.applied)
            self._metrics["last"].set(time.time())
        for move in moves:  # if one fails, it and the rest are redelivered: none of them was applied
            move()
        if deliveries:
            per_message = (time.monotonic() - started) / len(deliveries)
            for _ in range(len(deliveries)):
                self._metrics["seconds"].observe(per_message)
        return outcome

    # ----- one source record, many paths; one target record, one identity (runtime/identity.py) -----
    def _skip_duplicate_paths(
        self,
        pending: list[_Pending],
        to_ack: list[Delivery],
        applied_keys: list[str],
        versions: dict[str, float],
        outcome: BatchOutcome,
    ) -> list[_Pending]:
        """Skip a change whose mapped content equals what another path (another route, or another
        message type: the poll after the webhook) last wrote to this target entity for the same
        source record (`duplicate_path`). It counts as applied (key and version recorded), so its
        redelivery is a plain `duplicate`. The same path writing the same content under a new
        version still writes, as before; messages re-emitted on purpose (heal, replay:
        `isthmus-origin`) always go through. The fingerprints land with the batch's
        `mark_applied`: a SIGKILL before it leaves none, and the next arrival is written again
        (an update of the same content, harmless)."""
        to = self.config.to
        if not pending or to.flow is not None:  # a flow keeps its own runs per business key
            return pending
        for item in pending:
            item.fingerprint = content_hash(item.request.record)
        candidates = [item for item in pending if H_ORIGIN not in item.delivery.headers]
        last = self.store.path_fingerprints([self._source_ref(i.envelope) for i in candidates], to.system, to.entity)
        kept: list[_Pending] = []
        for item in pending:
            source = self._source_ref(item.envelope)
            path = self._path(item.envelope)
            before = last.get(source)
            if (
                before is not None
                and before.content_hash == item.fingerprint
                and before.path != path
                and H_ORIGIN not in item.delivery.headers
            ):
                self._metrics["duplicate_path"].inc()
                outcome.skipped += 1
                applied_keys.append(item.request.key)
                record_key, changed = item.envelope.record_key, item.envelope.occurred_at.timestamp()
                versions[record_key] = max(changed, versions.get(record_key, changed))
                to_ack.append(item.delivery)
                log.debug(
                    "message_skipped",
                    route=self.config.name,
                    reason="duplicate_path",
                    written_by=before.path,
                    message_id=str(item.envelope.message_id),
                    correlation_id=item.envelope.correlation_id,
                    record=item.envelope.record_key,
                )
                continue
            last[source] = PathFingerprint(source, to.system, to.entity, item.fingerprint or "", path)
            kept.append(item)
        return kept

    def _path(self, envelope: Envelope) -> str:
        return f"{self.config.name}:{envelope.type}"

    def _claim_targets(
        self, pending: list[_Pending], book: _IdentityBook, moves: list[Callable[[], None]], outcome: BatchOutcome
    ) -> list[_Pending]:
        """Claim the identities of the records this batch would create (see runtime/identity.py):
        requests become updates of records another writer created, or wait for a writer that is
        creating them (retried later without spending an attempt)."""
        if self.identities is None or not pending:
            return pending
        claims = self.identities.claim([p.request for p in pending], [self._source_ref(p.envelope) for p in pending])
        book.claims = claims
        kept: list[_Pending] = []
        for index, item in enumerate(pending):
            item.identity = claims.identities.get(index)
            if index in claims.held:
                moves.append(partial(self._wait_for_claim, item.delivery, item.envelope, claims.held[index], outcome))
            elif index in claims.failed:
                if item.identity is not None and item.identity in claims.claimed:
                    book.expired.append(item.identity)
                moves.append(
                    partial(self._retry_or_dead_letter, item.delivery, item.envelope, claims.failed[index], outcome)
                )
            else:
                kept.append(item)
        return kept

    def _identity_landed(self, item: _Pending, result: WriteResult, book: _IdentityBook) -> None:
        target_id = str(result.target_id) if result.target_id else item.request.target_id
        if item.identity is not None and target_id:
            book.linked.append((item.identity, target_id))
        if item.fingerprint is not None:
            to = self.config.to
            book.fingerprints.append(
                PathFingerprint(
                    self._source_ref(item.envelope), to.system, to.entity, item.fingerprint, self._path(item.envelope)
                )
            )

    def _identity_failed(self, item: _Pending, book: _IdentityBook) -> None:
        """A failed create may still have landed: expire the claim so the retry finds it by key first."""
        if item.identity is not None and book.claims is not None and item.identity in book.claims.claimed:
            book.expired.append(item.identity)

    def _wait_for_claim(
        self, delivery: Delivery, envelope: Envelope, exc: IdentityHeldError, outcome: BatchOutcome
    ) -> None:
        """Another writer is creating this record: come back once it has linked it (or its lease ran
        out). Not an attempt: the message did nothing wrong, and a claim always resolves by its lease."""
        headers = dict(delivery.headers)
        headers.update({H_ERROR_CLASS: type(exc).__name__, H_ERROR: _clip(str(exc))})
        delay = exc.retry_after or 0.2
        self.broker.retry_later(delivery, delivery.body, headers, delay)
        self._metrics["retried"].inc()
        outcome.retried += 1
        log.info(
            "message_waiting_for_claim",
            route=self.config.name,
            message_id=str(envelope.message_id),
            correlation_id=envelope.correlation_id,
            delay_s=round(delay, 3),
            error=_clip(str(exc)),
        )

    def _landed(self, envelope: Envelope, now: datetime, outcome: BatchOutcome) -> None:
        # pipeline lag (intake → effect) is what Isthmus controls; end-to-end lag
        # (source change → effect) is what the business sees, poll delay included
        lag = (now - envelope.received_at).total_seconds()
        outcome.lags.append(lag)
        self._metrics["pipeline_lag"].observe(max(0.0, lag))
        self._metrics["lag"].observe(max(0.0, (now - envelope.occurred_at).total_seconds()))
        outcome.applied += 1

    def _wanted(self, envelope: Envelope) -> bool:
        """The route's `when:` holds for this message (links looked up in the store)."""
        from middleware.mapping.context import MessageConditionContext

        assert self.when is not None
        context = MessageConditionContext(self.store, self._source_ref(envelope))
        return bool(self.when(envelope.payload, context))

    def _unchanged(self, envelope: Envelope, outcome: BatchOutcome) -> None:
        """The target already held this content: acked as settled, neither a write nor a dead letter."""
        self._metrics["unchanged"].inc()
        outcome.skipped += 1
        log.debug(
            "message_skipped",
            route=self.config.name,
            reason="unchanged",
            message_id=str(envelope.message_id),
            correlation_id=envelope.correlation_id,
        )

    def _locked_skipped(self, envelope: Envelope, result: WriteResult, outcome: BatchOutcome) -> None:
        """`on_locked: skip | note`: the record cannot change in its state; acked and counted."""
        self._metrics["locked"].inc()
        outcome.skipped += 1
        if self.config.on_locked == "note":
            log.warning(
                "record_locked_skipped",
                route=self.config.name,
                message_id=str(envelope.message_id),
                correlation_id=envelope.correlation_id,
                record=envelope.record_key,
                target=f"{self.config.to.system}.{self.config.to.entity}",
                error=_clip(result.error),
            )

    def _failed_write(
        self, delivery: Delivery, envelope: Envelope, result: WriteResult, outcome: BatchOutcome
    ) -> Callable[[], None]:
        if result.outcome == "transient":
            failure = TransientError(result.error, status=result.status, retry_after=result.retry_after)
            return partial(self._retry_or_dead_letter, delivery, envelope, failure, outcome)
        error_class = RecordLockedError if result.locked else PermanentError
        permanent = error_class(result.error, status=result.status)
        return partial(self._dead_letter, delivery, envelope, permanent, outcome)

    # ----- two-way routes (middleware/sync/twoway.py decides; the route writes, acks and moves) -----
    def _plan_two_way(
        self,
        items: list[tuple[Delivery, Envelope]],
        moves: list[Callable[[], None]],
        to_ack: list[Delivery],
        applied_keys: list[str],
        outcome: BatchOutcome,
    ) -> TwoWayBatch:
        assert self.two_way is not None
        plan = self.two_way.plan(items)
        for work, exc in plan.failed:
            if isinstance(exc, TransientError):
                moves.append(partial(self._retry_or_dead_letter, work.delivery, work.envelope, exc, outcome))
            else:
                moves.append(partial(self._dead_letter, work.delivery, work.envelope, exc, outcome))
        for delivery in plan.deferred:
            moves.append(partial(self._defer, delivery))
        return plan

    def _finish_two_way(
        self,
        plan: TwoWayBatch,
        results: list[WriteResult],
        now: datetime,
        moves: list[Callable[[], None]],
        to_ack: list[Delivery],
        applied_keys: list[str],
        links: list[tuple[RecordRef, RecordRef]],
        versions: dict[str, float],
        outcome: BatchOutcome,
    ) -> Finished:
        assert self.two_way is not None
        for work, result in zip(plan.writes, results, strict=True):
            if result.outcome == "ok":
                self._landed(work.envelope, now, outcome)
            else:
                moves.append(self._failed_write(work.delivery, work.envelope, result, outcome))
        finished = self.two_way.finish(plan, results)
        if finished.corrections:  # durable before the batch is recorded: a crash repeats them, never loses them
            self.broker.send(self.two_way.peer, finished.corrections)
        links.extend(finished.links)
        for work in finished.applied:
            envelope = work.envelope
            applied_keys.append(envelope.idempotency_key)
            to_ack.append(work.delivery)
            if envelope.type not in CONTROL_TYPES:
                changed = envelope.occurred_at.timestamp()
                versions[envelope.record_key] = max(changed, versions.get(envelope.record_key, changed))
            if work.request is None:
                outcome.skipped += 1
                if work.reason == "filtered":
                    self._metrics["filtered"].inc()
                else:
                    self.two_way.count_skip(work.reason or "unchanged")
                log.debug(
                    "message_skipped",
                    route=self.config.name,
                    reason=work.reason,
                    message_id=str(envelope.message_id),
                    correlation_id=envelope.correlation_id,
                )
        return finished

    def _defer(self, delivery: Delivery) -> None:
        """The other route of the pair holds it: try again shortly, without counting an attempt."""
        self.broker.retry_later(delivery, delivery.body, dict(delivery.headers), DEFER_S)

    def _release(self, plan: TwoWayBatch) -> None:
        assert self.two_way is not None
        try:
            self.store.unlock_pairs(sorted(plan.locks), self.two_way.owner)
        except Exception as exc:  # the leases expire on their own
            log.warning("pair_unlock_failed", route=self.config.name, error=f"{type(exc).__name__}: {exc}")

    def _is_stale(self, envelope: Envelope, newest: dict[str, float]) -> bool:
        """Older than a change of the same record already applied (or ahead of it in this batch).

        Brokers deliver one record's messages in order only mostly: a retried message waits
        while later ones pass, and RabbitMQ may hand a new consumer newer messages before
        the ones a dead consumer held. Applying such a late, older change would move the
        record back in time in the target, so it is acked without an effect instead."""
        record_key, changed = envelope.record_key, envelope.occurred_at.timestamp()
        latest = newest.get(record_key)
        if latest is not None and changed < latest:
            self._metrics["stale"].inc()
            log.info(
                "message_skipped_stale",
                route=self.config.name,
                message_id=str(envelope.message_id),
                correlation_id=envelope.correlation_id,
                record=record_key,
                changed_at=envelope.occurred_at.isoformat(),
            )
            return True
        newest[record_key] = changed if latest is None else max(latest, changed)
        return False

    def _write(self, requests: list[WriteRequest]) -> list[WriteResult]:
        try:
            results = self.writer.write_batch(requests)
        except Exception as exc:  # an adapter bug or outage: retry all, never lose them
            log.error("write_batch_failed", route=self.config.name, error=f"{type(exc).__name__}: {exc}")
            return [WriteResult("transient", error=f"{type(exc).__name__}: {exc}") for _ in requests]
        if len(results) != len(requests):
            error = f"adapter returned {len(results)} results for {len(requests)} requests"
            return [WriteResult("transient", error=error) for _ in requests]
        return results

    def _source_ref(self, envelope: Envelope) -> RecordRef:
        src = envelope.source
        return RecordRef(src.system, src.entity, src.record_id)

    def _retry_or_dead_letter(
        self, delivery: Delivery, envelope: Envelope, exc: TransientError, outcome: BatchOutcome
    ) -> None:
        error_class = type(exc).__name__
        MESSAGES_FAILED.labels(self.config.name, error_class).inc()
        attempt = envelope.attempt + 1
        if attempt >= self.config.retry.max_attempts:
            self._dead_letter(delivery, envelope, exc, outcome, count_failure=False)
            return
        delay = backoff_delay(self.config.retry, attempt, exc.retry_after)
        retried = envelope.model_copy(update={"attempt": attempt})
        headers = dict(delivery.headers)
        headers.update({H_ERROR_CLASS: error_class, H_ERROR: _clip(str(exc)), H_ATTEMPTS: str(attempt)})
        self.broker.retry_later(delivery, retried.to_bytes(), headers, delay)
        self._metrics["retried"].inc()
        outcome.retried += 1
        log.warning(
            "message_retry_scheduled",
            route=self.config.name,
            message_id=str(envelope.message_id),
            correlation_id=envelope.correlation_id,
            attempt=attempt,
            delay_s=round(delay, 3),
            error_class=error_class,
            error=_clip(str(exc)),
        )

    def _dead_letter(
        self,
        delivery: Delivery,
        envelope: Envelope | None,
        exc: Exception,
        outcome: BatchOutcome,
        *,
        count_failure: bool = True,
    ) -> None:
        error_class = type(exc).__name__
        if count_failure:
            MESSAGES_FAILED.labels(self.config.name, error_class).inc()
        attempts = (envelope.attempt + 1) if envelope else 1
        mapping = getattr(exc, "mapping", "") or (self.mapping_label if isinstance(exc, MappingError) else "")
        headers = dict(delivery.headers)
        headers.update(
            {
                H_ERROR_CLASS: error_class,
                H_ERROR: _clip(str(exc)),
                H_MAPPING: mapping,
                H_ATTEMPTS: str(attempts),
                H_ROUTE: self.config.name,
                H_ORIGINAL_QUEUE: delivery.queue,
                H_DEAD_LETTERED_AT: datetime.now(UTC).isoformat(),
            }
        )
        self.broker.dead_letter(delivery, headers)
        MESSAGES_DEAD_LETTERED.labels(self.config.name, error_class).inc()
        outcome.dead_lettered += 1
        log.error(
            "message_dead_lettered",
            route=self.config.name,
            message_id=str(envelope.message_id) if envelope else delivery.message_id,
            correlation_id=envelope.correlation_id if envelope else "",
            error_class=error_class,
            error=_clip(str(exc)),
            attempts=attempts,
            mapping=mapping,
        )


def route_condition(config: RouteConfig) -> Callable[..., bool] | None:
    """The route's compiled `when:` (checked with its place when the config loaded)."""
    if config.when is None:
        return None
    from middleware.mapping.conditions import compile_route_condition
    from middleware.yamlsource import YamlDocument

    where = YamlDocument(f"route {config.name} when:", config.when)
    predicate, problems = compile_route_condition(config.when, where, ())
    if problems:
        raise ConfigError(problems)
    return predicate


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
