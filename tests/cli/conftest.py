"""Fixtures of the CLI tests: the real `isthmus` console script, run in an empty folder."""

from __future__ import annotations

from functools import partial

import pytest

from tests.cli.cli_runner import RunIsthmus, run_isthmus


@pytest.fixture(scope="session")
def isthmus(tmp_path_factory: pytest.TempPathFactory) -> RunIsthmus:
    """`isthmus(*args, cwd=None)` → Run, in a folder with no ./isthmus.yaml and no ./mappings.

    Session-scoped so that module fixtures can run a command once and share its output.
    """
    return partial(run_isthmus, tmp_path_factory.mktemp("cwd"))
