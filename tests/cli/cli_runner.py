"""Running the real `isthmus` console script, as a user would, from a clean working folder.

The CLI's promises are about what a person sees in a terminal (exit code, `file:line:col`
lines, no traceback), so these tests run the installed entry point in a subprocess rather
than calling functions: a broken entry point, an import-time error or an uncaught exception
all show up here exactly as they would for the user.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = REPO / "mappings"
SAMPLES = REPO / "deploy" / "demo" / "samples"
DEMO_CONFIG = REPO / "deploy" / "demo" / "isthmus.yaml"
TRACEBACK = "Traceback (most recent call last)"


def isthmus_command() -> list[str]:
    """The console script next to this interpreter (the venv's), else `python -m middleware.cli.main`."""
    script = Path(sys.executable).with_name("isthmus")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "middleware.cli.main"]


@dataclass
class Run:
    """One finished `isthmus` invocation."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err

    def assert_no_traceback(self) -> None:
        assert TRACEBACK not in self.output, f"isthmus {' '.join(self.args)} printed a traceback:\n{self.err}"


class RunIsthmus(Protocol):
    def __call__(self, *args: str | Path, cwd: Path | None = None, timeout: float = 60) -> Run: ...


def run_isthmus(workdir: Path, *args: str | Path, cwd: Path | None = None, timeout: float = 60) -> Run:
    """Run `isthmus ARGS...` in `cwd` (else `workdir`) and wait for it."""
    text_args = tuple(str(a) for a in args)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [*isthmus_command(), *text_args],
        cwd=cwd or workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(text_args, done.returncode, done.stdout, done.stderr)


def locate(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the `occurrence`-th `needle` in `text`.

    Tests compute expected positions from the text they wrote, so they cannot drift from it.
    """
    index = -1
    for _ in range(occurrence):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def run_in_process(capsys: Any, *args: str | Path) -> Run:
    """`middleware.cli.main.main(args)` in this process, output captured: for commands whose effect
    the test inspects right after (broker state), at a fraction of a subprocess's start-up cost.
    An uncaught exception propagates and fails the test, as a traceback would for a user."""
    from middleware.cli.main import main

    text_args = tuple(str(a) for a in args)
    capsys.readouterr()
    try:
        code = main(list(text_args))
    except SystemExit as exc:  # argparse rejects usage errors this way
        code = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    return Run(text_args, code, captured.out, captured.err)
