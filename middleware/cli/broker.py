"""`isthmus broker setup`: declare every route's queues, exchanges and bindings, as a worker does at start."""

from __future__ import annotations

import argparse
import sys

from middleware.cli.config_option import DEFAULT_CONFIG


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("broker", help="provision the broker: declare every route's queues and bindings")
    bsub = p.add_subparsers(dest="broker_command", required=True)
    q = bsub.add_parser("setup", help="declare queues, exchanges and bindings for every route (idempotent)")
    q.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(handler=cmd_broker)


def cmd_broker(args: argparse.Namespace) -> int:
    """Declare every route's queues, exchanges and bindings: what a worker does at start,
    for operators who provision the broker before (or without) starting workers."""
    from middleware.broker import open_broker
    from middleware.broker.base import UNROUTED_QUEUE
    from middleware.config import load_config
    from middleware.observability import configure_logging
    from middleware.redact import redact_url

    config = load_config(args.config, check_mappings=False)
    configure_logging("console", "warning", sys.stderr)
    broker = open_broker(config.model.broker, base_dir=config.base_dir)
    try:
        print(f"broker {redact_url(config.model.broker)}")
        for route in config.model.routes:
            broker.setup_route(route.name, route.on, route.queue_options())
            print(f"route {route.name}:")
            for line in broker.describe_route(route.name):
                print(f"  {line}")
        broker.setup_route(UNROUTED_QUEUE, [])
        print(f"queue {UNROUTED_QUEUE} (messages no route is bound to, with the reason)")
    finally:
        broker.close()
    return 0
