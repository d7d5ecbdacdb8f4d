"""SAMPLE ERP — sample, for the demo and tests, not a real CRM/ERP.

An in-memory ERP over HTTP. Money and quantities are parsed as exact decimals (JSON numbers
or numeric strings are accepted) and answered as strings ("19.90"), as many ERPs do.

API (bearer token required when `token` is set; `/admin/*` never needs it):
  POST /api/accounts {"account_name", "external_ref", "email", "phone", "vat_number",
                      "customer_group", "blocked", "address": {...}} → 201 {"id": "A000001", ...}
       400 {"error": "account_name is required"} when it is missing or blank
  PUT  /api/accounts/{id}  → 200 the account (fields merged); 404 unknown
       Every account carries `changed_at` (UTC, strictly increasing, set by each create and change)
  GET  /api/accounts?changed_since=ISO&offset=N&limit=M, /api/sales-orders?changed_since=ISO&offset=N&limit=M
       → {"items": [...], "total": N}: the records as GET by id answers them, sorted by
       (changed_at, id), changed_at >= changed_since; limit 1..1000 (default 100). A sales
       order's changed_at moves with its status (what a two-way sync or a reconciliation reads)
  GET  /api/accounts?external_ref=X, /api/sales-orders?external_ref=X
       → {"items": [records with that external_ref, oldest first], "total": N} (how a writer finds one by key)
  POST /api/sales-orders {"account_id", "external_ref", "order_date", "currency",
                          "lines": [{"line_no", "item", "quantity", "unit_price"}]}
       → 201 {"id": "SO00001", "status": "NEW", ...}; 422 unknown account_id; 400 bad lines (`lines`
       given must be a non-empty list of valid lines; without `lines` the order is a header, lines [])
  PUT  /api/sales-orders/{id} → 200 (status is the ERP's own and cannot be written)
  GET  /api/accounts/{id}, /api/sales-orders/{id}
  GET  /api/accounts?external_ref=X, /api/sales-orders?external_ref=X
       → {"items": [records with that external_ref, oldest first]} (how a writer finds a record by key)
  GET  /api/order-status?changed_since=ISO&offset=N&limit=M
       → {"items": [{"order_id", "external_ref", "status", "changed_at", "version"}], "total": N}
       sorted by (changed_at, order_id); changed_at >= changed_since; limit 1..1000 (default 100)
Every write honours `Idempotency-Key`: a key already applied is answered with the first
response and not applied again (counted in `duplicates`). Each applied write is one entry
in the effect log, so a test can assert that every message's effect landed exactly once.

Status flows back: each sales order advances NEW → RSV → SHP → INV, one step every
`advance_every_s` (0 = only when `advance_all()` is called); every step sets `changed_at`
(UTC, strictly increasing) and bumps the version.
Admin (tests, bench and the demo):
  GET  /admin/state[?effects=0]
       → {"accounts", "orders", "effects", "applied_counts", "duplicates", "statuses"}
  POST /admin/fail-next {"n", "status", "retry_after"}   POST /admin/latency {"seconds"}
  POST /admin/advance → {"advanced": n}
Python: `fail_next()`, `set_latency()`, `advance_all()`, `state()`, `account()`, `sales_order()`.
"""

from __future__ import annotations

import bisect
import sys
import threading
import time
from datetime import UTC, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Self

from deploy.demo.change_index import ChangeIndex
from deploy.demo.sample_server import (
    MonotonicClock,
    Request,
    Response,
    SampleService,
    error,
    parse_moment,
    query_int,
    query_moment,
    run_main,
)
from deploy.demo.write_ledger import WriteLedger

STATUS_FLOW = {"NEW": "RSV", "RSV": "SHP", "SHP": "INV"}


