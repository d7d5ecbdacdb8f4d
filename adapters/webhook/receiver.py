"""Webhook receiver: pushed events → canonical envelopes → durably published to the broker.

A threaded HTTP/1.1 server. Each configured endpoint (a path) turns a POSTed JSON body —
one event, a list of events, or a list found at `records_path` — into one envelope per
event, routed by the endpoint's `message_type`. What a sender may rely on:

* 202 `{"accepted": n, "message_ids": [...]}` only after `broker.publish` returned, i.e.
  the events are durable; any other answer means nothing of that request was published.
* With a `secret`, `X-Isthmus-Signature: sha256=<hex HMAC-SHA256 of the raw body>` is
  required; a wrong or missing signature is 401 and nothing is published. `signature:`
  selects another header or the `timestamped` scheme (`t=<unix>,v1=<hex>` over
  `<t>.<raw body>`, refused outside its replay window): see `adapters.webhook.signatures`.
* With `dedup:`, an event id already accepted is answered 200 `{"accepted": 0,
  "duplicates": n}` and not published again; the ids are kept in the state store
  (`adapters.webhook.dedup`). A request mixing new and seen events publishes the new ones
  (202, with `duplicates`).
* 400 malformed JSON or a body of the wrong shape, 422 an event without its id (or with an
  unreadable occurred time), 404 unknown path, 413 body too large, 503 + `Retry-After: 1`
  when the broker fails (send again: the same event version has the same idempotency key).
* With `emits_by`, each event's kind (a field of the event, or a request header) picks its
  message type and entity; events of a kind the map does not name are answered in the 202
  as `"ignored": n`, not published, and counted (`isthmus_webhook_events_ignored_total`).
* With `item_path` (on the endpoint or a kind), an event is a trigger: it is sent to the
  endpoint's fetch queue (`isthmus.fetch.<endpoint>`) instead of being published, and
  `adapters.webhook.enrich.ItemFetcher` publishes the full record later. The 202 never
  waits for the fetch.
* `X-Correlation-Id`, when given, becomes the correlation id of every envelope of the request.
* `GET /healthz` → 200.

Publishing goes through one publisher thread (`GroupPublisher`): broker handles (pika
channels, SQLite connections) are not safe to share between the server's threads, and the
requests that arrive while one publish is waiting for its confirms are published together
in the next, so concurrent senders share one confirm wait (one transaction on the embedded
broker) instead of queueing for one each. Neither the secret nor a body is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from adapters.webhook.dedup import Claim, DedupSettings, EventLedger, event_ids, scope_of
from adapters.webhook.signatures import SignatureSettings, verify
from middleware.broker.base import Broker, OutgoingMessage
from middleware.config.settings import WebhookEmitsBy
from middleware.errors import ConfigError
from middleware.message import MESSAGE_TYPE_PATTERN, Envelope, Source, utc_now
from middleware.observability import MESSAGES_PUBLISHED, WEBHOOK_EVENTS_IGNORED, WEBHOOK_REQUESTS
from middleware.observability.logmask import register_secret
from middleware.runtime.config import RetryPolicy
from middleware.store.base import Store

log = structlog.get_logger("isthmus.webhook")

SIGNATURE_HEADER = "X-Isthmus-Signature"
CORRELATION_HEADER = "X-Correlation-Id"
MAX_BODY_BYTES = 5 * 1024 * 1024
FETCH_QUEUE_PREFIX = "isthmus.fetch."  # + endpoint name: where triggers of an item_path endpoint wait
_DEFAULT_SIGNATURE = SignatureSettings()


class WebhookEndpoint(BaseModel):
    """One webhook path and how its events become envelopes."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="URL path, e.g. /webhooks/crm/customers.")
    system: str = Field(description="System the events come from.")
    entity: str = Field(description="Entity the events are about.")
    message_type: str | None = Field(
        default=None, description="Message type (and routing key) to publish, e.g. customer.upserted."
    )
    emits_by: WebhookEmitsBy | None = Field(
        default=None, description="Instead of message_type: the event field or header whose value picks it."
    )
    item_path: str | None = Field(
        default=None, description="Fetch the full record at this path ({id}) and publish it instead of the event."
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="With item_path: retries of the fetch.")
    id_field: str = Field(description="Event field holding the record id (dotted path allowed).")
    version_field: str | None = Field(default=None, description="Event field holding the record version.")
    occurred_field: str | None = Field(
        default=None, description="Event field holding when the change happened (ISO 8601); unset = now."
    )
    records_path: str = Field(
        default="",
        description="Dotted path of the event list in the body ('' = the body is an event or a list).",
    )
    secret: SecretStr | None = Field(default=None, description="HMAC-SHA256 secret, as ${ENV_VAR}.")
    signature: SignatureSettings | None = Field(
        default=None, description="Signature scheme and header (default with a secret: hmac_sha256 of the body)."
    )
    dedup: DedupSettings | None = Field(
        default=None, description="Where each event's id is; an id already accepted is answered 200, not enqueued."
    )

    @model_validator(mode="after")
    def _signature_needs_secret(self) -> WebhookEndpoint:
        if self.signature is not None and self.secret is None:
            raise ValueError("'signature' needs 'secret' (as ${ENV_VAR})")
        return self

    @field_validator("path")
    @classmethod
    def _path_shape(cls, value: str) -> str:
        if not value.startswith("/") or "?" in value:
            raise ValueError(f"path {value!r} must start with '/' and carry no query string")
        return value.rstrip("/") or "/"

    @field_validator("message_type")
    @classmethod
    def _type_shape(cls, value: str | None) -> str | None:
        if value is not None and not MESSAGE_TYPE_PATTERN.match(value):
            raise ValueError(f"message type {value!r} must look like '<entity>.<event>', e.g. customer.upserted")
        return value

    @model_validator(mode="after")
    def _type_or_kinds(self) -> WebhookEndpoint:
        if (self.message_type is None) == (self.emits_by is None):
            raise ValueError("set exactly one of 'message_type' or 'emits_by' (several kinds of event on one URL)")
        return self

    def kinds(self) -> dict[str, EventKind]:
        """Event kind → what it becomes (with emits_by); the entity and item path filled in."""
        if self.emits_by is None:
            return {}
        return {
            name: EventKind(kind.message_type, kind.entity or self.entity, kind.item_path or self.item_path)
            for name, kind in self.emits_by.kinds().items()
        }

    def plain_kind(self) -> EventKind:
        """What every event becomes without emits_by."""
        assert self.message_type is not None
        return EventKind(self.message_type, self.entity, self.item_path)

    def fetches(self) -> bool:
        """Whether some events of this endpoint are triggers whose full record is fetched."""
        return self.item_path is not None or any(k.item_path for k in self.kinds().values())


