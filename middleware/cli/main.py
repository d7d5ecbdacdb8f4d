"""`isthmus`: the entry point. It only assembles the command modules and handles their errors.

Each command group is one module of this package that owns its parser(s) and handler(s):
`register(subparsers)` adds its commands and sets `handler` on each. The order of COMMANDS is
the order `isthmus --help` lists them in.

Exit codes: 0 success, 1 the thing checked is wrong (validation errors, failing examples),
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from middleware.cli import (
    bench,
    broker,
    check,
    conflicts,
    demo,
    dlq,
    flows,
    mappings,
    reconcile,
    status,
    worker,
)
from middleware.cli.config_option import print_problems
from middleware.errors import ConfigError, IsthmusError

COMMANDS = (mappings, worker, status, broker, dlq, flows, check, reconcile, conflicts, demo, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="isthmus", description="CRM <-> ERP integration middleware.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at exit
        return code
    except ConfigError as exc:
        print_problems(exc)
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
