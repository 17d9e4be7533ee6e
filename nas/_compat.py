"""Module paths of nas 0.1 before its layer subpackages (``nas.engine``, ``nas.space``, ...): they keep importing,
for one release, as the module that now holds their code, with a ``DeprecationWarning`` naming the new path.
Run directories hold no module path of nas (plugins are stored as ``search_spaces.mlp:MLPSpace`` and the
like), but plugin objects saved by the Python API with cloudpickle refer to their base classes by module
(``nas.space.SearchSpace``): those load through this too.

Python's import system can alias a module only through a finder on ``sys.meta_path`` (a module object placed in
``sys.modules`` by hand would be imported eagerly, for every old name, at ``import nas``), hence this one.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any

#: old module (under nas.) -> where its code is now
MOVED = {
    "space": "plugins.space", "strategy": "plugins.strategy", "params": "plugins.params",
    "objective": "plugins.objective", "task": "plugins.task", "data": "plugins.data", "registry": "plugins.registry",
    "store": "storage.store", "lock": "storage.lock", "results": "storage.results",
    "ray_runtime": "runtime.cluster", "backends": "runtime.backends",
    "worker": "trials.worker", "trial": "trials.single", "distributed": "trials.horovod",
    "artifacts": "trials.artifacts", "measure": "trials.measure", "tensorboard": "trials.tensorboard",
    "engine": "driver.engine", "searcher": "driver.searcher", "inputs": "driver.inputs",
    "progress": "views.progress", "report": "views.report", "plot": "views.plot", "export": "views.export",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def create_module(self, spec: Any) -> Any:
        warnings.warn(f"{self.old} is now {self.new}; the old path goes away in the next release",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new)  # the module itself: its classes are the same objects

    def exec_module(self, module: Any) -> None:
        """Nothing to run: ``create_module`` returned the module, already executed under its new name."""


class _OldPaths(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        package, _, name = fullname.partition(".")
        if package != "nas" or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(fullname, f"nas.{MOVED[name]}"))


def install() -> None:
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        sys.meta_path.append(_OldPaths())
