"""The topology integrators run, as a test harness: webhooks AND polling of the same CRM
entities, a two-way customer pair, two worker processes that keep being SIGKILLed (issue 12).

    SAMPLE CRM customers ──webhook customer.changed (no address) ─┐
                         └─poll (every second, full records) ──────┴─> customers_crm_to_erp ─┐ two-way
    SAMPLE CRM customers <── customers_erp_to_crm <── poll of ERP accounts <── ERP accounts <─┘ pair
    SAMPLE CRM orders ──webhook order.won (header, no lines) ──> won_orders_crm_to_erp ─┐
                      └─poll (every second, full records) ───> orders_crm_to_erp ───────┴─> ERP sales orders

The customers' webhook feeds the pair's own route (the safe topology: `validate` refuses a
route outside the pair writing ERP accounts); the won-deal webhook has its own route, so two
routes create ERP sales orders, as in issue 12.

Both workers run everything (sources, webhook receiver, routes); each has its own webhook
port, and the CRM's subscriptions name both, as behind a load balancer: each delivery
attempt goes to the next, so a killed worker's share is retried on the other.

`Topology.findings()` lists every broken guarantee with the records concerned: a target
record created more than once (or never), a field blanked or never written because a
payload was partial, a dead letter (every record here is valid), and what `isthmus
reconcile` says is out of sync. The test asserts the list is empty.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests
import yaml

from adapters.rest.config import WriteSpec as RestWriteSpec
from deploy.demo.sample_crm import SampleCrm
from deploy.demo.sample_erp import SampleErp
from deploy.demo.webhook_sender import EVENT_ID_HEADER, SIGNATURE_HEADER
from middleware.broker.base import H_ERROR, H_ERROR_CLASS, Broker, dlq_name
from tests.chaos.harness import isthmus_command, open_route_broker

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = [REPO / "mappings", Path(__file__).resolve().parent / "topology_mappings"]
CRM_TOKEN = "topology-crm-token"
WEBHOOK_SECRET = "topology-webhook-secret"
CUSTOMER_PATH = "/webhooks/crm/customers"
ORDER_PATH = "/webhooks/crm/orders"
PAIR_FIELDS = ["name", "email", "phone", "active", "addresses"]
CITIES = [("Hauptstr.", "10115", "Berlin", "DE"), ("Rue de Rivoli", "75001", "Paris", "FR"), ("Damrak", "1012",
          "Amsterdam", "NL")]  # fmt: skip


@dataclass(frozen=True)
class RouteNames:
    """Route (= queue) names, unique per test on a shared broker."""

    suffix: str = ""

    @property
    def customers_to_erp(self) -> str:
        return f"customers_crm_to_erp{self.suffix}"

    @property
    def customers_to_crm(self) -> str:
        return f"customers_erp_to_crm{self.suffix}"

    @property
    def orders_to_erp(self) -> str:
        return f"orders_crm_to_erp{self.suffix}"

    @property
    def won_orders_to_erp(self) -> str:
        return f"won_orders_crm_to_erp{self.suffix}"

    def all(self) -> list[str]:
        return [self.customers_to_erp, self.customers_to_crm, self.orders_to_erp, self.won_orders_to_erp]

    def reconciled(self) -> list[str]:
        """The routes reconciliation can check: those with a readable feed (not the webhook-only one)."""
        return [self.customers_to_erp, self.customers_to_crm, self.orders_to_erp]


def _read(path: str, id_field: str, updated: str, since: str, records: str, page: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": path,
        "records_path": records,
        "id_field": id_field,
        "version_field": "version",
        "updated_field": updated,
        "since_param": since,
        "pagination": page,
        "item_path": path + "/{id}",
    }


def _erp_write(path: str) -> dict[str, Any]:
    """create_or_update by external_ref. Where the REST writer can find a record by its key (issue 12's
    identity recovery, `find:`), it is told how; on a tree without it the config stays loadable, so the
    test fails on what the topology does, not on an unknown key."""
    write: dict[str, Any] = {
        "mode": "create_or_update",
        "create": {"method": "POST", "path": path},
        "update": {"method": "PUT", "path": path + "/{target_id}"},
        "id_path": "id",
        "key_field": "external_ref",
    }
    if "find" in RestWriteSpec.model_fields:
        write["find"] = {"path": path, "param": "external_ref", "records_path": "items", "id_path": "id"}
    return write


def topology_config(directory: Path, *, broker: str, store: str, names: RouteNames) -> Path:
    """isthmus.yaml of the topology. Ports, URLs and the secret come from the environment
    (`Topology.env`), so both worker processes and the CLI share the one file."""
    crm_page = {"type": "page", "page_param": "page", "size_param": "page_size", "page_size": 200, "start": 1}
    erp_page = {"type": "offset", "offset_param": "offset", "limit_param": "limit", "limit": 200}
    signature = {"scheme": "timestamped", "header": SIGNATURE_HEADER}
    endpoint = {
        "system": "crm",
        "version_field": "version",
        "occurred_field": "updated_at",
        "records_path": "data",
        "secret": "${CRM_WEBHOOK_SECRET}",
        "signature": signature,
        "dedup": {"event_id_header": EVENT_ID_HEADER},
    }
    conflicts = {"default": "last_writer_wins", "fields": {"name": {"owner": "crm"}}}
    # a pair lock a SIGKILLed worker held blocks its record until it expires (default 120 s): shorter, so a
    # run settles within the test's time; a record stuck behind a dead worker's lock is a finding all the same
    two_way = {"fields": PAIR_FIELDS, "conflicts": conflicts, "lock_ttl_s": 10.0}
    retry = {"max_attempts": 30, "initial_delay_s": 0.1, "max_delay_s": 1.0}
    config: dict[str, Any] = {
        "broker": broker,
        "store": store,
        "mappings": [str(p) for p in MAPPINGS],
        "observability": {"port": 0, "log_format": "json", "log_level": "info", "depth_sample_interval_s": 1.0},
        "systems": {
            "crm": {
                "type": "rest",
                "base_url": "${DEMO_CRM_URL}",
                "auth": {"type": "bearer", "token": "${DEMO_CRM_TOKEN}"},
                "entities": {
                    "customer": {
                        "read": _read("/api/customers", "customer_no", "updated_at", "updated_since", "data", crm_page),
                        "write": {
                            "mode": "upsert",
                            "method": "PATCH",
                            "path": "/api/customers/{customer_no}",
                            "key_field": "customer_no",
                            "id_path": "customer_no",
                        },
                    },
                    "order": {
                        "read": _read("/api/orders", "order_no", "updated_at", "updated_since", "data", crm_page)
                    },
                },
            },
            "erp": {
                "type": "rest",
                "base_url": "${DEMO_ERP_URL}",
                "entities": {
                    "account": {
                        "read": _read("/api/accounts", "id", "changed_at", "changed_since", "items", erp_page),
                        "write": _erp_write("/api/accounts"),
                    },
                    "sales_order": {
                        "read": _read("/api/sales-orders", "id", "changed_at", "changed_since", "items", erp_page),
                        "write": _erp_write("/api/sales-orders"),
                    },
                },
            },
        },
        "sources": [
            # the CRM is polled as a safety net, less often than its webhooks arrive
            {"name": "crm_customers", "system": "crm", "entity": "customer", "emits": "customer.upserted",
             "poll_interval_s": 1.0},
            {"name": "crm_orders", "system": "crm", "entity": "order", "emits": "sales_order.upserted",
             "poll_interval_s": 1.0},
            {"name": "erp_accounts", "system": "erp", "entity": "account", "emits": "account.changed",
             "poll_interval_s": 0.3},
        ],  # fmt: skip
        "webhooks": {
            "host": "127.0.0.1",
            "port": "${TOPOLOGY_WEBHOOK_PORT}",
            "endpoints": {
                "crm_customer_events": {
                    **endpoint,
                    "path": CUSTOMER_PATH,
                    "entity": "customer",
                    "message_type": "customer.upserted",
                    "id_field": "customer_no",
                },
                "crm_won_order_events": {
                    **endpoint,
                    "path": ORDER_PATH,
                    "entity": "order",
                    "message_type": "sales_order.won",
                    "id_field": "order_no",
                },
            },
        },
        "routes": [
            {
                "name": names.customers_to_erp,
                "on": ["customer.upserted"],
                "from_system": "crm",
                "mappings": ["crm_customer_to_canonical", "canonical_customer_to_erp"],
                "to": {"system": "erp", "entity": "account"},
                "retry": retry,
                "two_way": {"peer": names.customers_to_crm, **two_way},
            },
            {
                "name": names.customers_to_crm,
                "on": ["account.changed"],
                "from_system": "erp",
                "mappings": ["erp_account_to_canonical", "canonical_customer_to_crm"],
                "to": {"system": "crm", "entity": "customer"},
                "retry": retry,
                "two_way": {"peer": names.customers_to_erp, **two_way, "write_always": ["customer_no"]},
            },
            {
                "name": names.orders_to_erp,
                "on": ["sales_order.upserted"],
                "from_system": "crm",
                "mappings": ["crm_order_to_canonical", "canonical_order_to_erp"],
                "to": {"system": "erp", "entity": "sales_order"},
                "retry": retry,
            },
            {  # the won-deal webhook's own route: two routes create ERP sales orders, as in issue 12
                "name": names.won_orders_to_erp,
                "on": ["sales_order.won"],
                "from_system": "crm",
                "mappings": ["crm_order_to_canonical", "canonical_order_to_erp"],
                "to": {"system": "erp", "entity": "sales_order"},
                "retry": retry,
            },
        ],
        # the pair's CRM route has two feeds (poll and webhook): reconcile against the poll's full records
        "reconcile": {
            names.customers_to_erp: {"source": "crm_customers"},
            names.customers_to_crm: {},
            names.orders_to_erp: {},
        },
    }
    path = directory / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----- the CRM's users ------------------------------------------------------------------------


def customer_number(i: int) -> str:
    return f"C-{i:04d}"


def order_number(i: int) -> str:
    return f"SO-{i:04d}"


def billing_of(i: int) -> dict[str, str]:
    street, zip_code, city, country = CITIES[i % len(CITIES)]
    return {"street": f"{street} {i}", "zip": zip_code, "city": city, "country": country}


@dataclass
class Plan:
    """What the CRM's and the ERP's users do during the run, and what must hold afterwards."""

    customers: int = 100
    renamed_in_crm: range = range(1, 21)  # company renamed in the CRM (webhook + poll, partial payload again)
    phoned_in_erp: range = range(61, 76)  # phone changed in the ERP: the pair writes it back to the CRM
    pace_s: float = 0.05

    def company(self, i: int, renamed: bool = False) -> str:
        return f"Topology {i} {'Renamed ' if renamed else ''}GmbH"

    def erp_phone(self, i: int) -> str:
        return f"+49 30 9{i:04d}"


class Users(threading.Thread):
    """Creates the customers and their won orders one by one (each upsert fires a webhook), then
    edits some customers in the CRM and some accounts in the ERP — all while workers are killed."""

    def __init__(self, crm: SampleCrm, erp: SampleErp, plan: Plan) -> None:
        super().__init__(name="topology-users", daemon=True)
        self.crm, self.erp, self.plan = crm, erp, plan
        self.error: BaseException | None = None
        self.erp_edits_done: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            plan = self.plan
            for i in range(1, plan.customers + 1):
                self.crm.upsert_customer(
                    {
                        "customer_no": customer_number(i),
                        "company": plan.company(i),
                        "email": f"sales{i}@topology.example",
                        "phone": f"+49 30 1{i:04d}",
                        "vat": f"DE{100000000 + i}",
                        "tier": ("gold", "silver", "bronze")[i % 3],
                        "status": "active",
                        "billing": billing_of(i),
                    }
                )
                self.crm.upsert_order(
                    {
                        "order_no": order_number(i),
                        "customer_no": customer_number(i),
                        "placed_at": "2026-12-01T09:00:00.000+08:00",
                        "currency": "EUR",
                        "stage": "won",
                        "lines": [{"sku": "WIDGET-1", "desc": "Widget", "qty": str(i % 7 + 1), "price": "19.90"}],
                    }
                )
                if self.stop_event.wait(plan.pace_s):
                    return
            for i in plan.renamed_in_crm:
                self.crm.upsert_customer({"customer_no": customer_number(i), "company": plan.company(i, True)})
                self.stop_event.wait(plan.pace_s)
            pending = list(plan.phoned_in_erp)
            deadline = time.monotonic() + 60
            while pending and time.monotonic() < deadline and not self.stop_event.is_set():
                for i in list(pending):
                    account = self.account_of(customer_number(i))
                    if account is not None:
                        self.erp_put(account["id"], {"phone": plan.erp_phone(i)})
                        self.erp_edits_done.append(customer_number(i))
                        pending.remove(i)
                self.stop_event.wait(0.2)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def account_of(self, ref: str) -> dict[str, Any] | None:
        with self.erp.lock:
            found = [a for a in self.erp.accounts.values() if a.get("external_ref") == ref]
        return dict(found[0]) if found else None

    def erp_put(self, account_id: str, body: dict[str, Any]) -> None:
        """An ERP user's edit, through the ERP's own API (stamps changed_at, bumps the version)."""
        response = requests.put(f"{self.erp.url}/api/accounts/{account_id}", json=body, timeout=5)
        response.raise_for_status()


# ----- the workers -------------------------------------------------------------------------------


class Workers:
    """Two `isthmus worker` processes (sources, webhooks, routes), each on its own webhook port."""

    def __init__(self, config: Path, env: dict[str, str], log_dir: Path, count: int = 2) -> None:
        self.config = config
        self.env = env
        self.ports = [free_port() for _ in range(count)]
        self.logs = [log_dir / f"worker-{slot}.log" for slot in range(count)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self.kills = 0
        self.unexpected_exits: list[str] = []

    @property
    def webhook_bases(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def start(self, slot: int) -> None:
        with self.logs[slot].open("ab") as sink:
            sink.write(f"=== topology: start worker slot {slot} at {time.time():.3f} ===\n".encode())
            sink.flush()
            self.procs[slot] = subprocess.Popen(
                [*isthmus_command(), "worker", "--config", str(self.config)],
                cwd=REPO,
                env={**self.env, "TOPOLOGY_WEBHOOK_PORT": str(self.ports[slot])},
                stdout=sink,
                stderr=sink,
            )

    def start_all(self) -> None:
        for slot in range(len(self.procs)):
            self.start(slot)

    def wait_receiving(self, slots: list[int] | None = None, timeout_s: float = 60.0) -> None:
        """Until the workers' (or these slots') webhook receivers answer /healthz: they run."""
        deadline = time.monotonic() + timeout_s
        for slot, base in enumerate(self.webhook_bases):
            if slots is not None and slot not in slots:
                continue
            while True:
                with suppress(requests.RequestException):
                    if requests.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                proc = self.procs[slot]
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"worker {slot} exited with {proc.returncode} at start\n{self.tail()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"worker {slot} receives no webhooks after {timeout_s}s\n{self.tail()}")
                time.sleep(0.1)

    def kill(self, slot: int) -> None:
        """SIGKILL (no drain) and start a fresh process in the slot."""
        proc = self.procs[slot]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            self.kills += 1
        self.start(slot)

    def check_alive(self) -> None:
        for slot, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is not None:
                self.unexpected_exits.append(f"worker slot {slot} exited by itself with {proc.returncode}")
                self.start(slot)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every worker (graceful drain); SIGKILL what has not ended by the timeout."""
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def tail(self, lines: int = 8) -> str:
        parts = []
        for log in self.logs:
            if log.exists():
                text = log.read_text(encoding="utf-8", errors="replace").splitlines()
                parts.append(f"--- {log.name} (last {min(lines, len(text))} of {len(text)} lines) ---")
                parts.extend(line[:300] for line in text[-lines:])
        return "\n".join(parts)

    def count_events(self, event: str) -> int:
        return sum(log.read_text(errors="replace").count(f'"event": "{event}"') for log in self.logs if log.exists())


