"""`isthmus test`: the `examples:` of mapping files pin their behaviour; a wrong one fails the run."""

from __future__ import annotations

import re
from pathlib import Path

from tests.cli.cli_runner import MAPPINGS, RunIsthmus, locate

FAILING = """\
mapping: customer_name_upper
source: crm.customer
target: crm.customer_out
fields:
  name: {from: company, transform: "trim | upper"}
  number: customer_no
examples:
  - name: name is upper-cased
    input: {company: " acme ", customer_no: C-1}
    expected: {name: ACME, number: C-1}
  - name: expects the name unchanged
    input: {company: " acme ", customer_no: C-2}
    expected: {name: " acme ", number: C-2}
"""


def test_repo_examples_pass(isthmus: RunIsthmus) -> None:
    run = isthmus("test", MAPPINGS)
    assert run.code == 0, run.output
    summary = re.search(r"^(\d+) passed, 0 failed$", run.out, re.MULTILINE)
    assert summary and int(summary.group(1)) > 0, run.out
    assert "FAIL" not in run.out


def test_failing_example_exits_1_naming_it_with_place_and_diff(isthmus: RunIsthmus, tmp_path: Path) -> None:
    file = tmp_path / "customer_name_upper.yaml"
    file.write_text(FAILING, encoding="utf-8")
    run = isthmus("test", file)
    run.assert_no_traceback()
    assert run.code == 1, run.output
    assert "PASS customer_name_upper: name is upper-cased" in run.out
    line, column = locate(FAILING, "name: expects")
    assert f"FAIL customer_name_upper: expects the name unchanged ({file}:{line}:{column})" in run.out
    assert "name: expected ' acme ', got 'ACME'" in run.out
    assert "1 passed, 1 failed" in run.out


def test_broken_mapping_file_is_reported_not_run(isthmus: RunIsthmus, tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text(FAILING.replace('"trim | upper"', '"trim | uper"'), encoding="utf-8")
    run = isthmus("test", file)
    run.assert_no_traceback()
    assert run.code != 0
    assert f"{file}:5:" in run.err and "did you mean 'upper'?" in run.err
