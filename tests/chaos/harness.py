"""The moving parts of the chaos tests: config, messages, publisher, workers, accounting.

A chaos run publishes a fixed plan of envelopes (good ones and deliberately bad ones, each
with a fixed message id) from a thread, while two `isthmus worker --no-sources` processes
apply them to the recording ERP and a chaos action (SIGKILL, broker restart, target fault)
strikes; `ChaosRun.settle` waits until every message is accounted for and `verify` then
lists every message lost, applied twice, or dead-lettered when it should not have been.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from middleware.bench.configs import ACCOUNT_WRITES
from middleware.broker import open_broker
from middleware.broker.base import H_ERROR, H_ERROR_CLASS, H_ROUTE, Broker, Delivery, OutgoingMessage, dlq_name
from middleware.config import load_config
from middleware.errors import TransientError
from middleware.message import Envelope, Source
from tests.chaos.recording_erp import RecordingErp, TargetSnapshot

REPO = Path(__file__).resolve().parents[2]
MESSAGE_TYPE = "customer.upserted"

# Route settings every chaos config gets on top of the ones below; the RabbitMQ work adds
# route options (e.g. {"shards": 4}) that these tests should run with: add them here.
# Two workers share four shards, so kills and restarts hit active consumers and handovers.
ROUTE_OPTIONS: dict[str, Any] = {"shards": 4}

# Transient failures are retried quickly and often enough that a stretch of a few seconds of
# 503s or timeouts never exhausts them: a good message must never be dead-lettered here.
FAST_RETRY = {"max_attempts": 40, "initial_delay_s": 0.05, "multiplier": 2.0, "max_delay_s": 1.0, "jitter": 0.2}

Kind = Literal["good", "malformed", "unmappable", "rejected"]
EXPECTED_ERROR_CLASS: dict[Kind, str] = {
    "malformed": "MalformedMessageError",  # bytes that are not an envelope
    "unmappable": "MappingError",  # updated_at that is no date: the mapping fails
    "rejected": "PermanentError",  # the ERP answers 422
}


# ----- config -----------------------------------------------------------------------------


def write_chaos_config(
    directory: Path,
    *,
    broker_url: str,
    target_url: str,
    route: str,
    retry: dict[str, Any] | None = None,
    write_timeout_s: float = 2.0,
    batch_size: int = 100,
) -> Path:
    """The one config every chaos worker runs: one route, CRM customers → recording ERP accounts.

    The real customer mappings of `mappings/` and the demo ERP's `create_or_update` write
    spec; a route name (= queue name) and `?exchange=` unique to the test keep it apart from
    everyone else on a shared broker. Route options under test go into ROUTE_OPTIONS.
    """
    config = {
        "broker": broker_url,
        "store": f"sqlite:///{directory}/state.db",
        "mappings": [str(REPO / "mappings")],
        "observability": {"port": 0, "log_format": "json", "log_level": "info", "depth_sample_interval_s": 1.0},
        "systems": {
            "erp": {
                "type": "rest",
                "base_url": target_url,
                "timeout_s": write_timeout_s,
                "concurrency": 8,
                "max_connections": 16,
                "entities": {"account": ACCOUNT_WRITES},
            }
        },
        "routes": [
            {
                "name": route,
                "on": [MESSAGE_TYPE],
                "mappings": ["crm_customer_to_canonical", "canonical_customer_to_erp"],
                "to": {"system": "erp", "entity": "account"},
                "retry": retry or FAST_RETRY,
                "batch_size": batch_size,
                **ROUTE_OPTIONS,
            }
        ],
    }
    path = directory / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def open_route_broker(config_path: Path) -> Broker:
    """A broker handle that knows the config's routes as a worker declares them (shards, retry
    steps), so that `depth` and `browse` see every queue holding a route's messages."""
    loaded = load_config(config_path)
    broker = open_broker(loaded.model.broker, base_dir=loaded.base_dir)
    try:
        for route in loaded.model.routes:
            broker.setup_route(route.name, route.on, route.queue_options())
    except BaseException:
        broker.close()
        raise
    return broker


