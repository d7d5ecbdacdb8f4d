"""A user's mistake (a wrong path, a missing file, a broken sample) gets one clear line, not a
Python traceback, and a non-zero exit code: 2 for usage and configuration errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli.cli_runner import MAPPINGS, SAMPLES, TRACEBACK, RunIsthmus, isthmus_command

CUSTOMER = "crm_customer_to_canonical"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "broken.json").write_text('{"customer_no": "C-1",\n  "company": }\n', encoding="utf-8")
    (folder / "latin1.json").write_bytes('{"company": "Müller"}'.encode("latin-1"))
    (folder / "number.json").write_text("42\n", encoding="utf-8")
    return folder


CASES: dict[str, tuple[list[str], str]] = {
    # name: (arguments, text the error must contain); {files} and {missing} are filled in
    "sample is not JSON": (["preview", CUSTOMER, "{files}/broken.json"], "{files}/broken.json:2:14: not valid JSON"),
    "sample is missing": (["preview", CUSTOMER, "{missing}/sample.json"], "{missing}/sample.json"),
    "sample is a folder": (["preview", CUSTOMER, "{files}"], "Is a directory"),
    "sample is not UTF-8": (["preview", CUSTOMER, "{files}/latin1.json"], "not UTF-8"),
    "sample is not a record": (
        ["preview", CUSTOMER, "{files}/number.json", "--paths", str(MAPPINGS)],
        "must be an object",
    ),
    "mapping folder is missing": (
        ["preview", CUSTOMER, str(SAMPLES / "crm_customer.json"), "--paths", "{missing}"],
        "{missing}:1:1: no such mapping file or folder",
    ),
    "test path is missing": (["test", "{missing}"], "{missing}:1:1: no such mapping file or folder"),
    "dlq config is missing": (["dlq", "list", "--config", "{missing}/isthmus.yaml"], "{missing}/isthmus.yaml"),
    "worker config is missing": (["worker", "--config", "{missing}/isthmus.yaml"], "{missing}/isthmus.yaml"),
    "test config is missing": (["test", "--config", "{missing}/isthmus.yaml"], "no such config file"),
    "unknown command": (["valdiate"], "invalid choice"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_clear_message(isthmus: RunIsthmus, files: Path, tmp_path: Path, case: str) -> None:
    arguments, expected = CASES[case]
    missing = tmp_path / "nowhere"
    fill = {"files": str(files), "missing": str(missing)}
    run = isthmus(*[a.format(**fill) for a in arguments])
    run.assert_no_traceback()
    assert run.code == 2, run.output
    assert expected.format(**fill) in run.err, run.err
    assert run.out == ""


def test_output_into_a_closed_pipe_is_no_traceback(tmp_path: Path) -> None:
    """`isthmus schema | head -1`: the reader leaving early is normal, not a crash."""
    process = subprocess.Popen(
        [*isthmus_command(), "schema"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the child has started writing
    err = process.stderr.read().decode()
    process.wait(timeout=30)
    assert TRACEBACK not in err and "Exception ignored" not in err, err


def test_repo_mappings_folder_in_working_dir_is_the_default(isthmus: RunIsthmus) -> None:
    """Run from the repo root without arguments, `validate` finds ./mappings (the 60-second tour)."""
    run = isthmus("validate", cwd=MAPPINGS.parent)
    assert run.code == 0, run.output