# ----- the run -----------------------------------------------------------------------------------


@dataclass
class Topology:
    """One run: sample systems, config, workers, the users' plan; `findings()` at the end."""

    directory: Path
    broker_url: str
    store_url: str
    names: RouteNames
    plan: Plan = field(default_factory=Plan)
    kill_every_s: float = 1.5
    kills: int = 6
    settle_timeout_s: float = 75.0

    def __post_init__(self) -> None:
        self.crm = SampleCrm(token=CRM_TOKEN).start()
        self.erp = SampleErp(advance_every_s=0).start()
        self.config = topology_config(self.directory, broker=self.broker_url, store=self.store_url, names=self.names)
        self.extra_env = {
            "DEMO_CRM_URL": self.crm.url,
            "DEMO_CRM_TOKEN": CRM_TOKEN,
            "DEMO_ERP_URL": self.erp.url,
            "CRM_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "TOPOLOGY_WEBHOOK_PORT": "0",  # the CLI's; each worker gets its own
        }
        self.env = {**os.environ, **self.extra_env}  # the caller puts extra_env into its own environment too
        self.workers = Workers(self.config, self.env, self.directory)
        self.users = Users(self.crm, self.erp, self.plan)
        self.settled = False
        self.settle_note = ""
        self.elapsed_s = 0.0

    # ----- running --------------------------------------------------------------------------
    def run(self) -> None:
        """Subscribe the webhooks, start the workers and the users, kill workers, let it settle."""
        started = time.monotonic()
        bases = self.workers.webhook_bases
        self.crm.add_webhook([b + CUSTOMER_PATH for b in bases], WEBHOOK_SECRET, ["customer.changed"])
        self.crm.add_webhook([b + ORDER_PATH for b in bases], WEBHOOK_SECRET, ["order.won"])
        self.workers.start_all()
        self.workers.wait_receiving()  # webhooks are the fast path: the users start once they are taken
        self.users.start()
        for kill in range(self.kills):
            slot = kill % 2
            time.sleep(self.kill_every_s)
            self.workers.check_alive()
            self.workers.wait_receiving([slot])  # a process killed before it ever ran would test nothing
            self.workers.kill(slot)
        self.users.join(90)
        self.settled = self._settle()
        self.elapsed_s = time.monotonic() - started

    def _settle(self) -> bool:
        """Until every customer and won order has reached the ERP, the ERP edits the CRM, the CRM's
        webhook queue is empty and the routes' queues stay empty for a moment."""
        deadline = time.monotonic() + self.settle_timeout_s
        quiet_since: float | None = None
        broker = open_route_broker(self.config)
        try:
            while time.monotonic() < deadline:
                self.workers.check_alive()
                waiting = self.waiting(broker)
                done = self._targets_complete() and self.crm.webhook_stats()["queued"] == 0 and waiting == 0
                if done:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since >= 2.0:
                        return True
                else:
                    quiet_since = None
                time.sleep(0.25)
            self.settle_note = (
                f"not settled after {self.settle_timeout_s:g}s: {self._progress()}; messages waiting {waiting}"
            )
            return False
        finally:
            broker.close()

    def waiting(self, broker: Broker) -> int:
        return sum(broker.depth(name) for name in self.names.all())

    def dead_letters(self) -> dict[str, list[str]]:
        """Route → the reasons of its dead-lettered messages (`<error class>: <error>` per message)."""
        broker = open_route_broker(self.config)
        try:
            found: dict[str, list[str]] = {}
            for name in self.names.all():
                letters = broker.browse(dlq_name(name), 1000)
                found[name] = [
                    f"{d.headers.get(H_ERROR_CLASS)}: {str(d.headers.get(H_ERROR))[:160]}" for d in letters
                ]
            return found
        finally:
            broker.close()

    def _targets_complete(self) -> bool:
        refs = self._account_refs()
        orders = self._order_refs()
        customers = {customer_number(i) for i in range(1, self.plan.customers + 1)}
        won = {order_number(i) for i in range(1, self.plan.customers + 1)}
        phones_back = all(
            (self.crm.customer(customer_number(i)) or {}).get("phone") == self.plan.erp_phone(i)
            for i in self.plan.phoned_in_erp
        )
        return customers <= set(refs) and won <= set(orders) and phones_back

    def _progress(self) -> str:
        return (
            f"ERP accounts {len(set(self._account_refs()))}/{self.plan.customers} distinct, "
            f"sales orders {len(set(self._order_refs()))}/{self.plan.customers} distinct, "
            f"CRM webhook queue {self.crm.webhook_stats()['queued']}"
        )

    def _account_refs(self) -> list[str]:
        with self.erp.lock:
            return [str(a.get("external_ref")) for a in self.erp.accounts.values()]

    def _order_refs(self) -> list[str]:
        with self.erp.lock:
            return [str(o.get("external_ref")) for o in self.erp.orders.values()]

    def stop(self) -> None:
        self.users.stop_event.set()
        self.workers.stop()
        self.crm.stop()
        self.erp.stop()

    # ----- what must hold ---------------------------------------------------------------------
    def reconcile(self, route: str) -> tuple[int, dict[str, Any] | None, str]:
        """(exit code, the JSON report, stderr) of `isthmus reconcile --route ROUTE --json`."""
        done = subprocess.run(
            [*isthmus_command(), "reconcile", "--config", str(self.config), "--route", route, "--json"],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        report = None
        with suppress(ValueError):
            report = json.loads(done.stdout)
        return done.returncode, report, done.stderr[-1500:]

    def findings(self) -> list[str]:
        """Every broken guarantee, with counts per record; empty when the topology holds."""
        found: list[str] = []
        plan = self.plan
        customers = [customer_number(i) for i in range(1, plan.customers + 1)]
        orders = [order_number(i) for i in range(1, plan.customers + 1)]
        if self.users.error is not None:
            found.append(f"the test's users failed: {self.users.error!r}")
        if not self.settled:
            found.append(self.settle_note)
        found += _exactly_once("ERP account", customers, Counter(self._account_refs()))
        found += _exactly_once("ERP sales order", orders, Counter(self._order_refs()))
        blank_crm = []
        for i in range(1, plan.customers + 1):
            billing = (self.crm.customer(customer_number(i)) or {}).get("billing")
            if billing != billing_of(i):
                blank_crm.append(f"{customer_number(i)}: {billing}")
        if blank_crm:
            found.append(
                f"{len(blank_crm)} of {plan.customers} CRM customers lost their billing address "
                f"(a partial payload blanked it): {_some(blank_crm)}"
            )
        blank_erp = []
        with self.erp.lock:
            accounts = [dict(a) for a in self.erp.accounts.values()]
        for account in accounts:
            ref = str(account.get("external_ref"))
            if ref not in customers:
                continue
            i = int(ref.split("-")[1])
            want = billing_of(i)
            expected = {"street": want["street"], "postcode": want["zip"], "city": want["city"],
                        "country": want["country"]}  # fmt: skip
            if account.get("address") != expected:
                blank_erp.append(f"{account['id']} ({ref}): {account.get('address')}")
        if blank_erp:
            found.append(
                f"{len(blank_erp)} of {len(accounts)} ERP accounts lack the customer's address "
                f"(a partial payload blanked it or never wrote it): {_some(blank_erp)}"
            )
        with self.erp.lock:
            sales_orders = [dict(o) for o in self.erp.orders.values()]
        no_lines = []
        for order in sales_orders:
            ref = str(order.get("external_ref"))
            if ref not in orders:
                continue
            lines = order.get("lines") or []
            want = int(ref.split("-")[1]) % 7 + 1
            if len(lines) != 1 or lines[0].get("item") != "WIDGET-1" or Decimal(str(lines[0]["quantity"])) != want:
                no_lines.append(f"{order['id']} ({ref}): lines {lines}")
        if no_lines:
            found.append(
                f"{len(no_lines)} of {len(sales_orders)} ERP sales orders lack the CRM order's lines "
                f"(a header-only payload blanked them or they were never written): {_some(no_lines)}"
            )
        letters = self.dead_letters()
        if any(letters.values()):
            reasons = {route: Counter(items).most_common(3) for route, items in letters.items() if items}
            found.append(
                f"{sum(map(len, letters.values()))} messages dead-lettered although every record is valid: "
                f"{ {route: len(items) for route, items in letters.items() if items} }; reasons {reasons}"
            )
        wrong_names = [
            c for i in plan.renamed_in_crm if (a := self.users.account_of(c := customer_number(i))) is None
            or a.get("account_name") != plan.company(i, True)
        ]  # fmt: skip
        if wrong_names:
            found.append(f"CRM renames not in the ERP for {len(wrong_names)} accounts: {_some(wrong_names)}")
        for route in self.names.reconciled():
            code, report, stderr = self.reconcile(route)
            if code == 0 and report is not None and report.get("in_sync"):
                continue
            found.append(f"reconcile {route}: exit {code}, {_drift_summary(report, stderr)}")
        return found

    def diagnostics(self) -> str:
        stats = self.crm.webhook_stats()
        hooks = ", ".join(
            f"{'/'.join(s['events'])}: delivered {s['delivered']}, failed attempts {s['failed_attempts']}"
            for s in stats["subscriptions"]
        )
        dlq: Any = "unreadable"
        with suppress(Exception):
            dlq = {route: len(items) for route, items in self.dead_letters().items()}
        erp = self.erp.state(with_effects=False)
        return "\n".join(
            [
                f"run {self.elapsed_s:.1f}s, {self.workers.kills} SIGKILLs, unexpected exits: "
                f"{self.workers.unexpected_exits or 'none'}",
                f"CRM webhooks: {hooks}; queued {stats['queued']}, dropped {stats['dropped']}",
                f"ERP: {erp['accounts']} accounts, {erp['orders']} sales orders, "
                f"{erp['duplicates']} idempotent repeats answered",
                f"dead letters per route: {dlq}",
                f"ERP edits made: {len(self.users.erp_edits_done)} of {len(self.plan.phoned_in_erp)}",
                self.workers.tail(),
            ]
        )


def _exactly_once(what: str, keys: list[str], counts: Counter[str]) -> list[str]:
    twice = {k: n for k, n in counts.items() if n > 1 and k in keys}
    missing = [k for k in keys if counts[k] == 0]
    found = []
    if twice:
        found.append(
            f"{len(twice)} of {len(keys)} {what}s created more than once "
            f"({sum(twice.values())} records for them): {_some([f'{k} x{n}' for k, n in sorted(twice.items())])}"
        )
    if missing:
        found.append(f"{len(missing)} of {len(keys)} {what}s never created: {_some(missing)}")
    return found


def _drift_summary(report: dict[str, Any] | None, stderr: str) -> str:
    if report is None:
        return f"no JSON report; stderr: {stderr.strip()[-600:]}"
    parts = []
    for route in report.get("routes", []):
        drift = route.get("drift") or []
        examples = [
            f"{d.get('kind')} {d.get('source_id')}->{d.get('target_id')}: {str(d.get('reason'))[:120]}"
            + (f" {d.get('diff')}"[:240] if d.get("diff") else "")
            for d in drift[:4]
            if isinstance(d, dict)
        ]
        parts.append(
            f"{route.get('in_sync')} of {route.get('compared')} compared in sync "
            f"({route.get('source_records')} source, {route.get('target_records')} target records), "
            f"drift {route.get('counts')}, e.g. {examples}"
        )
    return "; ".join(parts) or json.dumps(report)[:600]


def _some(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


