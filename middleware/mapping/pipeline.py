"""The transform pipe language: `trim | upper | prefix('CRM-') | decimal(2)`.

A tiny, closed grammar read by our own tokenizer, never by `eval`:

    pipeline := step ("|" step)*
    step     := name [ "(" [ arg ("," arg)* ] ")" ]
    arg      := 'single quoted' | "double quoted" | number | word

Names are `[a-z_][a-z0-9_]*`; words are `[A-Za-z_][A-Za-z0-9_/]*` (e.g. `UTC`, `ISO`,
`Europe/Berlin`, `crm`) and mean their own text; numbers are `-?digits[.digits]`. Inside
quotes, backslash-quote is the quote and two backslashes one backslash; any other backslash
is kept, so `regex('C-(\\d+)')` reads as written. Anything else is a parse error with its
position, so a string like `__import__('os').system('x')` is rejected at load.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


class PipelineSyntaxError(ValueError):
    """The pipe text does not follow the grammar; `position` is a 0-based offset."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


@dataclass(frozen=True)
class Arg:
    kind: str  # "string" (quoted), "word" (bare), "int" or "number"
    value: str | int | Decimal
    position: int

    def describe(self) -> str:
        return repr(self.value) if self.kind == "string" else str(self.value)


@dataclass(frozen=True)
class Step:
    name: str
    args: tuple[Arg, ...]
    position: int

    def describe(self) -> str:
        if not self.args:
            return self.name
        return f"{self.name}({', '.join(a.describe() for a in self.args)})"


_NAME_START = set("abcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | set("0123456789")
_WORD_START = _NAME_START | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WORD_CHARS = _WORD_START | set("0123456789/")
_DIGITS = set("0123456789")


def parse_pipeline(text: str) -> list[Step]:
    """Steps of a pipe expression; raises PipelineSyntaxError with the offending position."""
    parser = _Parser(text)
    return parser.pipeline()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _skip_spaces(self) -> None:
        text = self.text
        while self.pos < len(text) and text[self.pos] in " \t\n\r":
            self.pos += 1

    def _peek(self) -> str:
        self._skip_spaces()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _fail(self, expected: str) -> PipelineSyntaxError:
        if self.pos >= len(self.text):
            return PipelineSyntaxError(f"expected {expected} but the text ended", self.pos)
        return PipelineSyntaxError(
            f"expected {expected} at character {self.pos + 1}, found {self.text[self.pos]!r}", self.pos
        )

    def pipeline(self) -> list[Step]:
        steps = [self.step()]
        while True:
            char = self._peek()
            if char == "":
                return steps
            if char != "|":
                raise self._fail("'|' or the end of the pipeline")
            self.pos += 1
            steps.append(self.step())

    def step(self) -> Step:
        self._skip_spaces()
        start = self.pos
        if self._peek() not in _NAME_START or self._peek() == "":
            raise self._fail("a transform name (lowercase letters, digits, _)")
        while self.pos < len(self.text) and self.text[self.pos] in _NAME_CHARS:
            self.pos += 1
        name = self.text[start : self.pos]
        args: list[Arg] = []
        if self._peek() == "(":
            self.pos += 1
            if self._peek() == ")":
                self.pos += 1
            else:
                while True:
                    args.append(self.arg())
                    char = self._peek()
                    self.pos += 1
                    if char == ")":
                        break
                    if char != ",":
                        self.pos -= 1
                        raise self._fail("',' or ')'")
        return Step(name, tuple(args), start)

    def arg(self) -> Arg:
        char = self._peek()
        start = self.pos
        if char in ("'", '"'):
            return self._quoted(char)
        if char in _DIGITS or (char == "-" and self.text[self.pos + 1 : self.pos + 2] in _DIGITS):
            self.pos += 1
            while self.pos < len(self.text) and self.text[self.pos] in _DIGITS:
                self.pos += 1
            if self.text[self.pos : self.pos + 1] == "." and self.text[self.pos + 1 : self.pos + 2] in _DIGITS:
                self.pos += 1
                while self.pos < len(self.text) and self.text[self.pos] in _DIGITS:
                    self.pos += 1
                return Arg("number", Decimal(self.text[start : self.pos]), start)
            return Arg("int", int(self.text[start : self.pos]), start)
        if char in _WORD_START and char != "":
            while self.pos < len(self.text) and self.text[self.pos] in _WORD_CHARS:
                self.pos += 1
            return Arg("word", self.text[start : self.pos], start)
        raise self._fail("an argument: a 'quoted string', a number or a word")

    def _quoted(self, quote: str) -> Arg:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\\" and text[self.pos + 1 : self.pos + 2] in (quote, "\\"):
                out.append(text[self.pos + 1])
                self.pos += 2
                continue
            if char == quote:
                self.pos += 1
                return Arg("string", "".join(out), start)
            out.append(char)
            self.pos += 1
        raise PipelineSyntaxError(f"string starting at character {start + 1} is not closed", start)
