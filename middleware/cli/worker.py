"""`isthmus worker`: run the daemon (sources, webhooks, routes) until a signal stops it."""

from __future__ import annotations

import argparse

from middleware.cli.config_option import DEFAULT_CONFIG


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("worker", help="run the worker daemon (sources, webhooks, routes)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--no-sources", action="store_true", help="consume routes only (scale-out consumers)")
    p.add_argument("--no-routes", action="store_true", help="poll sources and receive webhooks only")
    p.add_argument("--metrics-port", type=int, default=None, help="serve /metrics here instead of observability.port")
    p.set_defaults(handler=cmd_worker)


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