class SampleErp(SampleService):
    """SAMPLE ERP (sample, for the demo and tests, not a real ERP)."""

    name = "sample-erp"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        advance_every_s: float = 1.0,
        dedupe: bool = True,
    ) -> None:
        super().__init__(host, port, token)
        self.advance_every_s = advance_every_s
        self.accounts: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.writes = WriteLedger(dedupe)
        self._status_changes = ChangeIndex()
        self._fail_remaining = 0
        self._fail_status = 503
        self._fail_retry_after: float | None = None
        self._latency_s = 0.0
        self._clock = MonotonicClock(UTC, timedelta(microseconds=1))
        self._stop_advancing = threading.Event()
        self._advancer: threading.Thread | None = None

    # ----- lifecycle ---------------------------------------------------------------------
    def start(self) -> Self:
        super().start()
        if self.advance_every_s > 0:
            self._stop_advancing.clear()
            self._advancer = threading.Thread(target=self._advance_loop, name="sample-erp-advance", daemon=True)
            self._advancer.start()
        return self

    def stop(self) -> None:
        self._stop_advancing.set()
        if self._advancer is not None:
            self._advancer.join(5)
            self._advancer = None
        super().stop()

    def _advance_loop(self) -> None:
        while not self._stop_advancing.wait(self.advance_every_s):
            self.advance_all()

    # ----- test hooks --------------------------------------------------------------------
    def fail_next(self, n: int, status: int = 503, retry_after: float | None = None) -> None:
        """Answer the next `n` /api requests with `status` (and Retry-After if given), applying nothing."""
        with self.lock:
            self._fail_remaining = n
            self._fail_status = status
            self._fail_retry_after = retry_after

    def set_latency(self, seconds: float) -> None:
        """Delay every /api request by `seconds` before handling it."""
        self._latency_s = max(0.0, seconds)

    def advance_all(self) -> int:
        """Move every sales order not yet invoiced one status step on; returns how many moved."""
        with self.lock:
            moved = 0
            for order_id, order in list(self.orders.items()):
                following = STATUS_FLOW.get(order["status"])
                if following is None:
                    continue
                self._set_status(order_id, {**order, "version": order["version"] + 1}, following)
                moved += 1
            return moved

    def account(self, account_id: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.accounts.get(account_id)
            return dict(found) if found else None

    def sales_order(self, order_id: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.orders.get(order_id)
            return dict(found) if found else None

    def state(self, with_effects: bool = True) -> dict[str, Any]:
        with self.lock:
            statuses: dict[str, int] = {}
            for order in self.orders.values():
                statuses[order["status"]] = statuses.get(order["status"], 0) + 1
            return {
                "accounts": len(self.accounts),
                "orders": len(self.orders),
                "effects": list(self.writes.effects) if with_effects else [],
                "applied_counts": dict(self.writes.applied_counts),
                "duplicates": self.writes.duplicates,
                "statuses": statuses,
            }

    # ----- HTTP --------------------------------------------------------------------------
    def route(self, request: Request) -> Response:
        method, path = request.method, request.path.rstrip("/")
        if self._latency_s:
            time.sleep(self._latency_s)
        injected = self._injected_failure()
        if injected is not None:
            return injected
        parts = path.split("/")
        if method == "GET" and path == "/api/order-status":
            return self._order_status(request)
        if method == "GET" and path in ("/api/accounts", "/api/sales-orders"):
            return self._list(self.accounts if path == "/api/accounts" else self.orders, request)
        if len(parts) >= 3 and parts[1] == "api" and parts[2] in ("accounts", "sales-orders"):
            kind = parts[2]
            if len(parts) == 3 and method == "POST":
                return self._write(request, kind, None)
            if len(parts) == 3 and method == "GET":
                return self._find(kind, request.query.get("external_ref"))
            if len(parts) == 4 and method == "PUT":
                return self._write(request, kind, parts[3])
            if len(parts) == 4 and method == "GET":
                found = self.account(parts[3]) if kind == "accounts" else self.sales_order(parts[3])
                return Response(200, found) if found else error(404, f"unknown {kind[:-1]} {parts[3]!r}")
        return error(404, f"no route for {method} {path}")

    def _find(self, kind: str, external_ref: str | None) -> Response:
        if not external_ref:
            return error(400, "give ?external_ref=")
        with self.lock:
            rows = self.accounts if kind == "accounts" else self.orders
            items = [dict(r) for _, r in sorted(rows.items()) if r.get("external_ref") == external_ref]
        return Response(200, {"items": items})

    def _injected_failure(self) -> Response | None:
        with self.lock:
            if self._fail_remaining <= 0:
                return None
            self._fail_remaining -= 1
            headers = {}
            if self._fail_retry_after is not None:
                headers["Retry-After"] = f"{self._fail_retry_after:g}"
            return Response(self._fail_status, {"error": "injected failure (sample ERP)"}, headers)

    def _write(self, request: Request, kind: str, record_id: str | None) -> Response:
        body = request.json_object()
        key = request.header("idempotency-key")
        with self.lock:
            repeated = self.writes.repeat(key)
            if repeated is not None:
                return repeated
            if kind == "accounts":
                response = self._apply_account(body, record_id)
            else:
                response = self._apply_sales_order(body, record_id)
            if response.status < 300:
                entity = "account" if kind == "accounts" else "sales_order"
                self.writes.applied(
                    key, response, method=request.method, path=request.path, entity=entity, id=response.body["id"]
                )
            return response

    def _apply_account(self, body: dict[str, Any], account_id: str | None) -> Response:
        body = {k: v for k, v in body.items() if k not in ("id", "version", "changed_at")}
        if account_id is None:
            name = body.get("account_name")
            if not isinstance(name, str) or not name.strip():
                return error(400, "account_name is required")
            account_id = f"A{len(self.accounts) + 1:06d}"
            record = {"id": account_id, **body, "version": 1, "changed_at": self._clock.next().isoformat()}
            self.accounts[account_id] = record
            return Response(201, record)
        current = self.accounts.get(account_id)
        if current is None:
            return error(404, f"unknown account {account_id!r}")
        if "account_name" in body and (not isinstance(body["account_name"], str) or not body["account_name"].strip()):
            return error(400, "account_name is required")
        record = {**current, **body, "version": current["version"] + 1, "changed_at": self._clock.next().isoformat()}
        self.accounts[account_id] = record
        return Response(200, record)

    def _apply_sales_order(self, body: dict[str, Any], order_id: str | None) -> Response:
        body = {k: v for k, v in body.items() if k not in ("id", "version", "status", "changed_at")}
        if order_id is not None and order_id not in self.orders:
            return error(404, f"unknown sales order {order_id!r}")
        if order_id is None or "account_id" in body:
            account_id = body.get("account_id")
            if account_id not in self.accounts:
                return error(422, f"unknown account_id {account_id!r}")
        if "lines" in body:
            lines, problem = _checked_lines(body.get("lines"))
            if problem:
                return error(400, problem)
            body["lines"] = lines
        elif order_id is None:
            body["lines"] = []  # a header without lines, as ERPs take a draft order; its lines come later
        if order_id is None:
            order_id = f"SO{len(self.orders) + 1:05d}"
            self._set_status(order_id, {"id": order_id, **body, "version": 1}, "NEW")
            return Response(201, self.orders[order_id])
        current = self.orders[order_id]
        record = {**current, **body, "version": current["version"] + 1}
        self.orders[order_id] = record
        return Response(200, record)

    def _set_status(self, order_id: str, order: dict[str, Any], status: str) -> None:
        moment = self._clock.next()
        self.orders[order_id] = {**order, "status": status, "changed_at": moment.isoformat()}
        self._status_changes.touch(order_id, moment)

    def _list(self, table: dict[str, dict[str, Any]], request: Request) -> Response:
        """Accounts or sales orders changed since a moment, oldest change first, a page at a time;
        with `external_ref=X` only the records holding it, oldest first (how a writer finds one by key)."""
        external_ref = request.query.get("external_ref")
        if external_ref is not None:
            with self.lock:
                items = [dict(r) for _, r in sorted(table.items()) if r.get("external_ref") == external_ref]
            return Response(200, {"items": items, "total": len(items)})
        try:
            since_text = request.query.get("changed_since")
            since = parse_moment(since_text) if since_text else None
            offset = query_int(request, "offset", 0, 0, 10**9)
            limit = query_int(request, "limit", 100, 1, 1000)
        except ValueError as exc:
            return error(400, f"bad query: {exc}")
        with self.lock:
            ordered = sorted((parse_moment(r["changed_at"]), key) for key, r in table.items())
            matching = ordered[bisect.bisect_left(ordered, (since, "")) :] if since else ordered
            items = [dict(table[key]) for _, key in matching[offset : offset + limit]]
            return Response(200, {"items": items, "total": len(matching)})

    def _order_status(self, request: Request) -> Response:
        since = query_moment(request, "changed_since")
        offset = query_int(request, "offset", 0, 0, 10**9)
        limit = query_int(request, "limit", 100, 1, 1000)
        with self.lock:
            matching = self._status_changes.since(since)
            items = []
            for _, order_id in matching[offset : offset + limit]:
                order = self.orders[order_id]
                items.append(
                    {
                        "order_id": order_id,
                        "external_ref": order.get("external_ref"),
                        "status": order["status"],
                        "changed_at": order["changed_at"],
                        "version": order["version"],
                    }
                )
            return Response(200, {"items": items, "total": len(matching)})

    def admin_action(self, path: str, body: Any) -> Response | None:
        if path == "/admin/fail-next":
            retry_after = body.get("retry_after")
            self.fail_next(
                int(body.get("n", 1)),
                int(body.get("status", 503)),
                None if retry_after is None else float(retry_after),
            )
            return Response(200, {"ok": True})
        if path == "/admin/latency":
            self.set_latency(float(body.get("seconds", 0)))
            return Response(200, {"ok": True})
        if path == "/admin/advance":
            return Response(200, {"advanced": self.advance_all()})
        return None


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            return None
        return parsed if parsed.is_finite() else None
    return None


def _checked_lines(lines: Any) -> tuple[list[dict[str, Any]], str]:
    if not isinstance(lines, list) or not lines:
        return [], "lines must be a non-empty list"
    checked = []
    for i, line in enumerate(lines):
        if not isinstance(line, dict):
            return [], f"lines[{i}] must be an object"
        quantity, price = _decimal(line.get("quantity")), _decimal(line.get("unit_price"))
        if quantity is None:
            return [], f"lines[{i}].quantity must be a number, got {line.get('quantity')!r}"
        if price is None:
            return [], f"lines[{i}].unit_price must be a number, got {line.get('unit_price')!r}"
        checked.append({**line, "quantity": quantity, "unit_price": price})
    return checked, ""


def main(argv: list[str] | None = None) -> int:
    def add_arguments(parser: Any) -> None:
        parser.add_argument(
            "--advance-every",
            type=float,
            default=1.0,
            help="seconds between status steps of every sales order (0 = never)",
        )

    def build(args: Any) -> SampleErp:
        return SampleErp(args.host, args.port, args.token, advance_every_s=args.advance_every)

    return run_main("SAMPLE ERP (for the Isthmus demo and tests)", 8802, build, add_arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
