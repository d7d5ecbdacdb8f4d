"""Fixtures of the flow tests: the real Tryton of the adapter tests, the sample CRM, plugins.

The Tryton fixtures are tests/adapters/tryton's (a real trytond on SQLite, one per session).
`test_plugins` installs a plugin distribution (tests/flows/plugins) the way pip leaves one:
a `*.dist-info` folder with `entry_points.txt` on sys.path.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy.demo.sample_crm import SampleCrm
from tests.adapters.tryton.conftest import tag, tryton  # noqa: F401  (fixtures reused by name)

PLUGIN_SOURCE = Path(__file__).parent / "plugins"


def wait_until(condition: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture
def crm() -> Iterator[SampleCrm]:
    service = SampleCrm(token="demo-crm-token").start()
    yield service
    service.stop()


@pytest.fixture
def test_plugins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The isthmus_test_plugins distribution, installed for this test (and removed after it)."""
    from middleware.flows.steps import plugin_kinds
    from middleware.mapping.transforms import load_plugin_transforms

    site = tmp_path_factory.mktemp("site-packages")
    info = site / "isthmus_test_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: isthmus-test-plugins\nVersion: 1.0\n")
    sys.path[:0] = [str(site), str(PLUGIN_SOURCE)]
    from isthmus_test_plugins import ENTRY_POINTS

    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    load_plugin_transforms(reload=True)
    plugin_kinds(reload=True)
    yield site
    for entry in (str(site), str(PLUGIN_SOURCE)):
        sys.path.remove(entry)
    plugin_kinds(reload=True)
