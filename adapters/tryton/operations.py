"""Named operations on Tryton that flows call (`kind: call` steps, see middleware/flows).

Each takes a JSON object of parameters and returns one; numbers that are money come back as
text (exact). Every operation reads the current state first and does only what is still to
do, so calling it again after a crash or a redelivery changes nothing more (idempotent).
Tryton's refusals are `TrytonUserError` (permanent: the flow fails the step and
compensates); no answer, 5xx or a lock conflict are transient (the step is retried).

Operations (parameters → result):

* `sale.totals` (sale) → number, reference, state, untaxed_amount, tax_amount, total_amount,
  currency: the sale's amounts as Tryton computes them.
* `sale.check_stock` (sale) → available, lines, shortages, summary: each product's ordered
  quantity against its forecast quantity in the sale's warehouse (what is on hand minus what
  confirmed sales already plan to ship); units are taken as the product's default unit.
* `sale.confirm` (sale) → state, number, shipments, invoices: quotes a draft, confirms a
  quotation; Tryton then makes the customer shipment and the invoice.
* `sale.reserve` (sale) → reserved, shipment_number, shipment_status, planned_date, summary:
  the sale's waiting shipments try to reserve their stock; `reserved` is false (not an
  error) when one could not reserve everything.
* `sale.cancel` (sale) → state, cancelled, detail: cancels a draft, quotation or confirmed
  sale; of a processing one, cancels the open shipments and draft invoices and says so.
* `note.add` (model, record, message) → note, created: attaches a note to a record (once per
  text), shown on the record in Tryton's client.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from adapters.tryton.rpc import TrytonRpc
from adapters.tryton.workflow import SHIPMENT, SaleWorkflow
from middleware.errors import PermanentError

SALE = "sale.sale"
RESERVED_STATES = ("assigned", "picked", "packed", "shipped", "done")
OPEN_SHIPMENT_STATES = ("draft", "waiting", "assigned", "picked", "packed")

OPERATIONS: dict[str, str] = {
    "sale.totals": "read a sale's amounts (params: sale)",
    "sale.check_stock": "is every line's product available in the sale's warehouse? (params: sale)",
    "sale.confirm": "quote and confirm a sale; Tryton makes its shipment and invoice (params: sale)",
    "sale.reserve": "reserve the stock of a confirmed sale's shipments (params: sale)",
    "sale.cancel": "cancel a sale, or the open shipments and draft invoices of a processing one (params: sale)",
    "note.add": "attach a note to a record, once per text (params: model, record, message)",
}


class TrytonOperations:
    """The operations of OPERATIONS over one adapter's RPC session.

    A Messaging Gateway (enterprise integration patterns): flows call `sale.confirm` and the
    rest by name through `TrytonAdapter.call` (the `Caller` protocol), never Tryton's RPC.
    """

    def __init__(self, rpc: TrytonRpc, system: str) -> None:
        self.rpc = rpc
        self.system = system
        self.workflow = SaleWorkflow(rpc)
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "sale.totals": self.sale_totals,
            "sale.check_stock": self.sale_check_stock,
            "sale.confirm": self.sale_confirm,
            "sale.reserve": self.sale_reserve,
            "sale.cancel": self.sale_cancel,
            "note.add": self.note_add,
        }

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        handler = self._handlers.get(operation)
        if handler is None:
            raise PermanentError(
                f"Tryton has no operation {operation!r}; known: {', '.join(self._handlers)}", system=self.system
            )
        return handler(params)

    # ----- sales --------------------------------------------------------------------------
    def sale_totals(self, params: dict[str, Any]) -> dict[str, Any]:
        sale = self._sale(params)
        fields = ["number", "reference", "state", "untaxed_amount", "tax_amount", "total_amount", "currency.code"]
        row = self.rpc.model(SALE, "read", [sale], fields)[0]
        return {
            "sale": sale,
            "number": row.get("number"),
            "reference": row.get("reference"),
            "state": row["state"],
            "untaxed_amount": _money(row.get("untaxed_amount")),
            "tax_amount": _money(row.get("tax_amount")),
            "total_amount": _money(row.get("total_amount")),
            "currency": (row.get("currency.") or {}).get("code"),
        }

    def sale_check_stock(self, params: dict[str, Any]) -> dict[str, Any]:
        sale = self._sale(params)
        row = self.rpc.model(SALE, "read", [sale], ["warehouse", "lines"])[0]
        lines = self._read("sale.line", row["lines"], ["type", "product", "quantity"])
        ordered: dict[int, Decimal] = {}
        for line in lines:
            if line.get("type", "line") == "line" and line.get("product"):
                product = int(line["product"])
                ordered[product] = ordered.get(product, Decimal(0)) + Decimal(str(line.get("quantity") or 0))
        if not ordered:
            return {"available": True, "lines": [], "shortages": [], "summary": "nothing to ship"}
        context = {"locations": [row["warehouse"]]} if row.get("warehouse") else {}
        products = self.rpc.model(
            "product.product", "read", sorted(ordered), ["code", "type", "forecast_quantity"], context=context
        )
        checked = []
        for product in products:
            if product.get("type") not in (None, "goods", "assets"):
                continue  # services are not stocked
            available = Decimal(str(product.get("forecast_quantity") or 0))
            wanted = ordered[int(product["id"])]
            checked.append(
                {
                    "sku": product.get("code"),
                    "ordered": _number(wanted),
                    "available": _number(available),
                    "short": wanted > available,
                }
            )
        shortages = [line for line in checked if line.pop("short")]
        summary = (
            "; ".join(f"{s['sku']}: ordered {s['ordered']}, available {s['available']}" for s in shortages)
            or "every line is available"
        )
        return {"available": not shortages, "lines": checked, "shortages": shortages, "summary": summary}

    def sale_confirm(self, params: dict[str, Any]) -> dict[str, Any]:
        sale = self._sale(params)
        state = self._state(sale)
        if state == "draft":
            self.rpc.model(SALE, "quote", [sale])
            state = "quotation"
        if state == "quotation":
            self.rpc.model(SALE, "confirm", [sale])
        elif state not in ("confirmed", "processing", "done"):
            raise PermanentError(f"sale {sale} is {state}: it cannot be confirmed", system=self.system)
        row = self.rpc.model(SALE, "read", [sale], ["state", "number", "shipments", "invoices"])[0]
        return {
            "sale": sale,
            "state": row["state"],
            "number": row.get("number"),
            "shipments": row.get("shipments") or [],
            "invoices": row.get("invoices") or [],
        }

    def sale_reserve(self, params: dict[str, Any]) -> dict[str, Any]:
        sale = self._sale(params)
        failed: dict[int, str] = {}
        self.workflow.reserve([sale], failed)
        row = self.rpc.model(SALE, "read", [sale], ["state", "shipments", "shipment_state"])[0]
        shipment_ids = row.get("shipments") or []
        shipments = self._read(SHIPMENT, shipment_ids, ["number", "state", "planned_date"])
        open_ = [s for s in shipments if s["state"] != "cancelled"]
        reserved = bool(open_) and all(s["state"] in RESERVED_STATES for s in open_) and sale not in failed
        first = open_[0] if open_ else {}
        if reserved:
            summary = "reserved"
        elif sale in failed:
            summary = failed[sale]
        elif not open_:
            summary = "the sale has no shipment to reserve"
        else:
            waiting = ", ".join(str(s.get("number") or s["id"]) for s in open_ if s["state"] not in RESERVED_STATES)
            summary = f"shipment {waiting} could not reserve all of its stock"
        planned = first.get("planned_date")
        return {
            "sale": sale,
            "reserved": reserved,
            "shipment_state": row.get("shipment_state"),
            "shipments": [{"id": s["id"], "number": s.get("number"), "state": s["state"]} for s in shipments],
            "shipment_number": first.get("number"),
            "shipment_status": first.get("state"),
            "planned_date": planned.isoformat() if planned is not None else None,
            "summary": summary,
        }

    def sale_cancel(self, params: dict[str, Any]) -> dict[str, Any]:
        sale = self._sale(params)
        state = self._state(sale)
        if state == "confirmed":
            self.rpc.model(SALE, "draft", [sale])
            state = "draft"
        if state in ("draft", "quotation"):
            self.rpc.model(SALE, "cancel", [sale])
            return {"sale": sale, "state": "cancelled", "cancelled": True, "detail": f"sale {sale} cancelled"}
        if state == "cancelled":
            return {"sale": sale, "state": state, "cancelled": True, "detail": f"sale {sale} was already cancelled"}
        # processing or done: undo what has not happened yet; Tryton shows the rest as exceptions to handle
        row = self.rpc.model(SALE, "read", [sale], ["shipments", "invoices"])[0]
        shipments = self._read(SHIPMENT, row.get("shipments") or [], ["state"])
        open_shipments = [int(s["id"]) for s in shipments if s["state"] in OPEN_SHIPMENT_STATES]
        if open_shipments:
            self.rpc.model(SHIPMENT, "cancel", open_shipments)
        invoices = self._read("account.invoice", row.get("invoices") or [], ["state"])
        drafts = [int(i["id"]) for i in invoices if i["state"] in ("draft", "validated")]
        if drafts:
            self.rpc.model("account.invoice", "cancel", drafts)
        return {
            "sale": sale,
            "state": state,
            "cancelled": False,
            "detail": f"sale {sale} is {state}: cancelled {len(open_shipments)} open shipment(s) and {len(drafts)} "
            "draft invoice(s); what was shipped or posted stays, for a user to handle in Tryton",
        }

    # ----- notes --------------------------------------------------------------------------
    def note_add(self, params: dict[str, Any]) -> dict[str, Any]:
        model = params.get("model")
        record = _record_id(params.get("record"), "record", self.system)
        message = params.get("message")
        if not isinstance(model, str) or not model or not isinstance(message, str) or not message:
            raise PermanentError("note.add needs 'model' (e.g. party.party) and 'message' (text)", system=self.system)
        resource = f"{model},{record}"
        domain = [("resource", "=", resource), ("message", "=", message)]
        found = self.rpc.model("ir.note", "search", domain, 0, 1, None)
        if found:
            return {"note": int(found[0]), "created": False}
        (created,) = self.rpc.model("ir.note", "create", [{"resource": resource, "message": message}])
        return {"note": int(created), "created": True}

    # ----- helpers ------------------------------------------------------------------------
    def _sale(self, params: dict[str, Any]) -> int:
        return _record_id(params.get("sale"), "sale", self.system)

    def _read(self, model: str, ids: list[int], fields: list[str]) -> list[dict[str, Any]]:
        return list(self.rpc.model(model, "read", ids, fields)) if ids else []

    def _state(self, sale: int) -> str:
        rows = self.rpc.model(SALE, "read", [sale], ["state"])
        if not rows:
            raise PermanentError(f"Tryton has no sale {sale}", system=self.system)
        return str(rows[0]["state"])


def _record_id(value: Any, name: str, system: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise PermanentError(f"parameter {name!r} must be a Tryton record id, got {value!r}", system=system)


def _money(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Decimal) -> str:
    return format(value.normalize(), "f")
