"""Chaos on RabbitMQ: 20,000 messages, two workers, and something breaking all along.

Each test publishes 20,000 canonical envelopes (19,400 good CRM customers, 200 malformed,
200 that fail their mapping, 200 the ERP refuses with 422) into a route of its own, while two
`isthmus worker --no-sources` processes apply them to the recording ERP on loopback, and
one kind of trouble strikes. Each then asserts what the issue asks of production RabbitMQ:

* every good message's effect landed at the target exactly once (one account per record,
  created once; a write the target recognised by its Idempotency-Key as a repeat is not an
  effect);
* the bad ones, and only they, are in the DLQ, once each, with their reason headers;
* delivered + dead-lettered = sent;
* the target saw no more repeated writes than the chaos explains (a killed worker's batch in
  hand, a write held past the writer's timeout; none when only the broker restarts): a
  repeat is harmless here only because the target honours Idempotency-Key.

Counting "sent" exactly although publishes fail during a broker restart: every message has a
fixed message id; the publisher sends in batches and repeats a batch whose publish raised
until it is confirmed, so every id was confirmed at least once and `sent` is the number of
distinct ids (20,000). A repeated publish can put a second copy of an id on the queue: for a
good message that is the same idempotency key (one effect at most, which the test checks),
for a bad one it is a second dead letter, excused only for ids whose publish was repeated.

On failure the message lists what was lost or duplicated (ids, counts) and the tail of each
worker's log; `summary.json` in the test's tmp folder keeps the figures and the timeline.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos.harness import ChaosRoute, Progress, chaos_run, new_chaos_route, verify
from tests.chaos.rabbit_node import PrivateRabbitNode
from tests.chaos.recording_erp import RecordingErp

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.rabbitmq]

DEADLINE_S = 150.0  # from the first publish; a healthy run settles in 15-30 s on this 2-core machine
KILL_EVERY_S = 1.5
BATCH_SIZE = 100  # the chaos config's route batch_size (write_chaos_config's default)
BROKER_DOWN_S = 4.0
TARGET_FAULT_S = 4.0


def test_sigkilled_workers_apply_every_message_exactly_once(
    tmp_path: Path, recording_erp: RecordingErp, shared_chaos_route: ChaosRoute
) -> None:
    """A worker is SIGKILLed every 1.5 seconds (the two in turn) and restarted at once,
    from the first publish until every message is accounted for."""
    chaos = shared_chaos_route
    with chaos_run(tmp_path, broker_url=chaos.broker_url, route=chaos.route, target=recording_erp) as run:
        next_kill_s, slot = KILL_EVERY_S, 0

        def kill_in_turn(now: Progress) -> None:
            nonlocal next_kill_s, slot
            if now.elapsed_s >= next_kill_s:
                run.pool.kill(slot)
                run.note(f"SIGKILL worker slot {slot} and restart ({now})")
                slot ^= 1
                next_kill_s = now.elapsed_s + KILL_EVERY_S

        run.settle(kill_in_turn, DEADLINE_S)
    in_flight = (
        run.pool.kills * BATCH_SIZE,
        f"a killed worker leaves at most its batch in hand ({BATCH_SIZE} writes) written but not recorded",
    )
    verify(run, recording_erp.snapshot(), tmp_path / "summary.json", in_flight)
    assert run.pool.kills >= 5, f"only {run.pool.kills} kills: the run was too short to be chaos"


def test_rabbitmq_restarts_mid_run_lose_and_duplicate_nothing(
    tmp_path: Path, recording_erp: RecordingErp, private_rabbit: PrivateRabbitNode
) -> None:
    """The private RabbitMQ node's app is stopped for four seconds twice: once while the
    publisher is still publishing, once while the workers drain the queue."""
    chaos = new_chaos_route(private_rabbit.url)
    restarts: list[str] = []
    with chaos_run(tmp_path, broker_url=chaos.broker_url, route=chaos.route, target=recording_erp) as run:

        def restart(why: str) -> None:
            run.note(f"rabbitmqctl stop_app ({why})")
            private_rabbit.stop_app()
            stopped = time.monotonic()
            run.note("node stopped")
            time.sleep(BROKER_DOWN_S)
            private_rabbit.start_app()
            restarts.append(why)
            run.note(f"node up again after {time.monotonic() - stopped:.1f}s down ({run.progress()})")

        def restart_twice(now: Progress) -> None:
            if not restarts and now.published >= 6_000:
                restart(f"while publishing: {now}")
            elif len(restarts) == 1 and now.effects >= 12_000:
                restart(f"while draining: {now}")

        run.settle(restart_twice, DEADLINE_S)
    in_flight = (
        len(restarts) * BATCH_SIZE,
        "when the broker goes away, the batch a worker is writing is handed to whichever worker "
        "RabbitMQ activates next, which may write it again before the first records it "
        f"(at most one batch of {BATCH_SIZE} per restart; the target's Idempotency-Key absorbs them)",
    )
    verify(run, recording_erp.snapshot(), tmp_path / "summary.json", in_flight)
    assert len(restarts) == 2, f"RabbitMQ was restarted {len(restarts)} times, not twice: {run.timeline}"


def test_target_outage_and_timeouts_apply_every_message_exactly_once(
    tmp_path: Path, recording_erp: RecordingErp, shared_chaos_route: ChaosRoute
) -> None:
    """The ERP answers 503 to every write for four seconds, later holds every write 2.5 s
    (the writer gives up after 1 s) for four seconds and applies it anyway."""
    chaos = shared_chaos_route
    with chaos_run(
        tmp_path, broker_url=chaos.broker_url, route=chaos.route, target=recording_erp, write_timeout_s=1.0
    ) as run:
        phase, until_s = "before", 0.0

        def outage_then_hang(now: Progress) -> None:
            nonlocal phase, until_s
            if phase == "before" and now.effects >= 4_000:
                recording_erp.set_mode("unavailable")
                phase, until_s = "503", now.elapsed_s + TARGET_FAULT_S
                run.note(f"target answers 503 ({now})")
            elif phase == "503" and now.elapsed_s >= until_s:
                recording_erp.set_mode("normal")
                phase = "between"
                run.note(f"target back ({now})")
            elif phase == "between" and now.effects >= 10_000:
                recording_erp.set_mode("hang", hang_s=2.5)
                phase, until_s = "hang", now.elapsed_s + TARGET_FAULT_S
                run.note(f"target hangs 2.5 s per write ({now})")
            elif phase == "hang" and now.elapsed_s >= until_s:
                recording_erp.set_mode("normal")
                phase = "after"
                run.note(f"target back ({now})")

        run.settle(outage_then_hang, DEADLINE_S)
    snapshot = recording_erp.snapshot()
    held = (snapshot.hung, "only a write held past the writer's timeout, then applied, comes back as a repeat")
    verify(run, snapshot, tmp_path / "summary.json", held)
    assert snapshot.refused_503 > 0 and snapshot.hung > 0, "the outage or the hang never met a write"
