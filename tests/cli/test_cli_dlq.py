"""`isthmus dlq list | show | replay | purge` on the embedded broker.

Dead letters are made the way the worker makes them (fetch from the route's queue, then
`dead_letter` with the reason headers), so the CLI reads exactly what an operator would find.
Commands run in-process (broker state is checked right after each one); one `list` runs the
real console script to show a separate process reads the same file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from middleware.broker import Broker, OutgoingMessage, open_broker
from middleware.broker.base import (
    H_ATTEMPTS,
    H_DEAD_LETTERED_AT,
    H_ERROR,
    H_ERROR_CLASS,
    H_MAPPING,
    H_ORIGINAL_QUEUE,
    H_ROUTE,
    dlq_name,
)
from middleware.message import Envelope, Source
from middleware.ops import dlq
from middleware.yamlsource import load_yaml_file
from tests.cli.cli_runner import DEMO_CONFIG, MAPPINGS, RunIsthmus

CUSTOMERS = "customers_crm_to_erp"
ORDERS = "orders_crm_to_erp"


@dataclass
class DeadLetters:
    config: Path
    broker: Broker
    customers: list[str]  # message ids dead-lettered on CUSTOMERS, in order
    orders: list[str]  # ... on ORDERS


def _dead_letter(broker: Broker, route: str, record_ids: list[str], error_class: str, error: str) -> list[str]:
    messages = []
    for record_id in record_ids:
        envelope = Envelope(
            type="customer.upserted" if route == CUSTOMERS else "sales_order.upserted",
            source=Source(system="crm", entity="customer" if route == CUSTOMERS else "order", record_id=record_id),
            occurred_at=datetime(2026, 1, 5, 9, 30, tzinfo=UTC),
            attempt=4,
            payload={"record": record_id},
        )
        messages.append(
            OutgoingMessage(routing_key=envelope.type, body=envelope.to_bytes(), message_id=str(envelope.message_id))
        )
    broker.send(route, messages)
    deliveries = broker.fetch(route, len(messages), timeout_s=1.0)
    assert len(deliveries) == len(messages)
    for delivery in deliveries:
        broker.dead_letter(
            delivery,
            {
                H_ERROR_CLASS: error_class,
                H_ERROR: error,
                H_MAPPING: "crm_customer_to_canonical+canonical_customer_to_erp",
                H_ATTEMPTS: "5",
                H_ROUTE: route,
                H_ORIGINAL_QUEUE: route,
                H_DEAD_LETTERED_AT: "2026-01-05T09:31:00+00:00",
            },
        )
    return [m.message_id for m in messages]


@pytest.fixture
def dead_letters(tmp_path: Path) -> Iterator[DeadLetters]:
    """The demo config on a fresh embedded broker: 3 dead letters on CUSTOMERS, 1 on ORDERS."""
    config = load_yaml_file(DEMO_CONFIG).data
    config["broker"] = "embedded://broker.db"
    config["store"] = "sqlite://state.db"
    config["mappings"] = [str(MAPPINGS)]
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    broker = open_broker(f"embedded://{tmp_path / 'broker.db'}")
    for route in config["routes"]:
        broker.setup_route(route["name"], route["on"])
    customers = _dead_letter(
        broker, CUSTOMERS, ["C-1", "C-2", "C-3"], "PermanentError", "erp answered 422: vat_number is not valid"
    )
    orders = _dead_letter(broker, ORDERS, ["SO-9"], "XrefMissingError", "no erp id linked to crm customer 'C-9' yet")
    assert broker.depth(CUSTOMERS) == 0 and broker.depth(dlq_name(CUSTOMERS)) == 3
    try:
        yield DeadLetters(path, broker, customers, orders)
    finally:
        broker.close()


def test_list_shows_every_dead_letter_with_class_record_and_reason(cli: RunIsthmus, dead_letters: DeadLetters) -> None:
    run = cli("dlq", "list", "--config", dead_letters.config)
    assert run.code == 0, run.output
    lines = run.out.splitlines()
    for message_id, record in zip(dead_letters.customers, ["C-1", "C-2", "C-3"], strict=True):
        line = next(text for text in lines if message_id in text)
        assert line.split()[0] == CUSTOMERS
        assert "PermanentError" in line and f"crm:customer:{record}" in line
        assert "erp answered 422: vat_number is not valid" in line
    order_line = next(text for text in lines if dead_letters.orders[0] in text)
    assert "XrefMissingError" in order_line and "crm:order:SO-9" in order_line
    assert lines[-1] == "4 dead-lettered messages"


def test_list_for_one_route_as_json(cli: RunIsthmus, dead_letters: DeadLetters) -> None:
    run = cli("dlq", "list", "--config", dead_letters.config, "--route", ORDERS, "--json")
    assert run.code == 0, run.output
    (letter,) = json.loads(run.out)
    assert letter["message_id"] == dead_letters.orders[0]
    assert letter["route"] == ORDERS
    assert letter["error_class"] == "XrefMissingError"
    assert letter["error"] == "no erp id linked to crm customer 'C-9' yet"
    assert letter["attempts"] == "5"
    assert letter["type"] == "sales_order.upserted"


def test_list_from_a_separate_process(isthmus: RunIsthmus, dead_letters: DeadLetters) -> None:
    run = isthmus("dlq", "list", "--config", dead_letters.config)
    assert run.code == 0, run.output
    assert all(m in run.out for m in dead_letters.customers + dead_letters.orders)


def test_show_prints_reason_headers_and_the_original_message(cli: RunIsthmus, dead_letters: DeadLetters) -> None:
    message_id = dead_letters.customers[1]
    run = cli("dlq", "show", message_id, "--config", dead_letters.config)
    assert run.code == 0, run.output
    detail = json.loads(run.out)
    assert detail["message_id"] == message_id
    assert detail["error_class"] == "PermanentError"
    assert detail["error"] == "erp answered 422: vat_number is not valid"
    assert detail["headers"][H_ORIGINAL_QUEUE] == CUSTOMERS
    assert detail["message"]["message_id"] == message_id
    assert detail["message"]["source"]["record_id"] == "C-2"
    assert detail["message"]["payload"] == {"record": "C-2"}


def test_show_unknown_id_says_so(cli: RunIsthmus, dead_letters: DeadLetters) -> None:
    run = cli("dlq", "show", "no-such-id", "--config", dead_letters.config)
    assert run.code == 1
    assert "no dead-lettered message no-such-id" in run.err and "isthmus dlq list" in run.err


def test_replay_moves_exactly_that_message_back_with_attempts_reset(cli: RunIsthmus, dead_letters: DeadLetters) -> None:
    broker, chosen = dead_letters.broker, dead_letters.customers[1]
    run = cli("dlq", "replay", "--config", dead_letters.config, "--route", CUSTOMERS, chosen)
    assert run.code == 0, run.output
    assert f"replayed 1 message onto route {CUSTOMERS}" in run.out
    assert broker.depth(dlq_name(CUSTOMERS)) == 2
    assert broker.depth(CUSTOMERS) == 1
    assert [d.message_id for d in broker.browse(dlq_name(CUSTOMERS), 10)] == [
        dead_letters.customers[0],
        dead_letters.customers[2],
    ]
    (replayed,) = broker.browse(CUSTOMERS, 10)
    assert replayed.message_id == chosen
    assert Envelope.from_bytes(replayed.body).attempt == 0
    assert Envelope.from_bytes(replayed.body).source.record_id == "C-2"
    assert not [h for h in replayed.headers if h.startswith("x-isthmus-")], replayed.headers
    assert broker.depth(dlq_name(ORDERS)) == 1, "another route's DLQ is untouched"


def test_replayed_message_is_consumable_by_the_route(cli: RunIsthmus, dead_letters: DeadLetters) -> None:
    broker = dead_letters.broker
    cli("dlq", "replay", "--config", dead_letters.config, "--route", CUSTOMERS, dead_letters.customers[0])
    (delivery,) = broker.fetch(CUSTOMERS, 10, timeout_s=1.0)
    assert delivery.message_id == dead_letters.customers[0]
    broker.ack([delivery])
    assert broker.depth(CUSTOMERS) == 0


def test_replay_all_empties_only_that_route_dlq(cli: RunIsthmus, dead_letters: DeadLetters) -> None:
    broker = dead_letters.broker
    run = cli("dlq", "replay", "--config", dead_letters.config, "--route", CUSTOMERS, "--all")
    assert run.code == 0, run.output
    assert "replayed 3 messages" in run.out
    assert broker.depth(dlq_name(CUSTOMERS)) == 0 and broker.depth(CUSTOMERS) == 3
    assert broker.depth(dlq_name(ORDERS)) == 1


def test_replay_unknown_id_fails_and_moves_nothing(cli: RunIsthmus, dead_letters: DeadLetters) -> None:
    broker = dead_letters.broker
    run = cli("dlq", "replay", "--config", dead_letters.config, "--route", CUSTOMERS, "no-such-id")
    assert run.code == 1, run.output
    assert "no dead-lettered message no-such-id" in run.err
    assert broker.depth(dlq_name(CUSTOMERS)) == 3 and broker.depth(CUSTOMERS) == 0


def test_replay_needs_a_route_and_ids(cli: RunIsthmus, dead_letters: DeadLetters) -> None:
    no_route = cli("dlq", "replay", "--config", dead_letters.config, dead_letters.customers[0])
    assert no_route.code == 2 and "--route" in no_route.err
    no_ids = cli("dlq", "replay", "--config", dead_letters.config, "--route", CUSTOMERS)
    assert no_ids.code == 2 and "--all" in no_ids.err
    assert dead_letters.broker.depth(dlq_name(CUSTOMERS)) == 3


def test_purge_without_yes_deletes_nothing(cli: RunIsthmus, dead_letters: DeadLetters) -> None:
    run = cli("dlq", "purge", "--config", dead_letters.config)
    assert run.code == 2
    assert "--yes" in run.err
    assert dead_letters.broker.depth(dlq_name(CUSTOMERS)) == 3
    assert dead_letters.broker.depth(dlq_name(ORDERS)) == 1


def test_purge_with_yes_empties_every_dlq(cli: RunIsthmus, dead_letters: DeadLetters) -> None:
    run = cli("dlq", "purge", "--config", dead_letters.config, "--yes")
    assert run.code == 0, run.output
    assert "purged 4 messages" in run.out
    assert dead_letters.broker.depth(dlq_name(CUSTOMERS)) == 0
    assert dead_letters.broker.depth(dlq_name(ORDERS)) == 0
    listed = cli("dlq", "list", "--config", dead_letters.config)
    assert listed.out.splitlines()[-1] == "0 dead-lettered messages"


def test_purge_one_route(cli: RunIsthmus, dead_letters: DeadLetters) -> None:
    run = cli("dlq", "purge", "--config", dead_letters.config, "--route", ORDERS, "--yes")
    assert run.code == 0, run.output
    assert "purged 1 message" in run.out
    assert dead_letters.broker.depth(dlq_name(ORDERS)) == 0
    assert dead_letters.broker.depth(dlq_name(CUSTOMERS)) == 3


def test_unknown_route_suggests_the_nearest(cli: RunIsthmus, dead_letters: DeadLetters) -> None:
    run = cli("dlq", "list", "--config", dead_letters.config, "--route", "customers_crm_to_rep")
    assert run.code == 2
    assert "no route 'customers_crm_to_rep'" in run.err and f"did you mean '{CUSTOMERS}'" in run.err


class _FailsAgainOnSend:
    """The broker as seen by `dlq.replay`, plus a worker that fetches and dead-letters the replayed
    message again the moment it lands on the route queue (before replay removes it from the DLQ)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def __getattr__(self, name: str) -> object:
        return getattr(self._broker, name)

    def send(self, queue: str, messages: Sequence[OutgoingMessage]) -> None:
        self._broker.send(queue, messages)
        if queue == CUSTOMERS:
            for delivery in self._broker.fetch(CUSTOMERS, 10, timeout_s=1.0):
                self._broker.dead_letter(delivery, {H_ERROR_CLASS: "PermanentError", H_ERROR: "still refused"})


def test_replay_keeps_a_message_that_fails_again_while_being_replayed(dead_letters: DeadLetters) -> None:
    broker, chosen = dead_letters.broker, dead_letters.customers[0]
    assert dlq.replay(_FailsAgainOnSend(broker), CUSTOMERS, [chosen]) == 1  # type: ignore[arg-type]
    left = broker.browse(dlq_name(CUSTOMERS), 10)
    again = [d for d in left if d.message_id == chosen]
    assert len(again) == 1, "the new dead letter of the replayed message must not be lost"
    assert again[0].headers[H_ERROR] == "still refused"
    assert len(left) == 3 and broker.depth(CUSTOMERS) == 0
