"""The contract a search space implements to support weight sharing (``--estimation shared-weights``).

A space declares a supernet by implementing, beside ``declare`` and ``build_model``:

- ``build_supernet()``: ONE compiled Keras model holding every operation choice of the space, whose inputs are
  the data's input followed by the architecture as tensors (``arch_inputs``). One compiled train step then serves
  every child: building a Keras model per child would recompile for nearly every minibatch.
- ``arch_inputs(values, n)``: a child's architecture (the space's hyperparameter values) as those tensors, for a
  batch of ``n`` examples (numpy arrays, batch axis first, every row the same).
- ``arch_summary(values)`` (optional): a short text of a child's architecture for progress lines.

The supernet with a child's architecture as input must compute what ``build_model`` of that child computes with
the same weights (``search_spaces/enas_cnn.py`` shows how, and its tests check it); its operation choice should
run only the chosen operation (``keras.ops.switch``: ``tf.switch_case`` / ``jax.lax.switch``), so a child's
gradient reaches only its own operations' weights. ``nas.estimation.layers`` has the Keras layers for both.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from nas.errors import PluginError
from nas.storage.results import format_config

SUPERNET_METHODS = ("build_supernet", "arch_inputs")


class SupernetSpace:
    """Mixin for a ``nas.SearchSpace`` that supports weight sharing (see the module's docstring)."""

    def build_supernet(self) -> Any:
        raise NotImplementedError

    def arch_inputs(self, values: Mapping[str, Any], n: int) -> list[np.ndarray]:
        raise NotImplementedError

    def arch_summary(self, values: Mapping[str, Any]) -> str:
        return format_config(values)


def supports(space: Any) -> bool:
    """Whether ``space`` declares a supernet (implements every method of the contract)."""
    for name in SUPERNET_METHODS:
        method = getattr(space, name, None)
        if method is None or getattr(method, "__func__", None) is getattr(SupernetSpace, name):
            return False
    return True


def require(space: Any, ref: str) -> None:
    """One line when ``--estimation shared-weights`` is asked of a space without a supernet."""
    if not supports(space):
        raise PluginError(
            f"space {ref!r} declares no supernet, so --estimation shared-weights cannot share its weights; use a "
            f"space that implements build_supernet() and arch_inputs() (nas.estimation.supernet), e.g. --space "
            f"enas_cnn (ENAS's macro space: per layer conv 3x3/5x5, separable conv 3x3/5x5, max/avg pool, identity, "
            f"and skip connections), or --estimation standalone"
        )


def summary(space: Any, values: Mapping[str, Any]) -> str:
    """A child's architecture in a few words (the space's ``arch_summary``, else its values)."""
    describe = getattr(space, "arch_summary", None)
    return describe(values) if callable(describe) else format_config(values)
