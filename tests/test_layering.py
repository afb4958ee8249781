"""The package's import structure: read from the source (every import, the ones inside functions included), so a
lazy import cannot hide an arrow the wrong way.

Units are the subpackages (``dfsearch.models``, ``dfsearch.tune``, ...) and the top-level modules.  The lower
ones (models, data, train, tracking, inference) never import the Ray layer, the report or a command, and no two
units import each other, directly or round a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dfsearch

PACKAGE = Path(dfsearch.__file__).parent
LOW = ("models", "data", "train", "tracking", "inference")
HIGH = ("tune", "report", "bench", "run", "predict", "prepare", "cli")  # the Ray layer, the report, the commands


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The dfsearch modules ``path`` imports (``from pkg import submodule`` counts as the submodule only)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("dfsearch")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dfsearch"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            out |= subs if len(subs) == len(node.names) else subs | {node.module}
    return out & known


def unit(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def is_command(module: str) -> bool:
    return module.endswith(".__main__")


def unit_edges() -> dict[tuple[str, str], list[str]]:
    mods = modules()
    edges: dict[tuple[str, str], list[str]] = {}
    for name, path in mods.items():
        if name == "dfsearch":
            continue
        for target in imports(path, set(mods)):
            a, b = unit(name), unit(target)
            if a != b and target != "dfsearch":
                edges.setdefault((a, b), []).append(f"{name} -> {target}")
    return edges


def test_the_lower_packages_import_no_ray_layer_report_or_command():
    up = [line for (a, b), lines in unit_edges().items() if a in LOW and b in HIGH
          for line in lines if not is_command(line.split(" -> ")[0])]
    assert up == []


def test_no_two_packages_import_each_other():
    edges = unit_edges()
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    loops = {f"{a} -> {b}": edges[(a, b)] for a in graph for b in graph[a] if reaches(b, a)}
    assert loops == {}
