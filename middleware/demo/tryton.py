"""`isthmus demo --erp tryton`: the sample CRM synced with a real Tryton ERP.

Starts the SAMPLE CRM (deploy/demo/sample_crm.py) and a real `trytond` on SQLite (a copy
of a prepared database: company, chart of accounts, fiscal year, tax, payment term, the
CRM's products in stock — prepared once, about a minute, then cached), runs a worker with
deploy/demo/tryton.yaml in this process and shows progress: customers become parties, won
orders become confirmed sales that reserve stock, and the reservation flows back to the
CRM. Then it plays Tryton's accountant and posts the sales' invoices, and the CRM orders
turn "invoiced". State stays in .isthmus/demo-tryton/ (broker, store, worker.log,
trytond.log); `isthmus dlq list --config deploy/demo/tryton.yaml` shows what was
dead-lettered and why.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from middleware.demo.inprocess_worker import DemoWorker
from middleware.demo.summary import print_outcome, print_route_table, shown_path
from middleware.demo.targets import expected_targets

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "deploy" / "demo" / "tryton.yaml"
DEMO_STATE = REPO / ".isthmus" / "demo-tryton"
CRM_TOKEN = "demo-crm-token"


def run_tryton_demo(
    customers: int = 20,
    orders_per_customer: int = 2,
    keep_running: bool = False,
    timeout_s: float = 180.0,
    out: Any = None,
) -> int:
    """Run the demo; 0 when everything that can flow has flowed, 1 if not in time, 2 without trytond."""
    from adapters.tryton import TrytonAdapter
    from adapters.tryton.localserver import LocalTryton, TrytonUnavailable, trytond_available
    from deploy.demo.sample_crm import SampleCrm
    from middleware.errors import IsthmusError

    out = out or sys.stdout
    missing = trytond_available()
    if missing:
        print(f"the Tryton demo needs trytond: {missing}", file=out)
        return 2
    shutil.rmtree(DEMO_STATE, ignore_errors=True)
    DEMO_STATE.mkdir(parents=True, exist_ok=True)
    print("starting Tryton (the first run prepares its database: about a minute)...", file=out, flush=True)
    tryton = LocalTryton(DEMO_STATE / "tryton")
    try:
        tryton.start()
    except TrytonUnavailable as exc:
        print(f"Tryton did not start: {exc}", file=out)
        return 2
    crm = SampleCrm(token=CRM_TOKEN).start()
    seeded = crm.seed(customers=customers, orders_per_customer=orders_per_customer, with_bad_records=True)
    good_customers, won = expected_targets(crm)
    os.environ.update(
        {
            "DEMO_CRM_URL": crm.url,
            "DEMO_CRM_TOKEN": CRM_TOKEN,
            "TRYTON_URL": tryton.url,
            "TRYTON_DATABASE": tryton.database,
            "TRYTON_USERNAME": tryton.username,
            "TRYTON_PASSWORD": tryton.password,
        }
    )
    print(f"sample CRM on {crm.url} (a sample); Tryton {tryton.url} database {tryton.database!r} (real)", file=out)
    print(
        f"seeded {seeded['customers']} customers and {seeded['orders']} orders ({len(won)} won); "
        f"broken on purpose: {seeded['bad_records']}",
        file=out,
    )
    run = DemoWorker.start(DEMO_CONFIG, DEMO_STATE)
    config, worker = run.config, run.worker
    probe = TrytonAdapter("demo-probe", tryton.system_settings())
    print(f"worker log (JSON lines): {shown_path(run.log_path)}", file=out)
    started = time.monotonic()
    complete = posted = False
    expected = len(won)

    def statuses() -> dict[str, int]:
        with crm.lock:
            found: dict[str, int] = {}
            for key in won:
                status = crm.orders.rows[key].get("erp_status") or "-"
                found[status] = found.get(status, 0) + 1
        return found

    try:
        while time.monotonic() - started < timeout_s:
            parties = probe.rpc.model("party.party", "search_count", [("code", "in", sorted(good_customers))],
                                      context={"active_test": False})
            sales = probe.rpc.model("sale.sale", "search_read", [("reference", "in", sorted(won))], 0, None, None,
                                    ["invoices", "state"])
            seen = statuses()
            dead = sum(s.dead_lettered for s in worker.stats.values())
            print(
                f"\r  parties {parties:>3}/{len(good_customers)}  sales {len(sales):>3}/{len(won)}"
                f"  CRM reserved {seen.get('reserved', 0):>3}  invoiced {seen.get('invoiced', 0):>3}/{len(won)}"
                f"  dead-lettered {dead:>2}  {time.monotonic() - started:5.1f}s",
                end="",
                file=out,
                flush=True,
            )
            orders_drained = worker.broker.depth("orders_crm_to_tryton") == 0 and parties > 0
            if not posted and sales and orders_drained and seen.get("reserved", 0) == len(sales):
                # every order that could become a sale did, and its reservation reached the CRM
                invoices = sorted({i for s in sales for i in s["invoices"]})
                try:
                    probe.rpc.model("account.invoice", "post", invoices)
                except IsthmusError as exc:
                    print(f"\n  Tryton refused to post the invoices: {exc}", file=out)
                    break
                posted, expected = True, len(sales)
                print(f"\n  Tryton accounting posts {len(invoices)} invoices (as a user would)", file=out)
            if posted and seen.get("invoiced", 0) == expected:
                complete = True
                break
            time.sleep(0.5)
        print(file=out)
        if keep_running:
            print(f"keeping the CRM, Tryton ({tryton.url}, user {tryton.username!r}) and the worker running; "
                  "Ctrl-C stops", file=out)
            run.keep_running()
    finally:
        run.stop()
        probe.close()
        crm.stop()
        tryton.stop()

    elapsed = time.monotonic() - started
    print_route_table(worker.stats, out)
    code = print_outcome(config, DEMO_CONFIG, complete, elapsed, timeout_s, out)
    print(f"         Tryton's log: {shown_path(tryton.log_path)}", file=out)
    return code


if __name__ == "__main__":
    sys.exit(run_tryton_demo())
