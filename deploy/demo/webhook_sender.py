"""How the SAMPLE CRM pushes signed webhooks — sample, for the demo and tests, not a real CRM.

What a CRM's webhook delivery does, small enough to read in one sitting:

* a **subscription** names where to send (`url`, or several `urls` as behind a load
  balancer: each attempt goes to the next one), the `secret` and the event kinds wanted;
* every event is signed as `X-Crm-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
  "<t>." + raw body>` (the `timestamped` scheme of adapters/webhook/signatures.py), freshly
  on every attempt, so a retry long after the first attempt is still inside the receiver's
  replay window; `X-Crm-Event` and `X-Crm-Event-Id` name the event kind and its id (the
  same id on every attempt of one event);
* events wait in a **bounded queue** (an event that does not fit is dropped and counted, as a
  CRM sheds webhooks it cannot keep up with) and one sender thread delivers them in order,
  over one kept-alive HTTP/1.1 connection per receiver;
  an attempt that does not end in 2xx (receiver down, 5xx, 401, timeout) is **retried** with
  backoff, to the next URL, for up to `give_up_s` — a real CRM retries for hours; the events
  behind it wait (deliveries stay in order).

Pure standard library: the sample stands for a third-party system, it does not use Isthmus.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Crm-Signature"
EVENT_HEADER = "X-Crm-Event"
EVENT_ID_HEADER = "X-Crm-Event-Id"
EVENT_KINDS = ("customer.changed", "order.won")


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """`t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>." + body>`."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass
class Subscription:
    """Where one kind of event goes. The secret is never answered back (`public()`)."""

    id: str
    urls: list[str]
    secret: str
    events: frozenset[str]
    delivered: int = 0
    failed_attempts: int = 0
    last_error: str = ""
    attempts: int = field(default=0, repr=False)

    def next_url(self) -> str:
        """The URL of the next attempt: the subscription's URLs in turn (the caller holds no lock:
        only the one sender thread calls it)."""
        url = self.urls[self.attempts % len(self.urls)]
        self.attempts += 1
        return url

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "urls": list(self.urls),
            "events": sorted(self.events),
            "delivered": self.delivered,
            "failed_attempts": self.failed_attempts,
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class _Event:
    subscription: Subscription
    kind: str
    event_id: str
    body: bytes


class WebhookSender:
    """Queues events and delivers them from one background thread, retrying until `give_up_s`."""

    def __init__(
        self,
        max_queued: int = 10_000,
        timeout_s: float = 2.0,
        give_up_s: float = 600.0,
        backoff_s: tuple[float, float] = (0.05, 2.0),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.timeout_s = timeout_s
        self.give_up_s = give_up_s
        self.backoff_s = backoff_s
        self.clock = clock
        self.subscriptions: list[Subscription] = []
        self.dropped = 0
        self.given_up = 0
        self._queue: queue.Queue[_Event | None] = queue.Queue(maxsize=max_queued)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self._connections: dict[tuple[str, str, int | None], http.client.HTTPConnection] = {}  # sender thread only

    # ----- configuration ------------------------------------------------------------------
    def subscribe(self, urls: list[str], secret: str, events: Iterable[str] | None = None) -> Subscription:
        """Add a subscription; ValueError for no URL, a URL that is not http(s), no secret or an unknown kind."""
        if not urls or any(urlsplit(u).scheme not in ("http", "https") or not urlsplit(u).hostname for u in urls):
            raise ValueError(f"url must be one http(s) URL or a list of them, got {urls!r}")
        if not secret:
            raise ValueError("a webhook needs a secret (its events are signed with it)")
        kinds = frozenset(events or EVENT_KINDS)
        unknown = sorted(kinds - set(EVENT_KINDS))
        if unknown:
            raise ValueError(f"unknown event kinds {unknown}; known: {', '.join(EVENT_KINDS)}")
        subscription = Subscription(f"wh_{uuid.uuid4().hex[:10]}", list(urls), secret, kinds)
        with self._lock:
            self.subscriptions.append(subscription)
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="sample-crm-webhooks", daemon=True)
                self._thread.start()
        return subscription

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "subscriptions": [s.public() for s in self.subscriptions],
                "queued": self._queue.qsize() + self._in_flight,
                "dropped": self.dropped,
                "given_up": self.given_up,
            }

    # ----- events -------------------------------------------------------------------------
    def emit(self, kind: str, occurred_at: str, data: dict[str, Any]) -> None:
        """Queue the event for every subscription that wants `kind`; never blocks (full = dropped)."""
        with self._lock:
            wanted = [s for s in self.subscriptions if kind in s.events]
        for subscription in wanted:
            event_id = uuid.uuid4().hex
            body = json.dumps(
                {"event": kind, "event_id": event_id, "occurred_at": occurred_at, "data": data},
                default=str,
                separators=(",", ":"),
            ).encode()
            try:
                self._queue.put_nowait(_Event(subscription, kind, event_id, body))
            except queue.Full:
                with self._lock:
                    self.dropped += 1

    def stop(self) -> None:
        """Stop delivering (what is queued is abandoned, as a CRM that shuts down)."""
        with self._lock:
            thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            with suppress(queue.Full):
                self._queue.put_nowait(None)
            thread.join(self.timeout_s + 2)

    # ----- delivery -----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if event is None:
                break
            with self._lock:
                self._in_flight = 1
            try:
                self._deliver(event)
            finally:
                with self._lock:
                    self._in_flight = 0
        for address in list(self._connections):
            self._drop(address)

    def _deliver(self, event: _Event) -> None:
        subscription = event.subscription
        started = time.monotonic()
        delay = self.backoff_s[0]
        while not self._stop.is_set():
            url = subscription.next_url()
            error = self._attempt(url, event)
            with self._lock:
                if error is None:
                    subscription.delivered += 1
                    return
                subscription.failed_attempts += 1
                subscription.last_error = f"{url}: {error}"
            if time.monotonic() - started > self.give_up_s:
                with self._lock:
                    self.given_up += 1
                return
            self._stop.wait(delay)
            delay = min(self.backoff_s[1], delay * 2)

    def _attempt(self, url: str, event: _Event) -> str | None:
        """None when the receiver answered 2xx, else what went wrong. Connections are kept alive
        per receiver (HTTP/1.1) and dropped after a failure: a restarted receiver gets a new one."""
        parts = urlsplit(url)
        address = (parts.scheme, parts.hostname or "", parts.port)
        connection = self._connections.get(address)
        if connection is None:
            connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            connection = connection_class(address[1], address[2], timeout=self.timeout_s)
            self._connections[address] = connection
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(event.subscription.secret, event.body, int(self.clock())),
            EVENT_HEADER: event.kind,
            EVENT_ID_HEADER: event.event_id,
        }
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("POST", path, body=event.body, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.will_close:
                self._drop(address)
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as exc:
            self._drop(address)
            return f"{type(exc).__name__}: {exc}"

    def _drop(self, address: tuple[str, str, int | None]) -> None:
        connection = self._connections.pop(address, None)
        if connection is not None:
            connection.close()
