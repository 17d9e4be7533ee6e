"""Autoencoders: undercomplete, sparse, denoising and variational; dense, or convolutional for images.

Tasks: ``reconstruction`` (default: the model learns x -> x) and ``anomaly`` (``Task.normal_class``: train on
the normal class only, flag examples the model reconstructs badly).

Every model has one output, the reconstruction, in the input's shape and units (linear output layer), and is
compiled with the MSE loss plus a metric ``reconstruction_mse`` (so every trial reports
``val_reconstruction_mse``, comparable across kinds whose losses differ):

* undercomplete: a linear code layer smaller than the input (``code_size`` < input size, always).
* sparse: the same code layer with an L1 activity penalty (``sparsity_weight``); loss = MSE + penalty.
* denoising: noise on the input in training only (``noise_type``: ``gaussian``, a GaussianNoise layer with
  stddev ``noise_level`` in input units, or ``masking``, each input value zeroed with probability
  ``noise_level``); validation and inference see clean inputs.
* variational: the encoder outputs ``z_mean`` and ``z_log_var`` (bounded to [-LOGVAR_BOUND, LOGVAR_BOUND]
  by a scaled tanh); z = z_mean + exp(z_log_var / 2) * eps with eps ~ N(0, 1) in training and eps = 0 at
  inference (so reconstructions and anomaly scores are deterministic). The KL term is part of the training
  and validation loss: loss = MSE + kl_weight * KL / D, with KL = 0.5 * sum(mu^2 + exp(lv) - lv - 1) per
  example (nats) averaged over the batch and D the number of input values (per-value scale, like the MSE).

Everything is built from built-in Keras layers (the KL term is an ``ActivityRegularization`` layer over the
per-dimension KL, joined back to z through a zero-scaled branch; the masking noise is a Dropout of ones,
clipped to {0, 1}); so ``keras.models.load_model(path)`` works in any process, with no custom objects.

Anomaly detection: ``prepare_data`` trains on normal-class training examples only and validates (val_loss,
val_reconstruction_mse) on the normal-class validation examples only; the full labelled validation set is kept
on the returned ``AnomalyDataset`` for scoring. After each epoch ``trial_metrics`` sets the threshold at the
``THRESHOLD_PERCENTILE``-th percentile of the per-example reconstruction errors of (up to
``THRESHOLD_SAMPLE``) normal training examples (so no anomaly label is used to choose it), flags validation
examples above it as anomalies (the positive class) and reports ``val_precision``, ``val_recall``,
``val_f1`` and ``val_threshold``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras_tuner as kt
import numpy as np

from nas.errors import DataError
from nas.plugins.data import Dataset
from nas.plugins.space import SearchSpace, Task, optimizer

KINDS = ("undercomplete", "sparse", "denoising", "variational")
MAX_DENSE = 3
MAX_CONV = 3
LOGVAR_BOUND = 6.0
THRESHOLD_PERCENTILE = 95.0
THRESHOLD_SAMPLE = 2048


@dataclass
class AnomalyDataset(Dataset):
    """A Dataset prepared for anomaly detection: (x_val, y_val) are the normal validation examples the model
    validates on; (x_score, y_score) the full labelled validation set, y_score = 1 for anomalies."""

    x_score: np.ndarray | None = None
    y_score: np.ndarray | None = None

    def replace(self, **changes: Any) -> "AnomalyDataset":
        d = dict(self.__dict__)
        d.update(changes)
        return AnomalyDataset(**d)


def reconstruction_errors(model: Any, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Per-example mean squared reconstruction error (inference mode: no noise, no sampling)."""
    out = []
    for i in range(0, len(x), batch):
        xb = x[i: i + batch]
        rec = np.asarray(model(xb, training=False))
        out.append(np.mean(np.square(rec.reshape(len(xb), -1) - xb.reshape(len(xb), -1)), axis=1))
    return np.concatenate(out) if out else np.zeros(0, dtype="float32")


def precision_recall_f1(truth: np.ndarray, flagged: np.ndarray) -> tuple[float, float, float]:
    tp = float(np.sum(flagged & truth))
    precision = tp / max(1.0, float(np.sum(flagged)))
    recall = tp / max(1.0, float(np.sum(truth)))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


