"""The package tree is layered: imports go down or sideways, never up, and never round.

Every import is read with `ast` — deferred ones inside functions and `if TYPE_CHECKING:` ones
included — because a cycle closed by a deferred import is still a cycle a reader must untangle.
The layer map below is the one the README's architecture section draws.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("middleware", "adapters")

# Lowest first. A module may import modules of its own layer or of a lower one.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "contracts",
        (
            "middleware",
            "middleware.message",
            "middleware.entities",
            "middleware.errors",
            "middleware.problems",
            "middleware.yamlsource",
            "middleware.redact",
            "middleware.adapter",
            "middleware.schema",
        ),
    ),
    (
        "foundations",
        (
            "middleware.broker",
            "middleware.store",
            "middleware.mapping",
            "middleware.schedule",
            "middleware.observability",
        ),
    ),
    # A feature's own config models: pure pydantic, so the root config can build on them.
    ("feature config models", ("middleware.sync.config", "middleware.reconcile.config", "middleware.runtime.config")),
    ("config", ("middleware.config",)),
    ("adapters", ("adapters",)),
    ("features", ("middleware.runtime", "middleware.sync", "middleware.flows", "middleware.reconcile")),
    ("operator surfaces", ("middleware.ops",)),
    ("outside the runtime", ("middleware.bench", "middleware.demo", "middleware.testing")),
    ("command line", ("middleware.cli",)),
)
FEATURE_CONFIG_MODELS = LAYERS[2][1]
# What a feature's config model may import besides the standard library.
CONFIG_MODEL_THIRD_PARTY = {"pydantic"}


def module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = module_files()


def imported_names(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(absolute module name, line) of every import in the file, wherever it stands."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield (candidate if candidate in MODULES else base), node.lineno


def project_module(name: str) -> str | None:
    """The project module an imported name lands in (the longest known prefix), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, dict[str, int]]:
    graph: dict[str, dict[str, int]] = {}
    for module, path in MODULES.items():
        edges: dict[str, int] = {}
        for name, line in imported_names(module, path):
            target = project_module(name) if name.split(".")[0] in PACKAGES else None
            if target and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest layer prefix that names the module."""
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # the root package names only itself: a new flat module must be placed on purpose
            matches = module == prefix or (prefix != "middleware" and module.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    found = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            if layer_of(target) > layer_of(module):
                found.append(
                    f"{MODULES[module].relative_to(REPO)}:{line}: {module} ({LAYERS[layer_of(module)][0]}) imports "
                    f"{target} ({LAYERS[layer_of(target)][0]})"
                )
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = [module for module in MODULES if layer_of(module) < 0]
    assert not unplaced, f"add these modules to a layer in LAYERS (and the README's map): {unplaced}"


def test_no_import_cycles_between_modules() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (break them by moving what both sides need down a layer):\n" + "\n".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def test_no_import_goes_up_a_layer() -> None:
    found = upward_imports(import_graph())
    assert not found, "imports that go up a layer:\n" + "\n".join(found)


@pytest.mark.parametrize("module", [m for m in MODULES if m in FEATURE_CONFIG_MODELS])
def test_feature_config_models_import_only_pydantic_and_contracts(module: str) -> None:
    import sys

    outside = sorted(
        {
            name.split(".")[0]
            for name, _ in imported_names(module, MODULES[module])
            if name.split(".")[0] not in PACKAGES
            and name.split(".")[0] not in sys.stdlib_module_names
            and name.split(".")[0] not in CONFIG_MODEL_THIRD_PARTY
            and name != "__future__"
        }
    )
    assert not outside, f"{module} is a config model and may import only pydantic and the standard library: {outside}"


def test_runtime_imports_neither_bench_nor_demo() -> None:
    graph = import_graph()
    runtime = [m for m in MODULES if layer_of(m) <= layer_of("middleware.runtime")]
    leaks = [
        f"{module} imports {target}"
        for module in runtime
        for target in graph[module]
        if target.startswith(("middleware.bench", "middleware.demo", "middleware.testing"))
    ]
    assert not leaks, leaks


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    """The test must be able to fail: a made-up graph with both faults is caught."""
    graph = {"middleware.config.settings": {"middleware.runtime.worker": 1}, "middleware.runtime.worker": {}}
    graph["middleware.runtime.worker"]["middleware.config.settings"] = 2
    assert find_cycles(graph) == [["middleware.config.settings", "middleware.runtime.worker"]]
    assert any("imports middleware.runtime.worker" in line for line in upward_imports(graph))


def readme_module_map() -> set[str]:
    """Paths the README's layer table names; `schema.py` after `middleware/entities.py` in one
    cell is read as `middleware/schema.py`."""
    import re

    text = (REPO / "README.md").read_text()
    table = text[text.index("| layer | modules |") :]
    table = table[: table.index("\n\n")]
    named: set[str] = set()
    for row in table.splitlines()[2:]:
        cell = row.split("|")[2]
        folder = ""
        for token in re.findall(r"`([^`]+)`", cell):
            if "/" in token.rstrip("/"):
                folder = token.rstrip("/").rpartition("/")[0] if token.endswith(".py") else ""
                named.add(token.rstrip("/"))
            elif folder:
                named.add(f"{folder}/{token}")
            else:
                named.add(token.rstrip("/"))
    return named


def test_readme_module_map_matches_the_tree() -> None:
    named = readme_module_map()
    missing_on_disk = sorted(path for path in named if not (REPO / path).exists())
    assert not missing_on_disk, f"the README's layer table names what the tree lacks: {missing_on_disk}"
    units = {
        str(path.relative_to(REPO)) if path.is_file() else str(path.relative_to(REPO))
        for package in PACKAGES
        for path in (REPO / package).iterdir()
        if (path.is_dir() and (path / "__init__.py").exists()) or (path.suffix == ".py" and path.name != "__init__.py")
    }
    covered = {unit for unit in units if unit in named or any(name.startswith(unit + "/") for name in named)}
    assert units == covered, f"add these to the README's layer table: {sorted(units - covered)}"
