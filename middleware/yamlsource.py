"""YAML loading that remembers where every value was written.

Integrators need `file:line:col` on every error. PyYAML's composer keeps marks on nodes, so
we compose the node tree once and build plain Python data plus a map from the path of each
value (a tuple of keys and list indexes) to its location.

The files are written by people and sometimes by tools or attackers, so loading is bounded:
at most MAX_DEPTH levels of nesting, at most MAX_ALIAS_VALUES values produced by aliases
(a ~1 KB "billion laughs" file would otherwise expand to billions), no alias inside the node
it names, and text that is UTF-8. Each is refused as a ConfigError with `file:line:col`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from middleware.errors import ConfigError, Problem, SourceLocation

YamlPath = tuple[str | int, ...]

MAX_DEPTH = 64
MAX_ALIAS_VALUES = 10_000
# Flow brackets, and the quoted scalars and comments whose brackets do not count.
_FLOW_TOKENS = re.compile(
    r"""(?:^|(?<=[\s\[{,:]))(?:'(?:[^']|'')*'|"(?:[^"\\]|\\.)*"|#[^\n]*)|[\[\]{}]""", re.MULTILINE
)


@dataclass
class YamlDocument:
    """Plain data loaded from one YAML file, with the location of every key and value."""

    file: str
    data: Any
    value_locations: dict[YamlPath, SourceLocation] = field(default_factory=dict)
    key_locations: dict[YamlPath, SourceLocation] = field(default_factory=dict)
    # Values that `${VAR}` references were resolved to: errors never echo them.
    env_values: set[str] = field(default_factory=set)

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
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(Problem(f"cannot read file: {exc.strerror}", SourceLocation(file, 1, 1))) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        where = SourceLocation(file, raw.count(b"\n", 0, exc.start) + 1, exc.start - line_start + 1)
        raise ConfigError(
            Problem(
                f"the file is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} is not valid UTF-8",
                where,
                hint="save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`, or your editor's encoding setting)",
            )
        ) from None
    return load_yaml_text(text, file)


def load_yaml_text(text: str, file: str = "<string>") -> YamlDocument:
    _refuse_deep_flow(text, file)
    composer = _BoundedComposer(text, file)
    try:
        node = composer.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = SourceLocation(file, mark.line + 1, mark.column + 1) if mark else SourceLocation(file, 1, 1)
        hint = "check indentation and quoting here"
        opened = exc.context_mark
        if exc.context and opened is not None and exc.problem_mark is not None and opened.line != exc.problem_mark.line:
            # e.g. an unclosed `[`: the parser notices lines later; point back to where it began
            hint = f"{exc.context} that starts at line {opened.line + 1}, column {opened.column + 1}: is it closed?"
        raise ConfigError(Problem(f"YAML syntax error: {exc.problem or exc}", loc, hint=hint)) from exc
    finally:
        composer.dispose()
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


def _refuse_deep_flow(text: str, file: str) -> None:
    """Refuse `[[[[...` beyond MAX_DEPTH before PyYAML sees it: its scanner keeps a possible
    key per open flow bracket and re-checks them all on every token, so 10,000 brackets cost
    seconds before the composer could count them. The _BoundedComposer still checks nesting
    exactly; this pass only has to be cheap and never refuse a file that nests less."""
    depth = 0
    for token in _FLOW_TOKENS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                offset = token.start()
                line = text.count("\n", 0, offset) + 1
                column = offset - (text.rfind("\n", 0, offset) + 1) + 1
                raise ConfigError(
                    Problem(
                        f"the YAML nests more than {MAX_DEPTH} levels deep here",
                        SourceLocation(file, line, column),
                        hint=f"Isthmus files nest at most {MAX_DEPTH} levels: flatten this part, or close an open "
                        "bracket",
                    )
                )
        elif char in "]}":
            depth = max(depth - 1, 0)


class _BoundedComposer(yaml.SafeLoader):
    """PyYAML's safe composer, refusing deep nesting, recursive aliases and alias bombs.

    PyYAML composes an alias as a second reference to the anchored node, so the node graph
    stays small; it is the plain data built from it (`_build`) that would grow to billions
    of values or recurse forever. Each node's expanded size and height are recorded as it
    is composed, so every alias is charged what it will expand to before anything is built.
    """

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self.file = file
        self.open_collections = 0
        self.alias_values = 0
        self.expanded: dict[int, tuple[int, int]] = {}  # id(node) → (values it builds, levels it nests)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                self._charge_alias(event, target)
            return super().compose_node(parent, index)  # (an undefined alias is PyYAML's error)
        nests = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if nests:
            self.open_collections += 1
            if self.open_collections > MAX_DEPTH:
                raise self._refused(
                    event.start_mark,
                    f"the YAML nests more than {MAX_DEPTH} levels deep here",
                    f"Isthmus files nest at most {MAX_DEPTH} levels: flatten this part, or close an open bracket",
                )
        node = super().compose_node(parent, index)
        if nests:
            self.open_collections -= 1
        if node is not None:
            self.expanded[id(node)] = self._size(node)
        return node

    def _size(self, node: yaml.Node) -> tuple[int, int]:
        if isinstance(node, yaml.SequenceNode):
            children = [self.expanded[id(item)] for item in node.value]
        elif isinstance(node, yaml.MappingNode):
            children = [self.expanded[id(part)] for pair in node.value for part in pair]
        else:
            return 1, 0
        return 1 + sum(size for size, _ in children), 1 + max((height for _, height in children), default=0)

    def _charge_alias(self, event: yaml.AliasEvent, target: yaml.Node) -> None:
        if target.end_mark is None:  # a collection still being composed: the alias is inside it
            raise self._refused(
                event.start_mark,
                f"recursive alias *{event.anchor}: it stands inside the node &{event.anchor} names",
                "an alias may only repeat a node that is complete before it; write this value out",
            )
        size, height = self.expanded[id(target)]
        self.alias_values += size
        if self.alias_values > MAX_ALIAS_VALUES:
            raise self._refused(
                event.start_mark,
                f"aliases expand to more than {MAX_ALIAS_VALUES:,} values by here (a YAML alias bomb?)",
                "write the repeated values out, or repeat fewer and smaller anchored nodes",
            )
        if self.open_collections + height > MAX_DEPTH:
            raise self._refused(
                event.start_mark,
                f"alias *{event.anchor} nests the YAML more than {MAX_DEPTH} levels deep here",
                f"Isthmus files nest at most {MAX_DEPTH} levels: flatten the anchored node",
            )

    def _refused(self, mark: Any, message: str, hint: str) -> ConfigError:
        where = SourceLocation(self.file, mark.line + 1, mark.column + 1) if mark else SourceLocation(self.file, 1, 1)
        return ConfigError(Problem(message, where, hint=hint))


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
