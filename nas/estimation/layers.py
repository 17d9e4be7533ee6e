"""Keras layers that build a supernet: one operation out of several, chosen by a tensor, and skip connections
switched on and off by a mask. Backend-agnostic (``keras.ops``): TensorFlow, jax and torch.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras


class OpChoice(keras.layers.Layer):
    """Exactly one of ``branches`` (Keras layers; ``None`` is the identity), chosen per call by the integer
    ``ops[0, position]`` of the architecture tensor ``ops`` (batch, layers): every row of a batch is one child.

    ``keras.ops.switch`` is ``tf.switch_case`` under TensorFlow and ``jax.lax.switch`` under jax: only the chosen
    branch runs, so only its weights get a gradient, and one compiled step serves every choice.
    """

    def __init__(self, branches: Sequence[Any], position: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.branches = list(branches)
        self.position = int(position)

    def build(self, x_shape: Any, ops_shape: Any = None) -> None:
        for branch in self.branches:  # every branch's variables exist before any call: none is made in a branch
            if branch is not None and not branch.built:
                branch.build(x_shape)
        self.built = True

    def call(self, x: Any, ops: Any) -> Any:
        index = keras.ops.cast(ops[0, self.position], "int32")
        fns = [(lambda v: v) if b is None else (lambda v, b=b: b(v)) for b in self.branches]
        return keras.ops.switch(index, fns, x)

    def compute_output_shape(self, x_shape: Any, ops_shape: Any = None) -> Any:
        return x_shape

    def branch_named(self, name: str) -> Any:
        for b in self.branches:
            if b is not None and b.name == name:
                return b
        raise KeyError(name)


class MaskedSum(keras.layers.Layer):
    """``x + sum_k mask[:, slots[k]] * skips[k]``: skip connections that a child turns on (1.0) or off (0.0)."""

    def __init__(self, slots: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slots = [int(s) for s in slots]

    def call(self, x: Any, mask: Any, skips: Sequence[Any]) -> Any:
        out = x
        for slot, skip in zip(self.slots, skips):
            weight = keras.ops.reshape(keras.ops.cast(mask[:, slot], x.dtype), (-1,) + (1,) * (len(x.shape) - 1))
            out = out + weight * skip
        return out

    def compute_output_shape(self, x_shape: Any, mask_shape: Any = None, skips_shape: Any = None) -> Any:
        return x_shape
