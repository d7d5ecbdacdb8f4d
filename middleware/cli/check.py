"""`isthmus check`: connect to every configured system without moving data (a dry run of the connections)."""

from __future__ import annotations

import argparse
import json
import sys

from middleware.cli.config_option import DEFAULT_CONFIG


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "check", help="connect to every system without moving data: reachability, auth, version, permissions"
    )
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    """Connect to every configured system without moving data; exit 1 if any fails."""
    from middleware.config import load_config
    from middleware.observability import configure_logging
    from middleware.ops.check import as_json, render, run_checks

    config = load_config(args.config, check_mappings=False)
    configure_logging("console", "warning", sys.stderr)
    reports = run_checks(config)
    if args.json:
        print(json.dumps(as_json(reports), indent=2, default=str, ensure_ascii=False))
    else:
        print(render(reports))
    return 0 if all(r.ok for r in reports) else 1
