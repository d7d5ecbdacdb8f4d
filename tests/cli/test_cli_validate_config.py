"""`isthmus validate --config FILE`: the config is checked like a mapping file.

A misspelt key or a token pasted into the YAML is reported with `file:line:col` and a hint
(exit 1: what was checked is wrong); a --config that does not exist is an error, never a
silent "ok" for a config nobody read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.cli_runner import DEMO_CONFIG, MAPPINGS, Run, RunIsthmus, locate

BAD_CONFIG = f"""\
broker: embedded://broker.db
store: sqlite://state.db
mapings: [{MAPPINGS}]
systems:
  crm:
    type: rest
    base_url: http://127.0.0.1:8801
    auth: {{type: bearer, token: abc}}
    entities:
      customer:
        read: {{path: /api/customers, id_field: customer_no}}
routes: []
"""


@pytest.fixture(scope="module")
def bad_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "isthmus.yaml"
    path.write_text(BAD_CONFIG, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bad_config_run(isthmus: RunIsthmus, bad_config: Path) -> Run:
    return isthmus("validate", "--config", bad_config)


def test_bad_config_fails_with_exit_1(bad_config_run: Run) -> None:
    bad_config_run.assert_no_traceback()
    assert bad_config_run.code == 1, bad_config_run.output


def test_misspelt_config_key_is_located_and_hinted(bad_config_run: Run, bad_config: Path) -> None:
    line, column = locate(BAD_CONFIG, "mapings")
    assert f"{bad_config}:{line}:{column}: mapings: unknown key 'mapings'" in bad_config_run.err
    assert "hint: did you mean 'mappings'?" in bad_config_run.err


def test_misspelt_key_under_a_named_entity_gets_a_did_you_mean(isthmus: RunIsthmus, tmp_path: Path) -> None:
    text = (
        "broker: embedded://broker.db\nstore: sqlite://state.db\nmappings: []\nsystems:\n  crm:\n    type: rest\n"
        "    base_url: http://127.0.0.1:8801\n    entities:\n      customer:\n        wrtie: {}\nroutes: []\n"
    )
    path = tmp_path / "isthmus.yaml"
    path.write_text(text, encoding="utf-8")
    run = isthmus("validate", "--config", path)
    line, column = locate(text, "wrtie")
    assert f"{path}:{line}:{column}: systems.crm.entities.customer.wrtie: unknown key" in run.err, run.output
    assert "hint: did you mean 'write'?" in run.err


def test_plaintext_secret_is_located_and_points_to_an_env_reference(bad_config_run: Run, bad_config: Path) -> None:
    line, column = locate(BAD_CONFIG, "abc")
    lines = bad_config_run.err.splitlines()
    where = f"{bad_config}:{line}:{column}: systems.crm.auth.token: "
    index = next((i for i, text in enumerate(lines) if text.startswith(where)), None)
    assert index is not None, bad_config_run.err
    hint = lines[index + 1]
    assert "hint:" in hint and "${" in hint, hint
    assert "abc" not in bad_config_run.err.replace(str(bad_config), ""), "the secret must not be echoed"


def test_demo_config_is_valid(isthmus: RunIsthmus) -> None:
    run = isthmus("validate", "--config", DEMO_CONFIG)
    assert run.code == 0, run.output
    assert "mappings valid" in run.out


def test_config_that_does_not_exist_is_an_error_not_ok(isthmus: RunIsthmus, tmp_path: Path) -> None:
    missing = tmp_path / "isthmus.yml"
    run = isthmus("validate", "--config", missing)
    run.assert_no_traceback()
    assert run.code == 2, run.output
    assert f"{missing}:1:1: no such config file" in run.err
    assert "ok:" not in run.out


def test_config_in_working_folder_is_checked_by_default(isthmus: RunIsthmus, bad_config: Path) -> None:
    run = isthmus("validate", cwd=bad_config.parent)
    assert run.code == 1, run.output
    assert "unknown key 'mapings'" in run.err
