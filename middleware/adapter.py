"""The adapter contract and registry: what every protocol or system adapter offers.

An adapter is configured by a pydantic model (its `config_model`) selected by the `type:`
of a system in `isthmus.yaml`. It offers a reader (changes since a watermark → source
records), a writer (a batch of mapped records → one result per record), or both, and a
`check` that tests the connection without moving data. Adapters classify failures at the
edge: a `WriteResult` says ok, transient or permanent; the worker decides what follows.

Readers may offer two optional capabilities, found by `isinstance` at run time: `read_one`
(`RecordReader`) and `stored_form` (`StoredFormReader`); `read_record` and `stored_form`
below fall back to what every reader can do. Writers may offer `find_by_key` (`KeyFinder`),
which an adapter's config model declares per entity (`WriteKeys.write_key_field`), so
validation knows at load time which targets can be written under a business-key identity.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from middleware.errors import ConfigError

ENTRY_POINT_GROUP = "isthmus.adapters"


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
    knows it (then the writer updates instead of creating).
    """

    entity: str
    record: dict[str, Any]
    key: str
    target_id: str | None = None
    correlation_id: str = ""


@dataclass
class WriteResult:
    outcome: Literal["ok", "transient", "permanent"]
    target_id: str | None = None
    error: str = ""
    status: int | None = None
    retry_after: float | None = None


@dataclass
class CheckResult:
    system: str
    reachable: bool
    authenticated: bool | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Reader(Protocol):
    def read_changes(self, entity: str, watermark: str | None) -> Iterator[ReadPage]: ...


@runtime_checkable
class RecordReader(Protocol):
    """Optional reader capability: one record by id, whatever its change time (replay, reconciliation).

    Returns None when no such record exists (deleted, or not of this entity). A list read may
    leave records out (Tryton lists active records only); `read_one` finds them all.
    """

    def read_one(self, entity: str, record_id: str) -> SourceRecord | None: ...


@runtime_checkable
class StoredFormReader(Protocol):
    """Optional reader capability: a mapped record as this system stores it and reads it back.

    Reconciliation compares what a route would write with what the reader returns; a system
    that drops or reshapes part of a write (Tryton leaves out a child record missing a required
    field) says so here, so that is not reported as drift.
    """

    def stored_form(self, entity: str, record: dict[str, Any]) -> dict[str, Any]: ...


def read_record(reader: Reader, entity: str, record_id: str) -> SourceRecord | None:
    """One record by id: the reader's `read_one`, else a full read filtered by id (slow, but any reader can)."""
    if isinstance(reader, RecordReader):
        return reader.read_one(entity, record_id)
    found: SourceRecord | None = None
    for page in reader.read_changes(entity, None):
        for record in page.records:
            if record.record_id == record_id:
                found = record  # the last one read wins, as it would for a poller
    return found


def stored_form(reader: Reader, entity: str, record: dict[str, Any]) -> dict[str, Any]:
    """`record` as the reader's system would return it after a write (unchanged if the reader cannot say)."""
    return reader.stored_form(entity, record) if isinstance(reader, StoredFormReader) else record


class Writer(Protocol):
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
    config_model: ClassVar[type[BaseModel]]

    def __init__(self, name: str, config: Any) -> None: ...

    def reader(self) -> Reader: ...

    def writer(self) -> Writer: ...

    def check(self) -> CheckResult: ...

    def close(self) -> None: ...


_BUILTIN = {
    "rest": "adapters.rest:RestAdapter",
    "soap": "adapters.soap:SoapAdapter",
    "tryton": "adapters.tryton:TrytonAdapter",
}


def adapter_types() -> dict[str, str]:
    """Adapter type name → 'module:Class', from entry points plus the built-ins."""
    found = dict(_BUILTIN)
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
