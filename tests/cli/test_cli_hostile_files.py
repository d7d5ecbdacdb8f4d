"""Files that would crash or stall `isthmus` are reported as problems, without a traceback.

The real console script runs in a subprocess with a timeout: a traceback, a hang or a
MemoryError shows here exactly as a user would see it.
"""

from __future__ import annotations

from pathlib import Path

from tests.cli.cli_runner import RunIsthmus, locate
from tests.core.test_yaml_limits import billion_laughs


def test_validate_reports_a_latin1_config_without_a_traceback(isthmus: RunIsthmus, tmp_path: Path) -> None:
    text = "broker: embedded://broker.db\nstore: sqlite://state.db\n# Gr\u00fc\u00dfe\nmappings: []\n"
    path = tmp_path / "isthmus.yaml"
    path.write_bytes(text.encode("latin-1"))
    run = isthmus("validate", "--config", path)
    run.assert_no_traceback()
    assert run.code == 1, run.output
    line, column = locate(text, "\u00fc")
    assert f"{path}:{line}:{column}: the file is not UTF-8 text" in run.err
    assert "hint: save it as UTF-8" in run.err


def test_validate_reports_a_yaml_bomb_mapping_without_a_traceback(isthmus: RunIsthmus, tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(billion_laughs(), encoding="utf-8")
    run = isthmus("validate", tmp_path, timeout=20)
    run.assert_no_traceback()
    assert run.code == 1, run.output
    assert "aliases expand to more than 10,000 values" in run.err
