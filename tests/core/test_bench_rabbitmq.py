"""`isthmus bench` on RabbitMQ: tiny runs of every figure against the real broker.

Speed is reported by `isthmus bench`, never asserted; these tests pin what the figures rest
on: every event is counted only once it landed in the target, nothing is dead-lettered, the
keys `isthmus bench --json` prints are there, and a run leaves nothing on the shared broker.
"""

from __future__ import annotations

import math

import pika
import pika.exceptions
import pytest

from middleware.bench.rabbitmq import (
    LoopbackTarget,
    bench_latency,
    bench_rabbitmq_e2e,
    bench_rabbitmq_raw,
    bench_run,
    bench_worker_rss,
    find_rabbitmq,
    pika_parameters,
    rabbitmq_sharding,
    running_workers,
    shards_for,
)
from middleware.bench.webhook import bench_webhook_ingest
from middleware.cli.main import build_parser

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


def _positive_rate(value: object) -> bool:
    return isinstance(value, int | float) and value > 0 and math.isfinite(value)


def test_raw_limit_pipelines_confirms_and_consumes_every_message(amqp_url: str) -> None:
    results = bench_rabbitmq_raw(amqp_url, 500, b'{"x": 1}')
    assert results["rabbitmq_raw_messages"] == 500
    assert _positive_rate(results["rabbitmq_raw_limit_events_per_s"])
    assert _positive_rate(results["rabbitmq_raw_publish_confirmed_per_s"])


def test_e2e_counts_every_event_once_it_landed_in_the_target(amqp_url: str) -> None:
    results = bench_rabbitmq_e2e(amqp_url, 300, workers=2)
    assert results["rabbitmq_e2e_landed"] == 300
    assert results["rabbitmq_e2e_dead_lettered"] == 0
    assert results["rabbitmq_e2e_worker_processes"] == 2
    assert results["rabbitmq_e2e_shards"] == shards_for(2)
    assert _positive_rate(results["rabbitmq_e2e_events_per_s"])
    assert _positive_rate(results["rabbitmq_e2e_publish_confirmed_per_s"])


def test_latency_is_measured_for_every_message_after_warmup(amqp_url: str) -> None:
    results = bench_latency(amqp_url, rate=200, seconds=0.5, warmup_s=0.5)
    assert results["latency_samples_at_200"] == 100
    assert results["latency_missing_at_200"] == 0
    assert 0 < results["p50_latency_ms_at_200"] <= results["p99_latency_ms_at_200"]
    assert results["p99_latency_ms_at_200"] <= results["max_latency_ms_at_200"]


def test_webhook_ingest_delivers_every_signed_event(amqp_url: str) -> None:
    results = bench_webhook_ingest(amqp_url, 200, clients=16)
    assert results["webhook_ingest_statuses"] == {"202": 200}
    assert results["webhook_ingest_landed"] == 200
    assert _positive_rate(results["webhook_ingest_events_per_s"])
    assert _positive_rate(results["webhook_accepted_events_per_s"])


def test_worker_rss_run_reports_growth_between_warmup_and_end(amqp_url: str) -> None:
    results = bench_worker_rss(amqp_url, 400)
    assert results["worker_rss_run_landed"] == 400
    assert results["worker_rss_after_warmup_mb"] > 0
    assert results["worker_rss_at_end_mb"] > 0
    assert math.isfinite(results["worker_rss_growth_pct"])


def test_a_run_leaves_no_queue_or_exchange_on_the_shared_broker(amqp_url: str) -> None:
    with LoopbackTarget() as target:
        with bench_run(amqp_url, target, shards=shards_for(2)) as run, running_workers(run, 2):
            topology = run.topology()
        connection = pika.BlockingConnection(pika_parameters(amqp_url))
        try:
            for queue in topology.queues:
                channel = connection.channel()
                with pytest.raises(pika.exceptions.ChannelClosedByBroker) as missing:
                    channel.queue_declare(queue, passive=True)
                assert missing.value.reply_code == 404, queue
            for exchange in topology.exchanges:
                channel = connection.channel()
                with pytest.raises(pika.exceptions.ChannelClosedByBroker) as missing:
                    channel.exchange_declare(exchange, passive=True)
                assert missing.value.reply_code == 404, exchange
        finally:
            connection.close()


def test_unreachable_broker_is_skipped_with_a_reason_and_no_password() -> None:
    url, reason = find_rabbitmq("amqp://bench:s3cret-pw@127.0.0.1:1/%2F")
    assert url is None
    assert "--amqp-url" in reason and "--no-rabbitmq" in reason
    assert "s3cret-pw" not in reason


def test_sharding_is_on_when_the_broker_has_the_consistent_hash_exchange(amqp_url: str) -> None:
    assert rabbitmq_sharding(amqp_url) == "on"


def test_without_the_consistent_hash_exchange_the_bench_says_to_enable_it_and_measures_unsharded(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from middleware.broker import rabbitmq_plugins

    monkeypatch.setattr(rabbitmq_plugins, "CONSISTENT_HASH", "x-isthmus-no-such-type")  # as on a default RabbitMQ
    assert rabbitmq_sharding(amqp_url) == (
        "off: the rabbitmq_consistent_hash_exchange plugin is not enabled "
        "(rabbitmq-plugins enable rabbitmq_consistent_hash_exchange); measured with unsharded routes"
    )


def test_bench_command_takes_long_amqp_url_and_no_rabbitmq() -> None:
    args = build_parser().parse_args(["bench", "--json", "--long", "--amqp-url", "amqp://x@h/%2F", "--no-rabbitmq"])
    assert (args.long, args.amqp_url, args.no_rabbitmq) == (True, "amqp://x@h/%2F", True)
