"""The adapter contract and registry: what every protocol or system adapter offers.

An adapter is configured by a pydantic model (its `config_model`) selected by the `type:`
of a system in `isthmus.yaml`. It offers a reader (changes since a watermark → source
records), a writer (a batch of mapped records → one result per record), or both, and a
`check` that tests the connection without moving data. Adapters classify failures at the
edge: a `WriteResult` says ok, transient or permanent; the worker decides what follows.

In enterprise integration pattern terms an adapter is a Channel Adapter: it connects one
system to the broker's channels, its reader a Polling Consumer (changes since a watermark)
and its writer the producing end; its `Caller` is a Messaging Gateway (a flow calls named
operations without knowing the system's protocol).

Each adapter class declares what it can do in `capabilities` (see `Capability`); the config
load, flows, reconciliation and the shared contract suite (`middleware.testing`) read that
declaration and never probe an adapter with `getattr`, `hasattr` or `isinstance`.
`read_record` and `stored_form` below fall back to what every reader can do when an
adapter does not declare `read_one` or `stored_form`.

The registry is the `isthmus.adapters` entry point group (pyproject.toml); `BUILTIN_ADAPTERS` is the
same table for a source checkout that was never installed, and a test keeps the two equal.
Reaching an adapter's class (for its `config_model` and `capabilities`) must stay light:
the heavy client (zeep, …) is imported only when an adapter is built.

Writers may offer `find_by_key` (`KeyFinder`; the `find_by_key` capability), which an adapter's
config model declares per entity (`WriteKeys.write_key_field`), so validation knows at load
time which targets can be written under a business-key identity.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal, Protocol, cast, runtime_checkable

from pydantic import BaseModel

from middleware.errors import ConfigError, PermanentError

ENTRY_POINT_GROUP = "isthmus.adapters"

Capability = Literal["read", "read_one", "stored_form", "read_item", "start_watermark", "write", "call"]
"""What an adapter can do, declared by its class in `capabilities`:

* `read` — `reader().read_changes`: the changes since a watermark (sources poll it);
* `read_one` — `reader().read_one`: one record by id, whatever its change time, None when
  there is none (replay, reconciliation);
* `stored_form` — `reader().stored_form`: a mapped record as the system keeps it once
  written, so reconciliation does not report what the system drops or reshapes as drift;
