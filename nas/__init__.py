"""nas: plugin-based neural-architecture and hyperparameter search on Ray.

The Python API: ``nas.search``, ``nas.resume``, ``nas.open_run`` (a ``nas.Run``), ``nas.search_options``,
``nas.local_ray`` (one Ray for several searches); the plugin contracts: ``Strategy``, ``Proposal``,
``Observation``, ``SearchSpace``, ``Task``, ``Objective``, ``create_strategy``, ``create_space``; the errors
(``NasError`` and its kinds). Everything else lives in sub-modules.

Names are loaded on first use (PEP 562): ``import nas`` imports neither Keras nor a framework, so commands that
only read runs (``nas status``, ``nas runs``, ``nas list``) start in well under a second, and a search can pick
its Keras backend before Keras is imported.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# TensorFlow's C++ log lines stay out of the terminal (a user's own setting wins; `--verbose` shows them), and
# so does the banner it writes while it is imported, before any log level applies (nas.runtime.quiet).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("NAS_VERBOSE") != "1":
    from nas.runtime.quiet import hide_tensorflow_banner

    hide_tensorflow_banner()
# Keras imports jax and IPython only where they are used: ~2 CPU-s less per process (nas.runtime.imports)
from nas.runtime.imports import skip_optional_imports  # noqa: E402

skip_optional_imports()

__version__ = "0.1.0"

from nas import _compat  # noqa: E402  (module paths before the layer subpackages, deprecated)

_compat.install()

_WHERE = {
    "Run": "nas.api",
    "open_run": "nas.api",
    "resume": "nas.api",
    "search": "nas.api",
    "search_options": "nas.api",
    "local_ray": "nas.runtime.cluster",
    "DataError": "nas.errors",
    "NasError": "nas.errors",
    "PluginError": "nas.errors",
    "ResourceError": "nas.errors",
    "StorageError": "nas.errors",
    "RunError": "nas.errors",
    "Objective": "nas.plugins.objective",
    "parse_objective": "nas.plugins.objective",
    "create_space": "nas.plugins.registry",
    "create_strategy": "nas.plugins.registry",
    "SearchSpace": "nas.plugins.space",
    "Task": "nas.plugins.task",
    "Observation": "nas.plugins.strategy",
    "Proposal": "nas.plugins.strategy",
    "Strategy": "nas.plugins.strategy",
}

__all__ = sorted([*_WHERE, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
