"""`isthmus validate`: every problem of every file at once, each as `FILE:LINE:COL: ...` + hint.

An integrator fixes mapping files from this output alone, so the line and column must point
at the mistake and the hints must name the fix. Expected positions are computed from the text
the test writes (`locate`), never typed in by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.cli_runner import MAPPINGS, Run, RunIsthmus, locate

BROKEN = """\
mapping: broken_customer
description: a mapping with one mistake of each kind
source: crm.customer
target: Customer
fields:
  customer_id: customer_no
  nmae: company
  email: {from: email, transform: "trim | lowercase"}
  phone: {from: phone, transform: "prefix"}
  tier: {from: tier, when: {field: tier, bigger: 3}}
  active: {const: true}
"""

BAD_SYNTAX = """\
mapping: bad_syntax
source: crm.customer
target: Customer
fields:
  customer_id: customer_no
  name: company: extra
"""

DUPLICATE_KEY = """\
mapping: duplicate_key
source: crm.customer
target: Customer
fields:
  customer_id: customer_no
  name: company
  name: company_name
"""


@pytest.fixture(scope="module")
def broken_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("broken")
    (folder / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    (folder / "syntax.yaml").write_text(BAD_SYNTAX, encoding="utf-8")
    (folder / "duplicate.yaml").write_text(DUPLICATE_KEY, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def broken_run(isthmus: RunIsthmus, broken_folder: Path) -> Run:
    """`isthmus validate` on the broken folder, run once for every test of this module."""
    return isthmus("validate", broken_folder)


def _problem(output: str, file: Path, line: int, column: int, text: str) -> str:
    """The problem line for this place (and its hint line, if any); fails naming what is missing."""
    pattern = re.compile(rf"^{re.escape(str(file))}:{line}:{column}: (.*(?:\n    hint: .*)?)", re.MULTILINE)
    found = [m.group(1) for m in pattern.finditer(output) if text in m.group(1)]
    assert found, f"no problem {text!r} at {file.name}:{line}:{column} in:\n{output}"
    return found[0]


def test_repo_mappings_are_valid(isthmus: RunIsthmus) -> None:
    run = isthmus("validate", MAPPINGS)
    count = len(list(MAPPINGS.glob("*.yaml")))
    assert run.code == 0, run.output
    assert f"ok: {count} mappings valid" in run.out


def test_broken_mappings_exit_1(broken_run: Run, broken_folder: Path) -> None:
    run = broken_run
    run.assert_no_traceback()
    assert run.code == 1, run.output
    assert run.out == "", "problems belong on stderr"


def test_every_problem_is_reported_once_with_a_total(broken_run: Run, broken_folder: Path) -> None:
    run = broken_run
    located = re.findall(rf"^{re.escape(str(broken_folder))}/\S+\.yaml:\d+:\d+: ", run.err, re.MULTILINE)
    # broken.yaml: typo (+ the required `name` it leaves unmapped), transform, arity, condition;
    # syntax.yaml: one; duplicate.yaml: one.
    assert len(located) == 7, run.err
    assert run.err.rstrip().endswith("7 problems found")


def test_misspelt_canonical_field_points_at_the_key_and_suggests_the_name(broken_run: Run, broken_folder: Path) -> None:
    run = broken_run
    line, column = locate(BROKEN, "nmae")
    problem = _problem(run.err, broken_folder / "broken.yaml", line, column, "nmae")
    assert "hint: did you mean 'name'?" in problem


def test_unknown_transform_is_located_and_hinted(broken_run: Run, broken_folder: Path) -> None:
    run = broken_run
    line, column = locate(BROKEN, '"trim | lowercase"')
    problem = _problem(run.err, broken_folder / "broken.yaml", line, column, "unknown transform 'lowercase'")
    assert "did you mean 'lower'?" in problem


def test_wrong_transform_arity_is_located_and_shows_the_signature(broken_run: Run, broken_folder: Path) -> None:
    run = broken_run
    line, column = locate(BROKEN, '"prefix"')
    problem = _problem(run.err, broken_folder / "broken.yaml", line, column, "prefix takes 1 argument, got 0")
    assert "hint: write prefix(" in problem


def test_unknown_condition_key_is_located_and_lists_valid_keys(broken_run: Run, broken_folder: Path) -> None:
    run = broken_run
    line, column = locate(BROKEN, "bigger")
    problem = _problem(run.err, broken_folder / "broken.yaml", line, column, "unknown condition key 'bigger'")
    assert "gt" in problem.split("hint:", 1)[1]


def test_yaml_syntax_error_is_located(broken_run: Run, broken_folder: Path) -> None:
    run = broken_run
    line, column = locate(BAD_SYNTAX, ": extra")
    _problem(run.err, broken_folder / "syntax.yaml", line, column, "YAML syntax error")


def test_duplicate_key_names_both_lines(broken_run: Run, broken_folder: Path) -> None:
    run = broken_run
    first_line, _ = locate(DUPLICATE_KEY, "name:")
    line, column = locate(DUPLICATE_KEY, "name:", occurrence=2)
    problem = _problem(run.err, broken_folder / "duplicate.yaml", line, column, "duplicate key 'name'")
    assert f"first written at line {first_line}" in problem


def test_missing_path_is_a_located_problem(isthmus: RunIsthmus, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    run = isthmus("validate", missing)
    run.assert_no_traceback()
    assert run.code == 1
    assert f"{missing}:1:1: no such mapping file or folder" in run.err
