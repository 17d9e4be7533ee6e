"""Plugin discovery.

Spaces and strategies register through the entry-point groups ``nas.search_spaces`` and ``nas.strategies``
(a third-party package adds one in its own pyproject.toml). Anywhere a name is accepted, ``module:Class`` and
``path/to/file.py:Class`` work too, so a user's own plugin needs no packaging.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import PluginError
from nas.objective import Objective

if TYPE_CHECKING:
    import keras_tuner as kt

SPACES = "nas.search_spaces"
STRATEGIES = "nas.strategies"
_KIND = {SPACES: "space", STRATEGIES: "strategy"}


def available(group: str) -> dict[str, str]:
    """Registered plugin names mapped to their ``module:Class`` targets."""
    return {ep.name: ep.value for ep in sorted(entry_points(group=group), key=lambda e: e.name)}


def _load_file(path: Path, attr: str) -> Any:
    if not path.is_file():
        raise PluginError(f"plugin file {str(path)!r} does not exist")
    mod_name = "nas_user_" + "_".join(path.resolve().with_suffix("").parts[-3:]).replace("-", "_").replace(".", "_")
    if mod_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(mod_name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module  # registered first so pickling by Ray can find the class
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[mod_name]
            raise PluginError(f"plugin file {str(path)!r} failed to import: {type(e).__name__}: {e}") from e
    return _attr(sys.modules[mod_name], attr, str(path))


def _attr(module: Any, attr: str, where: str) -> Any:
    try:
        return getattr(module, attr)
    except AttributeError:
        names = [n for n, v in vars(module).items() if inspect.isclass(v) and not n.startswith("_")]
        raise PluginError(f"{where!r} has no {attr!r}; classes there: {', '.join(names) or 'none'}") from None


def check_ref(group: str, ref: str) -> None:
    """Fail on a plugin that cannot exist, without importing it (a space's import loads Keras and its framework):
    an unregistered name or a missing file."""
    kind = _KIND[group]
    if not isinstance(ref, str) or not ref:
        raise PluginError(f"{kind} name {ref!r} is not valid")
    target, sep, _ = ref.rpartition(":")
    if not sep:
        if ref not in available(group):
            raise PluginError(f"unknown {kind} {ref!r}; registered: {', '.join(available(group)) or 'none'} "
                              f"(or give module:Class or path/to/file.py:Class)")
    elif target.endswith(".py") or "/" in target or "\\" in target:
        if not Path(target).is_file():
            raise PluginError(f"plugin file {target!r} does not exist")


def load(group: str, ref: str) -> type:
    """A plugin class from a registered name, ``module:Class`` or ``file.py:Class``."""
    kind = _KIND[group]
    if not isinstance(ref, str) or not ref:
        raise PluginError(f"{kind} name {ref!r} is not valid")
    if ":" in ref:
        target, _, attr = ref.rpartition(":")
        if target.endswith(".py") or "/" in target or "\\" in target:
            obj = _load_file(Path(target), attr)
        else:
            try:
                module = importlib.import_module(target)
            except ImportError as e:
                raise PluginError(f"{kind} {ref!r}: module {target!r} cannot be imported ({e})") from e
            obj = _attr(module, attr, target)
    else:
        eps = {ep.name: ep for ep in entry_points(group=group)}
        if ref not in eps:
            raise PluginError(
                f"unknown {kind} {ref!r}; registered: {', '.join(sorted(eps)) or 'none'} "
                f"(or give module:Class or path/to/file.py:Class)"
            )
        try:
            obj = eps[ref].load()
        except Exception as e:
            raise PluginError(f"{kind} {ref!r} ({eps[ref].value}) failed to load: {type(e).__name__}: {e}") from e
    _check_class(group, ref, obj)
    return obj


def _check_class(group: str, ref: str, obj: Any) -> None:
    from nas.space import SearchSpace
    from nas.strategy import Strategy

    base = SearchSpace if group == SPACES else Strategy
    if not (inspect.isclass(obj) and issubclass(obj, base)):
        raise PluginError(f"{_KIND[group]} {ref!r} is {obj!r}, not a subclass of nas.{base.__name__}")


def _options(cls: type, options: dict[str, Any], kind: str, ref: str, fixed: set[str]) -> None:
    sig = inspect.signature(cls.__init__)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    accepted = [n for n in sig.parameters if n not in fixed | {"self"}]
    bad = sorted(set(options) - set(accepted))
    if bad:
        raise PluginError(f"{kind} {ref!r} has no option {', '.join(bad)}; accepted: {', '.join(accepted) or 'none'}")


def create_strategy(
    name: str,
    space: "kt.HyperParameters",
    objective: str | Objective | list[str | Objective] = "val_accuracy:max",
    seed: int | None = None,
    **options: Any,
) -> Any:
    """A strategy by registered name (or ``module:Class`` / ``file.py:Class``) over ``space``."""
    cls = load(STRATEGIES, name)
    _options(cls, options, "strategy", name, {"space", "objective", "seed"})
    return cls(space=space, objective=objective, seed=seed, **options)


def create_space(name: str, task: Any, **options: Any) -> Any:
    """A search space by registered name (or ``module:Class`` / ``file.py:Class``) built for ``task``."""
    cls = load(SPACES, name)
    _options(cls, options, "space", name, {"task"})
    return cls(task=task, **options)


def summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def describe(group: str, name: str) -> str:
    """A registered plugin's one-line summary, read from its source without importing it (importing a space
    imports Keras and its framework: seconds, for a listing). Falls back to importing it."""
    import ast

    target = available(group).get(name, "")
    module, _, attr = target.partition(":")
    try:
        origin = importlib.util.find_spec(module).origin
        tree = ast.parse(Path(origin).read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == attr:
                doc = ast.get_docstring(node) or ""
                return doc.strip().splitlines()[0] if doc.strip() else ""
    except Exception:  # no source at hand (a compiled module, a namespace package): import it
        pass
    return summary(load(group, name))