class AutoencoderSpace(SearchSpace):
    """Autoencoders (undercomplete/sparse/denoising/variational), dense or convolutional, x -> x."""

    name = "ae"
    version = "1"
    tasks = ("reconstruction", "anomaly")

    # -- the task ---------------------------------------------------------------------------------------------
    def check_task(self, task: Task) -> None:
        super().check_task(task)
        if int(np.prod(task.input_shape)) < 2:
            raise DataError(f"space 'ae' needs inputs of at least 2 values; got shape {tuple(task.input_shape)}")
        if task.kind == "anomaly" and task.normal_class is None:
            raise DataError("space 'ae' with --task anomaly needs a normal class (--normal-class LABEL)")

    def default_objective(self) -> str:
        return "val_loss:min"

    @property
    def _image(self) -> bool:
        return len(self.task.input_shape) in (2, 3)

    def prepare_data(self, data: Dataset) -> Dataset:
        if self.task.kind != "anomaly":
            return data.replace(y_train=data.x_train, y_val=data.x_val)
        nc = self.task.normal_class
        train, val = data.y_train == nc, data.y_val == nc
        if not train.any():
            raise DataError(f"--normal-class {nc!r} has no training examples in {data.source!r}")
        xt = data.x_train[train]
        xv = data.x_val[val] if val.any() else data.x_val  # no normal validation example: validate on all
        info = {
            **data.info,
            "normal_class": int(nc),
            "normal_train": int(train.sum()),
            "score_val": int(len(data.x_val)),
            "score_val_anomalies": int((~val).sum()),
        }
        return AnomalyDataset(
            xt, xt, xv, xv, source=data.source, info=info,
            x_score=data.x_val, y_score=(data.y_val != nc).astype("int64"),
        )

    def trial_metrics(self, model: Any, data: Dataset) -> dict[str, float]:
        if self.task.kind != "anomaly" or getattr(data, "x_score", None) is None:
            return {}
        threshold = float(np.percentile(reconstruction_errors(model, data.x_train[:THRESHOLD_SAMPLE]),
                                        THRESHOLD_PERCENTILE))
        errors = reconstruction_errors(model, data.x_score)
        if not np.all(np.isfinite(errors)) or not math.isfinite(threshold):
            return {"val_precision": 0.0, "val_recall": 0.0, "val_f1": 0.0, "val_threshold": float("nan")}
        p, r, f1 = precision_recall_f1(np.asarray(data.y_score).astype(bool), errors > threshold)
        return {"val_precision": p, "val_recall": r, "val_f1": f1, "val_threshold": threshold}

    # -- the space --------------------------------------------------------------------------------------------
    def _code_range(self) -> tuple[int, int]:
        d = int(np.prod(self.task.input_shape))
        hi = max(1, min(64, d - 1))  # undercomplete: the code is always smaller than the input
        return min(2, hi), hi

    def declare(self, hp: kt.HyperParameters) -> None:
        hp.Choice("kind", list(KINDS), default="undercomplete")
        with hp.conditional_scope("kind", ["sparse"]):
            hp.Float("sparsity_weight", 1e-6, 1e-2, sampling="log", default=1e-4)
        with hp.conditional_scope("kind", ["denoising"]):
            hp.Choice("noise_type", ["gaussian", "masking"], default="gaussian")
            hp.Float("noise_level", 0.05, 0.5, default=0.1)
        with hp.conditional_scope("kind", ["variational"]):
            hp.Float("kl_weight", 1e-3, 10.0, sampling="log", default=1.0)
        if self._image:
            hp.Choice("architecture", ["dense", "conv"], default="dense")
            with hp.conditional_scope("architecture", ["dense"]):
                self._declare_dense(hp)
            with hp.conditional_scope("architecture", ["conv"]):
                hp.Int("conv_layers", 1, MAX_CONV, default=2)
                for i in range(MAX_CONV):
                    with hp.conditional_scope("conv_layers", list(range(i + 1, MAX_CONV + 1))):
                        hp.Int(f"conv_filters_{i}", 8, 64, sampling="log", default=16 * 2**i if i < 2 else 64)
        else:
            self._declare_dense(hp)
        lo, hi = self._code_range()
        hp.Int("code_size", lo, hi, sampling="log" if lo > 1 and hi > lo else "linear", default=min(16, hi))
        hp.Choice("activation", ["relu", "tanh", "elu"], default="relu")
        hp.Choice("optimizer", ["adam", "rmsprop", "sgd"], default="adam")
        hp.Float("learning_rate", 1e-4, 1e-1, sampling="log", default=1e-3)
        hp.Choice("batch_size", [16, 32, 64, 128], default=32)

    @staticmethod
    def _declare_dense(hp: kt.HyperParameters) -> None:
        hp.Int("dense_layers", 1, MAX_DENSE, default=1)
        for i in range(MAX_DENSE):
            with hp.conditional_scope("dense_layers", list(range(i + 1, MAX_DENSE + 1))):
                hp.Int(f"dense_units_{i}", 16, 512, sampling="log", default=128 // 2**i)

    # -- the model --------------------------------------------------------------------------------------------
    def build_model(self, hp: kt.HyperParameters) -> Any:
        import keras

        L = keras.layers
        shape = tuple(int(s) for s in self.task.input_shape)
        d = int(np.prod(shape))
        kind = hp.get("kind")
        act = hp.get("activation")
        code = int(hp.get("code_size"))
        conv = self._image and hp.get("architecture") == "conv"

        inputs = keras.Input(shape=shape, name="input")
        x = inputs
        if kind == "denoising":  # training-time corruption only; inference sees the clean input
            level = float(hp.get("noise_level"))
            if hp.get("noise_type") == "gaussian":
                x = L.GaussianNoise(level, name="gaussian_noise")(x)
            else:  # masking: Dropout of ones is 0 or 1/(1-p) in training, 1 at inference; clipped to {0, 1}
                ones = L.Rescaling(0.0, offset=1.0, name="ones")(x)
                mask = L.ReLU(max_value=1.0, name="mask")(L.Dropout(level, name="mask_dropout")(ones))
                x = L.Multiply(name="masking_noise")([x, mask])

        # encoder
        if conv:
            channels = shape[2] if len(shape) == 3 else 1
            if len(shape) == 2:
                x = L.Reshape((*shape, 1), name="add_channel")(x)
            filters = [int(hp.get(f"conv_filters_{i}")) for i in range(int(hp.get("conv_layers")))]
            h, w = shape[0], shape[1]
            for i, f in enumerate(filters):
                x = L.Conv2D(f, 3, strides=2, padding="same", activation=act, name=f"enc_conv_{i}")(x)
                h, w = math.ceil(h / 2), math.ceil(w / 2)
            x = L.Flatten(name="flatten")(x)
        else:
            units = [int(hp.get(f"dense_units_{i}")) for i in range(int(hp.get("dense_layers")))]
            if len(shape) > 1:
                x = L.Flatten(name="flatten")(x)
            for i, u in enumerate(units):
                x = L.Dense(u, activation=act, name=f"enc_dense_{i}")(x)

        # code
        if kind == "variational":
            z = self._sampling(x, code, float(hp.get("kl_weight")) / d)
        elif kind == "sparse":
            z = L.Dense(code, activity_regularizer=keras.regularizers.L1(float(hp.get("sparsity_weight"))),
                        name="code")(x)
        else:
            z = L.Dense(code, name="code")(x)

        # decoder: mirrors the encoder
        if conv:
            y = L.Dense(h * w * filters[-1], activation=act, name="dec_dense")(z)
            y = L.Reshape((h, w, filters[-1]), name="dec_reshape")(y)
            for i in reversed(range(len(filters))):
                y = L.Conv2DTranspose(filters[i], 3, strides=2, padding="same", activation=act,
                                      name=f"dec_conv_{i}")(y)
            dh, dw = h * 2 ** len(filters) - shape[0], w * 2 ** len(filters) - shape[1]
            if dh or dw:
                y = L.Cropping2D(((0, dh), (0, dw)), name="crop")(y)
            y = L.Conv2D(channels, 3, padding="same", name="dec_output")(y)
            outputs = L.Reshape(shape, name="reconstruction")(y)
        else:
            y = z
            for i in reversed(range(len(units))):
                y = L.Dense(units[i], activation=act, name=f"dec_dense_{i}")(y)
            y = L.Dense(d, name="dec_output")(y)
            outputs = L.Reshape(shape, name="reconstruction")(y)

        model = keras.Model(inputs, outputs, name=f"ae_{kind}")
        model.compile(
            optimizer=optimizer(hp.get("optimizer"), float(hp.get("learning_rate"))),
            loss="mse",
            metrics=[keras.metrics.MeanSquaredError(name="reconstruction_mse")],
        )
        return model

    @staticmethod
    def _sampling(x: Any, code: int, kl_per_value: float) -> Any:
        """The VAE bottleneck from built-in layers: z_mean, bounded z_log_var, reparameterised z, KL loss."""
        import keras

        L = keras.layers
        mean = L.Dense(code, name="z_mean")(x)
        log_var = L.Rescaling(LOGVAR_BOUND, name="z_log_var")(L.Dense(code, activation="tanh", name="z_log_var_raw")(x))
        # per-dimension KL * 2: mu^2 + exp(lv) - lv - 1 >= 0; an L1 activity penalty on it (divided by the batch
        # size by Keras) adds kl_weight/D * mean over the batch of KL to the loss
        kl = L.Add(name="kl_terms")([
            L.Multiply(name="z_mean_sq")([mean, mean]),
            L.Activation("exponential", name="z_var")(log_var),
            L.Rescaling(-1.0, offset=-1.0, name="neg_log_var_minus_1")(log_var),
        ])
        kl = L.ActivityRegularization(l1=0.5 * kl_per_value, name="kl_loss")(kl)
        std = L.Activation("exponential", name="z_std")(L.Rescaling(0.5, name="half_log_var")(log_var))
        eps = L.GaussianNoise(1.0, name="epsilon")(L.Rescaling(0.0, name="zeros")(mean))  # 0 at inference
        z = L.Add(name="z_sample")([mean, L.Multiply(name="z_noise")([std, eps])])
        return L.Add(name="z")([z, L.Rescaling(0.0, name="kl_branch")(kl)])  # keeps kl_loss in the graph
