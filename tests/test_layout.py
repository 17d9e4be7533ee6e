"""The engine's layout stays readable: layers a newcomer sees in `ls nas/`, imports that only point down the
layers, no import cycles, no module reaching into another's private names, every module importable on its own,
and the old flat module paths still importing (deprecated)."""

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
assert len(MODULES) > 30, MODULES


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Every import of a nas module in ``path``, at any depth (imports inside functions hide cycles too):
    (module imported, names taken from it, line)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "nas"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "nas":
            for a in node.names:  # `from nas import params` imports the module nas.plugins.params
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


#: the layers, bottom first: a module imports only modules of its own layer or of layers below. A module
#: belongs to the longest prefix listed (``nas.estimation.settings`` is part of the options; the rest of
#: ``nas.estimation``, the weight-sharing phase, sits between the trials and the driver).
LAYERS = [
    ["nas.errors"],
    ["nas.plugins"],
    ["nas.storage"],
    ["nas.runtime"],
    ["nas.options", "nas.estimation.settings"],
    ["nas.trials"],
    ["nas.estimation"],
    ["nas.driver"],
    ["nas.views"],
    ["nas.api", "nas.testing"],
    ["nas.tuners", "nas.cli"],
    ["nas", "nas._compat"],  # the package's face: names loaded on first use, old module paths
]


def layer_of(module: str) -> int:
    best, depth = None, -1
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = level, prefix.count(".")
    assert best is not None, f"{module} is in no layer of LAYERS: add it to one"
    return best


def test_every_module_imports_only_its_own_layer_or_below() -> None:
    graph = _graph()
    assert {"nas.driver.engine", "nas.plugins.space", "nas.storage.layout", "nas.trials.single"} <= set(graph)
    up = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})" for m, ts in sorted(graph.items())
          for t in sorted(ts) if layer_of(t) > layer_of(m)]
    assert not up, "imports up the layers:\n" + "\n".join(up)


def test_the_layer_check_finds_an_import_up() -> None:
    assert layer_of("nas.storage.store") > layer_of("nas.plugins.space")
    assert layer_of("nas.estimation.settings") < layer_of("nas.trials.worker") < layer_of("nas.estimation.phase")


def test_the_package_shows_its_layers() -> None:
    """`ls nas/` shows the layers: a subpackage each, with a docstring saying what lives there; at the top only
    the API (and its KerasTuner-shaped face, tuners), the CLI, the options and the errors."""
    top = sorted(p.name for p in PACKAGE.iterdir() if p.suffix == ".py" and not p.name.startswith("_"))
    assert top == ["api.py", "cli.py", "errors.py", "options.py", "tuners.py"], top
    for layer in ("plugins", "storage", "runtime", "trials", "estimation", "driver", "views"):
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
        assert doc and len(doc) > 100, f"nas/{layer}/__init__.py says nothing of what lives there"


def test_no_import_cycles() -> None:
    graph = _graph()
    assert len(graph) > 20
    assert not _cycles(graph), f"import cycles (imports inside functions included): {_cycles(graph)}"


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_takes_another_modules_private_names() -> None:
    bad = [f"{m}:{line} takes {name} from {target}" for m, p in MODULES.items()
           for target, names, line in _imports(p) for name in names if name.startswith("_") and target != m]
    assert not bad, bad


def test_old_module_paths_still_import_with_a_deprecation_warning() -> None:
    """Code written against the flat layout (``from nas.engine import ...``, ``nas.space.SearchSpace`` in a plugin
    pickled by the API) keeps working for one release: the old path is the new module, with a warning."""
    code = ("import warnings, nas\n"
            "warnings.simplefilter('always')\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    import nas.space, nas.plugins.space, nas.engine\n"
            "    from nas import trial\n"
            "assert nas.space is nas.plugins.space and nas.space.SearchSpace is nas.SearchSpace\n"
            "assert trial.__name__ == 'nas.trials.single' and nas.engine.run_search\n"
            "print(sorted(str(x.message).split()[0] for x in w if x.category is DeprecationWarning))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "['nas.engine', 'nas.space', 'nas.trial']", proc.stdout


def test_every_module_imports() -> None:
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in MODULES)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
