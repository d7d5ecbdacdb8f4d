"""The canonical message envelope every adapter produces and every route consumes.

Patterns: **Envelope Wrapper** around a **Canonical Data Model** payload, with a
**Correlation Identifier** (`correlation_id`, `causation_id`) carried through every hop.

An envelope carries one change of one record in one system. The payload is a plain JSON
object: either the source system's native record (as read by its adapter) or a canonical
entity (see `middleware.entities`). Envelopes travel as UTF-8 JSON bytes on the broker.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from middleware.errors import MalformedMessageError

SCHEMA_VERSION = 1
MESSAGE_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


def utc_now() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a time zone (e.g. 2026-01-31T10:00:00+08:00)")
    return value.astimezone(UTC)


class Source(BaseModel):
    """Which record in which system this message is about, and which version of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str = Field(description="Configured system name, e.g. 'crm' or 'erp'.")
    entity: str = Field(description="Entity name within that system, e.g. 'customer'.")
    record_id: str = Field(description="The record's id in the source system.")
    version: str | None = Field(
        default=None, description="Record version or updated_at; with record_id it identifies one change."
    )
    view: str | None = Field(
        default=None,
        description="Which view of the record the payload is, when it may carry only part of it (a webhook's "
        "event, e.g. 'webhook:/webhooks/crm/customers'); None for the record as its system reads it whole.",
    )


class Envelope(BaseModel):
    """One canonical message: metadata that every route relies on plus the payload."""

    model_config = ConfigDict(extra="forbid")

    message_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique per message.")
    type: str = Field(description="'<entity>.<event>', e.g. 'customer.upserted'.")
    source: Source
    occurred_at: datetime = Field(description="When the change happened in the source (UTC).")
    received_at: datetime = Field(default_factory=utc_now, description="When Isthmus took it in (UTC).")
    correlation_id: str = Field(default="", description="Shared by every message of one business flow.")
    causation_id: str | None = Field(default=None, description="message_id of the message that caused this.")
    schema_version: int = Field(default=SCHEMA_VERSION, description="Envelope schema version.")
    attempt: int = Field(default=0, ge=0, description="Delivery attempts so far (retries increment it).")
    payload: dict[str, Any] = Field(default_factory=dict, description="The record: native or canonical.")

    @field_validator("type")
    @classmethod
    def _type_shape(cls, value: str) -> str:
        if not MESSAGE_TYPE_PATTERN.match(value):
            raise ValueError(f"message type {value!r} must look like '<entity>.<event>', e.g. customer.upserted")
        return value

    @field_validator("occurred_at", "received_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)

    def model_post_init(self, __context: Any) -> None:
        if not self.correlation_id:
            self.correlation_id = str(self.message_id)

    @property
    def entity(self) -> str:
        return self.type.split(".", 1)[0]

    @property
    def record_key(self) -> str:
        """The record this change is about: brokers keep one record's messages in order by it."""
        src = self.source
        return f"{src.system}:{src.entity}:{src.record_id}"

    @property
    def idempotency_key(self) -> str:
        """Same source record version → same key, however often it is read or delivered.

        A partial view of a version (a webhook event that carries no address) has a key of its
        own: applying it must not make the whole record of the same version, read by a poll,
        look applied already — that would leave the fields only the whole record carries unwritten.
        Redeliveries of the same event keep their one key."""
        src = self.source
        if src.version is not None:
            view = f"#{src.view}" if src.view else ""
            return f"{src.system}:{src.entity}:{src.record_id}@{src.version}{view}"
        return f"msg:{self.message_id}"

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> Envelope:
        """Parse bytes from a queue; anything invalid becomes MalformedMessageError."""
        try:
            return cls.model_validate_json(body)
        except ValueError as exc:
            raise MalformedMessageError(f"not a valid canonical envelope: {_short(exc)}") from exc


def _short(exc: Exception, limit: int = 500) -> str:
    text = str(exc).replace("\n", "; ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
