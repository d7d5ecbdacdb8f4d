"""The adapter registry: entry points are the one table, every adapter declares what it can do,
and reaching a config model stays light (no zeep, no pika)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

from middleware.adapter import BUILTIN_ADAPTERS, CAPABILITIES, ENTRY_POINT_GROUP, adapter_types, load_adapter_class
from middleware.config.settings import BUILTIN_FEATURE_CHECKS, FEATURE_CHECKS_GROUP

REPO = Path(__file__).resolve().parents[2]


def installed(group: str) -> dict[str, str]:
    """The entry points of one group that the installed isthmus distribution (pyproject.toml) declares."""
    return {ep.name: ep.value for ep in distribution("isthmus").entry_points.select(group=group)}


def test_builtin_adapter_table_equals_the_installed_entry_points() -> None:
    assert installed(ENTRY_POINT_GROUP) == BUILTIN_ADAPTERS


def test_builtin_feature_checks_equal_the_installed_entry_points() -> None:
    assert installed(FEATURE_CHECKS_GROUP) == BUILTIN_FEATURE_CHECKS


@pytest.mark.parametrize("type_name", sorted(BUILTIN_ADAPTERS))
def test_every_adapter_declares_known_capabilities_and_callers_their_operations(type_name: str) -> None:
    cls = load_adapter_class(type_name)
    assert cls.capabilities and cls.capabilities <= set(CAPABILITIES)
    assert ("read_one" in cls.capabilities or "stored_form" in cls.capabilities) <= ("read" in cls.capabilities)
    operations = cls.__dict__.get("operations")  # a Caller declares its operations on the class
    assert bool(operations) == ("call" in cls.capabilities)


SYSTEM_SETTINGS = {
    "rest": "base_url: http://127.0.0.1:1",
    "soap": "wsdl: http://127.0.0.1:1/service?wsdl",
    "tryton": "url: http://127.0.0.1:1\n    database: tryton\n    username: admin\n    password: ${TRYTON_PASSWORD}",
}


@pytest.mark.parametrize("type_name", sorted(SYSTEM_SETTINGS))
def test_loading_a_config_does_not_import_an_adapters_heavy_client(type_name: str, tmp_path: Path) -> None:
    assert set(SYSTEM_SETTINGS) == set(adapter_types())  # a new adapter type gets a line above
    config = tmp_path / "isthmus.yaml"
    config.write_text(f"systems:\n  one:\n    type: {type_name}\n    {SYSTEM_SETTINGS[type_name]}\n")
    script = (
        "import sys\n"
        "from middleware.config import load_config\n"
        f"loaded = load_config({str(config)!r}, check_mappings=False)\n"
        f"assert loaded.systems['one'][0] == {type_name!r}\n"
        "heavy = sorted(m for m in ('zeep', 'lxml', 'pika') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"TRYTON_PASSWORD": "x", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
