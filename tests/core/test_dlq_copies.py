"""A DLQ is at-least-once: two copies of one dead letter are listed and replayed as one."""

from __future__ import annotations

from pathlib import Path

from middleware.broker import open_broker
from middleware.broker.base import H_ERROR, H_ERROR_CLASS, OutgoingMessage, dlq_name
from middleware.ops import dlq


def test_two_copies_of_a_dead_letter_are_one_to_list_and_to_replay(tmp_path: Path) -> None:
    broker = open_broker(f"embedded://{tmp_path / 'broker.db'}")
    try:
        broker.setup_route("customers", ["customer.*"])
        reason = {H_ERROR_CLASS: "PermanentError", H_ERROR: "erp answered 422"}
        copy = OutgoingMessage("customer.upserted", b"{}", dict(reason), message_id="m-1")
        other = OutgoingMessage("customer.upserted", b"{}", dict(reason), message_id="m-2")
        broker.send(dlq_name("customers"), [copy, other, copy])  # a worker died between publish and ack

        assert [d.message_id for d in dlq.list_dead_letters(broker, ["customers"])] == ["m-1", "m-2"]
        assert dlq.replay(broker, "customers", ["m-1"]) == 1
        assert broker.depth(dlq_name("customers")) == 1, "both copies of m-1 left the DLQ"
        assert [d.message_id for d in broker.fetch("customers", 10, 0.5)] == ["m-1"], "one copy went back"
    finally:
        broker.close()
