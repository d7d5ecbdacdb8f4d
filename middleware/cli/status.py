"""`isthmus status`: routes, rates, lag, errors and DLQ sizes, read from the workers' /metrics.

The view itself is `middleware.ops.status`; this module only turns arguments into its calls.
"""

from __future__ import annotations

import argparse
import json

from middleware.cli.config_option import DEFAULT_CONFIG, config_file


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("status", help="routes, rates, lag, errors and DLQ sizes, read from workers' /metrics")
    p.add_argument("--config", default=None, help=f"take the metrics address from it (default: ./{DEFAULT_CONFIG})")
    p.add_argument(
        "--url", action="append", metavar="HOST:PORT", help="a worker's metrics address; repeat for each process"
    )
    p.add_argument("--watch", action="store_true", help="refresh every --interval seconds until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between the two reads rates come from")
    p.add_argument("--json", action="store_true", help="print the totals as JSON (one read, no rates)")
    p.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from middleware.ops.status import endpoints_from_config, run_status, summary, take_snapshot

    urls = args.url or endpoints_from_config(config_file(args))
    if args.json:
        snapshot = take_snapshot(urls)
        print(json.dumps(summary(snapshot), indent=2))
        return 0 if any(one.ok for one in snapshot.scrapes) else 1
    return run_status(urls, watch=args.watch, interval_s=args.interval)
