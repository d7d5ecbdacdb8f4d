"""Names and arguments of the RabbitMQ objects behind one route: one place, so the broker,
`isthmus broker setup`, the tests and the operator docs agree on what exists.

For a route R on exchange X::

    X (topic) ──binding keys──> R                              shards = 1
    X (topic) ──binding keys──> R.shards (x-consistent-hash on header x-isthmus-key)
                                   ├──> R.shard-00 … R.shard-NN     shards = N > 1
    R.workers       sharded routes only: every worker holds a consumer here, no message is ever
                    sent to it; its consumer count is the number of live workers
    R.retry-<ms>ms  one per delay step: quorum, x-message-ttl, dead-letters back (at-least-once)
    R.dlq           dead letters with their reason in headers

Every route queue is a quorum queue with a single active consumer, so the messages of one
record (one shard) are applied by one worker at a time, in order; `x-max-length` with
`reject-publish` makes a full queue refuse publishes (producers see a nack) instead of
growing until the broker hits its memory alarm.
"""

from __future__ import annotations

from typing import Any

from middleware.broker.base import DLQ_SUFFIX, H_RECORD_KEY, QueueOptions

SHARD_EXCHANGE_SUFFIX = ".shards"
RETRY_INFIX = ".retry-"
CONSISTENT_HASH = "x-consistent-hash"
CONSISTENT_HASH_PLUGIN = "rabbitmq_consistent_hash_exchange"
# The retry step used when a route was not set up with steps (a queue seen only by name).
FALLBACK_RETRY_STEPS_MS = (1_000, 5_000, 30_000, 120_000, 600_000)
# A jittered delay may fall slightly below its step; it still uses that step, not the one below.
STEP_TOLERANCE = 0.75


def shard_exchange(queue: str) -> str:
    return queue + SHARD_EXCHANGE_SUFFIX


def shard_queues(queue: str, shards: int) -> list[str]:
    """The queues that hold the route's messages: the route's own name when unsharded."""
    if shards <= 1:
        return [queue]
    width = max(2, len(str(shards - 1)))
    return [f"{queue}.shard-{index:0{width}d}" for index in range(shards)]


def presence_queue(queue: str) -> str:
    """Single-active-consumer queues report only their active consumer; this one counts workers."""
    return queue + ".workers"


def presence_queue_arguments() -> dict[str, Any]:
    return {"x-queue-type": "classic"}


def retry_steps_ms(options: QueueOptions) -> tuple[int, ...]:
    steps = sorted({max(1, round(delay * 1000)) for delay in options.retry_delays_s})
    return tuple(steps) or FALLBACK_RETRY_STEPS_MS


def retry_queue(queue: str, delay_ms: int) -> str:
    return f"{queue}{RETRY_INFIX}{delay_ms}ms"


def is_auxiliary(queue: str) -> bool:
    """A DLQ or retry queue: it has no retry queues or DLQ of its own."""
    return queue.endswith(DLQ_SUFFIX) or (RETRY_INFIX in queue and queue.endswith("ms"))


def pick_step(steps_ms: tuple[int, ...], delay_s: float) -> int:
    """The declared step for a requested delay: the smallest step that is not clearly shorter.

    Each step is its own queue with one TTL, so a short delay never waits behind a long
    one; the price is that delays are rounded to the steps (jitter is not applied)."""
    wanted = delay_s * 1000 * STEP_TOLERANCE
    for step in steps_ms:
        if step >= wanted:
            return step
    return steps_ms[-1]


def route_queue_arguments(options: QueueOptions) -> dict[str, Any]:
    arguments: dict[str, Any] = {"x-queue-type": "quorum", "x-single-active-consumer": True}
    if options.max_length is not None:
        arguments.update({"x-max-length": options.max_length, "x-overflow": "reject-publish"})
    return arguments


def retry_queue_arguments(queue: str, options: QueueOptions, delay_ms: int) -> dict[str, Any]:
    """Quorum with per-queue TTL and at-least-once dead-lettering back to the route.

    At-least-once dead-lettering (RabbitMQ 3.10+) needs `reject-publish` on the source
    queue; it keeps an expired retry in place while the route queue is full, instead of
    dropping it as classic queues do."""
    back: dict[str, Any]
    if options.shards > 1:
        back = {"x-dead-letter-exchange": shard_exchange(queue)}
    else:
        back = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": delay_ms,
        "x-overflow": "reject-publish",
        "x-dead-letter-strategy": "at-least-once",
        **back,
    }


def dlq_arguments() -> dict[str, Any]:
    return {"x-queue-type": "quorum"}


def shard_exchange_arguments() -> dict[str, Any]:
    return {"hash-header": H_RECORD_KEY}