def with_exchange(amqp_url: str, exchange: str) -> str:
    return f"{amqp_url}{'&' if '?' in amqp_url else '?'}exchange={exchange}"


@dataclass(frozen=True)
class ChaosRoute:
    """A route and exchange name no other test uses, and the broker URL that selects them."""

    broker_url: str
    route: str
    exchange: str


def new_chaos_route(amqp_url: str) -> ChaosRoute:
    token = uuid.uuid4().hex[:10]
    name = f"chaos_{token}"
    return ChaosRoute(with_exchange(amqp_url, name), name, name)


# ----- the messages -----------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedMessage:
    message_id: str
    kind: Kind
    ref: str  # the CRM customer number = the ERP account's external_ref
    name: str  # the account_name its effect writes (good ones only)
    outgoing: OutgoingMessage


@dataclass
class MessagePlan:
    messages: list[PlannedMessage]

    def __post_init__(self) -> None:
        self.by_id = {m.message_id: m for m in self.messages}
        self.good = {(m.ref, m.name): m for m in self.messages if m.kind == "good"}
        self.bad = {m.message_id: m for m in self.messages if m.kind != "good"}
        assert len(self.by_id) == len(self.messages), "message ids must be unique"
        assert len(self.good) + len(self.bad) == len(self.messages), "(ref, name) of good messages must be unique"


def plan_messages(run: str, total: int = 20_000, bad_per_kind: int = 200, seed: int = 3) -> MessagePlan:
    """`total` messages: `bad_per_kind` of each bad kind spread at random among the good ones.

    Every message is its own CRM record at version 1, so every good message has exactly one
    effect to land (a record with several versions could lawfully skip a superseded one) and
    the ERP's create for it must run exactly once. Ids are fixed (uuid5 of the run and the
    position), so a publish repeated after an ambiguous failure repeats the same message.
    """
    rng = random.Random(seed)
    kinds: list[Kind] = ["good"] * (total - 3 * bad_per_kind)
    for kind in ("malformed", "unmappable", "rejected"):
        kinds += [kind] * bad_per_kind  # type: ignore[list-item]
    rng.shuffle(kinds)
    occurred = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    messages = []
    for i, kind in enumerate(kinds):
        message_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"isthmus-chaos/{run}/{i}"))
        ref = f"{kind[0].upper()}{i:06d}"
        name = f"Chaos {ref} REJECT" if kind == "rejected" else f"Chaos {ref}"
        if kind == "malformed":
            body = json.dumps({"chaos": "this is not a canonical envelope", "n": i}).encode()
            outgoing = OutgoingMessage(MESSAGE_TYPE, body, message_id=message_id, key=f"crm:customer:{ref}")
        else:
            envelope = Envelope(
                message_id=uuid.UUID(message_id),
                type=MESSAGE_TYPE,
                source=Source(system="crm", entity="customer", record_id=ref, version="1"),
                occurred_at=occurred + timedelta(milliseconds=i),
                correlation_id=f"chaos-{ref}",
                payload={
                    "customer_no": ref,
                    "company": name,
                    "email": f"{ref.lower()}@chaos.example",
                    "tier": rng.choice(["gold", "silver", "bronze"]),
                    "status": "active",
                    "billing": {"street": "Ring 1", "zip": "10115", "city": "Berlin", "country": "de"},
                    "updated_at": "no date at all" if kind == "unmappable" else "2026-11-24T10:00:00+08:00",
                    "version": 1,
                },
            )
            outgoing = OutgoingMessage(
                MESSAGE_TYPE, envelope.to_bytes(), message_id=message_id, key=envelope.record_key
            )
        messages.append(PlannedMessage(message_id, kind, ref, name if kind == "good" else "", outgoing))
    return MessagePlan(messages)


# ----- publishing -------------------------------------------------------------------------


