"""Issue 12 against the real Tryton: a won-deal webhook AND polling of the same CRM orders,
each with its route to Tryton sales, run by two worker processes.

    SAMPLE CRM orders ──webhook order.won (header, no lines) ──> won_orders_crm_to_tryton ─┐
                      └─poll (full records) ─────────────────> orders_crm_to_tryton ───────┴─> Tryton sales
    SAMPLE CRM customers ──poll──> customers_crm_to_tryton ──> Tryton parties

Tryton has no unique constraint on a sale's reference, so nothing but Isthmus keeps the two
routes from creating one deal twice. What must hold:

* each won order is exactly one Tryton sale, with the order's lines, confirmed;
* once confirmed, the same deal sent again (the CRM saves it without a change: a new
  version, pushed and polled) is a no-op — not a write, not a dead letter;
* `isthmus reconcile` finds every linked sale in sync.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.tryton import TrytonAdapter
from adapters.tryton.localserver import LocalTryton
from deploy.demo.sample_crm import SampleCrm
from deploy.demo.webhook_sender import EVENT_ID_HEADER, SIGNATURE_HEADER
from middleware.broker.base import H_ERROR, H_ERROR_CLASS, dlq_name
from tests.chaos.harness import isthmus_command, open_route_broker
from tests.e2e.topology import Workers

REPO = Path(__file__).resolve().parents[3]
CRM_TOKEN = "tryton-topology-token"
SECRET = "tryton-topology-secret"
ORDER_PATH = "/webhooks/crm/orders"
ORDERS = 10
ROUTES = ("customers_crm_to_tryton", "orders_crm_to_tryton", "won_orders_crm_to_tryton")
ORDER_ROUTES = ROUTES[1:]
CONFIRMED = ("confirmed", "processing", "done")
ITEMS = (("WIDGET-1", "Widget", "19.90"), ("GADGET-7", "Gadget", "249.00"))


def _config(directory: Path, tag: str) -> Path:
    page = {"type": "page", "page_param": "page", "size_param": "page_size", "page_size": 200, "start": 1}

    def crm_read(path: str, id_field: str) -> dict[str, Any]:
        return {
            "path": path,
            "records_path": "data",
            "id_field": id_field,
            "version_field": "version",
            "updated_field": "updated_at",
            "since_param": "updated_since",
            "pagination": page,
            "item_path": path + "/{id}",
        }

    retry = {"max_attempts": 20, "initial_delay_s": 0.2, "max_delay_s": 1.0}
    order_route = {
        "from_system": "crm",
        "mappings": ["crm_order_to_canonical", "canonical_order_to_tryton_sale"],
        "to": {"system": "tryton", "entity": "sale"},
        "retry": retry,
    }
    config = {
        "broker": f"embedded:///{directory}/broker.db?visibility_timeout=5",
        "store": f"sqlite:///{directory}/state.db",
        "mappings": [str(REPO / "mappings")],
        "observability": {"port": 0, "log_format": "json", "log_level": "info"},
        "systems": {
            "crm": {
                "type": "rest",
                "base_url": "${DEMO_CRM_URL}",
                "auth": {"type": "bearer", "token": "${DEMO_CRM_TOKEN}"},
                "entities": {
                    "customer": {"read": crm_read("/api/customers", "customer_no")},
                    "order": {"read": crm_read("/api/orders", "order_no")},
                },
            },
            "tryton": {
                "type": "tryton",
                "url": "${TRYTON_URL}",
                "database": "${TRYTON_DATABASE}",
                "username": "${TRYTON_USERNAME}",
                "password": "${TRYTON_PASSWORD}",
                "settle_s": 0.2,
                "entities": {
                    "party": {"read": {}, "write": {"key_field": "code"}},
                    "sale": {"read": {}, "write": {"key_field": "reference", "workflow": "confirm"}},
                },
            },
        },
        "sources": [
            {"name": "crm_customers", "system": "crm", "entity": "customer", "emits": "customer.upserted",
             "poll_interval_s": 0.5},
            {"name": "crm_orders", "system": "crm", "entity": "order", "emits": "sales_order.upserted",
             "poll_interval_s": 1.0},
        ],  # fmt: skip
        "webhooks": {
            "host": "127.0.0.1",
            "port": "${TOPOLOGY_WEBHOOK_PORT}",
            "endpoints": {
                "crm_won_order_events": {
                    "path": ORDER_PATH,
                    "system": "crm",
                    "entity": "order",
                    "message_type": "sales_order.won",
                    "id_field": "order_no",
                    "version_field": "version",
                    "occurred_field": "updated_at",
                    "records_path": "data",
                    "secret": "${CRM_WEBHOOK_SECRET}",
                    "signature": {"scheme": "timestamped", "header": SIGNATURE_HEADER},
                    "dedup": {"event_id_header": EVENT_ID_HEADER},
                }
            },
        },
        "routes": [
            {
                "name": "customers_crm_to_tryton",
                "on": ["customer.upserted"],
                "from_system": "crm",
                "mappings": ["crm_customer_to_canonical", "canonical_customer_to_tryton_party"],
                "to": {"system": "tryton", "entity": "party"},
                "retry": retry,
            },
            {"name": "orders_crm_to_tryton", "on": ["sales_order.upserted"], **order_route},
            {"name": "won_orders_crm_to_tryton", "on": ["sales_order.won"], **order_route},
        ],
        # the session's Tryton holds other tests' sales: only this test's references can be orphans
        "reconcile": {"orders_crm_to_tryton": {"unlinked_match": {"reference": f"SO-{tag}-*"}}},
    }
    path = directory / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


class TrytonTopology:
    """The sample CRM, two workers on the config above, and what Tryton holds."""

    def __init__(self, directory: Path, server: LocalTryton, crm: SampleCrm, tag: str) -> None:
        self.crm = crm
        self.tag = tag
        self.config = _config(directory, tag)
        self.extra_env = {
            "DEMO_CRM_URL": crm.url,
            "DEMO_CRM_TOKEN": CRM_TOKEN,
            "CRM_WEBHOOK_SECRET": SECRET,
            "TRYTON_URL": server.url,
            "TRYTON_DATABASE": server.database,
            "TRYTON_USERNAME": server.username,
            "TRYTON_PASSWORD": server.password,
            "TOPOLOGY_WEBHOOK_PORT": "0",
        }
        self.env = {**os.environ, **self.extra_env}
        self.workers = Workers(self.config, self.env, directory)
        self.erp = TrytonAdapter("topology-check", server.system_settings())

    def customer(self, i: int) -> str:
        return f"C-{self.tag}-{i:02d}"

    def order(self, i: int) -> str:
        return f"SO-{self.tag}-{i:02d}"

    def lines_of(self, i: int) -> list[dict[str, str]]:
        sku, desc, price = ITEMS[i % len(ITEMS)]
        return [{"sku": sku, "desc": desc, "qty": str(i % 3 + 1), "price": price}]

    def create(self) -> None:
        """Customers and their won deals, one by one, as CRM users close them."""
        for i in range(1, ORDERS + 1):
            self.crm.upsert_customer(
                {
                    "customer_no": self.customer(i),
                    "company": f"Topology {self.tag} {i} GmbH",
                    "email": f"sales{i}@{self.tag.lower()}.example",
                    "status": "active",
                    "tier": "silver",
                    "billing": {"street": f"Hauptstr. {i}", "zip": "10115", "city": "Berlin", "country": "DE"},
                }
            )
            self.crm.upsert_order(
                {
                    "order_no": self.order(i),
                    "customer_no": self.customer(i),
                    "placed_at": "2026-12-01T09:00:00.000+08:00",
                    "currency": "EUR",
                    "stage": "won",
                    "lines": self.lines_of(i),
                }
            )
            time.sleep(0.1)

    def touch(self) -> None:
        """Each deal saved again in the CRM without a change: a new version, pushed and polled."""
        for i in range(1, ORDERS + 1):
            self.crm.upsert_order({"order_no": self.order(i)})

    def sales(self) -> list[dict[str, Any]]:
        refs = [self.order(i) for i in range(1, ORDERS + 1)]
        return list(
            self.erp.rpc.model(
                "sale.sale",
                "search_read",
                [("reference", "in", refs)],
                0,
                None,
                None,
                ["reference", "state", "lines", "write_date"],
            )
        )

    def sale_lines(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        rows = self.erp.rpc.model("sale.line", "read", ids, ["product.code", "quantity"]) if ids else []
        return {int(r["id"]): r for r in rows}

    def waiting(self) -> int:
        broker = open_route_broker(self.config)
        try:
            return sum(broker.depth(route) for route in ROUTES)
        finally:
            broker.close()

    def dead_letters(self) -> dict[str, list[str]]:
        broker = open_route_broker(self.config)
        try:
            return {
                route: [
                    f"{d.headers.get(H_ERROR_CLASS)}: {str(d.headers.get(H_ERROR))[:200]}"
                    for d in broker.browse(dlq_name(route), 500)
                ]
                for route in ROUTES
            }
        finally:
            broker.close()

    def settle(self, done: Any, timeout_s: float) -> bool:
        """Until `done()` holds, the routes' queues are empty and the CRM's webhooks delivered, for 2 s."""
        deadline = time.monotonic() + timeout_s
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            self.workers.check_alive()
            if done() and self.waiting() == 0 and self.crm.webhook_stats()["queued"] == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= 2.0:
                    return True
            else:
                quiet_since = None
            time.sleep(0.5)
        return False

    def all_confirmed(self) -> bool:
        """Every won order has a confirmed sale (a second sale of one order is a finding, not a wait)."""
        confirmed = {s["reference"] for s in self.sales() if s["state"] in CONFIRMED}
        return len(confirmed) >= ORDERS

    def reconcile(self) -> tuple[int, dict[str, Any] | None, str]:
        done = subprocess.run(
            [*isthmus_command(), "reconcile", "--config", str(self.config), "--route", "orders_crm_to_tryton",
             "--json"],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        try:
            return done.returncode, json.loads(done.stdout), done.stderr[-1500:]
        except ValueError:
            return done.returncode, None, done.stderr[-1500:]

    def close(self) -> None:
        self.workers.stop()
        self.erp.close()


@pytest.fixture
def crm() -> Iterator[SampleCrm]:
    service = SampleCrm(token=CRM_TOKEN).start()
    yield service
    service.stop()


@pytest.fixture
def topology(
    tmp_path: Path, tryton: LocalTryton, crm: SampleCrm, tag: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TrytonTopology]:
    run = TrytonTopology(tmp_path, tryton, crm, tag)
    for name, value in run.extra_env.items():  # the test reads the config too (queue depths)
        monkeypatch.setenv(name, value)
    try:
        yield run
    finally:
        run.close()


def _findings_about_sales(run: TrytonTopology) -> list[str]:
    found = []
    sales = run.sales()
    counts = Counter(s["reference"] for s in sales)
    twice = {ref: n for ref, n in sorted(counts.items()) if n > 1}
    missing = [run.order(i) for i in range(1, ORDERS + 1) if counts[run.order(i)] == 0]
    if twice:
        found.append(f"{len(twice)} of {ORDERS} won orders became more than one Tryton sale "
                     f"({len(sales)} sales for {ORDERS} orders): {twice}")  # fmt: skip
    if missing:
        found.append(f"{len(missing)} of {ORDERS} won orders never became a Tryton sale: {missing}")
    lines = run.sale_lines([int(i) for s in sales for i in s["lines"] or []])
    wrong = []
    for sale in sales:
        i = int(str(sale["reference"]).rsplit("-", 1)[1])
        want = run.lines_of(i)[0]
        got = [lines[int(line)] for line in sale["lines"] or []]
        if len(got) != 1 or got[0]["product."]["code"] != want["sku"] or Decimal(str(got[0]["quantity"])) != Decimal(
            want["qty"]
        ):
            wrong.append(f"{sale['reference']} (sale {sale['id']}, {sale['state']}): {got}")
    if wrong:
        found.append(f"{len(wrong)} of {len(sales)} sales lack the order's lines: {wrong[:6]}")
    unconfirmed = [f"{s['reference']} ({s['id']}): {s['state']}" for s in sales if s["state"] not in CONFIRMED]
    if unconfirmed:
        found.append(f"{len(unconfirmed)} of {len(sales)} sales are not confirmed: {unconfirmed[:6]}")
    return found


@pytest.mark.slow
def test_won_deals_by_webhook_and_poll_are_one_confirmed_sale_each_and_a_resend_is_a_no_op(
    topology: TrytonTopology,
) -> None:
    run = topology
    findings: list[str] = []
    bases = run.workers.webhook_bases
    run.crm.add_webhook([b + ORDER_PATH for b in bases], SECRET, ["order.won"])
    run.workers.start_all()
    run.workers.wait_receiving()
    run.create()
    if not run.settle(run.all_confirmed, 75):
        findings.append(f"not every won order became a confirmed sale within 75 s: "
                        f"{Counter(s['state'] for s in run.sales())}; messages waiting {run.waiting()}")  # fmt: skip
    findings += _findings_about_sales(run)
    before = {s["id"]: (s["state"], s["write_date"]) for s in run.sales()}
    letters_before = {route: len(items) for route, items in run.dead_letters().items()}

    run.touch()  # the same deals again, after confirmation
    time.sleep(1.5)  # the poll and the webhook of the new versions
    if not run.settle(lambda: True, 40):
        findings.append(f"the re-sent deals were not handled within 40 s; messages waiting {run.waiting()}")
    letters = run.dead_letters()
    new_letters = {route: items[letters_before.get(route, 0) :] for route, items in letters.items()}
    if any(new_letters[r] for r in ORDER_ROUTES):
        found = {r: Counter(items).most_common(2) for r, items in new_letters.items() if items}
        findings.append(f"re-sending unchanged, confirmed deals dead-lettered "
                        f"{sum(len(new_letters[r]) for r in ORDER_ROUTES)} messages: {found}")  # fmt: skip
    after = {s["id"]: (s["state"], s["write_date"]) for s in run.sales()}
    changed = sorted(k for k in before if k in after and after[k] != before[k])
    if changed or set(after) != set(before):
        findings.append(f"re-sending unchanged deals wrote to Tryton: sales {changed} changed, "
                        f"{sorted(set(after) - set(before))} new")  # fmt: skip
    if any(letters_before.values()):
        findings.append(f"dead letters before the re-send (every record is valid): "
                        f"{ {r: Counter(items).most_common(2) for r, items in letters.items() if items} }")  # fmt: skip
    run.workers.stop()

    code, report, stderr = run.reconcile()
    if code != 0 or report is None or not report.get("in_sync"):
        routes = (report or {}).get("routes") or [{}]
        summary = {k: routes[0].get(k) for k in ("compared", "in_sync", "counts", "source_records", "target_records")}
        examples = [
            f"{d.get('kind')} {d.get('source_id')}->{d.get('target_id')}: {d.get('reason')} {d.get('diff', '')}"[:300]
            for d in routes[0].get("drift", [])[:4]
        ]
        findings.append(f"reconcile orders_crm_to_tryton: exit {code}, {summary}, e.g. {examples or stderr[-600:]}")
    stats = run.crm.webhook_stats()
    assert not findings, (
        "issue 12 against Tryton:\n- " + "\n- ".join(findings) + f"\nwebhooks: {stats['subscriptions']}\n"
        + run.workers.tail()
    )
