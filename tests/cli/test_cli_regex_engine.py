"""Patterns in mappings run in linear time, and patterns that could not are refused at validate.

`^(a+)+$` against 41 a's and a b backtracks for hours under Python's `re` inside one C call,
so `isthmus preview` (and a worker) hung. These tests run the real console script with a
subprocess timeout, so on a backtracking engine they fail instead of hanging.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from tests.cli.cli_runner import RunIsthmus, locate

HOSTILE = "a" * 41 + "b"

BACKTRACKING = """\
mapping: backtracking
source: crm.customer
target: Customer
fields:
  customer_id: customer_no
  name: {from: company, transform: "regex('^(a+)+$')", default: unmatched}
  tier: {from: tier, when: {field: company, matches: '^(a+)+$'}}
"""

LOOKAROUND = """\
mapping: lookaround
source: crm.customer
target: Customer
fields:
  customer_id: {from: customer_no, transform: "regex('(?<=C-)\\\\d+')"}
  name: {from: company, when: {field: company, matches: '^(\\w)\\1'}}
"""


def test_backtracking_pattern_previews_within_a_second(isthmus: RunIsthmus, tmp_path: Path) -> None:
    (tmp_path / "backtracking.yaml").write_text(BACKTRACKING, encoding="utf-8")
    sample = tmp_path / "customer.json"
    sample.write_text(json.dumps({"customer_no": "C-1", "company": HOSTILE, "tier": "gold"}), encoding="utf-8")
    started = time.monotonic()
    try:
        run = isthmus("preview", "backtracking", sample, "--paths", tmp_path, timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("isthmus preview hung on ^(a+)+$: the regex engine backtracks") from None
    took = time.monotonic() - started
    run.assert_no_traceback()
    assert run.code == 0, run.output
    record = json.loads(run.out)
    assert record["customer_id"] == "C-1"
    assert record["name"] == "unmatched", "the regex transform found no match"
    assert "tier" not in record or record["tier"] is None, "the matches: condition is false"
    # the subprocess start-up (imports) dominates; the two matches themselves take microseconds
    assert took < 10, f"preview took {took:.1f} s"


def test_backreference_and_lookaround_are_refused_at_validate_with_their_place(
    isthmus: RunIsthmus, tmp_path: Path
) -> None:
    path = tmp_path / "lookaround.yaml"
    path.write_text(LOOKAROUND, encoding="utf-8")
    run = isthmus("validate", tmp_path)
    run.assert_no_traceback()
    assert run.code == 1, run.output
    for needle, operator in (("\"regex('(?<=C-)", "(?<="), ("'^(\\w)\\1'", "\\1")):
        line, column = locate(LOOKAROUND, needle)
        found = re.search(rf"^{re.escape(str(path))}:{line}:{column}: (.*)\n    hint: (.*)$", run.err, re.MULTILINE)
        assert found, f"no problem at {line}:{column} in:\n{run.err}"
        assert "bad regular expression" in found.group(1) and operator in found.group(1)
        assert found.group(2).startswith("RE2 syntax: no backreferences or lookaround; rewrite as")
