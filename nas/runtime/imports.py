"""What importing Keras costs a process, and the part of it nas spares: modules that Keras, TensorFlow and
KerasTuner import only in case they are installed, and that nas does not use where it skips them.

Importing Keras (on TensorFlow, the default) imports, from modules that wrap each in ``try: ... except
ImportError``: jax (TensorFlow Lite's ``tensorflow.lite.python.util``, for ``TFLiteConverter.experimental_from_jax``
only; Keras's ``keras.src.callbacks.orbax_checkpoint``, a shim for older jax), IPython (Keras's file editor and
KerasTuner's ``utils``, for display in a notebook), scikit-learn (Keras's scikit-learn wrappers, KerasTuner's
scikit-learn and Bayesian tuners) and matplotlib (Keras's image-gallery plots). Measured 2026-12-08 with
TensorFlow 2.21, Keras 3.15, KerasTuner 1.4, jax 0.10 on the 2-core machine (Intel Xeon), 4 alternating runs: what
a trial worker imports as it starts (its hook, ``nas.trials.single``, a space) took a median 5.7 CPU-seconds
before, 3.9 with these skipped (``import jax`` alone: 1.7-2.5). Every process of a search imports Keras: the
driver and each trial worker, and a worker's import is on the way to its first trial.

``skip_optional_imports`` (called by ``import nas``) makes those modules find no jax and no IPython, so they take
the path their authors wrote for a machine without it: jax is not needed unless the backend is jax (then it is
imported before them, and nothing is skipped), and TensorFlow Lite's ``_jit`` becomes a function that imports
jax when called, so ``experimental_from_jax`` still works; IPython is only used inside a running IPython, which
has imported it before. ``skip_optional_imports(own_process=True)`` (the ``nas`` command, and a trial worker's
warm-up hook) also skips scikit-learn and matplotlib for those modules: no command and no trial uses Keras's
scikit-learn wrappers, KerasTuner's scikit-learn or Bayesian tuners or Keras's plots (``nas plot`` imports
matplotlib itself); a user's own process keeps them (nothing but ``import nas`` happens there). Only those
modules' own imports are refused, only while each runs, in its thread; a module already imported is never
refused, and ``import sklearn`` (or jax, ...) anywhere else works as usual. No library offers this (it is a
property of other packages' imports), hence the code.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from typing import Any, Callable


def find_spec_after(finder: Any, fullname: str, path: Any = None, target: Any = None) -> Any:
    """The spec of ``fullname`` as the finders on ``sys.meta_path`` other than ``finder`` find it (or None)."""
    for other in sys.meta_path:
        if other is finder or not hasattr(other, "find_spec"):
            continue
        spec = other.find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


class WrappedLoader(importlib.abc.Loader):
    """Another loader, with ``exec_module`` to override: what this module and ``nas.runtime.quiet`` wrap a
    module's execution in."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ... of the real loader
        return getattr(self.loader, name)


def _lazy_tflite_jit(module: Any) -> None:
    """TensorFlow Lite's ``_jit``, imported from jax when called (``TFLiteConverter.experimental_from_jax``)."""
    if getattr(module, "_jit", None) is not None:
        return

    def _jit(*args: Any, **kwargs: Any) -> Any:
        from jax import jit

        return jit(*args, **kwargs)

    module._jit = _jit


#: what a skipped module may not import while it runs, and what it gets after it ran
_Skip = tuple[str, Callable[[Any], None] | None]
#: importer -> its skip, in every process that imported nas
EVERYWHERE: dict[str, _Skip] = {
    "tensorflow.lite.python.util": ("jax", _lazy_tflite_jit),
    "keras.src.callbacks.orbax_checkpoint": ("jax", None),
    "keras.src.saving.file_editor": ("IPython", None),
    "keras_tuner.src.utils": ("IPython", None),
}
#: ... and in the processes nas owns: the ``nas`` command and trial workers
IN_OWN_PROCESSES: dict[str, _Skip] = {
    "keras.src.wrappers.fixes": ("sklearn", None),
    "keras.src.wrappers.utils": ("sklearn", None),
    "keras.src.wrappers.sklearn_wrapper": ("sklearn", None),
    "keras_tuner.src.tuners.bayesian": ("sklearn", None),
    "keras_tuner.src.tuners.sklearn_tuner": ("sklearn", None),
    "keras.src.visualization.plot_image_gallery": ("matplotlib", None),
    "keras.src.visualization.plot_bounding_box_gallery": ("matplotlib", None),
}
_skipped: dict[str, _Skip] = {}

#: per thread, what the modules now running in it may not import (a module's own imports run inside it)
_refused: dict[int, list[str]] = {}


class _Skipping(WrappedLoader):
    """The real loader of one of those modules: ``refuse`` is not found while its module runs."""

    def __init__(self, loader: Any, refuse: str, after: Callable[[Any], None] | None) -> None:
        super().__init__(loader)
        self.refuse, self.after = refuse, after

    def exec_module(self, module: Any) -> None:
        mine = _refused.setdefault(threading.get_ident(), [])
        mine.append(self.refuse)
        try:
            self.loader.exec_module(module)
        finally:
            mine.pop()
        if self.after is not None:
            self.after(module)


class _OptionalImportsFinder(importlib.abc.MetaPathFinder):
    """Refuses what a running skipped module may not import; hands each skipped module ``_Skipping``."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname in _refused.get(threading.get_ident(), ()):
            raise ImportError(f"{fullname} is not imported for an optional use (nas.runtime.imports)")
        skip = _skipped.get(fullname)
        if skip is None or skip[0] in sys.modules:  # (on the jax backend, Keras imported jax before these)
            return None
        spec = find_spec_after(self, fullname, path, target)
        if spec is not None and spec.loader is not None and not isinstance(spec.loader, _Skipping):
            spec.loader = _Skipping(spec.loader, *skip)
        return spec


_FINDER = _OptionalImportsFinder()


def skip_optional_imports(own_process: bool = False) -> None:
    """From now on, this process skips the optional imports of ``EVERYWHERE`` (and of ``IN_OWN_PROCESSES`` in a
    process of nas's own: the ``nas`` command, a trial worker) that have not happened yet (see the module's
    docstring). Idempotent."""
    _skipped.update(EVERYWHERE)
    if own_process:
        _skipped.update(IN_OWN_PROCESSES)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
