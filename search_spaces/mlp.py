"""Multi-layer perceptrons: 1-4 hidden Dense layers (the lecture MLP, 2 x 128 relu, is a point of the space)."""

from __future__ import annotations

from typing import Any

import keras_tuner as kt

from nas.plugins.space import SearchSpace, head, optimizer

MAX_LAYERS = 4


class MLPSpace(SearchSpace):
    """Dense networks: depth 1-4, units per layer, relu/tanh, dropout, SGD/Adam, log learning rate, batch."""

    name = "mlp"
    version = "1"
    tasks = ("classification", "regression")

    def declare(self, hp: kt.HyperParameters) -> None:
        hp.Int("num_layers", 1, MAX_LAYERS, default=2)
        for i in range(MAX_LAYERS):
            with hp.conditional_scope("num_layers", list(range(i + 1, MAX_LAYERS + 1))):
                hp.Int(f"units_{i}", 32, 512, step=32, default=128)
        hp.Choice("activation", ["relu", "tanh"])
        hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.0)
        hp.Choice("optimizer", ["adam", "sgd"])
        hp.Float("learning_rate", 1e-4, 1e-1, sampling="log", default=1e-3)
        hp.Choice("batch_size", [16, 32, 64, 128], default=32)

    def build_model(self, hp: kt.HyperParameters) -> Any:
        import keras

        units, activation, loss, metrics = head(self.task)
        inputs = keras.Input(shape=self.task.input_shape)
        x = keras.layers.Flatten()(inputs) if len(self.task.input_shape) > 1 else inputs
        dropout = float(hp.get("dropout"))
        for i in range(int(hp.get("num_layers"))):
            x = keras.layers.Dense(int(hp.get(f"units_{i}")), activation=hp.get("activation"))(x)
            if dropout > 0:
                x = keras.layers.Dropout(dropout)(x)
        outputs = keras.layers.Dense(units, activation=activation)(x)
        model = keras.Model(inputs, outputs, name="mlp")
        model.compile(
            optimizer=optimizer(hp.get("optimizer"), float(hp.get("learning_rate"))),
            loss=loss,
            metrics=metrics,
        )
        return model
