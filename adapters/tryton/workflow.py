"""Driving Tryton sales from draft to a reserved shipment, in as few calls as a batch allows.

A sale written by the adapter goes as far as the entity's `workflow:` says:

* `draft`: left as written;
* `quote`: `sale.sale.quote` (Tryton checks addresses, lines and warehouse here);
* `confirm`: then `sale.sale.confirm`; Tryton processes a confirmed sale right after the
  call commits (no queue worker configured) or in its queue worker: it creates the
  customer shipment and the draft invoice, as the sale's shipment and invoice methods say;
* `reserve`: then the sale's waiting shipments are asked to reserve their stock
  (`stock.shipment.out.assign_try`; a draft one is first set to waiting). A shipment that
  cannot be fully reserved stays waiting, as it would for a user: that is not a failure.

Each step is one call for every sale of the batch that needs it; when Tryton refuses the
call (one sale lacks an address, say), each sale is retried alone so the others go on and
the refused one gets Tryton's own reason. A step never runs twice on a sale (states are
read first), so driving the same sales again is harmless.
"""

from __future__ import annotations

from typing import Any

import structlog

from adapters.tryton.rpc import TrytonRpc, TrytonUserError

log = structlog.get_logger("isthmus.adapters.tryton")

STEPS = ("draft", "quote", "confirm", "reserve")
# Tryton's words when a workflow transition is not allowed in the record's current state.
TRANSITION_REFUSED = "You can not call"
# The sale states that are at or past each step: a step refused in one of them was done already.
PAST_STEP = {
    "quote": frozenset({"quotation", "confirmed", "processing", "done"}),
    "confirm": frozenset({"confirmed", "processing", "done"}),
}
SALE = "sale.sale"
SHIPMENT = "stock.shipment.out"


class SaleWorkflow:
    def __init__(self, rpc: TrytonRpc) -> None:
        self.rpc = rpc
        # sales of the last `advance` whose step was refused as not allowed in a state that did
        # not allow it a moment before: another writer is moving the same sale (worth a retry)
        self.contended: set[int] = set()

    def advance(self, sale_ids: list[int], target: str) -> dict[int, str]:
        """Drive `sale_ids` up to `target`; returns the reason per sale that could not get there."""
        failed: dict[int, str] = {}
        self.contended = set()
        if target == "draft" or not sale_ids:
            return failed
        states = self._states(sale_ids)
        to_quote = [s for s in sale_ids if states.get(s) == "draft"]
        self._step("quote", to_quote, failed)
        if target == "quote":
            return failed
        states = self._states([s for s in sale_ids if s not in failed])
        to_confirm = [s for s, state in states.items() if state == "quotation"]
        self._step("confirm", to_confirm, failed)
        if target == "confirm":
            return failed
        live = [s for s in sale_ids if s not in failed]
        if live:
            self.reserve(live, failed)
        return failed

    def reserve(self, sale_ids: list[int], failed: dict[int, str]) -> None:
        """Ask the waiting shipments of these (confirmed) sales to reserve their stock."""
        rows = self.rpc.model(SALE, "read", sale_ids, ["shipments", "state"])
        shipment_of: dict[int, int] = {}
        for row in rows:
            for shipment in row.get("shipments") or []:
                shipment_of[int(shipment)] = int(row["id"])
        if not shipment_of:
            return
        shipments = self.rpc.model(SHIPMENT, "read", sorted(shipment_of), ["state"])
        drafts = [int(s["id"]) for s in shipments if s["state"] == "draft"]
        if drafts:
            self._shipment_step("wait", drafts, shipment_of, failed)
        waiting = [int(s["id"]) for s in shipments if s["state"] in ("draft", "waiting")]
        waiting = [s for s in waiting if shipment_of[s] not in failed]
        if waiting:
            self._shipment_step("assign_try", waiting, shipment_of, failed)

    def _states(self, sale_ids: list[int]) -> dict[int, str]:
        if not sale_ids:
            return {}
        return {int(row["id"]): row["state"] for row in self.rpc.model(SALE, "read", sale_ids, ["state"])}

    def _step(self, method: str, sale_ids: list[int], failed: dict[int, str]) -> None:
        if not sale_ids:
            return
        try:
            self.rpc.model(SALE, method, sale_ids)
            return
        except TrytonUserError:
            if len(sale_ids) == 1:
                raise_or_record(self.rpc, SALE, method, sale_ids[0], failed)
                self._forgive_overtaken(method, [s for s in sale_ids if s in failed], failed)
                return
        for sale in sale_ids:
            raise_or_record(self.rpc, SALE, method, sale, failed)
        self._forgive_overtaken(method, [s for s in sale_ids if s in failed], failed)

    def _forgive_overtaken(self, method: str, refused: list[int], failed: dict[int, str]) -> None:
        """A refused step on a sale that another writer (a second route or worker on the same
        sale) moved past that step meanwhile is no failure: the sale is where it was asked to be."""
        passed = PAST_STEP.get(method, frozenset())
        for sale, state in self._states(refused).items():
            if state in passed:
                failed.pop(sale, None)
                log.info("tryton_workflow_step_overtaken", method=method, record=sale, state=state)
            elif TRANSITION_REFUSED in failed.get(sale, ""):
                self.contended.add(sale)  # the other writer's transaction has not committed yet

    def _shipment_step(
        self, method: str, shipment_ids: list[int], sale_of: dict[int, int], failed: dict[int, str]
    ) -> None:
        try:
            self.rpc.model(SHIPMENT, method, shipment_ids)
            return
        except TrytonUserError:
            pass
        for shipment in shipment_ids:
            reasons: dict[int, str] = {}
            raise_or_record(self.rpc, SHIPMENT, method, shipment, reasons)
            if shipment in reasons:
                failed[sale_of[shipment]] = f"shipment {shipment}: {reasons[shipment]}"


def raise_or_record(rpc: TrytonRpc, model: str, method: str, record: int, failed: dict[int, str]) -> Any:
    """Call `method` on one record; Tryton's refusal is recorded, anything else propagates."""
    try:
        return rpc.model(model, method, [record])
    except TrytonUserError as exc:
        failed[record] = f"{method} refused: {exc}"
        log.warning("tryton_workflow_refused", model=model, method=method, record=record, error=str(exc))
        return None
