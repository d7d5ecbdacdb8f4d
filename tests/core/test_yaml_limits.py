"""YAML loading is bounded: bombs, recursive aliases, deep nesting and non-UTF-8 text are refused
with `file:line:col` and a hint, quickly, instead of eating memory or raising a traceback.

Every config, mapping and flow file goes through `load_yaml_file`, so these hold for all three.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from middleware.errors import ConfigError, Problem
from middleware.yamlsource import load_yaml_file
from tests.cli.cli_runner import locate

REPO = Path(__file__).resolve().parents[2]


def billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


def refused(tmp_path: Path, text: str | bytes) -> tuple[Problem, Path]:
    """The one problem loading `text` from a file gives; fails if loading takes 2 s or more."""
    path = tmp_path / "hostile.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_yaml_file(path)
    assert time.monotonic() - started < 2
    assert len(caught.value.problems) == 1, caught.value
    problem = caught.value.problems[0]
    assert problem.location is not None and problem.location.file == str(path)
    assert problem.hint
    return problem, path


def at(problem: Problem, line: int, column: int) -> None:
    assert problem.location is not None
    assert (problem.location.line, problem.location.column) == (line, column), problem.render()


def test_billion_laughs_is_refused_where_the_aliases_pass_the_limit(tmp_path: Path) -> None:
    text = billion_laughs()
    assert len(text) < 1024
    problem, _ = refused(tmp_path, text)
    assert "aliases expand to more than 10,000 values" in problem.message
    # a..d expand to 9,999 values in all; the first alias of e passes the limit
    at(problem, *locate(text, "*d"))


@pytest.mark.parametrize(
    ("text", "alias"),
    [("a: &a [1, *a]\n", "*a"), ("a: &a {b: {c: *a}}\n", "*a"), ("a: &a {<<: *a}\n", "*a")],
)
def test_recursive_alias_is_refused_at_the_alias(tmp_path: Path, text: str, alias: str) -> None:
    problem, _ = refused(tmp_path, text)
    assert problem.message.startswith("recursive alias *a")
    at(problem, *locate(text, alias))


@pytest.mark.parametrize(
    "make",
    [
        lambda: "x: " + "[" * 10_000 + "]" * 10_000 + "\n",
        lambda: "x: " + "{a: " * 10_000 + "}" * 10_000 + "\n",
        # block nesting needs indentation: 300 levels are already a 90 KB file
        lambda: "".join("  " * i + f"k{i}:\n" for i in range(300)),
        lambda: "".join("  " * i + "-\n" for i in range(300)),
    ],
    ids=["flow sequences", "flow mappings", "block mappings", "block sequences"],
)
def test_deep_nesting_is_refused_at_level_65(tmp_path: Path, make: Callable[[], str]) -> None:
    problem, _ = refused(tmp_path, make())
    assert problem.message == "the YAML nests more than 64 levels deep here"
    assert problem.location is not None and problem.location.line in (1, 65)


def test_alias_that_nests_past_the_limit_is_refused(tmp_path: Path) -> None:
    text = "a: &a " + "[" * 40 + "1" + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    problem, _ = refused(tmp_path, text)
    assert "alias *a nests the YAML more than 64 levels" in problem.message
    at(problem, *locate(text, "*a"))


def test_brackets_in_quotes_and_comments_do_not_count_as_nesting(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("x: '" + "[" * 100 + '\'\ny: "{{{{"\n# ' + "[" * 100 + "\nz: [1, [2]]\n", encoding="utf-8")
    assert load_yaml_file(path).data["z"] == [1, [2]]


def test_anchors_and_merge_keys_the_project_uses_still_load() -> None:
    data = load_yaml_file(REPO / "deploy" / "demo" / "tryton_two_way.yaml").data
    routes = {route["name"]: route for route in data["routes"]}
    fields = [route["two_way"]["fields"] for route in routes.values() if "two_way" in route]
    customer = ["name", "email", "phone", "active", "addresses", "payment_terms"]
    product = ["name", "description", "list_price", "active"]
    assert fields == [customer, customer, product, product], "each *alias repeats its &anchor's list"


def test_latin1_file_is_refused_with_the_byte_and_its_place(tmp_path: Path) -> None:
    text = "mapping: m\nsource: crm.customer\ndescription: Kunde aus M\u00fcnchen\n"
    problem, _ = refused(tmp_path, text.encode("latin-1"))
    assert "not UTF-8" in problem.message and "0xfc" in problem.message
    assert f"offset {text.index(chr(0xFC))}" in problem.message
    at(problem, *locate(text, "\u00fc"))
    assert "save it as UTF-8" in problem.hint
