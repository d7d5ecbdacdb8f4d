"""Dead-letter queue operations behind `isthmus dlq list | show | replay | purge`.

Pattern: the operator's side of the **Dead Letter Channel** (the route fills it), and a
**Message Store** view of it for replay after a fix.

A DLQ is at-least-once, like every queue: on RabbitMQ, dead-lettering is "publish to the
DLQ, then ack the original", and a worker that dies (or loses its connection) in between
gets the original back and dead-letters it again. Both copies carry the same message id,
so what operators see and replay is one dead letter per message id.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from middleware.broker.base import (
    H_ATTEMPTS,
    H_DEAD_LETTERED_AT,
    H_ERROR,
    H_ERROR_CLASS,
    H_MAPPING,
    H_ORIGINAL_QUEUE,
    H_ROUTE,
    Broker,
    Delivery,
    OutgoingMessage,
    dlq_name,
)
from middleware.message import Envelope


@dataclass
class DeadLetter:
    """One dead-lettered message as an operator sees it."""

    route: str
    message_id: str
    error_class: str
    error: str
    mapping: str
    attempts: str
    dead_lettered_at: str
    message_type: str
    record: str
    body: bytes
    headers: dict[str, str]

    def summary(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "message_id": self.message_id,
            "type": self.message_type,
            "record": self.record,
            "error_class": self.error_class,
            "error": self.error,
            "mapping": self.mapping,
            "attempts": self.attempts,
            "dead_lettered_at": self.dead_lettered_at,
        }

    def detail(self) -> dict[str, Any]:
        out = self.summary()
        out["headers"] = self.headers
        try:
            out["message"] = json.loads(self.body)
        except ValueError:
            out["message_raw"] = self.body.decode("utf-8", errors="replace")
        return out


def _describe(route: str, delivery: Delivery) -> DeadLetter:
    headers = delivery.headers
    message_type, record = "", ""
    try:
        envelope = Envelope.from_bytes(delivery.body)
        message_type = envelope.type
        record = f"{envelope.source.system}:{envelope.source.entity}:{envelope.source.record_id}"
    except Exception:
        message_type = "(malformed)"
    return DeadLetter(
        route=headers.get(H_ROUTE, route),
        message_id=delivery.message_id,
        error_class=headers.get(H_ERROR_CLASS, ""),
        error=headers.get(H_ERROR, ""),
        mapping=headers.get(H_MAPPING, ""),
        attempts=headers.get(H_ATTEMPTS, ""),
        dead_lettered_at=headers.get(H_DEAD_LETTERED_AT, ""),
        message_type=message_type,
        record=record,
        body=delivery.body,
        headers=dict(headers),
    )


def list_dead_letters(broker: Broker, routes: Sequence[str], limit: int = 100) -> list[DeadLetter]:
    found: list[DeadLetter] = []
    for route in routes:
        seen: set[str] = set()
        for delivery in broker.browse(dlq_name(route), limit):
            if delivery.message_id not in seen:  # a second copy of the same dead letter
                seen.add(delivery.message_id)
                found.append(_describe(route, delivery))
    return found


def replay(broker: Broker, route: str, message_ids: Sequence[str] | None) -> int:
    """Put dead letters back on their route's queue with a fresh attempt count.

    The original message goes back (not a copy with the error headers), so the route
    treats it as new; its idempotency key is unchanged, so a message whose effect did land
    is not applied twice.
    """
    queue = dlq_name(route)
    wanted = set(message_ids) if message_ids else None
    found = [d for d in broker.browse(queue, 1_000_000) if wanted is None or d.message_id in wanted]
    unique: dict[str, Delivery] = {}
    for delivery in found:
        unique.setdefault(delivery.message_id, delivery)  # one copy per message id goes back
    messages: list[OutgoingMessage] = []
    for delivery in unique.values():
        body, key = delivery.body, delivery.key
        try:
            envelope = Envelope.from_bytes(body)
            body, key = envelope.model_copy(update={"attempt": 0}).to_bytes(), envelope.record_key
        except Exception:
            pass
        headers = {k: v for k, v in delivery.headers.items() if not k.startswith("x-isthmus-")}
        messages.append(
            OutgoingMessage(
                routing_key=delivery.routing_key, body=body, headers=headers, message_id=delivery.message_id, key=key
            )
        )
    if not messages:
        return 0
    # Send first, then remove from the DLQ: a crash in between leaves a duplicate (which the
    # route's idempotency key absorbs), never a lost message.
    target = found[0].headers.get(H_ORIGINAL_QUEUE, route)
    broker.send(target, messages)
    taken = broker.take(queue, [m.message_id for m in messages])
    # A running worker may have failed a replayed message again and dead-lettered it (same id)
    # before the take: `take` removes it too. Rows beyond those seen above are such new dead
    # letters (queues are FIFO, so they come last); they go back, or they would be lost.
    seen = Counter(d.message_id for d in found)
    again: list[OutgoingMessage] = []
    for delivery in taken:
        if seen[delivery.message_id] > 0:
            seen[delivery.message_id] -= 1
        else:
            again.append(
                OutgoingMessage(
                    delivery.routing_key, delivery.body, dict(delivery.headers), delivery.message_id, delivery.key
                )
            )
    if again:
        broker.send(queue, again)
    return len(messages)


def purge(broker: Broker, route: str) -> int:
    return broker.purge(dlq_name(route))
