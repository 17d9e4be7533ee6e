"""Recurrent networks for sequences (N, T, F): sequence classification and forecasting.

Digits are read row by row as 8 steps of 8 features (the row-wise MNIST setting); an (H, W, C) image is read
as H steps of W*C features; a CSV time series loaded with ``--target COL --window W`` gives (W, F) windows and a
regression target (the next value), whose objective is ``val_loss:min``. Flat features (a CSV without
``--window``) are refused before any trial.
"""

from __future__ import annotations

from typing import Any

import keras_tuner as kt

from nas.plugins.space import SearchSpace, head, optimizer
from nas.plugins.task import Task, is_classification, make_task

MAX_LAYERS = 3


class LSTMSpace(SearchSpace):
    """LSTM/GRU stacks: 1-3 layers, units, bidirectional, dropout/recurrent dropout, optional dense head."""

    name = "lstm"
    version = "1"
    tasks = ("classification", "regression")
    input_ranks = (2, 3)
    input_kind = "sequences of shape (T, F)"
    input_hint = "for a CSV time series give --window W to read W steps per example"

    @classmethod
    def example_task(cls, data: Any) -> Task:
        return make_task(data, "classification" if is_classification(data) else "regression")

    def declare(self, hp: kt.HyperParameters) -> None:
        hp.Choice("cell", ["lstm", "gru"], default="lstm")
        hp.Int("num_layers", 1, MAX_LAYERS, default=1)
        for i in range(MAX_LAYERS):
            with hp.conditional_scope("num_layers", list(range(i + 1, MAX_LAYERS + 1))):
                hp.Int(f"units_{i}", 8, 256, sampling="log", default=64)
        hp.Boolean("bidirectional", default=False)
        hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.0)
        hp.Float("recurrent_dropout", 0.0, 0.5, step=0.1, default=0.0)
        hp.Boolean("dense_head", default=False)
        with hp.conditional_scope("dense_head", [True]):
            hp.Int("dense_units", 16, 256, sampling="log", default=64)
        hp.Choice("optimizer", ["adam", "rmsprop", "sgd"], default="adam")
        hp.Float("learning_rate", 1e-4, 1e-1, sampling="log", default=1e-3)
        hp.Choice("batch_size", [16, 32, 64, 128], default=32)

    def build_model(self, hp: kt.HyperParameters) -> Any:
        import keras

        layers = keras.layers
        units, activation, loss, metrics = head(self.task)
        shape = tuple(self.task.input_shape)
        inputs = keras.Input(shape=shape)
        x = inputs
        if len(shape) == 3:  # an image: rows are steps, each row's pixels and channels the features
            x = layers.Reshape((shape[0], shape[1] * shape[2]), name="rows_as_steps")(x)
        cell = layers.LSTM if hp.get("cell") == "lstm" else layers.GRU
        n = int(hp.get("num_layers"))
        dropout, rdropout = float(hp.get("dropout")), float(hp.get("recurrent_dropout"))
        for i in range(n):
            rnn = cell(
                int(hp.get(f"units_{i}")),
                return_sequences=i < n - 1,
                dropout=dropout,
                recurrent_dropout=rdropout,
                name=f"{hp.get('cell')}_{i}",
            )
            x = layers.Bidirectional(rnn, name=f"bidirectional_{i}")(x) if hp.get("bidirectional") else rnn(x)
        if hp.get("dense_head"):
            x = layers.Dense(int(hp.get("dense_units")), activation="relu", name="dense_head")(x)
            if dropout > 0:
                x = layers.Dropout(dropout, name="head_dropout")(x)
        outputs = layers.Dense(units, activation=activation, name="output")(x)
        model = keras.Model(inputs, outputs, name="lstm")
        model.compile(
            optimizer=optimizer(hp.get("optimizer"), float(hp.get("learning_rate"))),
            loss=loss,
            metrics=metrics,
        )
        return model
