"""The package's shape (docs/architecture.md): layers, no import circles, modules that stay small.

The import graph is read from the source (every ``import`` statement, lazy ones inside
functions included, since a lazy import is still a dependency), so the checks need no import
of the package and see what a reader of the code sees.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("theory", "sim", "gpu_kernels")

#: A library module longer than this is split (docs/architecture.md, "Modules").
MAX_MODULE_LINES = 650

#: The floors of ``sim``: a module imports only from its own floor's package or lower floors
#: (and from ``theory``).  gpu_kernels sits above every floor of sim.
#: The two re-export modules at sim's top level belong to the subpackage they re-export.
SIM_FLOORS = {
    "sim.stats": ("sim.stats", 1), "sim.models": ("sim.models", 1),
    "sim.strategies": ("sim.strategies", 1),
    "sim.engine": ("sim.engine", 2), "sim.reference": ("sim.engine", 2),
    "sim.conformance": ("sim.conformance", 3), "sim.clients": ("sim.conformance", 3),
    "sim.experiments": ("sim.experiments", 4),
    "sim.cli": ("sim.cli", 5),
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(name: str) -> str | None:
    """The module of ours that importing ``name`` executes last (None: not ours)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str) -> set[str]:
    """Modules of ours that ``name`` imports (a ``from pkg import sub`` names ``pkg.sub``)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if _is_package(name) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                       for alias in node.names]
        else:
            continue
        found.update(resolved for target in targets
                     if (resolved := _resolve(target)) is not None and resolved != name)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, components, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return components


def _floor(name: str) -> tuple[str, int] | None:
    """(group, floor) of a module of sim."""
    for prefix, floor in SIM_FLOORS.items():
        if name == prefix or name.startswith(prefix + "."):
            return floor
    return None


def test_the_graph_is_read():
    """Guards the checks below against reading nothing."""
    assert {"theory", "sim", "gpu_kernels", "sim.cli"} <= set(MODULES)
    assert "theory" in GRAPH["sim.models"]


def test_no_import_circles():
    assert _cycles(GRAPH) == []


def test_the_circle_finder_finds_circles():
    """Negative control: a planted circle (and a self-contained chain) are told apart."""
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(planted) == [["a", "b", "c"]]


def _layer_violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs that go against the layers (docs/architecture.md §5)."""
    wrong = []
    for name, imported in graph.items():
        for other in imported:
            top, other_top = name.partition(".")[0], other.partition(".")[0]
            if top == "theory" and other_top != "theory":
                wrong.append((name, other))
            elif top == "sim" and other_top == "gpu_kernels":
                wrong.append((name, other))
            elif top == "sim" and other_top == "sim" and name != "sim":
                mine, theirs = _floor(name), _floor(other)
                if other == "sim":
                    wrong.append((name, other))  # the package's front door is for users
                elif mine is None or theirs is None:
                    wrong.append((name, other))  # every module of sim has a floor
                elif theirs[0] != mine[0] and theirs[1] >= mine[1]:
                    wrong.append((name, other))
    return sorted(wrong)


def test_layers():
    """theory never imports sim or gpu_kernels; sim never imports gpu_kernels; within sim, a
    module imports only its own subpackage or lower floors (engines never import experiments,
    the conformance harness or the CLI)."""
    assert _layer_violations(GRAPH) == []


def test_the_layer_check_catches_wrong_imports():
    """Negative control: each kind of wrong import is reported, the right ones are not."""
    planted = {
        "theory.exact": {"sim.engine.core"},  # theory must not see sim
        "sim.engine.core": {"sim.experiments.runner", "theory.models"},  # an engine upward
        "sim.stats": {"gpu_kernels.engine"},  # sim must not see gpu_kernels
        "sim.engine.token": {"sim"},  # the front door
        "sim.experiments.block": {"sim.engine.block", "sim.stats"},  # fine: lower floors
        "sim.reference": {"sim.engine.reference"},  # fine: its own subpackage
    }
    assert _layer_violations(planted) == [
        ("sim.engine.core", "sim.experiments.runner"), ("sim.engine.token", "sim"),
        ("sim.stats", "gpu_kernels.engine"), ("theory.exact", "sim.engine.core")]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines; split it by concern"


def test_sim_is_grouped_by_concern():
    """sim's top level holds a handful of modules; engines, the conformance harness and the
    experiments are subpackages."""
    top_modules = sorted(name for name in MODULES
                         if name.startswith("sim.") and name.count(".") == 1
                         and not _is_package(name))
    assert len(top_modules) <= 7, top_modules
    assert all(_is_package(name) for name in ("sim.engine", "sim.conformance",
                                              "sim.experiments"))
