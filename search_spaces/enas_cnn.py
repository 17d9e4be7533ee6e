"""ENAS's macro search space (Pham et al., "Efficient Neural Architecture Search via Parameter Sharing", ICML
2018, section 2.3), for weight sharing (``--estimation shared-weights``) and for ordinary trials alike.

A stem (conv 3x3) then ``layers`` layers of ``filters`` channels. Layer i (1..L) applies one operation to the
previous layer's output, ``op_i`` in

    conv3x3, conv5x5, sepconv3x3, sepconv5x5 (ReLU then the convolution), maxpool3x3, avgpool3x3 (stride 1),
    identity

and adds the outputs of any earlier layers it connects to (``skip_i_j``: layer j = 0 (the stem) .. i-2; layer
i-1 is its input already), then a LayerNormalization. After layers round(L/3) and round(2L/3) every output so far
is average-pooled 2x2 (ENAS's fixed reductions), so later skips match in size. Global average pooling and a
softmax head end it. 7^L x 2^(L(L-1)/2) architectures: 3.9e9 for L = 6.

Normalisation is LayerNormalization, not ENAS's BatchNorm: its statistics are the example's own, so a child
computes the same in training and evaluation and no moving statistics are shared (and mixed up) between the
children of a supernet. Nothing in a layer draws random numbers or updates state during a call, which is what
lets ``jax.lax.switch`` run a branch inside a compiled train step.

``build_model(hp)`` builds one child as a stand-alone Keras model (trials, ``nas export``);
``build_supernet()`` builds ONE model holding every operation of every layer, taking the child's architecture as
input tensors (``arch_inputs``): the op of each layer as an integer, the skip connections as a 0/1 mask. With
the same weights it computes exactly what the child computes (``child_from_supernet``).
"""

from __future__ import annotations

from typing import Any, Mapping

import keras_tuner as kt
import numpy as np

from nas.errors import PluginError
from nas.estimation.supernet import SupernetSpace
from nas.plugins.space import SearchSpace, head

OPS = ("conv3x3", "conv5x5", "sepconv3x3", "sepconv5x5", "maxpool3x3", "avgpool3x3", "identity")
SHORT = {"conv3x3": "c3", "conv5x5": "c5", "sepconv3x3": "s3", "sepconv5x5": "s5", "maxpool3x3": "mp",
         "avgpool3x3": "ap", "identity": "id"}


def reductions(layers: int) -> set[int]:
    """The layers after which every feature map is halved: round(L/3) and round(2L/3), within 1..L-1."""
    return {r for r in (round(layers / 3), round(2 * layers / 3)) if 1 <= r < layers}


