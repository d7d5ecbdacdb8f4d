"""`isthmus bench`: every part in order, one JSON object of figures; progress on stderr."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from middleware.bench.harness import step
from middleware.bench.intake import bench_snapshot_initial_load
from middleware.bench.rabbitmq import (
    E2E_WORKERS,
    bench_latency,
    bench_rabbitmq_e2e,
    bench_rabbitmq_raw,
    bench_worker_rss,
    find_rabbitmq,
    rabbitmq_sharding,
)
from middleware.bench.suite import bench_embedded_broker, bench_embedded_e2e, bench_mapping, bench_rest_writes
from middleware.bench.webhook import bench_webhook_ingest
from middleware.bench.workload import bench_envelopes

RABBITMQ_STEPS = 5


def run_bench(
    quick: bool = False,
    long: bool = False,
    amqp_url: str | None = None,
    rabbitmq: bool = True,
    tryton: bool = True,
) -> dict[str, Any]:
    """Every figure; the RabbitMQ ones (`middleware.bench.rabbitmq`) when a broker answers."""
    results: dict[str, Any] = {"machine_cores": os.cpu_count(), "python": sys.version.split()[0]}
    amqp: str | None = None
    if rabbitmq:
        amqp, skipped = find_rabbitmq(amqp_url)
        if amqp is None:
            step(skipped)
            results["rabbitmq_skipped"] = skipped
    steps = 6 + (RABBITMQ_STEPS if amqp is not None else 0)
    step(f"1/{steps} mapping engine vs hand-written Python ({0.5 if quick else 3.0:.1f} s)")
    results.update(bench_mapping(0.5 if quick else 3.0))
    events = 1000 if quick else 10000
    step(f"2/{steps} embedded broker alone ({events * 2} messages)")
    results.update(bench_embedded_broker(events * 2))
    step(f"3/{steps} REST writes into the sample ERP ({events // 2} each way)")
    results.update(bench_rest_writes(events // 2))
    step(f"4/{steps} embedded broker end to end, one worker process ({events} events)")
    results.update(bench_embedded_e2e(events))
    step(f"5/{steps} embedded broker end to end, two worker processes ({events} events)")
    results.update(bench_embedded_e2e(events, processes=2))
    accounts = 5000 if quick else 20000
    step(f"6/{steps} initial load from a list API without changed-since (snapshot) vs its read limit ({accounts})")
    results.update(bench_snapshot_initial_load(accounts))
    if amqp is not None:
        results.update(run_rabbitmq_bench(amqp, quick=quick, long=long, first_step=7, steps=steps))
    if tryton:
        results.update(_bench_tryton(quick))
    return results


def _bench_tryton(quick: bool) -> dict[str, Any]:
    """CRM customers → Tryton parties through the pipeline vs a direct batched JSON-RPC client."""
    from adapters.tryton.localserver import TrytonUnavailable
    from middleware.bench.tryton import bench_tryton

    records = 500 if quick else 2000
    step(f"Tryton: {records} customers through the pipeline and directly (starts a local trytond)")
    try:
        return bench_tryton(records=records, rounds=1 if quick else 2)
    except TrytonUnavailable as exc:
        step(f"Tryton figures skipped: {exc}")
        return {"tryton_skipped": str(exc)}


def run_rabbitmq_bench(
    amqp_url: str, quick: bool = False, long: bool = False, first_step: int = 1, steps: int = RABBITMQ_STEPS
) -> dict[str, Any]:
    """Every RabbitMQ figure, in one run on one broker (the raw limit first)."""
    from middleware.observability import configure_logging

    configure_logging("json", "warning")  # stderr: stdout carries only the JSON
    results: dict[str, Any] = {}
    raw_n = 5_000 if quick else 50_000
    e2e_n = 2_000 if quick else 30_000
    latency_s = 2.0 if quick else 15.0
    webhook_n = 2_000 if quick else 20_000
    rss_n = 1_000_000 if long else (5_000 if quick else 100_000)
    body = bench_envelopes(1, "RAW")[0].body
    sharding = rabbitmq_sharding(amqp_url)
    results["rabbitmq_sharding"] = sharding
    shards = None if sharding == "on" else 1  # None: each figure's own choice (sharded with several workers)
    if shards == 1:
        step(f"   RabbitMQ sharding {sharding}")
    plan: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        (
            "raw_limit",
            f"RabbitMQ raw limit: minimal pika loop, pipelined confirms ({raw_n} messages)",
            partial(bench_rabbitmq_raw, amqp_url, raw_n, body),
        ),
        (
            "e2e",
            f"RabbitMQ end to end at saturation, {E2E_WORKERS} worker processes ({e2e_n} events)",
            partial(bench_rabbitmq_e2e, amqp_url, e2e_n, shards=shards, warmup_s=0.0 if quick else 8.0),
        ),
        (
            "latency",
            f"RabbitMQ latency at 1,000 events/s offered, open loop ({latency_s:g} s)",
            partial(bench_latency, amqp_url, 1000, latency_s),
        ),
        (
            "webhook_ingest",
            f"webhook ingest: 64 keep-alive clients, delivered end to end ({webhook_n} events)",
            partial(bench_webhook_ingest, amqp_url, webhook_n, shards=shards),
        ),
        ("worker_rss", f"worker RSS over a long run ({rss_n} messages)", partial(bench_worker_rss, amqp_url, rss_n)),
    ]
    failed: dict[str, str] = {}
    for offset, (name, what, measure) in enumerate(plan):
        step(f"{first_step + offset}/{steps} {what}")
        try:
            results.update(measure())
        except Exception as exc:  # one failed figure (say the broker stopped answering) keeps the others
            failed[name] = f"{type(exc).__name__}: {exc}"[:500]
            step(f"   failed: {failed[name]}")
    if "rabbitmq_e2e_events_per_s" in results and "rabbitmq_raw_limit_events_per_s" in results:
        results["rabbitmq_e2e_vs_raw_limit"] = round(
            results["rabbitmq_e2e_events_per_s"] / results["rabbitmq_raw_limit_events_per_s"], 2
        )
    if failed:
        results["rabbitmq_failed"] = failed
    return results
