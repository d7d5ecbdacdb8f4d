"""A route's `when:`, on a real embedded broker and SQLite store: skip what the CRM never created.

A Tryton sale status route with `when: {linked: crm}` writes status updates only for sales
linked to a CRM order (the cross-reference the order route recorded); a sale entered in Tryton
is acked without a write (`reason="filtered"`). A bad condition fails at load with its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from middleware.adapter import WriteRequest, WriteResult
from middleware.broker import open_broker
from middleware.broker.base import OutgoingMessage, dlq_name
from middleware.config import RouteConfig, TargetSpec, load_config
from middleware.errors import ConfigError
from middleware.message import Envelope, Source
from middleware.runtime.route import RouteProcessor
from middleware.store import open_store
from middleware.store.base import RecordRef
from middleware.yamlsource import load_yaml_file


class RecordingWriter:
    def __init__(self) -> None:
        self.requests: list[WriteRequest] = []

    def write_batch(self, requests: Sequence[WriteRequest]) -> list[WriteResult]:
        self.requests.extend(requests)
        return [WriteResult("ok") for _ in requests]


def status(sale_id: str) -> OutgoingMessage:
    envelope = Envelope(
        type="sale.changed",
        source=Source(system="tryton", entity="sale", record_id=sale_id, version="1"),
        occurred_at=datetime.now(UTC),
        payload={"id": int(sale_id), "state": "processing"},
    )
    return OutgoingMessage(envelope.type, envelope.to_bytes(), key=envelope.record_key)


def test_status_updates_reach_only_records_the_crm_created(tmp_path: Path) -> None:
    broker = open_broker(f"embedded:///{tmp_path}/broker.db")
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        config = RouteConfig(
            name="status_to_crm",
            on=["sale.changed"],
            from_system="tryton",
            mappings=["m"],
            to=TargetSpec(system="crm", entity="order"),
            when={"linked": "crm"},
        )
        broker.setup_route(config.name, config.on)
        store.mark_applied("orders", [], links=[(RecordRef("crm", "order", "SO-1"), RecordRef("tryton", "sale", "35"))])
        writer = RecordingWriter()
        processor = RouteProcessor(config, broker, store, writer, lambda r: {"status": r["state"]}, "m")
        filtered = REGISTRY.get_sample_value(
            "isthmus_messages_skipped_total", {"route": "status_to_crm", "reason": "filtered"}
        ) or 0.0
        broker.send(config.name, [status("35"), status("36")])
        while deliveries := broker.fetch(config.name, 10, 0.05):
            processor.process(deliveries)
        assert [r.record for r in writer.requests] == [{"status": "processing"}]
        assert REGISTRY.get_sample_value(
            "isthmus_messages_skipped_total", {"route": "status_to_crm", "reason": "filtered"}
        ) == filtered + 1
        assert broker.depth(config.name) == 0 and broker.depth(dlq_name(config.name)) == 0
    finally:
        broker.close()
        store.close()


def test_a_bad_route_condition_fails_at_load_with_its_place(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    data = load_yaml_file(repo / "deploy" / "demo" / "tryton_two_way.yaml").data
    data["mappings"] = [str(repo / "mappings")]
    data["routes"][2]["when"] = {"linked": {"to": "crm", "entity": "order"}}
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    (problem,) = [p for p in raised.value.problems if "routes[2].when" in p.path]
    assert "message's own record" in problem.message and "linked: crm" in problem.hint
    assert problem.location is not None and problem.location.file == str(path) and problem.location.line > 1
