"""Collecting located problems while walking one mapping file, so that all are reported."""

from __future__ import annotations

from dataclasses import dataclass, field

from middleware.errors import Problem
from middleware.problems import render_path
from middleware.yamlsource import YamlDocument, YamlPath


@dataclass
class ProblemLog:
    doc: YamlDocument
    problems: list[Problem] = field(default_factory=list)

    def add(self, message: str, path: YamlPath, hint: str = "", *, key: bool = False) -> None:
        """A problem at the value (or, with key=True, the key) written at `path`."""
        self.problems.append(Problem(message, self.doc.locate(path, key=key), render_path(path), hint))

    def extend(self, problems: list[Problem]) -> None:
        self.problems.extend(problems)

    def __len__(self) -> int:
        return len(self.problems)
