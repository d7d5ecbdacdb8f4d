"""`isthmus` commands. Thin: parse arguments, call the module that does the work, print.

Exit codes: 0 success, 1 the thing checked is wrong (validation errors, failing examples),
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from middleware.errors import ConfigError, IsthmusError

DEFAULT_CONFIG = "isthmus.yaml"


def _print_problems(error: ConfigError) -> None:
    for problem in error.problems:
        print(problem.render(), file=sys.stderr)
    count = len(error.problems)
    print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)


def _mapping_paths(args: argparse.Namespace) -> list[Path]:
    if getattr(args, "paths", None):
        return [Path(p) for p in args.paths]
    if getattr(args, "config", None) and Path(args.config).exists():
        from middleware.config import load_config

        return load_config(args.config, check_mappings=False).mapping_paths
    return [Path("mappings")]


def cmd_validate(args: argparse.Namespace) -> int:
    from middleware.mapping import validate_mappings

    mapping_set, problems = validate_mappings(_mapping_paths(args))
    config_problems: list[Any] = []
    if args.config and Path(args.config).exists() and not args.paths:
        from middleware.config import load_config

        try:
            load_config(args.config)
        except ConfigError as exc:
            config_problems = [p for p in exc.problems if p not in problems]
    everything = problems + config_problems
    if everything:
        _print_problems(ConfigError(everything))
        return 1
    print(f"ok: {len(mapping_set)} mapping{'s' if len(mapping_set) != 1 else ''} valid")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from middleware.mapping import load_mappings, run_examples

    mapping_set = load_mappings(_mapping_paths(args))
    results = run_examples(mapping_set)
    failed = [r for r in results if not r.passed]
    for result in results:
        print(result.render())
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_preview(args: argparse.Namespace) -> int:
    from middleware.mapping_runtime import preview_chain

    sample = json.loads(Path(args.sample).read_text(encoding="utf-8"))
    xrefs = dict(item.split("=", 1) for item in args.xref or [])
    records = sample if isinstance(sample, list) else [sample]
    outputs = [preview_chain(_mapping_paths(args), args.mapping.split(","), record, xrefs) for record in records]
    print(json.dumps(outputs if isinstance(sample, list) else outputs[0], indent=2, ensure_ascii=False))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from middleware.schema import export_schemas

    written = export_schemas(Path(args.out) if args.out else None, args.entity)
    if args.out:
        for path in written:
            print(path)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from middleware.config import load_config
    from middleware.worker import Worker

    config = load_config(args.config)
    worker = Worker(config, run_sources=not args.no_sources, run_routes=not args.no_routes)
    worker.install_signal_handlers()
    worker.start()
    worker.wait()
    return 0


def _open_for_dlq(args: argparse.Namespace) -> tuple[Any, list[str]]:
    from middleware.broker import open_broker
    from middleware.config import load_config

    config = load_config(args.config, check_mappings=False)
    broker = open_broker(config.model.broker, base_dir=config.base_dir)
    routes = [r.name for r in config.model.routes]
    if getattr(args, "route", None):
        if args.route not in routes:
            from middleware.problems import did_you_mean

            raise ConfigError(f"no route {args.route!r} in {args.config}; {did_you_mean(args.route, routes)}")
        routes = [args.route]
    return broker, routes


def cmd_dlq(args: argparse.Namespace) -> int:
    from middleware import dlq

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
            letters = [d for d in dlq.list_dead_letters(broker, routes, 1_000_000) if d.message_id == args.message_id]
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
            count = dlq.replay(broker, args.route, None if args.all else args.message_ids)
            print(f"replayed {count} message{'s' if count != 1 else ''} onto route {args.route}")
            return 0
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


def cmd_demo(args: argparse.Namespace) -> int:
    from middleware.demo import run_demo

    return run_demo(customers=args.customers, orders_per_customer=args.orders, keep_running=args.keep_running)


def cmd_bench(args: argparse.Namespace) -> int:
    from middleware.bench import run_bench

    results = run_bench(quick=args.quick)
    print(json.dumps(results) if args.json else json.dumps(results, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="isthmus", description="CRM <-> ERP integration middleware.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check mapping files (and isthmus.yaml) and report every problem")
    p.add_argument("paths", nargs="*", help="mapping files or folders (default: from --config, else mappings/)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="isthmus.yaml to check as well, if it exists")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("test", help="run the examples: blocks of mapping files")
    p.add_argument("paths", nargs="*")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("preview", help="map a sample record and print the result")
    p.add_argument("mapping", help="mapping id, or a chain of ids separated by commas")
    p.add_argument("sample", help="JSON file with one record or a list of records")
    p.add_argument("--paths", nargs="*", help="mapping files or folders (default: mappings/)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--xref", action="append", metavar="SYS:ENTITY:ID=SYS:ID",
                   help="a cross-reference to assume, e.g. crm:customer:C-1001=erp:A000001")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("schema", help="export JSON Schemas of the envelope and canonical entities")
    p.add_argument("entity", nargs="?", help="only this one (e.g. Customer or Envelope)")
    p.add_argument("--out", help="folder to write <Name>.schema.json files into (default: print)")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("worker", help="run the worker daemon (sources, webhooks, routes)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--no-sources", action="store_true", help="consume routes only (scale-out consumers)")
    p.add_argument("--no-routes", action="store_true", help="poll sources and receive webhooks only")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("dlq", help="inspect, replay or purge dead-lettered messages")
    dsub = p.add_subparsers(dest="dlq_command", required=True)
    for name in ("list", "show", "replay", "purge"):
        q = dsub.add_parser(name)
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
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("demo", help="sync a sample CRM and ERP on the embedded broker")
    p.add_argument("--customers", type=int, default=60)
    p.add_argument("--orders", type=int, default=2, help="orders per customer")
    p.add_argument("--keep-running", action="store_true", help="keep the sample systems and worker up")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="measure mapping and end-to-end throughput")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="smaller sizes (for smoke tests)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        _print_problems(exc)
        return 2
    except IsthmusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
