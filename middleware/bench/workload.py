"""What the bench feeds the pipeline: CRM customer records and their envelopes.

Every end-to-end figure (embedded, RabbitMQ, webhook, Tryton) moves the same record through
the demo's customer chain (`crm_customer_to_canonical` and on), so the figures differ only by
what they measure. Each run tags its records, so runs on a shared broker or target never
collide and each run's effects can be counted apart.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

CUSTOMER_TYPE = "customer.upserted"


def customer_payload(i: int, tag: str) -> dict[str, Any]:
    """A CRM customer record as the demo's customer chain expects it."""
    return {
        "customer_no": f"{tag}-{i}",
        "company": f"Bench Customer {i}",
        "email": f"buyer{i}@bench.example",
        "tier": "silver",
        "status": "active",
        "billing": {"street": "Ring 1", "zip": "10115", "city": "Berlin", "country": "DE"},
        "updated_at": "2026-11-24T10:00:00+08:00",
        "version": 1,
    }


def idempotency_key(i: int, tag: str) -> str:
    """What the route sends as `Idempotency-Key` for message `i` (see Envelope.idempotency_key)."""
    return f"crm:customer:{tag}-{i}@1"


def bench_envelopes(
    count: int, tag: str, first: int = 0, payload: Callable[[int, str], dict[str, Any]] = customer_payload
) -> list[Any]:
    """Envelopes for customers `first` .. `first + count - 1` (record ids `<tag>-<i>`), published
    as a CRM source would; `payload(i, tag)` gives each record."""
    from middleware.broker.base import OutgoingMessage
    from middleware.message import Envelope, Source

    now = datetime.now(UTC)
    messages = []
    for i in range(first, first + count):
        envelope = Envelope(
            type=CUSTOMER_TYPE,
            source=Source(system="crm", entity="customer", record_id=f"{tag}-{i}", version="1"),
            occurred_at=now,
            payload=payload(i, tag),
        )
        messages.append(
            OutgoingMessage(
                CUSTOMER_TYPE, envelope.to_bytes(), message_id=str(envelope.message_id), key=envelope.record_key
            )
        )
    return messages
