"""`isthmus conflicts list|resolve`: the fields two-way routes parked, and an operator's choice for one."""

from __future__ import annotations

import argparse
import json

from middleware.cli.config_option import DEFAULT_CONFIG
from middleware.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("conflicts", help="conflicts of two-way routes: list them, resolve one")
    csub = p.add_subparsers(dest="conflicts_command", required=True)
    q = csub.add_parser("list", help="open conflicts (parked fields), oldest first")
    q.add_argument("--config", default=DEFAULT_CONFIG)
    q.add_argument("--route", help="only those found by this route")
    q.add_argument("--all", action="store_true", help="also those the policies decided, and resolved ones")
    q.add_argument("--limit", type=int, default=1000)
    q.add_argument("--json", action="store_true")
    q = csub.add_parser("resolve", help="write the chosen value to both systems (through both routes)")
    q.add_argument("--config", default=DEFAULT_CONFIG)
    q.add_argument("conflict_id", metavar="ID")
    q.add_argument(
        "--take", required=True, metavar="SYSTEM|value=VALUE", help="a side's value (crm, tryton, ...) or value=JSON"
    )
    p.set_defaults(handler=cmd_conflicts)


def cmd_conflicts(args: argparse.Namespace) -> int:
    """Conflicts of two-way routes: list them, or resolve one by publishing the chosen value."""
    from middleware.config import load_config
    from middleware.ops import conflicts
    from middleware.store import open_store
    from middleware.sync.conflicts import summary

    config = load_config(args.config, check_mappings=False)
    routes = {r.name for r in config.model.routes if r.two_way is not None}
    if getattr(args, "route", None) and args.route not in routes:
        from middleware.problems import did_you_mean

        raise ConfigError(f"no two-way route {args.route!r} in {args.config}; {did_you_mean(args.route, routes)}")
    store = open_store(config.model.store, base_dir=config.base_dir)
    try:
        if args.conflicts_command == "list":
            found = store.conflicts(route=args.route, status=None if args.all else "open", limit=args.limit)
            if args.json:
                print(json.dumps([summary(c) for c in found], indent=2, ensure_ascii=False))
            else:
                print(conflicts.render(found))
            return 0
        from middleware.broker import open_broker

        broker = open_broker(config.model.broker, base_dir=config.base_dir)
        try:
            for route in config.model.routes:  # the resolution goes straight onto both routes' queues
                broker.setup_route(route.name, route.on, route.queue_options())
            record = conflicts.resolve(config, store, broker, args.conflict_id, args.take)
        finally:
            broker.close()
        resolution = record.detail.get("resolution") or {}
        print(
            f"resolved {record.id}: {record.field} = {json.dumps(resolution.get('value'), ensure_ascii=False)} "
            f"(took {resolution.get('take')}); sent to both routes of the pair"
        )
        return 0
    finally:
        store.close()
