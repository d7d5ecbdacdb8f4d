"""YAML loading that remembers where every value was written.

Integrators need `file:line:col` on every error. PyYAML's composer keeps marks on nodes, so
we compose the node tree once and build plain Python data plus a map from the path of each
value (a tuple of keys and list indexes) to its location.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from middleware.errors import ConfigError, Problem, SourceLocation

YamlPath = tuple[str | int, ...]


@dataclass
class YamlDocument:
    """Plain data loaded from one YAML file, with the location of every key and value."""

    file: str
    data: Any
    value_locations: dict[YamlPath, SourceLocation] = field(default_factory=dict)
    key_locations: dict[YamlPath, SourceLocation] = field(default_factory=dict)

    def locate(self, path: YamlPath, *, key: bool = False) -> SourceLocation:
        """Location of `path`, falling back to its nearest written ancestor."""
        table = self.key_locations if key else self.value_locations
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.value_locations:
                return self.value_locations[probe]
            probe = probe[:-1]
        return self.value_locations.get((), SourceLocation(self.file, 1, 1))


def _loc(file: str, node: yaml.Node) -> SourceLocation:
    return SourceLocation(file, node.start_mark.line + 1, node.start_mark.column + 1)


def load_yaml_file(path: str | Path) -> YamlDocument:
    """Load one YAML file; syntax errors and duplicate keys become ConfigError with a location."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(Problem(f"cannot read file: {exc.strerror}", SourceLocation(file, 1, 1))) from exc
    return load_yaml_text(text, file)


def load_yaml_text(text: str, file: str = "<string>") -> YamlDocument:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = SourceLocation(file, mark.line + 1, mark.column + 1) if mark else SourceLocation(file, 1, 1)
        hint = "check indentation and quoting here"
        opened = exc.context_mark
        if exc.context and opened is not None and exc.problem_mark is not None and opened.line != exc.problem_mark.line:
            # e.g. an unclosed `[`: the parser notices lines later; point back to where it began
            hint = f"{exc.context} that starts at line {opened.line + 1}, column {opened.column + 1}: is it closed?"
        raise ConfigError(Problem(f"YAML syntax error: {exc.problem or exc}", loc, hint=hint)) from exc
    doc = YamlDocument(file=file, data=None)
    if node is None:
        doc.data = None
        return doc
    constructor = yaml.SafeLoader(text)  # only used for scalar resolution
    problems: list[Problem] = []
    doc.data = _build(node, (), doc, constructor, problems)
    constructor.dispose()
    if problems:
        raise ConfigError(problems)
    return doc


def _build(node: yaml.Node, path: YamlPath, doc: YamlDocument, loader: yaml.SafeLoader, problems: list[Problem]) -> Any:
    doc.value_locations[path] = _loc(doc.file, node)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(Problem("mapping keys must be plain scalars", _loc(doc.file, key_node)))
                continue
            # Keys are names, never YAML 1.1 booleans: `on:` must stay "on", not True.
            key = str(key_node.value)
            child = (*path, key)
            if key in result:
                problems.append(
                    Problem(
                        f"duplicate key {key!r}",
                        _loc(doc.file, key_node),
                        hint=f"first written at line {doc.key_locations[child].line}; keep one",
                    )
                )
                continue
            doc.key_locations[child] = _loc(doc.file, key_node)
            result[key] = _build(value_node, child, doc, loader, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), doc, loader, problems) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