class Publisher(threading.Thread):
    """Publishes the plan in batches, retrying a batch on TransientError until it is confirmed.

    A batch whose publish raised may have landed in part (confirms are per message): it is
    published again whole, and its ids are remembered as `ambiguous`. The same id twice is
    harmless for a good message (one idempotency key, one effect) but leaves two copies of a
    bad one in the DLQ; `verify` excuses exactly those. `confirmed` counts distinct messages.
    """

    def __init__(self, config_path: Path, plan: MessagePlan, batch: int = 50, give_up_s: float = 150.0) -> None:
        super().__init__(name="chaos-publisher", daemon=True)
        self.config_path = config_path
        self.plan = plan
        self.batch = batch
        self.give_up_s = give_up_s
        self.confirmed = 0
        self.failures = 0
        self.ambiguous: set[str] = set()
        self.last_failure = ""
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self.elapsed_s = 0.0

    def run(self) -> None:
        started = time.monotonic()
        broker: Broker | None = None
        messages = self.plan.messages
        try:
            broker = open_route_broker(self.config_path)
            i, streak = 0, 0
            while i < len(messages):
                chunk = messages[i : i + self.batch]
                try:
                    broker.publish([m.outgoing for m in chunk])
                except TransientError as exc:
                    self.failures += 1
                    streak += 1
                    self.ambiguous.update(m.message_id for m in chunk)
                    self.last_failure = str(exc)
                    if time.monotonic() - started > self.give_up_s:
                        raise
                    time.sleep(min(2.0, 0.05 * 2**streak))
                    continue
                streak = 0
                i += len(chunk)
                self.confirmed = i
        except BaseException as exc:  # reported by verify: the test fails with it
            self.error = exc
        finally:
            self.elapsed_s = time.monotonic() - started
            if broker is not None:
                with suppress(Exception):  # closing after an outage may fail; nothing to keep
                    broker.close()
            self.finished.set()


# ----- workers ----------------------------------------------------------------------------


def isthmus_command() -> list[str]:
    script = Path(sys.executable).with_name("isthmus")
    return [str(script)] if script.exists() else [sys.executable, "-m", "middleware.cli.main"]


