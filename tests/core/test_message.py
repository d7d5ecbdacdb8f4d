"""The canonical envelope: UTC timestamps, type shape, idempotency keys, malformed bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from middleware.errors import MalformedMessageError
from middleware.message import Envelope, Source


def envelope(**overrides: object) -> Envelope:
    fields: dict[str, object] = {
        "type": "customer.upserted",
        "source": Source(system="crm", entity="customer", record_id="C-1", version="3"),
        "occurred_at": datetime(2026, 11, 24, 10, tzinfo=timezone(timedelta(hours=8))),
        "payload": {"customer_no": "C-1"},
    }
    fields.update(overrides)
    return Envelope(**fields)  # type: ignore[arg-type]


def test_timestamps_are_stored_in_utc() -> None:
    env = envelope()
    assert env.occurred_at == datetime(2026, 11, 24, 2, tzinfo=UTC)
    assert env.occurred_at.utcoffset() == timedelta(0)


def test_naive_timestamp_is_rejected() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        envelope(occurred_at=datetime(2026, 11, 24, 10))


def test_type_must_be_entity_dot_event() -> None:
    with pytest.raises(ValidationError, match="<entity>.<event>"):
        envelope(type="CustomerUpserted")


def test_same_record_version_gives_same_idempotency_key() -> None:
    assert envelope().idempotency_key == envelope().idempotency_key == "crm:customer:C-1@3"
    unversioned = envelope(source=Source(system="crm", entity="customer", record_id="C-1"))
    assert unversioned.idempotency_key == f"msg:{unversioned.message_id}"


def test_correlation_id_defaults_to_message_id_and_round_trips() -> None:
    env = envelope()
    assert env.correlation_id == str(env.message_id)
    again = Envelope.from_bytes(env.to_bytes())
    assert again == env


@pytest.mark.parametrize("body", [b"{not json", b'{"type": "customer.upserted"}', b"\xff\xfe", b"[]"])
def test_malformed_bytes_raise_malformed_message_error(body: bytes) -> None:
    with pytest.raises(MalformedMessageError, match="not a valid canonical envelope"):
        Envelope.from_bytes(body)