* `read_item` — `reader().read_item`: one record by id at a path (a webhook's `item_path`),
  built as a poll builds it (`ItemReader`);
* `start_watermark` — `reader().start_watermark`: where a new source starts (`read.start:
  now`), instead of every existing record (`StartingReader`);
* `write` — `writer().write_batch`: routes and flow steps write through it;
* `call` — the adapter is a `Caller`: named operations for flow `call` steps.
"""
CAPABILITIES: tuple[Capability, ...] = (
    "read",
    "read_one",
    "stored_form",
    "read_item",
    "start_watermark",
    "write",
    "call",
)


@dataclass
class SourceRecord:
    """One record read from a source system, in its native shape."""

    record_id: str
    version: str | None
    occurred_at: datetime
    data: dict[str, Any]


@dataclass
class ReadPage:
    """Records read in one request; `watermark` is safe to persist once they are published."""

    records: list[SourceRecord]
    watermark: str | None


@dataclass
class WriteRequest:
    """One mapped record to apply to the target.

    `key` is the message's idempotency key (sent as an Idempotency-Key where the target
    supports it). `target_id` is the target's id for this record when the cross-reference
    knows it (then the writer updates instead of creating). `merge` names the list fields
    whose items the writer merges into the record's current list by an item key (the
    mapping's `merge_key:`) instead of replacing the list: see `merge_by_key`.
    """

    entity: str
    record: dict[str, Any]
    key: str
    target_id: str | None = None
    correlation_id: str = ""
    merge: dict[str, str] = field(default_factory=dict)


def merge_by_key(current: Any, written: list[Any], key: str) -> list[Any]:
    """The list a target should hold after a write that carries only some of its items.

    Items of `written` replace (merged over) the current item with the same `key` value, or are
    appended; current items the write does not mention are kept, in their place. An item
    without the key is appended as it is. What a writer that merges relies on."""
    merged = [dict(item) if isinstance(item, dict) else item for item in (current if isinstance(current, list) else [])]
    position = {_key_text(item.get(key)): i for i, item in enumerate(merged) if isinstance(item, dict) and key in item}
    for item in written:
        found = position.get(_key_text(item.get(key))) if isinstance(item, dict) and key in item else None
        if found is None:
            merged.append(item)
        else:
            merged[found] = {**merged[found], **item}
    return merged


def _key_text(value: Any) -> str:
    if isinstance(value, dict):  # a linked record, e.g. {"code": "DE"} or {"id": 3, "code": "DE"}
        return str(value.get("code", value.get("id")))
    return str(value)


@dataclass
class WriteResult:
    """One request's outcome. `unchanged` (with ok): the target already held this content, so
    nothing was written. `locked` (with permanent): the record cannot be changed in its current
    state (the route applies its `on_locked`, see RecordLockedError)."""

    outcome: Literal["ok", "transient", "permanent"]
    target_id: str | None = None
    error: str = ""
    status: int | None = None
    retry_after: float | None = None
    unchanged: bool = False
    locked: bool = False


@dataclass
class CheckResult:
    system: str
    reachable: bool
    authenticated: bool | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Reader(Protocol):
    """Polling Consumer: pages of the records changed since a watermark (`read` capability)."""

    def read_changes(self, entity: str, watermark: str | None) -> Iterator[ReadPage]: ...


class RecordReader(Reader, Protocol):
    """A reader of an adapter that declares `read_one`: one record by id, whatever its change time.

    Returns None when no such record exists (deleted, or not of this entity). A list read may
    leave records out (Tryton lists active records only); `read_one` finds them all.
    """

    def read_one(self, entity: str, record_id: str) -> SourceRecord | None: ...


class StoredFormReader(Reader, Protocol):
    """A reader of an adapter that declares `stored_form`: a mapped record as the system stores it.

    Reconciliation compares what a route would write with what the reader returns; a system
    that drops or reshapes part of a write (Tryton leaves out a child record missing a required
    field) says so here, so that is not reported as drift.
    """

    def stored_form(self, entity: str, record: dict[str, Any]) -> dict[str, Any]: ...


class Caller(Protocol):
    """Messaging Gateway: named operations a flow's `call` step invokes (the `call` capability).

    `operations` (a class attribute, read at config load without building an adapter) maps
    each operation name to what it does and which arguments it takes. `call` runs one with a
    JSON object of arguments and returns a JSON object; `correlation_id` ties the call to the
    flow run in the system's logs where it can carry one. Refusals raise `PermanentError`,
    no answer or a busy system `TransientError`.
    """

    operations: ClassVar[Mapping[str, str]]

    def call(self, operation: str, arguments: dict[str, Any], correlation_id: str = "") -> dict[str, Any]: ...


class ItemReader(Protocol):
    """A reader of an adapter that declares `read_item`: one record by id at a given path (a webhook's `item_path`).

    The record is built as the entity's list read builds it (id, version, change time), so a
    record fetched for a webhook and the same record polled are one change with one version.
    None when the system answers that there is no such record (404).
    """

    def read_item(self, entity: str, record_id: str, path: str) -> SourceRecord | None: ...


class StartingReader(Protocol):
    """A reader of an adapter that declares `start_watermark`: where a source with no watermark yet starts polling.

    None means from the beginning (every record). A reader configured to start "from now"
    returns the current time as a watermark; the poller stores it before the first read, so
    records older than the source are never published. A read from no watermark
    (`read_changes(entity, None)`: reconciliation, full batches) still returns every record.
    """

    def start_watermark(self, entity: str) -> str | None: ...


def read_record(adapter: Adapter, entity: str, record_id: str) -> SourceRecord | None:
    """One record by id: the reader's `read_one` if declared, else a full read filtered by id (slow, any reader can)."""
    if "read_one" in adapter.capabilities:
        return cast(RecordReader, adapter.reader()).read_one(entity, record_id)
    found: SourceRecord | None = None
    for page in adapter.reader().read_changes(entity, None):
        for record in page.records:
            if record.record_id == record_id:
                found = record  # the last one read wins, as it would for a poller
    return found


def stored_form(adapter: Adapter, entity: str, record: dict[str, Any]) -> dict[str, Any]:
    """`record` as the adapter's system would return it after a write (unchanged unless it declares `stored_form`)."""
    if "stored_form" in adapter.capabilities:
        return cast(StoredFormReader, adapter.reader()).stored_form(entity, record)
    return record


def operations_of(adapter_class: type[Adapter]) -> Mapping[str, str]:
    """The operations a flow may call on adapters of this class ({} unless it declares `call`)."""
    if "call" not in adapter_class.capabilities:
        return {}
    return cast("type[Caller]", adapter_class).operations


def caller_of(adapter: Adapter, system: str) -> Caller:
    """The adapter as a `Caller`; a PermanentError names the system when it does not declare `call`."""
    if "call" not in adapter.capabilities:
        raise PermanentError(f"system {system!r} offers no operations to call", system=system)
    return cast(Caller, adapter)


class Writer(Protocol):
    """The producing end of the Channel Adapter (`write` capability)."""

    def write_batch(self, requests: Sequence[WriteRequest]) -> list[WriteResult]:
        """Apply requests; same-key requests in order; one result per request, same order."""


@runtime_checkable
class KeyFinder(Protocol):
    """Optional writer capability: the target ids of existing records, found by their business key.

    Used before creating a record whose identity claim was left by a writer that died or failed
    (`middleware.runtime.identity`): the record may exist already, so it is updated, not created
    twice. One answer per record, in order: the id, or None when the target has no such record
    (or the record carries no key). A failure to ask raises `TransientError`.
    """

    def find_by_key(self, entity: str, records: Sequence[dict[str, Any]]) -> list[str | None]: ...


@runtime_checkable
class WriteKeys(Protocol):
    """Optional adapter-config capability: the record field that identifies a written record of
    `entity` in the target and by which its writer's `find_by_key` finds it; None when it has none.

    A route writing such an entity claims each record's identity by that field unless it names
    its own key (`to: {key: ...}`)."""

    def write_key_field(self, entity: str) -> str | None: ...


class Adapter(Protocol):
    """One configured system: `reader()` if it declares `read`, `writer()` if it declares `write`."""

    config_model: ClassVar[type[BaseModel]]
    capabilities: ClassVar[frozenset[Capability]]

    def __init__(self, name: str, config: Any) -> None: ...

    def reader(self) -> Reader: ...

    def writer(self) -> Writer: ...

    def check(self) -> CheckResult: ...

    def close(self) -> None: ...


BUILTIN_ADAPTERS = {
    "rest": "adapters.rest:RestAdapter",
    "soap": "adapters.soap:SoapAdapter",
    "tryton": "adapters.tryton:TrytonAdapter",
}


def adapter_types() -> dict[str, str]:
    """Adapter type name → 'module:Class', from entry points (the built-ins for an uninstalled checkout)."""
    found = dict(BUILTIN_ADAPTERS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def load_adapter_class(type_name: str) -> type[Adapter]:
    import importlib

    from middleware.problems import did_you_mean

    types = adapter_types()
    if type_name not in types:
        raise ConfigError(f"unknown adapter type {type_name!r}; {did_you_mean(type_name, types)}")
    module_name, _, attr = types[type_name].partition(":")
    cls: type[Adapter] = getattr(importlib.import_module(module_name), attr)
    return cls
