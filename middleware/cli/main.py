"""`isthmus` commands. Thin: parse arguments, call the module that does the work, print.

Exit codes: 0 success, 1 the thing checked is wrong (validation errors, failing examples),
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from middleware.errors import ConfigError, IsthmusError, Problem, SourceLocation, XrefMissingError

DEFAULT_CONFIG = "isthmus.yaml"


def _print_problems(error: ConfigError) -> None:
    for problem in error.problems:
        print(problem.render(), file=sys.stderr)
    count = len(error.problems)
    print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)


def _config_file(args: argparse.Namespace) -> Path | None:
    """The config to read: the one named by --config (which must exist), else ./isthmus.yaml if any.

    A --config the user typed that does not exist is an error, not a silent fallback: otherwise
    `isthmus validate --config typo.yaml` would report "ok" without having checked any config.
    """
    named = getattr(args, "config", None)
    if named is None:
        default = Path(DEFAULT_CONFIG)
        return default if default.is_file() else None
    path = Path(named)
    if not path.is_file():
        raise ConfigError(
            Problem(
                "no such config file" if not path.exists() else "not a file",
                SourceLocation(str(path), 1, 1),
                hint="check the --config path, or leave --config out to use ./isthmus.yaml if present",
            )
        )
    return path


def _mapping_paths(args: argparse.Namespace) -> list[Path]:
    if getattr(args, "paths", None):
        return [Path(p) for p in args.paths]
    config = _config_file(args)
    if config is not None:
        from middleware.config import load_config

        return load_config(config, check_mappings=False).mapping_paths
    return [Path("mappings")]


def cmd_validate(args: argparse.Namespace) -> int:
    """Every problem of the mapping files and of the config, all at once; exit 1 if any.

    A broken config is what `validate` checks, so it is reported like a broken mapping (exit 1)
    together with the problems of whatever mapping files can still be found.
    """
    from middleware.config import load_config
    from middleware.mapping import validate_mappings

    config = _config_file(args)
    # The default ./isthmus.yaml is checked only when no paths are given; a --config the
    # user named is always checked.
    check_config = config is not None and (args.config is not None or not args.paths)
    config_problems: list[Problem] = []
    paths: list[Path] | None = [Path(p) for p in args.paths] if args.paths else None
    if paths is None and config is not None:
        try:
            paths = load_config(config, check_mappings=False).mapping_paths
        except ConfigError as exc:
            config_problems = list(exc.problems)
            check_config = False  # already reported; the full load would only repeat them
    if paths is None and config is None:
        paths = [Path("mappings")]
    mapping_set, problems = validate_mappings(paths) if paths is not None else ({}, [])
    warnings: list[Problem] = []
    if check_config and config is not None:
        try:
            warnings = load_config(config).warnings
        except ConfigError as exc:
            config_problems = [p for p in exc.problems if p not in problems]
    everything = problems + config_problems
    if any(p.severity != "warning" for p in everything):
        _print_problems(ConfigError(everything))
        return 1
    for warning in [*everything, *warnings]:  # reported, but they do not fail validation
        print(warning.render(), file=sys.stderr)
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


_XREF_ARG = re.compile(r"^[^:=\s]+:[^:=\s]+:[^=]+=[^=\s][^=]*$")


def _parse_xrefs(items: Sequence[str] | None) -> dict[str, str]:
    """`--xref crm:customer:C-1=erp:A-7` arguments as the links a StaticMappingContext takes."""
    xrefs: dict[str, str] = {}
    for item in items or []:
        if not _XREF_ARG.match(item):
            raise ConfigError(
                Problem(
                    f"--xref {item!r} is not SYSTEM:ENTITY:ID=SYSTEM:ID",
                    hint="e.g. --xref crm:customer:C-1001=erp:A-7",
                )
            )
        left, right = item.split("=", 1)
        xrefs[left.strip()] = right.strip()
    return xrefs


def _xref_missing_hint(exc: XrefMissingError) -> str:
    """Preview has no state store: the fix is an --xref argument, not waiting for a retry."""
    return (
        "preview has no state store; pass the link with "
        f"--xref {exc.from_system}:{exc.entity}:{exc.record_id}={exc.to_system}:<ID>"
    )


def cmd_preview(args: argparse.Namespace) -> int:
    from middleware.mapping import preview
    from middleware.runtime.chains import resolve_chain

    sample_path = Path(args.sample)
    try:
        sample = json.loads(sample_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        print(f"error: {sample_path} is not UTF-8 text; the sample must be a JSON file", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"error: {sample_path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}", file=sys.stderr)
        return 2
    xrefs = _parse_xrefs(args.xref)
    records = sample if isinstance(sample, list) else [sample]
    mapping = resolve_chain(_mapping_paths(args), args.mapping.split(","))  # compiled once, not per record
    try:
        outputs = [preview(mapping, record, xrefs) for record in records]
    except XrefMissingError as exc:
        print(f"error: {exc}\n    hint: {_xref_missing_hint(exc)}", file=sys.stderr)
        return 2
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
    from middleware.runtime.worker import Worker

    config = load_config(args.config)
    if args.metrics_port is not None:  # several processes of one config on one host: one port each
        config.model.observability.port = args.metrics_port
    worker = Worker(config, run_sources=not args.no_sources, run_routes=not args.no_routes)
    worker.install_signal_handlers()
    worker.start()
    worker.wait()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from middleware.ops.status import endpoints_from_config, run_status, summary, take_snapshot

    urls = args.url or endpoints_from_config(_config_file(args))
    if args.json:
        snapshot = take_snapshot(urls)
        print(json.dumps(summary(snapshot), indent=2))
        return 0 if any(one.ok for one in snapshot.scrapes) else 1
    return run_status(urls, watch=args.watch, interval_s=args.interval)


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


def cmd_flows(args: argparse.Namespace) -> int:
    """Runs of flows: list and show them; approve or reject the ones that wait for an approval."""
    from middleware.broker import open_broker
    from middleware.config import load_config
    from middleware.flows import admin
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
            print(json.dumps([admin.detail(run) for run in runs] if len(runs) > 1 else admin.detail(runs[0]),
                             indent=2, ensure_ascii=False))
            return 0
        decision = "approved" if args.flows_command == "approve" else "rejected"
        broker = open_broker(config.model.broker, base_dir=config.base_dir)
        try:
            for route in config.model.routes:  # the approval route's binding must exist before publishing
                broker.setup_route(route.name, route.on, route.queue_options())
            sent = admin.send_decision(
                config, store, broker, args.key, decision=decision, flow=args.flow,
                by=args.by or os.environ.get("USER", ""), note=args.note or "",
            )
        except IsthmusError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            broker.close()
        print(f"{decision} {args.key} (flow {sent.run.flow}, waiting for {sent.run.waiting_for}): "
              f"published {sent.type} message {sent.message_id}")
        return 0
    finally:
        store.close()


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


def cmd_demo(args: argparse.Namespace) -> int:
    if args.erp == "tryton":
        from middleware.demo.tryton import run_tryton_demo

        return run_tryton_demo(args.customers, args.orders, keep_running=args.keep_running)
    from middleware.demo.sample import run_demo

    return run_demo(customers=args.customers, orders_per_customer=args.orders, keep_running=args.keep_running)


def cmd_bench(args: argparse.Namespace) -> int:
    from middleware.bench.run import run_bench

    results = run_bench(
        quick=args.quick,
        long=args.long,
        amqp_url=args.amqp_url,
        rabbitmq=not args.no_rabbitmq,
        tryton=not args.no_tryton,
    )
    print(json.dumps(results) if args.json else json.dumps(results, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="isthmus", description="CRM <-> ERP integration middleware.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check mapping files (and isthmus.yaml) and report every problem")
    p.add_argument("paths", nargs="*", help="mapping files or folders (default: from --config, else mappings/)")
    p.add_argument(
        "--config", default=None, help=f"isthmus.yaml to check as well (default: ./{DEFAULT_CONFIG} if it exists)"
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("test", help="run the examples: blocks of mapping files")
    p.add_argument("paths", nargs="*")
    p.add_argument("--config", default=None, help=f"take mapping paths from it (default: ./{DEFAULT_CONFIG} if any)")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("preview", help="map a sample record and print the result")
    p.add_argument("mapping", help="mapping id, or a chain of ids separated by commas")
    p.add_argument("sample", help="JSON file with one record or a list of records")
    p.add_argument("--paths", nargs="*", help="mapping files or folders (default: mappings/)")
    p.add_argument("--config", default=None, help=f"take mapping paths from it (default: ./{DEFAULT_CONFIG} if any)")
    p.add_argument(
        "--xref",
        action="append",
        metavar="SYS:ENTITY:ID=SYS:ID",
        help="a cross-reference to assume, e.g. crm:customer:C-1001=erp:A000001",
    )
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("schema", help="export JSON Schemas of the envelope and canonical entities")
    p.add_argument("entity", nargs="?", help="only this one (e.g. Customer or Envelope)")
    p.add_argument("--out", help="folder to write <Name>.schema.json files into (default: print)")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("worker", help="run the worker daemon (sources, webhooks, routes)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--no-sources", action="store_true", help="consume routes only (scale-out consumers)")
    p.add_argument("--no-routes", action="store_true", help="poll sources and receive webhooks only")
    p.add_argument(
        "--metrics-port", type=int, default=None, help="serve /metrics here instead of observability.port"
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", help="routes, rates, lag, errors and DLQ sizes, read from workers' /metrics")
    p.add_argument("--config", default=None, help=f"take the metrics address from it (default: ./{DEFAULT_CONFIG})")
    p.add_argument(
        "--url", action="append", metavar="HOST:PORT", help="a worker's metrics address; repeat for each process"
    )
    p.add_argument("--watch", action="store_true", help="refresh every --interval seconds until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between the two reads rates come from")
    p.add_argument("--json", action="store_true", help="print the totals as JSON (one read, no rates)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("broker", help="provision the broker: declare every route's queues and bindings")
    bsub = p.add_subparsers(dest="broker_command", required=True)
    q = bsub.add_parser("setup", help="declare queues, exchanges and bindings for every route (idempotent)")
    q.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_broker)

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

    p = sub.add_parser("flows", help="runs of flows: list, show, approve or reject the ones waiting for approval")
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
    p.set_defaults(func=cmd_flows)

    p = sub.add_parser(
        "check", help="connect to every system without moving data: reachability, auth, version, permissions"
    )
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
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
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("replay", help="re-sync one record through its route and show the field-level diff")
    p.add_argument("--record", required=True, metavar="SYSTEM:ENTITY:ID", help="e.g. crm:customer:C-1001")
    p.add_argument("--route", help="the route to replay it on (when several take the record)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--dry-run", action="store_true", help="show the diff, send nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the route to apply it")
    p.add_argument(
        "--in-process", action="store_true", help="consume the route's queue here while waiting (no worker running)"
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("conflicts", help="conflicts of two-way routes: list them, resolve one")
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
    p.set_defaults(func=cmd_conflicts)

    p = sub.add_parser("demo", help="sync a sample CRM and ERP on the embedded broker")
    p.add_argument("--customers", type=int, default=60)
    p.add_argument("--orders", type=int, default=2, help="orders per customer")
    p.add_argument("--keep-running", action="store_true", help="keep the sample systems and worker up")
    p.add_argument(
        "--erp",
        choices=["sample", "tryton"],
        default="sample",
        help="sample: the bundled sample ERP; tryton: a real Tryton started locally (needs the test extras)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="measure mapping and end-to-end throughput")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="smaller sizes (for smoke tests)")
    p.add_argument("--long", action="store_true", help="the worker RSS run with 1,000,000 messages (default 100,000)")
    p.add_argument(
        "--amqp-url",
        default=None,
        help="RabbitMQ for the rabbitmq_* figures (default: $ISTHMUS_BENCH_AMQP_URL, else guest@127.0.0.1:5672); "
        "skipped with a note on stderr when it does not answer",
    )
    p.add_argument("--no-rabbitmq", action="store_true", help="skip the RabbitMQ and webhook figures")
    p.add_argument("--no-tryton", action="store_true", help="skip the Tryton figures (they start a local trytond)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at exit
        return code
    except ConfigError as exc:
        _print_problems(exc)
        return 2
    except IsthmusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`isthmus dlq list | head`): not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
