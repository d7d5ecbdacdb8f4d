"""`isthmus demo`: a sample CRM and a sample ERP synced through the embedded broker.

Starts both SAMPLE services (deploy/demo/) on loopback, seeds the CRM (with a few broken
records on purpose), runs a worker with deploy/demo/isthmus.yaml in this process, shows
progress until everything that can flow has flowed, and prints a summary. The broker and
store stay in .isthmus/demo/ so `isthmus dlq list --config deploy/demo/isthmus.yaml` shows
what was dead-lettered and why.
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
DEMO_CONFIG = REPO / "deploy" / "demo" / "isthmus.yaml"
DEMO_STATE = REPO / ".isthmus" / "demo"
CRM_TOKEN = "demo-crm-token"


def _invoiced_in_crm(crm: Any) -> int:
    with crm.lock:
        return sum(1 for order in crm.orders.rows.values() if order.get("erp_status") == "invoiced")


def _save_erp_records(erp: Any, path: Path) -> None:
    """What the sample ERP holds when the demo ends, for a look after the services are gone."""
    import json

    with erp.lock:
        records = {"accounts": dict(erp.accounts), "sales_orders": dict(erp.orders)}
    path.write_text(json.dumps(records, indent=2, default=str), encoding="utf-8")


def run_demo(
    customers: int = 60,
    orders_per_customer: int = 2,
    keep_running: bool = False,
    timeout_s: float = 120.0,
    out: Any = None,
) -> int:
    from deploy.demo.sample_crm import SampleCrm
    from deploy.demo.sample_erp import SampleErp

    out = out or sys.stdout
    shutil.rmtree(DEMO_STATE, ignore_errors=True)
    DEMO_STATE.mkdir(parents=True, exist_ok=True)
    crm = SampleCrm(token=CRM_TOKEN).start()
    erp = SampleErp(advance_every_s=0.3).start()
    seeded = crm.seed(customers=customers, orders_per_customer=orders_per_customer, with_bad_records=True)
    targets = expected_targets(crm)
    customers_due, orders_due = len(targets.customers), len(targets.orders)
    os.environ["DEMO_CRM_URL"] = crm.url
    os.environ["DEMO_ERP_URL"] = erp.url
    os.environ["DEMO_CRM_TOKEN"] = CRM_TOKEN
    print(f"sample CRM on {crm.url}, sample ERP on {erp.url} (samples, not real systems)", file=out)
    print(
        f"seeded {seeded['customers']} customers and {seeded['orders']} orders "
        f"({orders_due} won); broken on purpose: {seeded['bad_records']}",
        file=out,
    )
    run = DemoWorker.start(DEMO_CONFIG, DEMO_STATE)
    config, worker = run.config, run.worker
    print(f"worker log (JSON lines, one correlation id per message): {shown_path(run.log_path)}", file=out)
    if worker.health:
        print(f"metrics on http://127.0.0.1:{worker.health.port}/metrics", file=out)
    started = time.monotonic()
    complete = False
    try:
        while time.monotonic() - started < timeout_s:
            erp_state = erp.state(with_effects=False)
            invoiced = _invoiced_in_crm(crm)
            dead = sum(s.dead_lettered for s in worker.stats.values())
            line = (
                f"\r  customers {erp_state['accounts']:>4}/{customers_due}"
                f"  orders {erp_state['orders']:>4}/{orders_due}"
                f"  invoiced in CRM {invoiced:>4}/{orders_due}"
                f"  dead-lettered {dead:>3}  {time.monotonic() - started:5.1f}s"
            )
            print(line, end="", file=out, flush=True)
            if (
                erp_state["accounts"] >= customers_due
                and erp_state["orders"] >= orders_due
                and invoiced >= orders_due
                and all(worker.broker.depth(r.name) == 0 for r in config.model.routes)
            ):
                complete = True
                break
            time.sleep(0.5)
        print(file=out)
        if keep_running:
            print("keeping the samples and the worker running; Ctrl-C stops", file=out)
            run.keep_running()
    finally:
        run.stop()
        erp_final = erp.state()
        _save_erp_records(erp, DEMO_STATE / "erp_records.json")
        crm.stop()
        erp.stop()

    elapsed = time.monotonic() - started
    print_route_table(worker.stats, out)
    print(
        f"\nERP now holds {erp_final['accounts']} accounts and {erp_final['orders']} sales orders "
        f"{erp_final['statuses']}; repeated writes ignored by idempotency key: {erp_final['duplicates']}",
        file=out,
    )
    code = print_outcome(config, DEMO_CONFIG, complete, elapsed, timeout_s, out)
    print(f"         the sample ERP's accounts and orders: {shown_path(DEMO_STATE / 'erp_records.json')}", file=out)
    return code