@dataclass(frozen=True)
class EventKind:
    """What one kind of event becomes: its message type, the entity, and where its full record is."""

    message_type: str
    entity: str
    item_path: str | None = None


def fetch_queue(endpoint_name: str) -> str:
    """The queue the triggers of an endpoint with item_path wait in for their fetch."""
    return f"{FETCH_QUEUE_PREFIX}{endpoint_name}"


def sign(secret: str | bytes, body: bytes) -> str:
    """The signature header value a sender must send: `sha256=<hex>`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class HeaderLookup(Protocol):
    """What `handle` needs of request headers (http.server's message; a dict in tests)."""

    def get(self, name: str, /) -> str | None: ...


class _Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _dig(document: Any, dotted: str) -> Any:
    current = document
    for part in dotted.split(".") if dotted else []:
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


def _moment(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an ISO 8601 timestamp")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Intake:
    """What one request body becomes: envelopes (with what each kind says) and the events ignored."""

    envelopes: list[Envelope]
    kinds: list[EventKind]
    ignored: int = 0
    ignored_kinds: list[str] = field(default_factory=list)


def build_envelopes(endpoint: WebhookEndpoint, body: bytes, correlation_id: str = "") -> list[Envelope]:
    """Envelopes for one request body (of an endpoint with one message type); raises _Rejected(400/422)."""
    return read_events(endpoint, body, {}, correlation_id).envelopes


def read_events(endpoint: WebhookEndpoint, body: bytes, headers: HeaderLookup, correlation_id: str = "") -> Intake:
    """The events of one request as envelopes; raises _Rejected(400/422) describing the first problem.

    With `emits_by`, each event's kind (its field, or the request's header) picks the message
    type and entity; an event of a kind the map does not name is ignored (counted, not an
    error: see `WebhookEmitsBy`), and so is a request without the kind header.
    """
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise _Rejected(400, f"body is not valid JSON: {exc}") from None
    events = _dig(document, endpoint.records_path) if endpoint.records_path else document
    if events is None:
        raise _Rejected(400, f"no events at records_path {endpoint.records_path!r}")
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list):
        raise _Rejected(400, f"expected an event object or a list of them, got {type(events).__name__}")
    kinds = endpoint.kinds()
    by = endpoint.emits_by
    header_kind = (headers.get(by.header) or "").strip() if by is not None and by.header else None
    received = utc_now()
    intake = Intake([], [])
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise _Rejected(400, f"event {index} is a {type(event).__name__}, not an object")
        if by is None:
            kind = endpoint.plain_kind()
        else:
            name = header_kind if by.field is None else _dig(event, by.field)
            found = kinds.get(name) if isinstance(name, str) else None
            if found is None:
                intake.ignored += 1
                intake.ignored_kinds.append(str(name)[:80] if name is not None else "(none)")
                continue
            kind = found
        record_id = _dig(event, endpoint.id_field)
        if record_id is None or record_id == "" or isinstance(record_id, dict | list):
            raise _Rejected(422, f"event {index} has no id field {endpoint.id_field!r}")
        version = _dig(event, endpoint.version_field) if endpoint.version_field else None
        occurred = received
        if endpoint.occurred_field:
            raw = _dig(event, endpoint.occurred_field)
            if raw is not None:
                try:
                    occurred = _moment(raw)
                except ValueError:
                    raise _Rejected(
                        422, f"event {index} field {endpoint.occurred_field!r} is not an ISO 8601 timestamp"
                    ) from None
        intake.envelopes.append(
            Envelope(
                type=kind.message_type,
                source=Source(
                    system=endpoint.system,
                    entity=kind.entity,
                    record_id=str(record_id),
                    version=None if version is None else str(version),
                    view=f"webhook:{endpoint.path}",
                ),
                occurred_at=occurred,
                received_at=received,
                correlation_id=correlation_id,
                payload=event,
            )
        )
        intake.kinds.append(kind)
    return intake


class _Handover:
    """One request's messages, waiting for the publisher thread to say how their publish went.

    `done` is a lock held until then: cheaper per request than an Event (a Condition)."""

    __slots__ = ("done", "error", "messages")

    def __init__(self, messages: list[OutgoingMessage]) -> None:
        self.messages = messages
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()


class GroupPublisher:
    """Publishes the messages of concurrent requests together, from one thread.

    `publish` returns once the broker took the caller's messages durably, or raises what the
    broker raised. Everything handed over while a publish is in flight goes into the next
    one (up to `max_messages`), so N concurrent requests cost one confirm wait, not N in a
    row. A failed publish fails every request in it: each answers 503 and its sender sends
    again (what did land is absorbed by the idempotency keys), as with a failed publish of
    one request's list of events.
    """

    def __init__(self, broker: Broker, max_messages: int = 1000) -> None:
        self.broker = broker
        self.max_messages = max_messages
        self._inbox: queue.SimpleQueue[_Handover | None] = queue.SimpleQueue()  # None: stop
        self._lock = threading.Lock()  # orders every hand-over before the stop marker
        self._closed = False
        self._thread: threading.Thread | None = None

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        handover = _Handover(list(messages))
        with self._lock:
            if self._closed:
                raise RuntimeError("the webhook receiver is stopping")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="webhook-publisher", daemon=True)
                self._thread.start()
            self._inbox.put(handover)
        handover.done.acquire()
        if handover.error is not None:
            raise handover.error

    def _take(self) -> tuple[list[_Handover], bool]:
        """(the next batch: the first hand-over waited for, then what is already there up to
        `max_messages`; whether the stop marker came)."""
        first = self._inbox.get()
        if first is None:
            return [], True
        batch, count = [first], len(first.messages)
        while count < self.max_messages:
            try:
                handover = self._inbox.get_nowait()
            except queue.Empty:
                break
            if handover is None:
                return batch, True
            batch.append(handover)
            count += len(handover.messages)
        return batch, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._take()
            if not batch:
                continue
            try:
                routed: list[OutgoingMessage] = []
                direct: dict[str, list[OutgoingMessage]] = {}
                for handover in batch:
                    for message in handover.messages:
                        if message.routing_key.startswith(FETCH_QUEUE_PREFIX):
                            direct.setdefault(message.routing_key, []).append(message)
                        else:
                            routed.append(message)
                if routed:
                    self.broker.publish(routed)
                for queue_name, triggers in direct.items():  # fetch triggers go to their endpoint's queue
                    self.broker.send(queue_name, triggers)
            except BaseException as exc:  # handed to each waiting request, which answers 503
                for handover in batch:
                    handover.error = exc
            finally:
                for handover in batch:
                    handover.done.release()

    def close(self) -> None:
        """Publish what was handed over already, then stop; later calls raise."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, self._thread = self._thread, None
            self._inbox.put(None)
        if thread is not None:
            thread.join(30)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One structured event instead of socketserver's traceback on stderr.

        A sender that resets or drops its connection mid-request (a timeout on its side, a
        load balancer's health probe) is routine: `webhook_connection_reset` at info, with
        nothing published for that request (the publish happens only after the whole body
        was read) and nothing promised to the sender. Anything else is a bug of ours:
        `webhook_request_failed` at error, with the traceback inside the JSON event.
        """
        exc = sys.exc_info()[1]
        client = f"{client_address[0]}:{client_address[1]}" if isinstance(client_address, tuple) else None
        if isinstance(exc, ConnectionError | TimeoutError):
            log.info("webhook_connection_reset", client=client, error=type(exc).__name__)
        else:
            log.error("webhook_request_failed", client=client, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Requests are logged through structlog by the receiver, not to stderr."""

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path in ("/healthz", "/readyz"):
            self._reply(200, {"status": "ok"})
        else:
            self._reply(404, {"error": f"no route for GET {path}"})

    def do_POST(self) -> None:
        path = self.path.partition("?")[0].rstrip("/") or "/"
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self.close_connection = True
            self._reply(411, {"error": "Content-Length is required"})
            return
        try:
            length = int(length_header)
        except ValueError:
            self.close_connection = True
            self._reply(400, {"error": "Content-Length is not a number"})
            return
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._reply(413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"})
            return
        body = self.rfile.read(length) if length > 0 else b""
        status, answer, headers = self.server.receiver.handle(path, body, self.headers)
        self._reply(status, answer, headers)

    def _reply(self, status: int, answer: Any, headers: Mapping[str, str] | None = None) -> None:
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class WebhookReceiver:
    """Serves the configured webhook endpoints on `host:port` (0 = any free port).

    An Event-Driven Consumer (enterprise integration patterns): the sender pushes events and
    each becomes a canonical envelope (a Message Translator's first step) on the broker;
    with `dedup:` an `EventLedger` makes the endpoint an Idempotent Receiver.
    """

    def __init__(
        self,
        host: str,
        port: int,
        endpoints: Mapping[str, WebhookEndpoint],
        broker: Broker,
        store: Store | None = None,
    ) -> None:
        """`store` keeps the seen event ids of endpoints with `dedup:` (see `adapters.webhook.dedup`)."""
        self.host = host
        self.ledger = EventLedger(store)
        if store is None and any(e.dedup is not None for e in endpoints.values()):
            log.warning("webhook_dedup_not_durable", reason="no state store given: seen event ids are kept in memory")
        self._port = port
        self.broker = broker
        self.by_path: dict[str, tuple[str, WebhookEndpoint]] = {}
        for name, endpoint in endpoints.items():
            if endpoint.path in self.by_path:
                other = self.by_path[endpoint.path][0]
                raise ConfigError(f"webhook endpoints {other!r} and {name!r} share the path {endpoint.path!r}")
            self.by_path[endpoint.path] = (name, endpoint)
            if endpoint.secret is not None:
                register_secret(endpoint.secret.get_secret_value())
        self._publisher = GroupPublisher(broker)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> WebhookReceiver:
        self._server = _Server((self.host, self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="webhook-receiver",
            daemon=True,
        )
        self._thread.start()
        log.info("webhook_receiver_started", port=self.port, endpoints=sorted(self.by_path))
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._port = self._server.server_address[1]
            self._server = None
        self._publisher.close()  # publishes what was handed over before the server stopped
        self._publisher = GroupPublisher(self.broker)  # for a restart; its thread starts on use
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
            log.info("webhook_receiver_stopped")

    def handle(self, path: str, body: bytes, headers: HeaderLookup) -> tuple[int, Any, dict[str, str]]:
        """Status, JSON answer and extra headers for one POST (the HTTP layer only frames it)."""
        status, answer, extra = self._handle(path, body, headers)
        found = self.by_path.get(path)
        WEBHOOK_REQUESTS.labels(found[0] if found else "unknown", str(status)).inc()
        return status, answer, extra

    def _handle(self, path: str, body: bytes, headers: HeaderLookup) -> tuple[int, Any, dict[str, str]]:
        found = self.by_path.get(path)
        if found is None:
            return 404, {"error": f"no webhook endpoint at {path}"}, {}
        name, endpoint = found
        correlation_id = (headers.get(CORRELATION_HEADER) or "").strip()[:200]
        bound = log.bind(endpoint=name, correlation_id=correlation_id or None)
        if endpoint.secret is not None:
            scheme = endpoint.signature or _DEFAULT_SIGNATURE
            refused = verify(scheme, endpoint.secret.get_secret_value(), body, headers, time.time())
            if refused is not None:
                bound.warning("webhook_event_rejected", status=401, reason=refused)
                return 401, {"error": refused}, {}
        try:
            intake = read_events(endpoint, body, headers, correlation_id)
        except _Rejected as exc:
            bound.warning("webhook_event_rejected", status=exc.status, reason=exc.reason[:200])
            return exc.status, {"error": exc.reason}, {}
        envelopes = intake.envelopes
        if intake.ignored:
            WEBHOOK_EVENTS_IGNORED.labels(name, "unknown_kind").inc(intake.ignored)
            bound.info("webhook_event_ignored", ignored=intake.ignored, kinds=sorted(set(intake.ignored_kinds))[:10])
        messages = [
            OutgoingMessage(
                # a trigger (the kind has item_path) waits in the endpoint's fetch queue for its full record
                routing_key=fetch_queue(name) if kind.item_path else e.type,
                body=e.to_bytes(),
                message_id=str(e.message_id),
                key=e.record_key,
            )
            for e, kind in zip(envelopes, intake.kinds, strict=True)
        ]
        claim: Claim | None = None
        if endpoint.dedup is not None:
            try:
                ids = event_ids(endpoint.dedup, [e.payload for e in envelopes], headers)
            except ValueError as exc:
                bound.warning("webhook_event_rejected", status=422, reason=str(exc)[:200])
                return 422, {"error": str(exc)}, {}
            try:
                claim = self.ledger.claim(scope_of(name), ids)
            except Exception as exc:  # the store is down: nothing is promised, the sender retries
                bound.error("webhook_dedup_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
                return 503, {"error": "could not check for duplicate events; retry later"}, {"Retry-After": "1"}
            messages = claim.select(ids, messages, whole_request=endpoint.dedup.event_id_header is not None)
        published = False
        try:
            if messages:
                try:
                    self._publisher.publish(messages)
                except Exception as exc:  # any broker failure: the sender must retry, nothing is promised
                    bound.error("webhook_publish_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
                    return 503, {"error": "could not store the events; retry later"}, {"Retry-After": "1"}
                for routing_key, count in Counter(m.routing_key for m in messages).items():
                    MESSAGES_PUBLISHED.labels(name, routing_key).inc(count)
            published = True
        finally:
            if claim is not None:
                try:
                    self.ledger.settle(claim, published)
                except Exception as exc:  # published but not remembered: a redelivery is published again
                    bound.warning("webhook_dedup_not_recorded", error=f"{type(exc).__name__}: {str(exc)[:200]}")
        answer: dict[str, Any] = {"accepted": len(messages), "message_ids": [m.message_id for m in messages]}
        if intake.ignored:
            answer["ignored"] = intake.ignored
        if claim is not None:
            answer["duplicates"] = len(envelopes) - len(messages)
            if not messages and answer["duplicates"]:
                bound.info("webhook_event_duplicate", duplicates=answer["duplicates"])
                return 200, answer, {}
        bound.info(
            "webhook_event_accepted",
            accepted=len(messages),
            message_type=sorted({m.routing_key for m in messages}),
            message_ids=[m.message_id for m in messages],
        )
        return 202, answer, {}
