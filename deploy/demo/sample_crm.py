"""SAMPLE CRM — sample, for the demo and tests, not a real CRM/ERP.

An in-memory CRM over HTTP that speaks +08:00 local time, as the CRM of the demo story does.

API (bearer token required when `token` is set; `/admin/*` never needs it):
  GET   /api/customers?updated_since=ISO&page=N&page_size=M → {"data": [...], "page": N, "has_more": bool}
  GET   /api/orders?updated_since=ISO&page=N&page_size=M    → same shape
        sorted by (updated_at, id); updated_at >= updated_since compared as aware datetimes;
        page starts at 1, page_size 1..1000 (default 100)
  GET   /api/customers/{customer_no}, /api/orders/{order_no}
  GET   /api/orders?embed=customer → each order carries its customer record as `customer`
        (as CRMs expand related records), so an integration can create it where it is missing
  PATCH /api/orders/{order_no}  {"erp_status", "erp_status_at", other "erp_*" fields} → 200 the order
        404 unknown order; 400 unless erp_status is one of ERP_STATUSES. Every `erp_*` field of the
        body is stored (reason, shipment and invoice numbers, amount, paid, ...).
        Honours Idempotency-Key: a repeated key is answered but not applied (counted in duplicates).
        The erp_status fields belong to the integration: writing them does not bump the order's
        version or updated_at, so status write-backs do not echo back as order changes.
  GET   /api/products?updated_since=ISO&page=N&page_size=M  → same shape (products by sku); /api/products/{sku}
  GET   /api/accounts?page=N&page_size=M → {"data": [...], "page": N, "has_more": bool}: the customers in
        customer_no order, with no changed-since filter at all (updated_since is ignored), as many
        CRMs' list APIs are; GET /api/accounts/{customer_no} one of them
  GET   /api/directory?page=N&page_size=M → {"active": [...], "archived": [...], "page", "has_more"}: the
        same accounts, one page split into two lists by status (a response carrying several lists)
  With `SampleCrm(day_filter=True)` the list APIs' `updated_since` takes a day only (YYYY-MM-DD, in the
  CRM's +08:00 time zone; anything else is 400) and returns every record changed that day or later.
  `SampleCrm.latency_s` delays every /api/ answer (a remote CRM's round trip); `api_reads` counts the
  GETs per path.
  PATCH /api/customers/{customer_no}, /api/products/{sku}  {fields} → 200 the record
        Create or change (the fields given are merged in; `billing` is replaced as a whole). These
        are data changes like a user's: version and updated_at move, so a two-way integration
        reads its own write back (and must recognise it). 400 unless the body is an object whose
        key, if present, matches the path. Honours Idempotency-Key as the order PATCH does.
        Counted per entity in `api_writes` (answered repeats of a key are not).
Admin (tests and the demo):
  GET  /admin/state[?effects=0]
       → {"customers", "orders", "products", "effects", "applied_counts", "duplicates", "bad_records",
          "api_writes"}
  POST /admin/seed {"customers", "orders_per_customer", "seed", "with_bad_records"}
  POST /admin/customers, /admin/orders, /admin/products {record} → upsert (bumps version, updated_at):
       what a CRM user's edit does; not counted in api_writes
  POST /admin/webhooks {"url" (or a list of URLs), "secret", "events"} → 201 the subscription (no secret)
       400 no http(s) URL, no secret, or an unknown event kind
  GET  /admin/webhooks → {"subscriptions": [{"id", "urls", "events", "delivered", "failed_attempts",
       "last_error"}], "queued", "dropped", "given_up"}
Webhooks (deploy/demo/webhook_sender.py: signed `t=…,v1=…`, bounded queue, retried while the
receiver is down). Every upsert of a customer (admin, Python or the API's PATCH) sends
`customer.changed`; every upsert of an order whose stage is `won` sends `order.won`. The
body is `{"event", "event_id", "occurred_at", "data"}` and `data` is a PARTIAL record, as
real CRMs send: a customer without its address (`billing`), an order as its header (no
`lines`). `seed()` loads in bulk and sends none; status write-backs (erp_* fields) send none.
Python: `seed()`, `upsert_customer()`, `upsert_order()`, `upsert_product()`, `state()`, `customer()`,
`order()`, `product()`, `add_webhook()`, `webhook_stats()`.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

from deploy.demo.change_index import ChangeIndex
from deploy.demo.sample_server import (
    MonotonicClock,
    Request,
    Response,
    SampleService,
    error,
    parse_moment,
    query_int,
    run_main,
)
from deploy.demo.webhook_sender import Subscription, WebhookSender
from deploy.demo.write_ledger import WriteLedger

CRM_ZONE = timezone(timedelta(hours=8))
SEED_EPOCH = datetime(2026, 11, 24, 8, 0, 0, tzinfo=CRM_ZONE)
ERP_STATUSES = (
    "confirmed",
    "reserved",
    "shipped",
    "invoiced",
    "cancelled",
    # what order-to-cash flows report (deploy/demo/order_to_cash.yaml)
    "awaiting_approval",
    "out_of_stock",
    "rejected",
    "failed",
    "paid",
)

_COMPANIES = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
]
_FORMS = ["GmbH", "AG", "KG", "Ltd", "SARL", "BV"]
_CITIES = [
    ("Hauptstr.", "10115", "Berlin", "DE"),
    ("Marienplatz", "80331", "München", "DE"),
    ("Rue de Rivoli", "75001", "Paris", "FR"),
    ("Damrak", "1012", "Amsterdam", "NL"),
    ("Bahnhofstr.", "8001", "Zürich", "CH"),
]
_ITEMS = [
    ("WIDGET-1", "Widget", "19.90"),
    ("GADGET-7", "Gadget", "249.00"),
    ("BOLT-M8", "Bolt M8", "0.35"),
    ("CABLE-2M", "Cable 2 m", "7.49"),
    ("PANEL-XL", "Panel XL", "1299.00"),
]


class _Table(ChangeIndex):
    """Records of one entity, listed in (updated_at, id) order."""

    def __init__(self, id_field: str) -> None:
        super().__init__()
        self.id_field = id_field
        self.rows: dict[str, dict[str, Any]] = {}

    def put(self, record: dict[str, Any], moment: datetime | None = None) -> None:
        key = str(record[self.id_field])
        self.rows[key] = record
        self.touch(key, moment or parse_moment(record["updated_at"]))


class SampleCrm(SampleService):
    """SAMPLE CRM (sample, for the demo and tests, not a real CRM)."""

    name = "sample-crm"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, token: str | None = None, *, day_filter: bool = False
    ) -> None:
        super().__init__(host, port, token)
        self.day_filter = day_filter
        self.latency_s = 0.0
        self.api_reads: dict[str, int] = {}
        self.customers = _Table("customer_no")
        self.orders = _Table("order_no")
        self.products = _Table("sku")
        self.api_writes: dict[str, int] = {"customer": 0, "product": 0}
        self.writes = WriteLedger()
        self.bad_records: dict[str, list[str]] = {"customers": [], "orders": []}
        self.clock = MonotonicClock(CRM_ZONE, timedelta(milliseconds=1))
        self.webhooks = WebhookSender()

    def stop(self) -> None:
        self.webhooks.stop()
        super().stop()

    # ----- webhooks ----------------------------------------------------------------------
    def add_webhook(self, url: str | list[str], secret: str, events: list[str] | None = None) -> dict[str, Any]:
        """Subscribe `url` (or several, used in turn) to `events` (default: every kind); ValueError if invalid."""
        urls = [url] if isinstance(url, str) else list(url)
        subscription: Subscription = self.webhooks.subscribe(urls, secret, events)
        return subscription.public()

    def webhook_stats(self) -> dict[str, Any]:
        return self.webhooks.stats()

    def _announce(self, table: _Table, record: dict[str, Any]) -> None:
        """Queue the webhook event of a changed record, with the partial payload a CRM sends."""
        if table is self.customers:
            self.webhooks.emit("customer.changed", record["updated_at"], _without(record, "billing"))
        elif table is self.orders and record.get("stage") == "won":
            self.webhooks.emit("order.won", record["updated_at"], _without(record, "lines"))

    # ----- data --------------------------------------------------------------------------
    def _stamp(self) -> str:
        return self.clock.next().isoformat(timespec="milliseconds")

    def upsert_customer(self, record: dict[str, Any]) -> dict[str, Any]:
        """Create or change a customer (merging fields); bumps version and updated_at."""
        return self._upsert(self.customers, record, {})

    def upsert_order(self, record: dict[str, Any]) -> dict[str, Any]:
        """Create or change an order (merging fields); bumps version and updated_at."""
        return self._upsert(self.orders, record, {"erp_status": None, "erp_status_at": None})

    def upsert_product(self, record: dict[str, Any]) -> dict[str, Any]:
        """Create or change a product (merging fields); bumps version and updated_at."""
        return self._upsert(self.products, record, {"active": True})

    def _upsert(self, table: _Table, record: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        key = record.get(table.id_field)
        if not key:
            raise ValueError(f"record needs {table.id_field!r}")
        with self.lock:
            return self._merge(table, record, defaults)

    def _merge(self, table: _Table, record: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        """Merge `record` into its row (the caller holds the lock); bumps version and updated_at."""
        old = table.rows.get(str(record[table.id_field]), {})
        version = int(old.get("version", 0)) + 1
        merged = {**defaults, **old, **record, "version": version, "updated_at": self._stamp()}
        table.put(merged)
        self._announce(table, merged)
        return dict(merged)

    def customer(self, customer_no: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.customers.rows.get(customer_no)
            return dict(found) if found else None

    def order(self, order_no: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.orders.rows.get(order_no)
            return dict(found) if found else None

    def product(self, sku: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.products.rows.get(sku)
            return dict(found) if found else None

    def seed(
        self,
        customers: int = 10,
        orders_per_customer: int = 2,
        seed: int = 42,
        with_bad_records: bool = True,
        epoch: datetime = SEED_EPOCH,
    ) -> dict[str, Any]:
        """Add deterministic customers and orders (same arguments → same records and timestamps).

        Every 10th customer is archived; orders are mostly 'won', some 'open' and 'lost'. With
        `with_bad_records`: the last customer has an empty company name (the ERP rejects it
        with 400) and no orders; the first order is 'won' and has a line with qty "abc" (its
        mapping fails).
        Their ids are in `bad_records`. updated_at values start at `epoch` (default
        2026-11-24T08:00:00+08:00), 10 ms apart; later changes follow the CRM's clock.
        """
        rng = random.Random(seed)
        moment = epoch
        new_customers: list[dict[str, Any]] = []
        new_orders: list[dict[str, Any]] = []
        bad: dict[str, list[str]] = {"customers": [], "orders": []}
        order_seq = 5000
        for i in range(customers):
            customer_no = f"C-{1001 + i}"
            street, zip_code, city, country = _CITIES[rng.randrange(len(_CITIES))]
            base = _COMPANIES[i % len(_COMPANIES)]
            is_bad = with_bad_records and i == customers - 1
            moment += timedelta(milliseconds=10)
            new_customers.append(
                {
                    "customer_no": customer_no,
                    "company": "" if is_bad else f"{base} {i + 1} {rng.choice(_FORMS)}",
                    "email": f"Sales{i + 1}@{base}.example",
                    "phone": f"+49 30 {rng.randrange(1000, 9999)}",
                    "vat": f"{country}{rng.randrange(100000000, 999999999)}",
                    "tier": rng.choice(["gold", "silver", "silver", "bronze", "bronze"]),
                    "status": "archived" if i % 10 == 9 else "active",
                    "billing": {
                        "street": f"{street} {rng.randrange(1, 200)}",
                        "zip": zip_code,
                        "city": city,
                        "country": country,
                    },
                    "updated_at": moment.isoformat(timespec="milliseconds"),
                    "version": 1,
                }
            )
            if is_bad:
                bad["customers"].append(customer_no)
                continue
            for _ in range(orders_per_customer):
                order_seq += 1
                order_no = f"SO-{order_seq}"
                roll = rng.random()
                lines = []
                for _line in range(rng.randrange(1, 4)):
                    sku, desc, price = _ITEMS[rng.randrange(len(_ITEMS))]
                    lines.append({"sku": sku, "desc": desc, "qty": str(rng.randrange(1, 20)), "price": price})
                stage = "won" if roll < 0.7 else ("open" if roll < 0.9 else "lost")
                if with_bad_records and not bad["orders"]:
                    lines[0]["qty"] = "abc"
                    stage = "won"  # so that the pipeline tries it and its mapping fails
                    bad["orders"].append(order_no)
                moment += timedelta(milliseconds=10)
                new_orders.append(
                    {
                        "order_no": order_no,
                        "customer_no": customer_no,
                        "placed_at": (moment - timedelta(minutes=5)).isoformat(timespec="milliseconds"),
                        "currency": "EUR" if rng.random() < 0.8 else "USD",
                        "stage": stage,
                        "lines": lines,
                        "updated_at": moment.isoformat(timespec="milliseconds"),
                        "version": 1,
                        "erp_status": None,
                        "erp_status_at": None,
                    }
                )
        with self.lock:
            for record in new_customers:
                self.customers.put(record)
            for record in new_orders:
                self.orders.put(record)
            self.clock.at_least(moment)
            for kind in ("customers", "orders"):
                self.bad_records[kind].extend(bad[kind])
        return {"customers": len(new_customers), "orders": len(new_orders), "bad_records": bad}

    def state(self, with_effects: bool = True) -> dict[str, Any]:
        with self.lock:
            return {
                "customers": len(self.customers.rows),
                "orders": len(self.orders.rows),
                "products": len(self.products.rows),
                "effects": list(self.writes.effects) if with_effects else [],
                "applied_counts": dict(self.writes.applied_counts),
                "duplicates": self.writes.duplicates,
                "bad_records": {k: list(v) for k, v in self.bad_records.items()},
                "api_writes": dict(self.api_writes),
            }

    # ----- HTTP --------------------------------------------------------------------------
    def route(self, request: Request) -> Response:
        method, path = request.method, request.path.rstrip("/")
        parts = path.split("/")
        if path.startswith("/api/"):
            if self.latency_s:
                time.sleep(self.latency_s)
            if method == "GET":
                with self.lock:
                    self.api_reads[path] = self.api_reads.get(path, 0) + 1
        if method == "GET" and path in ("/api/accounts", "/api/directory"):
            return self._accounts(request, split=path == "/api/directory")
        if len(parts) == 4 and parts[:3] == ["", "api", "accounts"] and method == "GET":
            found = self.customer(parts[3])
            return Response(200, found) if found else error(404, f"unknown account {parts[3]!r}")
        if method == "GET" and path == "/api/customers":
            return self._list(self.customers, request)
        if method == "GET" and path == "/api/orders":
            return self._list(self.orders, request)
        if method == "GET" and path == "/api/products":
            return self._list(self.products, request)
        if len(parts) == 4 and parts[:3] == ["", "api", "customers"]:
            if method == "GET":
                found = self.customer(parts[3])
                return Response(200, found) if found else error(404, f"unknown customer {parts[3]!r}")
            if method == "PATCH":
                return self._patch_record("customer", self.customers, {}, parts[3], request)
        if len(parts) == 4 and parts[:3] == ["", "api", "products"]:
            if method == "GET":
                found = self.product(parts[3])
                return Response(200, found) if found else error(404, f"unknown product {parts[3]!r}")
            if method == "PATCH":
                return self._patch_record("product", self.products, {"active": True}, parts[3], request)
        if len(parts) == 4 and parts[:3] == ["", "api", "orders"]:
            if method == "GET":
                found = self.order(parts[3])
                return Response(200, found) if found else error(404, f"unknown order {parts[3]!r}")
            if method == "PATCH":
                return self._patch_order(parts[3], request)
        return error(404, f"no route for {method} {path}")

    def _accounts(self, request: Request, split: bool) -> Response:
        """Customers in customer_no order, unfiltered: a list API without changed-since."""
        try:
            page = query_int(request, "page", 1, 1, 10**9)
            size = query_int(request, "page_size", 100, 1, 1000)
        except ValueError as exc:
            return error(400, f"bad query: {exc}")
        with self.lock:
            keys = sorted(self.customers.rows)
            start = (page - 1) * size
            rows = [dict(self.customers.rows[key]) for key in keys[start : start + size]]
            has_more = start + size < len(keys)
        if not split:
            return Response(200, {"data": rows, "page": page, "has_more": has_more})
        active = [row for row in rows if row.get("status") != "archived"]
        archived = [row for row in rows if row.get("status") == "archived"]
        return Response(200, {"active": active, "archived": archived, "page": page, "has_more": has_more})

    def _since(self, text: str | None) -> datetime | None:
        """The moment `updated_since` asks from; with day_filter a day (YYYY-MM-DD, CRM time), else ISO 8601."""
        if not text:
            return None
        if self.day_filter:
            try:
                day = date.fromisoformat(text) if len(text) == 10 else None
            except ValueError:
                day = None
            if day is None:
                raise ValueError(f"updated_since takes a day (YYYY-MM-DD) here, not {text!r}")
            return datetime(day.year, day.month, day.day, tzinfo=CRM_ZONE)
        return parse_moment(text)

    def _list(self, table: _Table, request: Request) -> Response:
        try:
            since = self._since(request.query.get("updated_since"))
            page = query_int(request, "page", 1, 1, 10**9)
            size = query_int(request, "page_size", 100, 1, 1000)
        except ValueError as exc:
            return error(400, f"bad query: {exc}")
        with self.lock:
            matching = table.since(since)
            start = (page - 1) * size
            rows = [table.rows[key] for _, key in matching[start : start + size]]
            has_more = start + size < len(matching)
            if table is self.orders and request.query.get("embed") == "customer":
                rows = [{**row, "customer": self.customers.rows.get(str(row.get("customer_no")))} for row in rows]
        return Response(200, {"data": rows, "page": page, "has_more": has_more})

    def _patch_order(self, order_no: str, request: Request) -> Response:
        body = request.json_object()
        status = body.get("erp_status")
        if status not in ERP_STATUSES:
            return error(400, f"erp_status must be one of {', '.join(ERP_STATUSES)}; got {status!r}")
        key = request.header("idempotency-key")
        with self.lock:
            current = self.orders.rows.get(order_no)
            if current is None:
                return error(404, f"unknown order {order_no!r}")
            repeated = self.writes.repeat(key)
            if repeated is not None:
                return repeated
            extra = {k: v for k, v in body.items() if k.startswith("erp_") and k not in ("erp_status", "erp_status_at")}
            updated = {**current, **extra, "erp_status": status, "erp_status_at": body.get("erp_status_at")}
            self.orders.put(updated, self.orders.moments[order_no])
            answer = Response(200, updated)
            self.writes.applied(
                key, answer, method="PATCH", path=request.path, entity="order", id=order_no, erp_status=status
            )
        return answer

    def _patch_record(
        self, entity: str, table: _Table, defaults: dict[str, Any], key: str, request: Request
    ) -> Response:
        """Create or change one customer or product through the API, as an integration does."""
        body = request.json_object()
        if str(body.get(table.id_field, key)) != key:
            return error(400, f"{table.id_field} {body.get(table.id_field)!r} does not match the path ({key!r})")
        changes = {k: v for k, v in body.items() if k not in ("version", "updated_at")}
        idempotency_key = request.header("idempotency-key")
        with self.lock:
            repeated = self.writes.repeat(idempotency_key)
            if repeated is not None:
                return repeated
            updated = self._merge(table, {**changes, table.id_field: key}, defaults)
            self.api_writes[entity] += 1
            answer = Response(200, updated)
            fields = sorted(k for k in changes if k != table.id_field)
            self.writes.applied(
                idempotency_key, answer, method="PATCH", path=request.path, entity=entity, id=key, fields=fields
            )
        return answer

    def admin(self, request: Request) -> Response:
        """`GET /admin/webhooks` (delivery stats, never the secret), else what every sample answers."""
        if request.method == "GET" and request.path.rstrip("/") == "/admin/webhooks":
            return Response(200, self.webhook_stats())
        return super().admin(request)

    def admin_action(self, path: str, body: Any) -> Response | None:
        if path == "/admin/seed":
            return Response(
                200,
                self.seed(
                    customers=int(body.get("customers", 10)),
                    orders_per_customer=int(body.get("orders_per_customer", 2)),
                    seed=int(body.get("seed", 42)),
                    with_bad_records=bool(body.get("with_bad_records", True)),
                ),
            )
        if path == "/admin/customers":
            return Response(200, self.upsert_customer(body))
        if path == "/admin/orders":
            return Response(200, self.upsert_order(body))
        if path == "/admin/products":
            return Response(200, self.upsert_product(body))
        if path == "/admin/webhooks":
            if not isinstance(body, dict):
                return error(400, "body must be an object: {url, secret, events}")
            url = body.get("url")
            if not isinstance(url, str | list):
                return error(400, "url must be an http(s) URL or a list of them")
            return Response(201, self.add_webhook(url, str(body.get("secret") or ""), body.get("events")))
        return None


def _without(record: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != field}


def main(argv: list[str] | None = None) -> int:
    def add_arguments(parser: Any) -> None:
        parser.add_argument("--customers", type=int, default=0, help="seed this many customers at start")
        parser.add_argument("--orders-per-customer", type=int, default=2)
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--no-bad-records", action="store_true", help="seed only valid records")
        parser.add_argument("--latency-ms", type=float, default=0.0, help="delay every /api/ answer (a remote CRM)")

    def build(args: Any) -> SampleCrm:
        crm = SampleCrm(args.host, args.port, args.token)
        crm.latency_s = args.latency_ms / 1000
        if args.customers:
            crm.seed(args.customers, args.orders_per_customer, args.seed, with_bad_records=not args.no_bad_records)
        return crm

    return run_main("SAMPLE CRM (for the Isthmus demo and tests)", 8801, build, add_arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
