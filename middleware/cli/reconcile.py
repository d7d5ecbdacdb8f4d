"""`isthmus reconcile` and `isthmus replay`: compare sources with targets, and re-sync one record.

Both read records on both sides through `middleware.reconcile`, so they share one module.
"""

from __future__ import annotations

import argparse
import json
import sys

from middleware.cli.config_option import DEFAULT_CONFIG


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "reconcile", help="compare a route's source and target record by record; --heal re-emits what differs"
    )
    p.add_argument("entity", nargs="?", help="source entity whose routes are reconciled: customer or crm.customer")
    p.add_argument("--route", help="reconcile this route (instead of, or to narrow, ENTITY)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--heal", action="store_true", help="re-emit missing and different records onto the route")
    p.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="with --heal: wait this long for the route to apply"
    )
    p.set_defaults(handler=cmd_reconcile)

    p = subparsers.add_parser("replay", help="re-sync one record through its route and show the field-level diff")
    p.add_argument("--record", required=True, metavar="SYSTEM:ENTITY:ID", help="e.g. crm:customer:C-1001")
    p.add_argument("--route", help="the route to replay it on (when several take the record)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--dry-run", action="store_true", help="show the diff, send nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the route to apply it")
    p.add_argument(
        "--in-process", action="store_true", help="consume the route's queue here while waiting (no worker running)"
    )
    p.set_defaults(handler=cmd_replay)


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Compare routes' sources and targets record by record; exit 1 on drift that is left (not healed)."""
    from middleware.config import load_config
    from middleware.observability import configure_logging
    from middleware.reconcile.engine import Connections, Reconciler, plans_for, render_report

    config = load_config(args.config)
    configure_logging("console", "warning", sys.stderr)
    plans = plans_for(config, args.entity, args.route)
    connections = Connections(config)
    reports = []
    try:
        for plan in plans:
            reconciler = Reconciler(config, plan, connections.store, connections.adapter)
            report = reconciler.run()
            if args.heal:
                reconciler.heal(report, connections.broker(), wait_s=args.wait)
            reports.append(report)
    finally:
        connections.close()
    left = any(report.unresolved() for report in reports)
    if args.json:
        print(json.dumps({"in_sync": not left, "routes": [r.as_dict() for r in reports]}, indent=2, default=str))
    else:
        print("\n\n".join(render_report(report) for report in reports))
    return 1 if left else 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Re-sync one record through its route, showing the field-level diff; exit 1 if it was not applied."""
    from middleware.config import load_config
    from middleware.observability import configure_logging
    from middleware.reconcile.engine import Connections
    from middleware.reconcile.replay import render_outcome, replay_record

    config = load_config(args.config)
    configure_logging("console", "warning", sys.stderr)
    connections = Connections(config)
    try:
        outcome = replay_record(
            config,
            args.record,
            connections.store,
            connections.adapter,
            connections.new_broker,
            route=args.route,
            dry_run=args.dry_run,
            timeout_s=args.timeout,
            in_process=args.in_process,
        )
    finally:
        connections.close()
    print(json.dumps(outcome.as_dict(), indent=2, default=str) if args.json else render_outcome(outcome))
    return 0 if outcome.ok else 1
