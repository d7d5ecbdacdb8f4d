"""`isthmus dlq list|show|replay|purge`: the operator's side of the Dead Letter Channel.

The work is `middleware.ops.dlq`; this module opens the broker the config names, narrows to
`--route`, and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from middleware.cli.config_option import DEFAULT_CONFIG
from middleware.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("dlq", help="inspect, replay or purge dead-lettered messages")
    dsub = p.add_subparsers(dest="dlq_command", required=True)
    for name, text in (
        ("list", "dead-lettered messages with their reasons"),
        ("show", "one dead letter: headers and the original message"),
        ("replay", "put dead letters back on their route"),
        ("purge", "delete dead letters for good"),
    ):
        q = dsub.add_parser(name, help=text)
        q.add_argument("--config", default=DEFAULT_CONFIG)
        q.add_argument("--route", help="only this route")
        if name == "list":
            q.add_argument("--limit", type=int, default=100)
            q.add_argument("--json", action="store_true")
        if name == "show":
            q.add_argument("message_id")
        if name == "replay":
            q.add_argument("message_ids", nargs="*")
            q.add_argument("--all", action="store_true", help="replay every message of the route's DLQ")
        if name == "purge":
            q.add_argument("--yes", action="store_true")
    p.set_defaults(handler=cmd_dlq)


def _open_for_dlq(args: argparse.Namespace) -> tuple[Any, list[str]]:
    from middleware.broker import open_broker
    from middleware.config import load_config

    config = load_config(args.config, check_mappings=False)
    broker = open_broker(config.model.broker, base_dir=config.base_dir)
    for route in config.model.routes:  # replay must know each route's shards and retry steps
        broker.setup_route(route.name, route.on, route.queue_options())
    routes = [r.name for r in config.model.routes]
    if getattr(args, "route", None):
        if args.route not in routes:
            from middleware.problems import did_you_mean

            raise ConfigError(f"no route {args.route!r} in {args.config}; {did_you_mean(args.route, routes)}")
        routes = [args.route]
    return broker, routes


def cmd_dlq(args: argparse.Namespace) -> int:
    from middleware.ops import dlq

    broker, routes = _open_for_dlq(args)
    try:
        if args.dlq_command == "list":
            letters = dlq.list_dead_letters(broker, routes, args.limit)
            if args.json:
                print(json.dumps([d.summary() for d in letters], indent=2))
            else:
                for d in letters:
                    print(f"{d.route:<24} {d.message_id:<36} {d.error_class:<24} {d.record:<28} {d.error[:90]}")
                print(f"{len(letters)} dead-lettered message{'s' if len(letters) != 1 else ''}")
            return 0
        if args.dlq_command == "show":
            everything = dlq.list_dead_letters(broker, routes, 1_000_000)
            letters = [d for d in everything if d.message_id == args.message_id]
            if not letters:
                print(f"no dead-lettered message {args.message_id}; run 'isthmus dlq list'", file=sys.stderr)
                return 1
            print(json.dumps(letters[0].detail(), indent=2, ensure_ascii=False))
            return 0
        if args.dlq_command == "replay":
            if not args.route:
                print("replay needs --route (and message ids, or --all)", file=sys.stderr)
                return 2
            if not args.message_ids and not args.all:
                print("name message ids to replay, or pass --all", file=sys.stderr)
                return 2
            wanted = None if args.all else list(dict.fromkeys(args.message_ids))
            missing: list[str] = []
            if wanted is not None:
                present = {d.message_id for d in dlq.list_dead_letters(broker, [args.route], 1_000_000)}
                missing = [m for m in wanted if m not in present]
                wanted = [m for m in wanted if m in present]
            count = dlq.replay(broker, args.route, wanted) if wanted is None or wanted else 0
            print(f"replayed {count} message{'s' if count != 1 else ''} onto route {args.route}")
            for message_id in missing:
                print(
                    f"no dead-lettered message {message_id} on route {args.route}; run 'isthmus dlq list'",
                    file=sys.stderr,
                )
            return 1 if missing else 0
        if args.dlq_command == "purge":
            if not args.yes:
                print("purge deletes messages for good; add --yes to confirm", file=sys.stderr)
                return 2
            total = sum(dlq.purge(broker, route) for route in routes)
            print(f"purged {total} message{'s' if total != 1 else ''}")
            return 0
    finally:
        broker.close()
    return 2
