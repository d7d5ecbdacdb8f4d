"""Event-id de-duplication for webhook endpoints: a redelivered event is answered, not enqueued again.

Senders redeliver (a timeout on their side, a retry policy, a replay from their console);
with `dedup:` an endpoint names each event's id — a JSON field of every event
(`event_id_field`) or a request header (`event_id_header`, one id for the whole request) —
and an id already accepted is answered 200 without publishing.

Where the seen ids live: in the state store's idempotency table — `Store.applied` and
`Store.mark_applied` under the scope `webhook:<endpoint name>` (route names cannot contain
a colon, so no route's keys are touched). That is the store every worker already uses for
"applied once", so the ids survive a restart and are shared by every process using the
store, without a new table. Like applied-message keys they are kept indefinitely.
Without a store (a receiver built without one) the ids are kept in memory only, up to
`MEMORY_LIMIT` per receiver, and a restart forgets them.

Order of events, and what a sender may rely on: an id is remembered only *after* its
events were published, so a crash in between leads to one more publish on redelivery (the
routes' idempotency keys absorb it), never to a lost event. Two deliveries of one id at the
same moment are serialised in the process: the second waits for the first and is then
answered as a duplicate (or published, if the first failed).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from middleware.store.base import Store

MEMORY_LIMIT = 100_000
T = TypeVar("T")


class HeaderLookup(Protocol):
    def get(self, name: str, /) -> str | None: ...


def dig(document: Any, dotted: str) -> Any:
    current = document
    for part in dotted.split("."):
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


class DedupSettings(BaseModel):
    """Where an endpoint finds each event's id (exactly one of the two)."""

    model_config = ConfigDict(extra="forbid")

    event_id_field: str | None = Field(default=None, description="Dotted path of the event id in each event.")
    event_id_header: str | None = Field(default=None, description="Request header carrying the event id.")

    @model_validator(mode="after")
    def _one_source(self) -> DedupSettings:
        if (self.event_id_field is None) == (self.event_id_header is None):
            raise ValueError("set exactly one of event_id_field or event_id_header")
        return self


def event_ids(settings: DedupSettings, events: Sequence[dict[str, Any]], headers: HeaderLookup) -> list[str]:
    """The event id of each event (with `event_id_header`, the request's id for all); ValueError names a gap."""
    if settings.event_id_header is not None:
        value = (headers.get(settings.event_id_header) or "").strip()
        if not value:
            raise ValueError(f"header {settings.event_id_header} with the event id is missing")
        return [value[:200]] * len(events)
    assert settings.event_id_field is not None
    ids = []
    for index, event in enumerate(events):
        value = dig(event, settings.event_id_field)
        if value is None or value == "" or isinstance(value, dict | list):
            raise ValueError(f"event {index} has no event id field {settings.event_id_field!r}")
        ids.append(str(value))
    return ids


@dataclass
class Claim:
    """Ids of one request, held in flight until `EventLedger.settle`."""

    scope: str
    fresh: list[str]
    duplicates: set[str]
    keys: list[tuple[str, str]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def select(self, ids: Sequence[str], items: Sequence[T], whole_request: bool) -> list[T]:
        """The items (aligned with `ids`) to publish: the first of each fresh id.

        With one id for the whole request (`whole_request`, a header) every item of a fresh request is kept.
        """
        wanted = set(self.fresh)
        if whole_request:
            return list(items) if wanted else []
        kept: list[T] = []
        for event_id, item in zip(ids, items, strict=True):
            if event_id in wanted:
                kept.append(item)
                wanted.discard(event_id)
        return kept


class EventLedger:
    """The seen event ids of a receiver's endpoints; thread-safe.

    The Idempotent Receiver (enterprise integration patterns) of the webhook endpoints: an
    event id already accepted is answered, not published again.
    """

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], threading.Event] = {}
        self._memory: OrderedDict[tuple[str, str], None] = OrderedDict()

    @property
    def durable(self) -> bool:
        return self.store is not None

    def claim(self, scope: str, ids: Sequence[str]) -> Claim:
        """Which of `ids` are new (in order, once each) and which were seen; hold them until `settle`.

        Waits while another request holds one of them. Raises what the store raises.
        """
        unique = list(dict.fromkeys(ids))
        keys = [(scope, event_id) for event_id in unique]
        while True:
            with self._lock:
                busy = next((self._in_flight[k] for k in keys if k in self._in_flight), None)
                if busy is None:
                    claim = Claim(scope, [], set(), keys)
                    for key in keys:
                        self._in_flight[key] = claim.released
                    break
            busy.wait()
        try:
            seen = self._seen(scope, unique)
        except BaseException:
            self._release(claim)
            raise
        claim.fresh = [event_id for event_id in unique if event_id not in seen]
        claim.duplicates = seen
        return claim

    def settle(self, claim: Claim, published: bool) -> None:
        """Remember the claim's fresh ids if their events were published; let waiting requests go on."""
        try:
            if published and claim.fresh:
                if self.store is not None:
                    self.store.mark_applied(claim.scope, claim.fresh)
                else:
                    with self._lock:
                        for event_id in claim.fresh:
                            self._memory[(claim.scope, event_id)] = None
                        while len(self._memory) > MEMORY_LIMIT:
                            self._memory.popitem(last=False)
        finally:
            self._release(claim)

    def _seen(self, scope: str, ids: list[str]) -> set[str]:
        if self.store is not None:
            return self.store.applied(scope, ids)
        with self._lock:
            return {event_id for event_id in ids if (scope, event_id) in self._memory}

    def _release(self, claim: Claim) -> None:
        with self._lock:
            for key in claim.keys:
                if self._in_flight.get(key) is claim.released:
                    del self._in_flight[key]
        claim.released.set()


def scope_of(endpoint_name: str) -> str:
    """The store scope of an endpoint's seen ids (never a route name: those have no colon)."""
    return f"webhook:{endpoint_name}"
