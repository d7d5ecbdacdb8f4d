"""Fixtures of the CLI tests: the real `isthmus` console script, run in an empty folder."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from tests.cli.cli_runner import Run, RunIsthmus, run_in_process, run_isthmus


@pytest.fixture(scope="session")
def isthmus(tmp_path_factory: pytest.TempPathFactory) -> RunIsthmus:
    """`isthmus(*args, cwd=None)` → Run, in a folder with no ./isthmus.yaml and no ./mappings.

    Session-scoped so that module fixtures can run a command once and share its output.
    """
    return partial(run_isthmus, tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> RunIsthmus:
    """`cli(*args)` → Run of `middleware.cli.main.main(args)` in this process (see run_in_process)."""

    def run(*args: str | Path, cwd: Path | None = None, timeout: float = 60) -> Run:
        assert cwd is None, "in-process runs share the test's working folder"
        return run_in_process(capsys, *args)

    return run
