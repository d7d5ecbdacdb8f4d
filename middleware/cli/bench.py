"""`isthmus bench`: measure mapping and end-to-end throughput (see `middleware.bench`)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("bench", help="measure mapping and end-to-end throughput")
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
    p.set_defaults(handler=cmd_bench)


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
