"""The built-in search spaces (mlp, cnn, ae, lstm): real TensorFlow training on tiny data, no mocks."""

from __future__ import annotations

import math
import subprocess
import sys

import keras
import keras_tuner as kt
import numpy as np
import pytest

from nas.errors import DataError
from nas.plugins import params as P
from nas.plugins.data import Dataset, load_data
from nas.plugins.registry import SPACES, create_space, load
from nas.plugins.task import Task, make_task

SPACE_NAMES = ("mlp", "cnn", "ae", "lstm")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_data("digits")


@pytest.fixture(autouse=True)
def _fresh_session():
    yield
    keras.backend.clear_session(free_memory=False)


def _space_and_data(name: str, data: Dataset, kind: str | None = None, **task_args):
    task = make_task(data, kind, **task_args) if kind else load(SPACES, name).example_task(data)
    space = create_space(name, task=task)
    return space, space.prepare_data(data)


def _fit(space, values: dict, data: Dataset, epochs: int = 1, n: int | None = None):
    """What the engine's trial runner does: build, fit with validation, merge trial_metrics after each epoch."""
    hp = P.to_hp(space.hyperparameters(), values)
    model = space.build(hp)
    merge = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: logs.update(space.trial_metrics(model, data)))
    xt, yt = (data.x_train, data.y_train) if n is None else (data.x_train[:n], data.y_train[:n])
    history = space.fit(hp, model, xt, yt, validation_data=(data.x_val, data.y_val), epochs=epochs,
                        callbacks=[merge], verbose=0)
    return model, history.history


# -- every space: 50 seeded random configurations build, compile and train one batch --------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", SPACE_NAMES)
def test_fifty_random_configurations_train_one_batch(name: str, digits: Dataset) -> None:
    # Eager single-batch steps keep 200 builds affordable on a small CPU; the conformance suite trains its
    # 10 configurations per space through the compiled (graph) train function.
    space, data = _space_and_data(name, digits)
    hp = space.hyperparameters()
    rng = np.random.default_rng(2024)
    seen = set()
    for _ in range(50):
        values = P.sample_values(hp, rng)
        P.validate(hp, values)
        seen.add(P.canonical(values))
        model = space.build(P.to_hp(hp, values))
        assert model.optimizer is not None
        model.run_eagerly = True
        logs = model.train_on_batch(data.x_train[:4], data.y_train[:4], return_dict=True)
        assert math.isfinite(float(logs["loss"])), (name, values, logs)
        assert model.output_shape[1:] == (data.y_train.shape[1:] or (space.task.num_classes,)), values
        keras.backend.clear_session(free_memory=False)
    assert len(seen) == 50


