"""Finding, checking and compiling mapping files into a MappingSet.

`validate_mappings` returns every problem of every file (for `isthmus validate`);
`load_mappings` raises one ConfigError carrying all of them (for the worker).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from middleware.errors import ConfigError, Problem, SourceLocation
from middleware.mapping.compiler import CompiledMapping, MappingChain, check_chain, compile_document
from middleware.problems import did_you_mean
from middleware.yamlsource import YamlDocument, load_yaml_file, load_yaml_text

MAPPING_SUFFIXES = (".yaml", ".yml")


class MappingSet(Mapping[str, CompiledMapping]):
    """Compiled mappings by id (read-only, dict-like), plus chains of them."""

    def __init__(self, mappings: dict[str, CompiledMapping] | None = None) -> None:
        self._mappings: dict[str, CompiledMapping] = dict(mappings or {})

    def __getitem__(self, mapping_id: str) -> CompiledMapping:
        try:
            return self._mappings[mapping_id]
        except KeyError:
            hint = did_you_mean(mapping_id, self._mappings)
            raise KeyError(f"no mapping with id {mapping_id!r}" + (f"; {hint}" if hint else "")) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._mappings)

    def __len__(self) -> int:
        return len(self._mappings)

    def chain_problems(self, mapping_ids: list[str]) -> list[Problem]:
        """Problems with chaining these ids: unknown ids, and targets that do not feed sources."""
        unknown = [
            Problem(f"no mapping with id {m!r}", hint=did_you_mean(m, self._mappings))
            for m in mapping_ids
            if m not in self._mappings
        ]
        if unknown:
            return unknown
        return check_chain([self._mappings[m] for m in mapping_ids])

    def chain(self, mapping_ids: list[str]) -> MappingChain:
        """A MappingChain of these ids in order; ConfigError when they do not fit."""
        problems = self.chain_problems(mapping_ids)
        if problems:
            raise ConfigError(problems)
        return MappingChain([self._mappings[m] for m in mapping_ids])


def mapping_files(paths: list[str | Path] | list[Path] | list[str]) -> tuple[list[Path], list[Problem]]:
    """The YAML files named by `paths` (folders are searched recursively, sorted)."""
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in MAPPING_SUFFIXES and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(
                Problem(
                    "no such mapping file or folder",
                    SourceLocation(str(path), 1, 1),
                    hint="check the path (relative paths start at the config file's folder)",
                )
            )
    return files, problems


def compile_mapping_document(doc: YamlDocument) -> CompiledMapping:
    """Compile one loaded document; ConfigError with every problem."""
    compiled, problems = compile_document(doc)
    if problems or compiled is None:
        raise ConfigError(problems)
    return compiled


def compile_mapping_text(text: str, file: str = "<string>") -> CompiledMapping:
    """Compile a mapping written as YAML text (tests, benchmarks, previews)."""
    return compile_mapping_document(load_yaml_text(text, file))


def compile_mapping_file(path: str | Path) -> CompiledMapping:
    return compile_mapping_document(load_yaml_file(path))


def validate_mappings(paths: list[str | Path] | list[Path] | list[str]) -> tuple[MappingSet, list[Problem]]:
    """Every valid mapping by id and every problem of every file (duplicate ids included)."""
    files, problems = mapping_files(paths)
    compiled: dict[str, CompiledMapping] = {}
    for file in files:
        try:
            doc = load_yaml_file(file)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        mapping, found = compile_document(doc)
        problems.extend(found)
        if mapping is None:
            continue
        first = compiled.get(mapping.id)
        if first is not None:
            problems.append(
                Problem(
                    f"mapping id {mapping.id!r} is already used",
                    doc.locate(("mapping",)),
                    "mapping",
                    f"first defined at {first.doc.locate(('mapping',)) if first.doc else first.file}; "
                    "mapping ids must be unique across files",
                )
            )
            continue
        compiled[mapping.id] = mapping
    return MappingSet(compiled), problems


def load_mappings(paths: list[str | Path] | list[Path] | list[str]) -> MappingSet:
    """All mappings of `paths`, or ConfigError listing every problem of every file."""
    mapping_set, problems = validate_mappings(paths)
    if problems:
        raise ConfigError(problems)
    return mapping_set
