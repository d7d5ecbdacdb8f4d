"""Regular expressions and globs that integrators write, run by RE2 in time linear in the text.

Python's `re` backtracks: `^(a+)+$` against 41 a's and a b runs for hours inside one C call
that holds the GIL, so a single `regex` transform or `matches:` condition froze every route,
the webhook receiver, `/healthz` and the SIGTERM handler of the worker. RE2 (`google-re2`)
never backtracks, so no pattern can do that. The price is its syntax: no backreferences and
no lookaround. A pattern RE2 cannot run is refused when it is compiled — at load, so
`isthmus validate` reports it with its place — with a hint how to rewrite it.

Every pattern from YAML goes through this module: `regex` transforms and `matches:`
conditions (mappings and flows) with `compile_regex`, shell-style globs (reconcile
`unlinked_match`, SOAP `fault_rules`) with `glob_matches`.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import re2

RE2_SYNTAX = "RE2 syntax: no backreferences or lookaround"


class PatternMatch(Protocol):
    def group(self, group: int | str = ..., /) -> Any: ...


class CompiledPattern(Protocol):
    """The part of a compiled RE2 pattern callers use (the same names as `re.Pattern`)."""

    @property
    def groups(self) -> int: ...

    @property
    def groupindex(self) -> dict[str, int]: ...

    def search(self, text: str) -> PatternMatch | None: ...

    def fullmatch(self, text: str) -> PatternMatch | None: ...


class PatternError(ValueError):
    """A pattern RE2 refuses: `str()` says what is wrong, `hint` how to write it instead."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _options(*, ignore_case: bool = False, dot_all: bool = False) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr itself
    options.case_sensitive = not ignore_case
    options.dot_nl = dot_all
    return options


def compile_regex(pattern: str) -> CompiledPattern:
    """Compile a regular expression written in a mapping or flow; PatternError if RE2 cannot run it."""
    try:
        compiled: CompiledPattern = re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(f"bad regular expression {pattern!r}: {reason}", rewrite_hint(reason)) from None
    return compiled


def rewrite_hint(reason: str) -> str:
    """How to write what RE2 refused (`reason` is RE2's own message) in the syntax it runs."""
    if (reason.startswith("invalid escape sequence: \\") and reason[-1:].isdigit()) or "\\k" in reason:
        fix = "rewrite as the repeated text written out, e.g. (ab)ab for (ab)\\1"
    elif "(?P" in reason:
        fix = "rewrite (?P=name) as the repeated text written out; (?P<name>...) groups themselves are fine"
    elif "(?=" in reason or "(?!" in reason:
        fix = (
            "rewrite as a plain group and take the part you need with regex(pattern, group), "
            "or combine two conditions with all: / not:"
        )
    elif "(?<=" in reason or "(?<!" in reason:
        fix = "rewrite as a group for the text before, e.g. 'C-(\\d+)' instead of '(?<=C-)\\d+', and take group 1"
    elif "(?>" in reason or "++" in reason or "*+" in reason or "?+" in reason:
        fix = "rewrite without the atomic group or possessive quantifier: RE2 never backtracks, so it needs neither"
    elif "\\Z" in reason:
        fix = "rewrite \\Z as \\z (end of text) or $"
    elif "(?x" in reason:
        fix = "rewrite without (?x): write the pattern on one line without comments"
    elif "repetition" in reason:
        fix = "rewrite with counts of at most 1000, e.g. {1,1000}, or use + / *"
    else:
        fix = "rewrite it in RE2 syntax: check brackets and escapes, and quote the pattern in YAML"
    return f"{RE2_SYNTAX}; {fix}"


def glob_to_regex(glob: str) -> str:
    """The RE2 pattern for a shell-style glob, with `fnmatch`'s meaning: `*` any text (also
    across dots and lines), `?` one character, `[abc]` / `[a-z]` / `[!abc]` one of a set; an
    unclosed `[` is a literal."""
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        char = glob[i]
        i += 1
        if char == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = i + 1 if i < n and glob[i] == "!" else i
            if end < n and glob[end] == "]":
                end += 1
            while end < n and glob[end] != "]":
                end += 1
            if end >= n:
                out.append("\\[")
                continue
            body = glob[i:end]
            i = end + 1
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            members = "".join(c if c.isalnum() or c == "-" else "\\" + c for c in body)
            out.append(f"[{'^' if negate else ''}{members}]")
        else:
            out.append(char if char.isalnum() or char == "_" else "\\" + char)
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def compile_glob(glob: str, *, ignore_case: bool = False) -> CompiledPattern:
    """A compiled glob (cached: the same few globs are matched against many records)."""
    try:
        compiled: CompiledPattern = re2.compile(glob_to_regex(glob), _options(ignore_case=ignore_case, dot_all=True))
    except re2.error:
        # only a character range RE2 refuses (e.g. [z-a], which fnmatch lets match nothing) gets here
        compiled = re2.compile("[^\\x00-\\x{10FFFF}]", _options())
    return compiled


def glob_matches(glob: str, text: str, *, ignore_case: bool = False) -> bool:
    """Whether the whole of `text` matches the shell-style `glob` (see glob_to_regex)."""
    return compile_glob(glob, ignore_case=ignore_case).fullmatch(text) is not None
