"""The `--config` option the command groups share, and how a config's problems are printed.

Both live here, below every command module and `main`, so a command can resolve its config
and report a broken one exactly as the entry point does, without importing the entry point.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from middleware.errors import ConfigError, Problem, SourceLocation

DEFAULT_CONFIG = "isthmus.yaml"


def print_problems(error: ConfigError) -> None:
    """Every problem on its own line (file:line:col, what, hint), then how many: on stderr."""
    for problem in error.problems:
        print(problem.render(), file=sys.stderr)
    count = len(error.problems)
    print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)


def config_file(args: argparse.Namespace) -> Path | None:
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
