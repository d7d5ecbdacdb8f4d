"""Globs keep their shell meaning on RE2, and refused regular expressions say how to rewrite them."""

from __future__ import annotations

import fnmatch

import pytest

from middleware.mapping.patterns import PatternError, compile_regex, glob_matches

GLOBS = [
    ("C-*", "C-1001"),
    ("C-*", "X-1001"),
    ("*deadlock*", "transaction deadlock detected"),
    ("Server.Validation*", "Server.Validation.Amount"),
    ("Server.Validation*", "ServerXValidation"),
    ("C-???", "C-123"),
    ("C-???", "C-12"),
    ("[abc]-1", "b-1"),
    ("[!abc]-1", "b-1"),
    ("[a-c]x", "cx"),
    ("[", "["),
    ("a[", "a["),
    ("*.*", "line\nbreak.x"),
    ("(a+)+$", "(a+)+$"),
    ("^x", "^x"),
    ("a\\b", "a\\b"),
    ("[z-a]", "b"),
]


@pytest.mark.parametrize(("glob", "text"), GLOBS)
def test_glob_matches_as_fnmatch_does(glob: str, text: str) -> None:
    assert glob_matches(glob, text) == fnmatch.fnmatchcase(text, glob)


def test_glob_ignores_case_when_asked() -> None:
    assert glob_matches("server.validation*", "Server.VALIDATION.x", ignore_case=True)
    assert not glob_matches("server.validation*", "Server.VALIDATION.x")


@pytest.mark.parametrize(
    ("pattern", "fix"),
    [
        ("(ab)\\1", "(ab)ab"),
        ("(?P<x>a)(?P=x)", "(?P=name)"),
        ("^(?=C-)", "all: / not:"),
        ("(?<!C-)\\d+", "'C-(\\d+)'"),
        ("a++", "possessive"),
        ("a\\Z", "\\z"),
    ],
)
def test_refused_pattern_hints_the_re2_rewrite(pattern: str, fix: str) -> None:
    with pytest.raises(PatternError) as refused:
        compile_regex(pattern)
    assert refused.value.hint.startswith("RE2 syntax: no backreferences or lookaround; rewrite ")
    assert fix in refused.value.hint


def test_backtracking_pattern_runs_in_linear_time() -> None:
    search = compile_regex("^(a+)+$").search
    assert search("a" * 100_000 + "b") is None
    assert search("a" * 41) is not None
