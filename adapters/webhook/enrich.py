"""Webhook as trigger, full record by id: the Content Enricher behind an endpoint with `item_path`.

Many CRMs' webhooks say *that* a record changed and carry a part of it (an id, a status, the
fields that changed). Publishing that partial payload would let a route write a record with
fields missing. With `item_path`, the receiver publishes each event as a **trigger** onto
the endpoint's fetch queue (`isthmus.fetch.<endpoint>`); an `ItemFetcher` beside the routes
takes the triggers, GETs the full record from the endpoint's system and publishes it under
the event kind's message type, as a poller would publish it.

Why the fetch is not in the receiver: the sender's 2xx would wait for a round trip to its
own API (which may be slow, rate-limited or down while the webhook is not), and a sender
that times out retries, multiplying the fetches. The trigger is durable once the 202 is
sent; the fetch then has the broker's retry and dead-letter machinery, like a route write.

What a caller may rely on:

* the published record is built by the system's reader with the entity's read settings
  (`ItemReader.read_item`): same id, version and change time as a poll of the same record,
  so a record arriving by webhook and by poll is one change (the routes' idempotency keys
  match);
* the trigger is acked only after the full records of its batch are published: a worker
  killed in between fetches and publishes again (same version, absorbed downstream);
* 404 (the record was deleted after the event): nothing is published, the trigger is acked
  and counted (`outcome="missing"`);
* a transient failure (timeout, 5xx, 429, request budget) is retried per the endpoint's
  `retry` policy, then dead-lettered; a permanent one is dead-lettered at once. The dead
  letter is the trigger envelope: `isthmus dlq replay` fetches again;
* the full envelope keeps the trigger's correlation id and received time; its occurred time
  is the record's as the reader gives it (its change time when the read settings name one,
  else the time of the fetch — as a poll of it would say).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence

import structlog

from adapters.webhook.receiver import WebhookEndpoint, fetch_queue
from middleware.adapter import ItemReader
from middleware.broker.base import H_ATTEMPTS, H_ERROR, H_ERROR_CLASS, Broker, Delivery, OutgoingMessage
from middleware.errors import PermanentError, TransientError
from middleware.message import Envelope, Source
from middleware.observability import WEBHOOK_FETCHES

log = structlog.get_logger("isthmus.webhook.fetch")


class ItemFetcher:
    """Content Enricher for one webhook endpoint: triggers in, full records out (see the module docstring)."""

    def __init__(self, name: str, endpoint: WebhookEndpoint, reader: ItemReader, broker: Broker) -> None:
        self.name = name
        self.endpoint = endpoint
        self.reader = reader
        self.broker = broker
        self.queue = fetch_queue(name)
        kinds = [endpoint.plain_kind()] if endpoint.emits_by is None else list(endpoint.kinds().values())
        # (message type, entity) → item path: a trigger envelope says which kind it was by both
        self.paths = {(k.message_type, k.entity): k.item_path for k in kinds if k.item_path}

    def run(self, stop: threading.Event, batch_size: int = 50, fetch_timeout_s: float = 0.5) -> None:
        """Take and enrich triggers until `stop` is set; broker failures back off and go on."""
        failures = 0
        while not stop.is_set():
            try:
                deliveries = self.broker.fetch(self.queue, batch_size, fetch_timeout_s)
                if deliveries:
                    self.process(deliveries)
                failures = 0
            except Exception as exc:  # broker outage: back off, keep running
                failures += 1
                wait = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.error("webhook_fetch_batch_failed", endpoint=self.name, error=f"{type(exc).__name__}: {exc}")
                stop.wait(wait)

    def process(self, deliveries: Sequence[Delivery]) -> int:
        """Fetch and publish the full record of each trigger; returns how many were published."""
        out: list[OutgoingMessage] = []
        done: list[Delivery] = []
        for delivery in deliveries:
            message = self._enrich(delivery)
            if message is None:
                continue  # retried, dead-lettered or missing: handled
            if message is not _ACK_ONLY:
                out.append(message)
            done.append(delivery)
        if out:
            self.broker.publish(out)
            WEBHOOK_FETCHES.labels(self.name, "ok").inc(len(out))
        if done:
            self.broker.ack(done)
        return len(out)

    def _enrich(self, delivery: Delivery) -> OutgoingMessage | None:
        try:
            trigger = Envelope.from_bytes(delivery.body)
        except Exception as exc:
            self._dead_letter(delivery, "PermanentError", f"not an envelope: {type(exc).__name__}: {exc}")
            return None
        source = trigger.source
        path = self.paths.get((trigger.type, source.entity))
        if path is None:  # the config changed since the trigger was taken: no longer fetched
            log.warning("webhook_trigger_published_as_is", endpoint=self.name, record_id=source.record_id)
            return self._message(trigger)
        bound = log.bind(endpoint=self.name, entity=source.entity, record_id=source.record_id)
        try:
            record = self.reader.read_item(source.entity, source.record_id, path)
        except TransientError as exc:
            self._retry(delivery, exc, bound)
            return None
        except (PermanentError, ValueError) as exc:
            self._dead_letter(delivery, type(exc).__name__, str(exc))
            bound.warning("webhook_fetch_dead_lettered", error=str(exc)[:300])
            return None
        if record is None:
            WEBHOOK_FETCHES.labels(self.name, "missing").inc()
            bound.info("webhook_item_missing", reason="the system has no such record (deleted since the event?)")
            return _ACK_ONLY
        full = Envelope(
            type=trigger.type,
            source=Source(
                system=source.system, entity=source.entity, record_id=record.record_id, version=record.version
            ),
            occurred_at=record.occurred_at,
            received_at=trigger.received_at,
            correlation_id=trigger.correlation_id,
            payload=record.data,
        )
        return self._message(full)

    @staticmethod
    def _message(envelope: Envelope) -> OutgoingMessage:
        return OutgoingMessage(
            envelope.type, envelope.to_bytes(), message_id=str(envelope.message_id), key=envelope.record_key
        )

    def _retry(self, delivery: Delivery, exc: TransientError, bound: structlog.typing.FilteringBoundLogger) -> None:
        attempt = int(delivery.headers.get(H_ATTEMPTS, "1"))
        policy = self.endpoint.retry
        if attempt >= policy.max_attempts:
            self._dead_letter(delivery, "TransientError", f"{exc} (after {attempt} attempts)")
            bound.warning("webhook_fetch_dead_lettered", error=str(exc)[:300], attempts=attempt)
            return
        delay = policy.nominal_delay(attempt)
        delay *= 1 + random.uniform(-policy.jitter, policy.jitter)
        if exc.retry_after:
            delay = max(delay, exc.retry_after)
        headers = {**delivery.headers, H_ATTEMPTS: str(attempt + 1), H_ERROR: str(exc)[:500]}
        self.broker.retry_later(delivery, delivery.body, headers, delay)
        WEBHOOK_FETCHES.labels(self.name, "retried").inc()
        bound.info("webhook_fetch_retried", error=str(exc)[:300], attempt=attempt, retry_in_s=round(delay, 2))

    def _dead_letter(self, delivery: Delivery, error_class: str, error: str) -> None:
        self.broker.dead_letter(delivery, {H_ERROR_CLASS: error_class, H_ERROR: error[:500]})
        WEBHOOK_FETCHES.labels(self.name, "dead_lettered").inc()


_ACK_ONLY = OutgoingMessage("", b"")  # a trigger that is done without publishing anything (404)