class ENASSpace(SearchSpace, SupernetSpace):
    """ENAS macro space: per layer conv/sepconv 3x3/5x5, max/avg pool, identity, plus skips (weight sharing)."""

    name = "enas_cnn"
    version = "1"
    tasks = ("classification",)
    input_ranks = (2, 3)
    input_kind = "image inputs of shape (H, W) or (H, W, C)"
    input_hint = "use --space mlp for flat features"

    def __init__(self, task: Any, layers: int = 6, filters: int = 16, learning_rate: float = 3e-3,
                 batch_size: int = 64) -> None:
        super().__init__(task)
        for opt, v in (("layers", layers), ("filters", filters), ("batch_size", batch_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise PluginError(f"enas_cnn option {opt}={v!r} is not valid; give an integer >= 1")
        if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
            raise PluginError(f"enas_cnn option learning_rate={learning_rate!r} is not valid; give a number > 0")
        self.layers = layers
        self.filters = filters
        self.learning_rate = float(learning_rate)
        self.batch = batch_size
        self.skip_slots = [(i, j) for i in range(1, layers + 1) for j in range(i - 1)]

    # -- the space ------------------------------------------------------------------------------------------
    def declare(self, hp: kt.HyperParameters) -> None:
        for i in range(1, self.layers + 1):
            hp.Choice(f"op_{i}", list(OPS), default="conv3x3")
            for j in range(i - 1):
                hp.Boolean(f"skip_{i}_{j}", default=False)

    def batch_size(self, hp: kt.HyperParameters) -> int:
        return self.batch

    def arch_summary(self, values: Mapping[str, Any]) -> str:
        """``c3 s5+0 mp+0,1 ...``: each layer's op, then the earlier layers it adds."""
        parts = []
        for i in range(1, self.layers + 1):
            skips = [str(j) for j in range(i - 1) if values.get(f"skip_{i}_{j}")]
            parts.append(SHORT[values[f"op_{i}"]] + ("+" + ",".join(skips) if skips else ""))
        return " ".join(parts)

    # -- building blocks, shared by the child and the supernet ----------------------------------------------
    def _op(self, op: str, i: int) -> Any:
        """Layer i's operation ``op`` as a Keras layer named ``l{i}_{op}`` (None: the identity)."""
        import keras

        L = keras.layers
        f = self.filters
        if op == "identity":
            return None
        if op.startswith(("conv", "sepconv")):
            k = int(op[-1])
            conv = (L.Conv2D(f, k, padding="same", name="conv") if op.startswith("conv")
                    else L.SeparableConv2D(f, k, padding="same", name="sepconv"))
            return keras.Sequential([L.Activation("relu", name="relu"), conv], name=f"l{i}_{op}")
        pool = L.MaxPooling2D if op.startswith("max") else L.AveragePooling2D
        return keras.Sequential([pool(3, strides=1, padding="same", name="pool")], name=f"l{i}_{op}")

    def _pools(self, shape: tuple[int, int], name: str) -> tuple[Any, tuple[int, int]]:
        import keras

        h, w = shape
        ph, pw = (2 if h >= 2 else 1), (2 if w >= 2 else 1)
        if (ph, pw) == (1, 1):
            return None, shape
        return keras.layers.AveragePooling2D((ph, pw), padding="same", name=name), (-(-h // ph), -(-w // pw))

    def _frame(self, body: Any) -> Any:
        """Input, stem, ``body(stem output, reduce)`` for the layers, head; compiled."""
        import keras

        L = keras.layers
        units, activation, loss, metrics = head(self.task)
        shape = tuple(self.task.input_shape)
        inputs = keras.Input(shape=shape, name="x")
        x = L.Reshape((*shape, 1), name="add_channel")(inputs) if len(shape) == 2 else inputs
        x = L.Conv2D(self.filters, 3, padding="same", name="stem")(x)
        x = L.LayerNormalization(name="stem_norm")(x)
        size = [(int(shape[0]), int(shape[1]))]

        def reduce(outs: list[Any], i: int) -> list[Any]:
            pool, size[0] = self._pools(size[0], f"reduce_{i}")
            if pool is None:
                return outs
            return [pool(o) for o in outs]

        extra_inputs, x = body(x, reduce)
        x = L.GlobalAveragePooling2D(name="gap")(x)
        outputs = L.Dense(units, activation=activation, name="output")(x)
        return inputs, extra_inputs, outputs, loss, metrics

    def _compile(self, model: Any, loss: str, metrics: list[str]) -> Any:
        import keras

        model.compile(optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate), loss=loss, metrics=metrics)
        return model

    # -- one child ------------------------------------------------------------------------------------------
    def build_model(self, hp: kt.HyperParameters) -> Any:
        import keras

        L = keras.layers
        red = reductions(self.layers)

        def body(x: Any, reduce: Any) -> tuple[list, Any]:
            outs = [x]
            for i in range(1, self.layers + 1):
                block = self._op(hp.get(f"op_{i}"), i)
                h = outs[-1] if block is None else block(outs[-1])
                skips = [outs[j] for j in range(i - 1) if hp.get(f"skip_{i}_{j}")]
                if skips:
                    h = L.Add(name=f"l{i}_add")([h, *skips])
                outs.append(L.LayerNormalization(name=f"l{i}_norm")(h))
                if i in red:
                    outs = reduce(outs, i)
            return [], outs[-1]

        inputs, _, outputs, loss, metrics = self._frame(body)
        return self._compile(keras.Model(inputs, outputs, name="enas_cnn"), loss, metrics)

    # -- the supernet ---------------------------------------------------------------------------------------
    def build_supernet(self) -> Any:
        import keras

        from nas.estimation.layers import MaskedSum, OpChoice

        L = keras.layers
        red = reductions(self.layers)
        slot = {s: k for k, s in enumerate(self.skip_slots)}

        def body(x: Any, reduce: Any) -> tuple[list, Any]:
            ops = keras.Input(shape=(self.layers,), dtype="int32", name="ops")
            mask = keras.Input(shape=(max(1, len(self.skip_slots)),), dtype="float32", name="skips")
            outs = [x]
            for i in range(1, self.layers + 1):
                choice = OpChoice([self._op(op, i) for op in OPS], position=i - 1, name=f"l{i}_choice")
                h = choice(outs[-1], ops)
                if i > 1:
                    h = MaskedSum([slot[(i, j)] for j in range(i - 1)], name=f"l{i}_skips")(h, mask, outs[: i - 1])
                outs.append(L.LayerNormalization(name=f"l{i}_norm")(h))
                if i in red:
                    outs = reduce(outs, i)
            return [ops, mask], outs[-1]

        inputs, (ops, mask), outputs, loss, metrics = self._frame(body)
        return self._compile(keras.Model([inputs, ops, mask], outputs, name="enas_supernet"), loss, metrics)

    def arch_inputs(self, values: Mapping[str, Any], n: int) -> list[np.ndarray]:
        ops = np.array([OPS.index(values[f"op_{i}"]) for i in range(1, self.layers + 1)], np.int32)
        mask = np.array([1.0 if values.get(f"skip_{i}_{j}") else 0.0 for i, j in self.skip_slots] or [0.0],
                        np.float32)
        return [np.tile(ops, (n, 1)), np.tile(mask, (n, 1))]

    def child_from_supernet(self, supernet: Any, hp: kt.HyperParameters) -> Any:
        """The child ``hp`` as a stand-alone model holding the supernet's weights for its operations."""
        model = self.build_model(hp)
        for layer in model.layers:
            if not layer.weights:
                continue
            if layer.name.startswith("l") and "_" in layer.name and layer.name.split("_", 1)[1] in OPS:
                i = layer.name.split("_", 1)[0][1:]
                source = supernet.get_layer(f"l{i}_choice").branch_named(layer.name)
            else:
                source = supernet.get_layer(layer.name)
            layer.set_weights(source.get_weights())
        return model
