"""`isthmus demo`: sync a sample CRM and ERP (or a local Tryton) on the embedded broker."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("demo", help="sync a sample CRM and ERP on the embedded broker")
    p.add_argument("--customers", type=int, default=60)
    p.add_argument("--orders", type=int, default=2, help="orders per customer")
    p.add_argument("--keep-running", action="store_true", help="keep the sample systems and worker up")
    p.add_argument(
        "--erp",
        choices=["sample", "tryton"],
        default="sample",
        help="sample: the bundled sample ERP; tryton: a real Tryton started locally (needs the test extras)",
    )
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.erp == "tryton":
        from middleware.demo.tryton import run_tryton_demo

        return run_tryton_demo(args.customers, args.orders, keep_running=args.keep_running)
    from middleware.demo.sample import run_demo

    return run_demo(customers=args.customers, orders_per_customer=args.orders, keep_running=args.keep_running)
