"""nas: plugin-based neural-architecture and hyperparameter search on Ray.

Public names: ``create_strategy``, ``create_space``, ``Strategy``, ``Proposal``, ``SearchSpace``, ``Task``,
``Objective``. Everything else lives in sub-modules.
"""

from __future__ import annotations

import os

# keras_tuner imports TensorFlow: keep its C++ log lines and the oneDNN banner (printed before TF reads its log
# level) out of the terminal. A user's own settings win; `nas ... --verbose` brings Ray's and TF's logs back.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from nas.errors import DataError, NasError, PluginError, ResourceError, RunError, StorageError
from nas.objective import Objective, parse_objective

# The rest import keras_tuner, hence TensorFlow (seconds): loaded on first use, so that commands which only read
# runs (`nas runs`, `nas status`) start in a moment.
_LAZY = {"create_space": "nas.registry", "create_strategy": "nas.registry", "SearchSpace": "nas.space",
         "Observation": "nas.strategy", "Proposal": "nas.strategy", "Strategy": "nas.strategy", "Task": "nas.task"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nas' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "DataError",
    "NasError",
    "Objective",
    "Observation",
    "PluginError",
    "Proposal",
    "ResourceError",
    "RunError",
    "SearchSpace",
    "StorageError",
    "Strategy",
    "Task",
    "__version__",
    "create_space",
    "create_strategy",
    "parse_objective",
]
