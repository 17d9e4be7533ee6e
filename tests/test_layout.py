"""The engine's layout stays readable: no import cycles between its modules, no module reaching into another's
private names, and every module importable on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nas"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Every import of a nas module in ``path``, at any depth (imports inside functions hide cycles too):
    (module imported, names taken from it, line)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "nas"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "nas":
            for a in node.names:  # `from nas import params` imports the module nas.params
                sub = f"{node.module}.{a.name}"
                out.append((sub, [], node.lineno) if sub in MODULES else (node.module, [a.name], node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_the_engine() -> None:
    graph = _graph()
    assert len(graph) > 20 and "nas.engine" in graph and "nas.engine" in graph["nas.cli"] | graph["nas"] | {
        t for ts in graph.values() for t in ts}
    assert not _cycles(graph), f"import cycles (imports inside functions included): {_cycles(graph)}"


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_takes_another_modules_private_names() -> None:
    bad = [f"{m}:{line} takes {name} from {target}" for m, p in MODULES.items()
           for target, names, line in _imports(p) for name in names if name.startswith("_") and target != m]
    assert not bad, bad


def test_engine_keeps_to_running_searches() -> None:
    lines = len((PACKAGE / "engine.py").read_text().splitlines())
    assert lines < 400, f"nas/engine.py has {lines} lines; give a job of its own a module of its own"


def test_every_module_imports() -> None:
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in MODULES)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
