"""`isthmus flows list|show|approve|reject`: runs of flows, and the decisions the waiting ones need."""

from __future__ import annotations

import argparse
import json
import os
import sys

from middleware.cli.config_option import DEFAULT_CONFIG
from middleware.errors import IsthmusError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "flows", help="runs of flows: list, show, approve or reject the ones waiting for approval"
    )
    fsub = p.add_subparsers(dest="flows_command", required=True)
    q = fsub.add_parser("list", help="runs, most recently changed first")
    q.add_argument("--flow", help="only this flow")
    q.add_argument("--key", help="only this business key")
    q.add_argument("--status", action="append", choices=["running", "waiting", "compensating", "completed", "failed"])
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--json", action="store_true")
    q = fsub.add_parser("show", help="one run: its input, step outputs and trail")
    q.add_argument("key")
    q.add_argument("--flow", help="the flow, if several have a run with this key")
    for name, text in (("approve", "approve"), ("reject", "reject")):
        q = fsub.add_parser(name, help=f"{text} the run of KEY that waits for an approval (publishes approval.<flow>)")
        q.add_argument("key")
        q.add_argument("--flow", help="the flow, if several have a run with this key")
        q.add_argument("--by", help="who decides (default: $USER)")
        q.add_argument("--note", "--reason", dest="note", help="why; the flow may pass it on (e.g. to the CRM)")
    for q in fsub.choices.values():
        q.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(handler=cmd_flows)


def cmd_flows(args: argparse.Namespace) -> int:
    """Runs of flows: list and show them; approve or reject the ones that wait for an approval."""
    from middleware.broker import open_broker
    from middleware.config import load_config
    from middleware.ops import flows as admin
    from middleware.store import open_store

    config = load_config(args.config, check_mappings=False)
    store = open_store(config.model.store, base_dir=config.base_dir)
    try:
        if args.flows_command == "list":
            runs = store.list_flow_runs(flow=args.flow, key=args.key, statuses=args.status or (), limit=args.limit)
            rows = [admin.summary(run) for run in runs]
            if args.json:
                print(json.dumps(rows, indent=2, ensure_ascii=False))
                return 0
            for row in rows:
                problem = (row["error"] or row["last_error"] or "")[:90]
                flow, key, status, at = row["flow"], row["key"], row["status"], row["at"]
                print(f"{flow:<20} {key:<20} {status:<13} {at:<32} {row['updated_at']}  {problem}")
            print(f"{len(rows)} run{'s' if len(rows) != 1 else ''}")
            return 0
        if args.flows_command == "show":
            runs = store.list_flow_runs(flow=args.flow, key=args.key, limit=10)
            if not runs:
                print(f"no flow run with key {args.key!r}; run 'isthmus flows list'", file=sys.stderr)
                return 1
            print(
                json.dumps(
                    [admin.detail(run) for run in runs] if len(runs) > 1 else admin.detail(runs[0]),
                    indent=2,
                    ensure_ascii=False,
                )
            )
            return 0
        decision = "approved" if args.flows_command == "approve" else "rejected"
        broker = open_broker(config.model.broker, base_dir=config.base_dir)
        try:
            for route in config.model.routes:  # the approval route's binding must exist before publishing
                broker.setup_route(route.name, route.on, route.queue_options())
            sent = admin.send_decision(
                config,
                store,
                broker,
                args.key,
                decision=decision,
                flow=args.flow,
                by=args.by or os.environ.get("USER", ""),
                note=args.note or "",
            )
        except IsthmusError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            broker.close()
        print(
            f"{decision} {args.key} (flow {sent.run.flow}, waiting for {sent.run.waiting_for}): "
            f"published {sent.type} message {sent.message_id}"
        )
        return 0
    finally:
        store.close()