class WorkerPool:
    """`count` worker processes on one config; each slot logs to its own file across restarts."""

    def __init__(self, config: Path, log_dir: Path, count: int = 2) -> None:
        self.config = config
        self.logs = [log_dir / f"worker-{slot}.log" for slot in range(count)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self.offsets = [0] * count
        self.kills = 0
        self.starts = 0
        self.unexpected_exits: list[str] = []
        self.stop_codes: list[int | None] = []

    def start(self, slot: int) -> None:
        log = self.logs[slot]
        with log.open("ab") as sink:
            sink.write(f"=== chaos: start {self.starts} of worker slot {slot} at {time.time():.3f} ===\n".encode())
            sink.flush()
            self.offsets[slot] = log.stat().st_size
            self.procs[slot] = subprocess.Popen(
                [*isthmus_command(), "worker", "--config", str(self.config), "--no-sources"],
                cwd=REPO,
                stdout=sink,
                stderr=sink,
            )
        self.starts += 1

    def start_all(self) -> None:
        for slot in range(len(self.procs)):
            self.start(slot)

    def wait_started(self, timeout_s: float = 60.0) -> None:
        """Until every worker logged `worker_started` (its route topology is declared)."""
        deadline = time.monotonic() + timeout_s
        for slot, log in enumerate(self.logs):
            while True:
                with log.open("rb") as f:
                    f.seek(self.offsets[slot])
                    if b"worker_started" in f.read():
                        break
                proc = self.procs[slot]
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"worker {slot} exited with {proc.returncode} at start\n{self.tail()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"worker {slot} did not start within {timeout_s}s\n{self.tail()}")
                time.sleep(0.1)

    def kill(self, slot: int) -> None:
        """SIGKILL (no drain, no goodbye) and start a fresh process in the slot."""
        proc = self.procs[slot]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            self.kills += 1
        self.start(slot)

    def check_alive(self) -> None:
        """A worker that ended by itself is a finding; it is restarted so the run can finish."""
        for slot, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is not None:
                self.unexpected_exits.append(f"worker slot {slot} exited by itself with {proc.returncode}")
                self.start(slot)

    def stop(self, timeout_s: float = 40.0) -> None:
        """SIGTERM (graceful drain) every worker; exit codes land in `stop_codes`."""
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.stop_codes = [p.returncode if p is not None else None for p in self.procs]

    def lines_about(self, needles: list[str], limit: int = 30) -> str:
        """Every worker log line holding one of `needles` (message ids, event names), oldest
        first per log, at most `limit` of them."""
        wanted = list(dict.fromkeys(needles))[:12]
        if not wanted:
            return ""
        found = []
        for log in self.logs:
            if log.exists():
                for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                    if any(needle in line for needle in wanted):
                        found.append(f"{log.name}: {line[:500]}")
        head = f"--- worker log lines about {', '.join(wanted)} ({min(limit, len(found))} of {len(found)}) ---"
        return "\n".join([head, *found[:limit]])

    def tail(self, lines: int = 12) -> str:
        parts = []
        for log in self.logs:
            if log.exists():
                text = log.read_text(encoding="utf-8", errors="replace").splitlines()
                parts.append(f"--- {log.name} (last {min(lines, len(text))} of {len(text)} lines) ---")
                parts.extend(line[:400] for line in text[-lines:])
        return "\n".join(parts)


# ----- the run ----------------------------------------------------------------------------


@dataclass
class Progress:
    elapsed_s: float
    published: int
    effects: int
    dlq: int | None
    waiting: int | None  # ready + delayed-retry messages still in the route's queues

    def __str__(self) -> str:
        return (
            f"t={self.elapsed_s:.1f}s published={self.published} effects={self.effects} "
            f"dlq={self.dlq} waiting={self.waiting}"
        )


@dataclass
class ChaosRun:
    """One chaos test's pieces, with the bookkeeping `verify` needs."""

    plan: MessagePlan
    target: RecordingErp
    pool: WorkerPool
    publisher: Publisher
    route: str
    started: float = field(default_factory=time.monotonic)
    timeline: list[str] = field(default_factory=list)
    settled: bool = False
    last: Progress | None = None
    _probe: Broker | None = None

    def note(self, event: str) -> None:
        line = f"t={time.monotonic() - self.started:.1f}s {event}"
        self.timeline.append(line)
        print(f"[chaos] {line}", flush=True)

    def progress(self) -> Progress:
        dlq = waiting = None
        try:
            if self._probe is None:
                self._probe = open_route_broker(self.pool.config)
            dlq = self._probe.depth(dlq_name(self.route))
            waiting = self._probe.depth(self.route)
        except TransientError:
            pass  # the broker is down (restart chaos): not settled yet
        self.last = Progress(
            time.monotonic() - self.started, self.publisher.confirmed, self.target.distinct_effects(), dlq, waiting
        )
        return self.last

    def settle(self, chaos: Callable[[Progress], None], deadline_s: float, quiet_s: float = 3.0) -> None:
        """Run `chaos` every tick until every message is accounted for, then wait `quiet_s` more
        (a late duplicate would land then), or until `deadline_s` after the start."""
        want_effects, want_dlq = len(self.plan.good), len(self.plan.bad)
        next_report = 0.0
        while time.monotonic() - self.started < deadline_s:
            self.pool.check_alive()
            now = self.progress()
            if now.elapsed_s >= next_report:
                print(f"[chaos] {now}", flush=True)
                next_report = now.elapsed_s + 5
            if self.publisher.finished.is_set() and self.publisher.error is not None:
                break
            done = (
                self.publisher.finished.is_set()
                and now.effects >= want_effects
                and now.dlq is not None
                and now.dlq >= want_dlq
                and now.waiting == 0
            )
            if done:
                self.settled = True
                break
            chaos(now)
            time.sleep(0.25)
        self.note(f"settled={self.settled} {self.last}")
        time.sleep(quiet_s if self.settled else 0)
        self.pool.check_alive()

    def final_look(self) -> tuple[list[Delivery], int]:
        """(every dead letter, messages still in the route's queues) once the workers stopped."""
        broker = open_route_broker(self.pool.config)
        try:
            return broker.browse(dlq_name(self.route), len(self.plan.messages) + 100), broker.depth(self.route)
        finally:
            broker.close()

    def close(self) -> None:
        if self._probe is not None:
            with suppress(Exception):  # a probe on a stopped broker may fail to close
                self._probe.close()
            self._probe = None


@contextmanager
def chaos_run(
    directory: Path, *, broker_url: str, route: str, target: RecordingErp, write_timeout_s: float = 2.0
) -> Iterator[ChaosRun]:
    """Two workers started (topology declared), then the publisher; workers drained at the end."""
    config = write_chaos_config(
        directory, broker_url=broker_url, target_url=target.url, route=route, write_timeout_s=write_timeout_s
    )
    pool = WorkerPool(config, directory, count=2)
    plan = plan_messages(route)
    run = ChaosRun(plan, target, pool, Publisher(config, plan), route)
    try:
        pool.start_all()
        pool.wait_started()
        run.note("workers started; publishing")
        run.started = time.monotonic()
        run.publisher.start()
        yield run
    finally:
        run.close()
        pool.stop()
        if run.publisher.ident is not None:
            run.publisher.join(30)


def verify(
    run: ChaosRun,
    snapshot: TargetSnapshot,
    summary_path: Path,
    repeats_allowed: tuple[int, str],
) -> None:
    """Assert every message landed exactly once — as an effect or as a dead letter — and say
    precisely what did not (ids, counts), with the workers' log tails.

    `repeats_allowed` is (how many, why): the writes the chaos may lawfully make the workers
    send again. The target absorbs repeats by their Idempotency-Key, so they are no second
    effect here; more than the chaos explains means a worker re-sent writes it had seen
    succeed, which a target without idempotency keys would apply twice."""
    plan, publisher, pool = run.plan, run.publisher, run.pool
    dead, left_over = run.final_look()
    problems: list[str] = []

    def listed(items: Any, limit: int = 10) -> str:
        items = sorted(items)
        more = f" … (+{len(items) - limit} more)" if len(items) > limit else ""
        return ", ".join(map(str, items[:limit])) + more

    if publisher.error is not None:
        problems.append(f"publisher failed after {publisher.confirmed} confirmed: {publisher.error!r}")
    elif publisher.confirmed != len(plan.messages):
        problems.append(f"publisher confirmed {publisher.confirmed} of {len(plan.messages)}")
    sent = publisher.confirmed

    # effects at the target
    counts = snapshot.effect_counts()
    lost = [plan.good[k].message_id + f" ({k[0]})" for k in plan.good if counts[k] == 0]
    doubled = {k: c for k, c in counts.items() if c > 1 and k in plan.good}
    stray = {k: c for k, c in counts.items() if k not in plan.good}
    per_ref = snapshot.accounts_per_ref()
    created_twice = {ref: n for ref, n in per_ref.items() if n > 1}
    created_twice_keys = [k for k in plan.good if k[0] in created_twice]
    dlq_ids = Counter(d.message_id for d in dead)
    if lost:
        in_dlq = [i for i in lost if i.split(" ")[0] in dlq_ids]
        problems.append(
            f"{len(lost)} good messages have no effect at the target ({len(in_dlq)} of them dead-lettered): "
            f"{listed(lost)}"
        )
    if doubled:
        detail = [
            f"{k[0]}×{c} keys={[e.key for e in snapshot.effects if (e.ref, e.name) == k]}" for k, c in doubled.items()
        ]
        problems.append(f"{len(doubled)} messages applied more than once: {listed(detail, 5)}")
    if created_twice:
        problems.append(f"{len(created_twice)} records created as more than one account: {listed(created_twice)}")
    if stray:
        problems.append(f"{len(stray)} effects no good message asked for (bad ones applied?): {listed(stray)}")
    if snapshot.conflicts:
        problems.append(
            f"{len(snapshot.conflicts)} idempotency keys reused with another body: {snapshot.conflicts[:3]}"
        )
    allowed, why = repeats_allowed
    if snapshot.repeats > allowed:
        problems.append(
            f"the target saw {snapshot.repeats} repeated writes (recognised by Idempotency-Key, so no second "
            f"effect), but this chaos explains at most {allowed}: {why}"
        )
    if snapshot.unkeyed:
        problems.append(f"{snapshot.unkeyed} writes came without an Idempotency-Key")

    # dead letters
    bad_ids = set(plan.bad)
    missing = bad_ids - set(dlq_ids)
    wrong = set(dlq_ids) - bad_ids
    # A DLQ is at-least-once (middleware/ops/dlq.py): a worker that dies or loses its connection
    # between publishing a dead letter and acking the original dead-letters it again, under
    # the same message id. Operators see, and replay, one dead letter per id; so does this count.
    copies = sum(c - 1 for c in dlq_ids.values())
    if missing:
        problems.append(
            f"{len(missing)} bad messages are not in the DLQ: {listed(f'{i} ({plan.by_id[i].kind})' for i in missing)}"
        )
    if wrong:
        detail = [
            f"{i} ({plan.by_id[i].kind if i in plan.by_id else 'unknown'}): "
            f"{next(d.headers.get(H_ERROR, '') for d in dead if d.message_id == i)[:160]}"
            for i in wrong
        ]
        problems.append(f"{len(wrong)} messages dead-lettered that should have been applied: {listed(detail, 5)}")
    reasons = []
    for delivery in dead:
        planned = plan.by_id.get(delivery.message_id)
        if planned is None or planned.kind == "good":
            continue
        error_class = delivery.headers.get(H_ERROR_CLASS)
        if error_class != EXPECTED_ERROR_CLASS[planned.kind] or not delivery.headers.get(H_ERROR):
            reasons.append(f"{delivery.message_id} ({planned.kind}): class={error_class!r}")
        elif delivery.headers.get(H_ROUTE) != run.route:
            reasons.append(f"{delivery.message_id}: route header {delivery.headers.get(H_ROUTE)!r}")
    if reasons:
        problems.append(f"{len(reasons)} dead letters without the expected reason headers: {listed(reasons, 5)}")

    # the balance the issue asks for: delivered + dead-lettered = sent
    delivered = sum(counts[k] for k in plan.good)
    dead_lettered = len(dlq_ids)
    if delivered + dead_lettered != sent:
        problems.append(
            f"delivered {delivered} + dead-lettered {dead_lettered} = {delivered + dead_lettered} != sent {sent}"
        )
    if left_over:
        problems.append(
            f"{left_over} messages still in the route's queues after every message was accounted for "
            "(copies that would be applied or dead-lettered again)"
        )
    if not run.settled:
        problems.append(f"not settled by the deadline: {run.last}")
    problems.extend(pool.unexpected_exits)
    if any(code not in (0, None) for code in pool.stop_codes):
        problems.append(f"workers did not drain cleanly on SIGTERM: exit codes {pool.stop_codes}")

    summary = {
        "sent": sent,
        "good": len(plan.good),
        "bad": len(plan.bad),
        "delivered": delivered,
        "dead_lettered": dead_lettered,
        "dlq_entries": len(dead),
        "dlq_extra_copies": copies,
        "target_repeats_recognised": snapshot.repeats,
        "target_refused_503": snapshot.refused_503,
        "target_hung": snapshot.hung,
        "target_rejected_422": sum(snapshot.rejected.values()),
        "publish_failures": publisher.failures,
        "publish_ambiguous_ids": len(publisher.ambiguous),
        "publish_s": round(publisher.elapsed_s, 1),
        "worker_kills": pool.kills,
        "worker_starts": pool.starts,
        "elapsed_s": round(time.monotonic() - run.started, 1),
        "timeline": run.timeline,
    }
    summary_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"[chaos] summary: {json.dumps({k: v for k, v in summary.items() if k != 'timeline'})}", flush=True)
    if problems:
        suspects = [i.split(" ")[0] for i in lost] + list(missing) + list(wrong)
        suspects += [plan.good[k].message_id for k in doubled] + [plan.good[k].message_id for k in created_twice_keys]
        suspects.append("route_batch_failed")  # what went wrong inside a worker, with the message it was at
        pytest.fail(
            f"{len(problems)} problems:\n- "
            + "\n- ".join(problems)
            + f"\nsummary: {json.dumps(summary)}\n"
            + pool.lines_about(suspects)
            + "\n"
            + pool.tail(),
            pytrace=False,
        )
