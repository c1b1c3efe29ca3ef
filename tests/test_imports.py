"""The import graph of src/georeason: no cycles, and imports point one way (README, "Imports point one way").

Reads the source with `ast` (function-level imports count too: a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Layers, lowest first; a module may import its own layer or a lower one, never a higher one.
LAYERS = [
    {"georeason", "georeason.errors", "georeason.config", "georeason.textfiles", "georeason.filenames"},
    {"georeason.model", "georeason.data", "georeason.metrics", "georeason.geo", "georeason.redundancy",
     "georeason.render"},
    {"georeason.reasoner", "georeason.processor", "georeason.training"},
    {"georeason.predict", "georeason.evaluate", "georeason.train", "georeason.serve", "georeason.batch",
     "georeason.demo", "georeason.annotate"},
    {"georeason.cli"},
]
# Data, metrics and GeoTIFF code never import the model (they run, and are tested, without torch models).
MODEL_FREE = {"georeason.data", "georeason.metrics", "georeason.geo", "georeason.redundancy", "georeason.render"}
MODEL_SIDE = {"georeason.model", "georeason.reasoner", "georeason.processor"}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in (SRC / "georeason").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module -> the georeason modules it imports anywhere in its body (`from a import b` counts a.b when
    b is a module)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {module for module in found if module in modules and module != name}
    return graph


def _layer_key(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def _layer(module: str) -> int:
    key = _layer_key(module)
    for index, members in enumerate(LAYERS):
        if key in members:
            return index
    raise AssertionError(f"{module}: not assigned to a layer in tests/test_imports.py; add it to LAYERS")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, result, counter = {}, {}, set(), [], [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
                    result.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return result


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    # convert.py imports SegEarthModel inside functions only: still an edge.
    assert "georeason.model.segearth" in graph["georeason.model.convert"]
    assert "georeason.serve.settings" in graph["georeason.serve.routes"]


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_point_one_way():
    wrong = [f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
             for module, targets in import_graph().items() for target in targets
             if _layer(target) > _layer(module)]
    assert wrong == []


def test_data_metrics_and_geo_never_import_the_model():
    wrong = [f"{module} imports {target}" for module, targets in import_graph().items()
             if _layer_key(module) in MODEL_FREE for target in targets if _layer_key(target) in MODEL_SIDE]
    assert wrong == []
