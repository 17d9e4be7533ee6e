"""What a search is given that is not a name: the Python API's in-memory data and plugin objects, made files of
the run directory, so that the run resumes, exports and trains on Ray workers like one started from the command
line (whose inputs are names and paths already).

- data arrays (``nas.search(data=(x, y), ...)``): ``<run>/data.npz`` (``x_train``, ``y_train``, ``x_val``,
  ``y_val``: the validation split is saved, not drawn again), recorded as the run's ``--data``;
- a space or strategy given as a class or an instance (or a space as a KerasTuner build function): recorded as
  ``module:Class`` when the class (function) is importable from an installed package, else saved with cloudpickle in ``<run>/plugins/`` (``space.pkl``, ``strategy.pkl``),
  by value for a class from the user's own modules (a notebook, a script's directory): Ray's workers and a later
  ``nas resume`` do not have those on their import path;
- ``file.py:Class`` made absolute (Ray Tune runs each trial in a working directory of its own);
- the user's ``Model.fit`` arguments (``nas.search(..., callbacks=[...])``): ``<run>/plugins/fit.pkl``, recorded
  as the run's ``fit_arguments``; every trial loads its own copy (a callback's state is per trial).

Nothing here imports Keras.
"""

from __future__ import annotations

import contextlib
import inspect
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from nas.options import SearchOptions
from nas.plugins.data import Dataset
from nas.storage.layout import DATA, FIT_ARGUMENTS, PLUGINS
from nas.storage.store import ExperimentStore

#: our own packages: importable wherever nas is installed
OWN_PACKAGES = ("nas", "search_spaces", "strategies")


def plugin_ref(ref: str) -> str:
    """``file.py:Class`` with an absolute path; any other reference as it is."""
    target, sep, attr = ref.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return ref


def installed(module: Any) -> bool:
    """Whether ``module`` is importable in any process of this installation (a Ray worker, a later resume): one of
    our packages, the standard library or an installed distribution, not a notebook or a script's own module."""
    if module is None or module.__name__ in ("__main__", "__mp_main__"):
        return False
    if module.__name__.partition(".")[0] in OWN_PACKAGES:
        return True
    file = getattr(module, "__file__", None)
    if not file:
        return False
    path = Path(file).resolve()
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    return any(path.is_relative_to(Path(r).resolve()) for r in roots)


def reference(plugin: Any, path: Path) -> str:
    """What a run records to find ``plugin`` again (see the module's docstring): a name or reference as it is,
    ``module:Class`` for an installed class, else the path of ``plugin`` saved to ``path`` with cloudpickle."""
    if isinstance(plugin, str):
        return plugin_ref(plugin)
    named = inspect.isclass(plugin) or inspect.isfunction(plugin)  # a class, or a KerasTuner build function
    cls = plugin if named else type(plugin)
    module = sys.modules.get(cls.__module__)
    if named and installed(module) and getattr(module, cls.__qualname__, None) is plugin:
        return f"{cls.__module__}:{cls.__qualname__}"
    return save_pickled(plugin, path, [module, *_modules_within(plugin)])


def save_pickled(obj: Any, path: Path, modules: list[Any]) -> str:
    """``obj`` saved to ``path`` with cloudpickle, what it takes from ``modules`` that are the user's own (not
    installed: a Ray worker could not import them) by value; returns its absolute path."""
    import cloudpickle

    # a module without a file (builtins, a C extension's) is never the user's: by value it would recurse forever
    by_value = [m for m in dict.fromkeys(modules)
                if m is not None and getattr(m, "__file__", None) and not installed(m)
                and m.__name__ not in ("__main__", "__mp_main__")]
    for module in by_value:  # cloudpickle keeps __main__'s classes by value already; a user's module it would name
        cloudpickle.register_pickle_by_value(module)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            cloudpickle.dump(obj, f)
    finally:
        for module in by_value:
            cloudpickle.unregister_pickle_by_value(module)
    return str(path.resolve())


def _modules_within(obj: Any, depth: int = 3) -> list[Any]:
    """The modules of the functions, classes and objects ``obj`` holds (its attributes, ``depth`` levels down): a
    wrapper of nas's (a build function in ``BuildFunction``, a tuner in its ``run_trial`` hypermodel) must carry
    the user's function by value too, or a worker would try to import the user's module."""
    found: list[Any] = []
    if depth == 0:
        return found
    for value in list(getattr(obj, "__dict__", {}).values()):
        if inspect.isfunction(value) or inspect.isclass(value):
            found.append(sys.modules.get(value.__module__))
        elif hasattr(value, "__dict__") and not inspect.ismodule(value):
            found.append(sys.modules.get(type(value).__module__))
            found += _modules_within(value, depth - 1)
    return found


def _modules(value: Any) -> list[Any]:
    """The modules of the classes of ``value`` (and of what a list or dict of it holds)."""
    items = list(value.values()) if isinstance(value, dict) else list(value) if isinstance(value, (list, tuple)) \
        else [value]
    return [sys.modules.get(type(v).__module__) for v in items]


def save_data(data: Dataset, path: Path) -> str:
    """``data`` as the ``.npz`` file ``--data`` reads, train and validation arrays both; returns its path."""
    np.savez(path, x_train=data.x_train, y_train=data.y_train, x_val=data.x_val, y_val=data.y_val)
    return str(path.resolve())


@contextlib.contextmanager
def kept(store: ExperimentStore, opts: SearchOptions, data: Dataset | None, space: Any,
         strategy: Any, fit: dict[str, Any] | None = None) -> Iterator[None]:
    """Within the block, ``opts`` names files of the run for what was given in memory. Should the search fail
    before the run exists (no spec: bad input), those files are removed again, so the attempt leaves no trace."""
    written: list[Path] = []
    try:
        if space is not None:
            opts.space = reference(space, store.root / PLUGINS / "space.pkl")
        if strategy is not None:
            opts.strategy = reference(strategy, store.root / PLUGINS / "strategy.pkl")
        opts.space, opts.strategy = plugin_ref(opts.space), plugin_ref(opts.strategy)
        written.append(store.root / PLUGINS)
        if data is not None:
            written.append(store.root / DATA)
            opts.data = save_data(data, store.root / DATA)
        if fit:
            modules = [m for v in fit.values() for m in _modules(v)]
            opts.fit_arguments = save_pickled(dict(fit), store.root / FIT_ARGUMENTS, modules)
        yield
    except BaseException:
        if not store.exists():
            for path in written:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        raise


def label(plugin: Any, default: str) -> str:
    """A short name for a run name: the reference's class part, or the given class's name."""
    if plugin is None:
        return default
    if isinstance(plugin, str):
        return plugin
    if inspect.isfunction(plugin):  # a KerasTuner build function
        return plugin.__name__
    return (plugin if inspect.isclass(plugin) else type(plugin)).__name__