def test_ae_random_configurations_on_flat_features(tmp_path) -> None:
    """Flat inputs get the dense autoencoder only (no architecture choice) and still build and train."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype("float32")
    data = Dataset(x[:32], x[:32], x[32:], x[32:], source="flat")
    space = create_space("ae", task=Task("reconstruction", (6,)))
    hp = space.hyperparameters()
    assert "architecture" not in hp.values
    assert space._code_range() == (2, 5)  # the code is always smaller than the input
    for _ in range(10):
        model = space.build(P.to_hp(hp, P.sample_values(hp, rng)))
        model.run_eagerly = True
        assert math.isfinite(float(model.train_on_batch(data.x_train[:4], data.y_train[:4], return_dict=True)["loss"]))
        keras.backend.clear_session(free_memory=False)


# -- the lecture's networks are points of the spaces -----------------------------------------------------------
def test_lecture_cnn_is_a_point_of_the_cnn_space() -> None:
    from search_spaces.cnn import LECTURE_CNN

    space = create_space("cnn", task=Task("classification", (28, 28, 1), num_classes=10))
    hp = space.hyperparameters()
    P.validate(hp, P.complete(hp, LECTURE_CNN))
    model = space.build(P.to_hp(hp, LECTURE_CNN))
    assert model.count_params() == 1_256_080
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 2 and kinds.count("MaxPooling2D") == 2 and kinds.count("Dense") == 2


def test_lecture_mlp_is_a_point_of_the_mlp_space() -> None:
    space = create_space("mlp", task=Task("classification", (784,), num_classes=10))
    hp = space.hyperparameters()
    values = {"num_layers": 2, "units_0": 128, "units_1": 128, "activation": "relu", "dropout": 0.0}
    model = space.build(P.to_hp(hp, values))
    assert model.count_params() == 118_282


# -- cnn: version 2, and version 1 kept for the runs stored with it ---------------------------------------------
def test_cnn_builds_version_2_by_default_and_version_1_when_asked() -> None:
    from nas.errors import PluginError

    task = Task("classification", (8, 8), num_classes=10)
    seen = {}
    for asked in (None, "1", "2"):
        space = create_space("cnn", task=task, **({} if asked is None else {"version": asked}))
        hp = space.hyperparameters()
        model = space.build(P.to_hp(hp, {"batch_norm": True, "dense_layers": 1}))
        lr = next(p for p in hp.space if p.name == "learning_rate")
        init = [type(model.get_layer(n).kernel_initializer).__name__ for n in ("conv_0_0", "dense_0")]
        seen[asked] = (space.version, lr.max_value, model.get_layer("bn_0_0").momentum, *init)
    assert seen[None] == seen["2"] == ("2", 1e-2, 0.9, "HeNormal", "HeNormal")
    assert seen["1"] == ("1", 1e-1, 0.99, "GlorotUniform", "GlorotUniform")
    with pytest.raises(PluginError, match=r"space 'cnn' option version='3' is not valid; it builds versions 1, 2"):
        create_space("cnn", task=task, version="3")
    with pytest.raises(PluginError, match=r"space 'mlp' option version='2' is not valid; it builds version 1$"):
        create_space("mlp", task=Task("classification", (64,), num_classes=10), version="2")


def test_cnn_version_2_batch_norm_evaluates_as_it_trains(digits: Dataset) -> None:
    """Why version 2 exists: 5 epochs at batch 128 (60 steps) leave Keras's default BN statistics (momentum 0.99)
    far from the data's, so version 1's model fits its training data and scores near chance on validation."""
    values = {"num_blocks": 2, "convs_per_block": 2, "filters_0": 14, "filters_1": 37, "kernel_size": 3,
              "pooling": "avg", "batch_norm": True, "dropout": 0.0, "dense_layers": 0, "optimizer": "rmsprop",
              "learning_rate": 0.002, "batch_size": 128}
    task = make_task(digits, "classification")
    scores = {}
    for version in ("1", "2"):
        keras.utils.set_random_seed(0)
        space = create_space("cnn", task=task, version=version)
        hp = P.to_hp(space.hyperparameters(), values)
        history = space.fit(hp, space.build(hp), digits.x_train, digits.y_train,
                            validation_data=(digits.x_val, digits.y_val), epochs=5, verbose=0).history
        scores[version] = (history["accuracy"][-1], history["val_accuracy"][-1])
    assert scores["2"][0] >= 0.9 and scores["2"][1] >= 0.9, scores
    assert scores["1"][0] >= 0.9 and scores["1"][1] <= 0.5, scores  # fitted, yet evaluated with unsettled statistics


# -- cnn: any image shape, never below 1x1 ----------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 8), (28, 28, 1), (32, 32, 3), (5, 1)])
def test_cnn_on_image_shapes(shape: tuple[int, ...]) -> None:
    space = create_space("cnn", task=Task("classification", shape, num_classes=3))
    hp = space.hyperparameters()
    rng = np.random.default_rng(1)
    x = rng.random((4, *shape)).astype("float32")
    y = np.array([0, 1, 2, 0])
    deepest = {"num_blocks": 4, "convs_per_block": 1, "filters_0": 8, "filters_1": 8, "filters_2": 8,
               "filters_3": 8, "pooling": "max", "dense_layers": 0}
    for values in [deepest] + [P.sample_values(hp, rng) for _ in range(3)]:
        model = space.build(P.to_hp(hp, values))
        for layer in model.layers:  # no feature map below 1x1
            out = layer.output.shape
            assert all(d is None or d >= 1 for d in out), (layer.name, out)
        model.run_eagerly = True
        model.train_on_batch(x, y)
        assert model.predict(x, verbose=0).shape == (4, 3)
        keras.backend.clear_session(free_memory=False)
    model = space.build(P.to_hp(hp, deepest))
    skipped = [layer.name for layer in model.layers if layer.name.startswith("pool_skipped_")]
    pools = [layer.name for layer in model.layers if layer.name.startswith("maxpool_")]
    assert len(skipped) + len(pools) == 4
    expected_pools = {(8, 8): 3, (28, 28, 1): 4, (32, 32, 3): 4, (5, 1): 2}[shape]  # 8->4->2->1; 5->2->1
    assert len(pools) == expected_pools, (pools, skipped)


# -- data a space cannot use is refused with a clear message -------------------------------------------------
@pytest.fixture()
def flat_csv(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "flat.csv"
    rows = ["a,b,c,y"] + [f"{a:.3f},{b:.3f},{c:.3f},{int(a > 0)}" for a, b, c in rng.normal(size=(30, 3))]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_lstm_refuses_flat_csv_without_window(flat_csv: str) -> None:
    data = load_data(flat_csv, target="y")
    task = make_task(data, "classification")
    with pytest.raises(DataError) as e:
        create_space("lstm", task=task)
    msg = str(e.value)
    assert "\n" not in msg and "(3,)" in msg and "--window" in msg and "(T, F)" in msg


def test_cnn_refuses_one_dimensional_features(flat_csv: str) -> None:
    data = load_data(flat_csv, target="y")
    with pytest.raises(DataError) as e:
        create_space("cnn", task=make_task(data, "classification"))
    msg = str(e.value)
    assert "\n" not in msg and "(3,)" in msg and "(H, W)" in msg


def test_spaces_refuse_tasks_they_cannot_do(digits: Dataset) -> None:
    with pytest.raises(DataError, match="accepts: reconstruction, anomaly"):
        create_space("ae", task=make_task(digits, "classification"))
    with pytest.raises(DataError, match="accepts: classification, regression"):
        create_space("lstm", task=make_task(digits, "anomaly", normal_class=0))


# -- ae: the four kinds, reconstruction MSE, VAE loss, anomaly detection, save/load -----------------------------
@pytest.mark.parametrize("kind", ["undercomplete", "sparse", "denoising", "variational"])
@pytest.mark.parametrize("architecture", ["dense", "conv"])
def test_ae_kinds_train_and_report_reconstruction_mse(kind: str, architecture: str, digits: Dataset) -> None:
    space, data = _space_and_data("ae", digits)
    assert space.default_objective() == "val_loss:min"
    assert np.array_equal(data.y_train, data.x_train) and np.array_equal(data.y_val, data.x_val)
    values = {"kind": kind, "architecture": architecture, "batch_size": 64}
    if kind == "denoising":
        values["noise_type"] = "masking" if architecture == "conv" else "gaussian"
    model, h = _fit(space, values, data, n=256)
    assert {"loss", "val_loss", "val_reconstruction_mse"} <= set(h), h
    val_mse = h["val_reconstruction_mse"][-1]
    recomputed = float(np.mean(np.square(model.predict(data.x_val, verbose=0) - data.x_val)))
    assert val_mse == pytest.approx(recomputed, rel=1e-3)  # in the input's units
    if kind in ("sparse", "variational"):  # the penalty / KL term is part of the loss, not of the MSE
        assert h["val_loss"][-1] > val_mse
    else:
        assert h["val_loss"][-1] == pytest.approx(val_mse, rel=1e-4)


def test_denoising_noise_is_training_only(digits: Dataset) -> None:
    space, data = _space_and_data("ae", digits)
    for noise in ("gaussian", "masking"):
        model = space.build(P.to_hp(space.hyperparameters(), {"kind": "denoising", "noise_type": noise,
                                                              "noise_level": 0.5}))
        x = data.x_val[:8]
        a, b = model(x, training=False), model(x, training=False)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b))
        noisy = [layer for layer in model.layers if layer.name in ("gaussian_noise", "masking_noise")]
        assert len(noisy) == 1
        corrupted = keras.Model(model.input, noisy[0].output)
        np.testing.assert_allclose(np.asarray(corrupted(x, training=False)), x)
        train_view = np.asarray(corrupted(x, training=True))
        assert not np.allclose(train_view, x)
        if noise == "masking":  # values are kept unscaled or zeroed
            assert np.all(np.isclose(train_view, x) | (train_view == 0))


@pytest.mark.slow
def test_vae_kl_is_in_the_loss_and_save_load_round_trip(tmp_path, digits: Dataset) -> None:
    space, data = _space_and_data("ae", digits)
    hp = P.to_hp(space.hyperparameters(), {"kind": "variational", "architecture": "conv", "kl_weight": 5.0})
    model = space.build(hp)
    x = data.x_val[:16]
    model(x, training=True)
    assert len(model.losses) == 1 and float(model.losses[0]) >= 0.0  # the KL term
    space.fit(hp, model, data.x_train[:128], data.y_train[:128], epochs=1, verbose=0)
    expected = model.predict(x, verbose=0)
    path = tmp_path / "vae.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    # a fresh process that imports nothing of ours: the model is made of built-in layers only
    code = (
        "import sys, numpy as np, keras\n"
        f"m = keras.models.load_model({str(path)!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))\n"
        "assert 'nas' not in sys.modules and 'search_spaces.ae' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-6)
    again = keras.models.load_model(path)
    h = again.fit(x, x, validation_data=(x, x), epochs=1, verbose=0).history  # still trains, KL included
    assert h["val_loss"][0] > h["val_reconstruction_mse"][0]


def test_ae_anomaly_on_digits_with_zero_as_normal(digits: Dataset) -> None:
    space, data = _space_and_data("ae", digits, kind="anomaly", normal_class=0)
    assert space.default_objective() == "val_loss:min"
    # trains on the normal class only (inputs -> inputs); validates on normal validation examples only
    assert len(data.x_train) == int(np.sum(digits.y_train == 0))
    assert np.array_equal(data.y_train, data.x_train)
    assert len(data.x_val) == int(np.sum(digits.y_val == 0))
    # scores the full labelled validation set, anomalies (not 0) positive
    assert len(data.x_score) == len(digits.x_val)
    assert np.array_equal(data.y_score, (digits.y_val != 0).astype("int64"))
    _, h = _fit(space, {"batch_size": 16}, data, epochs=5)
    for key in ("val_precision", "val_recall", "val_f1", "val_loss", "val_reconstruction_mse"):
        assert len(h[key]) == 5 and all(math.isfinite(v) for v in h[key]), (key, h[key])
    assert all(0.0 <= v <= 1.0 for key in ("val_precision", "val_recall", "val_f1") for v in h[key])
    assert h["val_f1"][-1] > 0.8, h  # zeros are easy to tell from other digits


def test_anomaly_prepared_data_survives_replace(digits: Dataset) -> None:
    space, data = _space_and_data("ae", digits, kind="anomaly", normal_class=3)
    copy = data.replace(source="copy")
    assert copy.x_score is data.x_score and copy.describe()["normal_class"] == 3
    import json

    json.dumps(copy.describe())  # only small, JSON-friendly facts in info


# -- lstm: classification (row-wise digits) and forecasting ---------------------------------------------------
def test_lstm_classifies_digits_row_by_row(digits: Dataset) -> None:
    space, data = _space_and_data("lstm", digits)
    assert space.task.kind == "classification" and space.task.input_shape == (8, 8)
    assert space.default_objective() == "val_accuracy:max"
    keras.utils.set_random_seed(0)
    _, h = _fit(space, {"units_0": 32, "batch_size": 32, "learning_rate": 0.01}, data, epochs=3, n=512)
    assert "val_accuracy" in h and h["val_accuracy"][-1] > 0.3  # chance is 0.1


def test_lstm_forecasts_a_sine_csv(tmp_path) -> None:
    t = np.arange(300)
    path = tmp_path / "sine.csv"
    path.write_text("t,value\n" + "\n".join(f"{i},{math.sin(i / 6):.5f}" for i in t) + "\n")
    data = load_data(str(path), target="value", window=12)
    assert data.input_shape == (12, 2)
    space, data = _space_and_data("lstm", data)
    assert space.task.kind == "regression" and space.default_objective() == "val_loss:min"
    for cell in ("lstm", "gru"):
        model, h = _fit(space, {"cell": cell, "units_0": 16, "batch_size": 16, "learning_rate": 0.01}, data, epochs=3)
        assert h["val_loss"][-1] < h["val_loss"][0] and h["val_loss"][-1] < 0.5, h
        assert model.predict(data.x_val[:3], verbose=0).shape == (3, 1)
        keras.backend.clear_session(free_memory=False)


# -- every space works unchanged in KerasTuner ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", SPACE_NAMES)
def test_space_works_in_keras_tuner_random_search(name: str, tmp_path, digits: Dataset) -> None:
    space, data = _space_and_data(name, digits)
    small = data.replace(x_train=data.x_train[:64], y_train=data.y_train[:64],
                         x_val=data.x_val[:32], y_val=data.y_val[:32])
    objective = space.default_objective().split(":")[0]
    tuner = kt.RandomSearch(space, objective=kt.Objective(objective, direction="min" if "loss" in objective else "max"),
                            max_trials=2, seed=0, directory=str(tmp_path), project_name=name, overwrite=True)
    assert {p.name for p in tuner.oracle.hyperparameters.space} == {p.name for p in space.hyperparameters().space}
    tuner.search(small.x_train, small.y_train, validation_data=(small.x_val, small.y_val), epochs=1, verbose=0)
    trials = tuner.oracle.get_best_trials(2)
    assert len(trials) == 2 and all(t.status == "COMPLETED" for t in trials)
    hp = space.hyperparameters()
    for trial in trials:  # each trial ran a valid point of the space
        values = trial.hyperparameters.values
        active = {p.name for p in P.active_params(hp, values)}
        P.validate(hp, {k: v for k, v in values.items() if k in active})
        assert math.isfinite(trial.score)


@pytest.mark.parametrize("shape", [(8, 8), (7, 5), (28, 28, 1), (32, 32, 3)])
def test_conv_autoencoder_reconstructs_any_image_shape(shape: tuple[int, ...]) -> None:
    """Strided encoder, mirrored transposed decoder, cropped back to the input's shape (odd sizes too)."""
    space = create_space("ae", task=Task("reconstruction", shape))
    hp = space.hyperparameters()
    x = np.random.default_rng(0).random((4, *shape)).astype("float32")
    for kind in ("undercomplete", "variational"):
        values = {"kind": kind, "architecture": "conv", "conv_layers": 3, "conv_filters_0": 8,
                  "conv_filters_1": 8, "conv_filters_2": 8}
        model = space.build(P.to_hp(hp, values))
        assert model.output_shape[1:] == shape
        model.run_eagerly = True
        assert math.isfinite(float(model.train_on_batch(x, x, return_dict=True)["loss"]))
        keras.backend.clear_session(free_memory=False)


def test_lstm_reads_colour_images_row_by_row() -> None:
    space = create_space("lstm", task=Task("classification", (6, 5, 3), num_classes=2))
    model = space.build(P.to_hp(space.hyperparameters(), {"bidirectional": True, "num_layers": 2,
                                                          "units_0": 8, "units_1": 8}))
    assert model.get_layer("rows_as_steps").output.shape[1:] == (6, 15)
    model.run_eagerly = True
    x = np.random.default_rng(0).random((4, 6, 5, 3)).astype("float32")
    model.train_on_batch(x, np.array([0, 1, 0, 1]))
