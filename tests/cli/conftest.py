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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

def _command() -> list[str]:
    """The console script next to this interpreter (the venv's), else `python -m middleware.cli`."""
    script = Path(sys.executable).with_name("isthmus")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "middleware.cli"]


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
        assert "Traceback (most recent call last)" not in self.output, f"isthmus {' '.join(self.args)}:\n{self.err}"


RunIsthmus = Callable[..., Run]


@pytest.fixture
def isthmus(tmp_path: Path) -> RunIsthmus:
    """Run `isthmus ARGS...` in a fresh folder (no ./isthmus.yaml, no ./mappings) and wait for it."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()

    def run(*args: str | Path, cwd: Path | None = None, timeout: float = 60) -> Run:
        text_args = tuple(str(a) for a in args)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"}
        done = subprocess.run(
            [*_command(), *text_args],
            cwd=cwd or workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Run(text_args, done.returncode, done.stdout, done.stderr)

    return run


def _locate(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    index = -1
    for _ in range(occurrence):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


@pytest.fixture
def locate() -> Callable[..., tuple[int, int]]:
    """`locate(text, needle, occurrence=1)` → 1-based (line, column) of that needle.

    Expected positions are computed from the file a test wrote, so they cannot drift from it.
    """
    return _locate
