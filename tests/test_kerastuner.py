"""KerasTuner code runs unchanged (issue: build functions, a HyperModel's own fit, fit arguments): each test is
written as a KerasTuner user writes it, following KerasTuner's getting-started guide, on digits, through
``nas.search`` instead of ``kt.RandomSearch(...).search(...)``. Searches run one trial at a time
(``max_concurrent=1``): one Ray worker then trains them in turn, reused from trial to trial, and a second worker's
Keras import (~6 CPU-seconds on the CPU-bound suite) is saved; trials at once are the property of
tests/driver/test_plugins_e2e.py's deterministic search and tests/driver/test_resume.py's kills."""

from __future__ import annotations

import inspect
from pathlib import Path

import keras_tuner as kt
import numpy as np
import pytest

import nas
from nas.errors import NasError, PluginError
from nas.options import FIT_BY_NAS, FIT_PASSED
from nas.plugins.data import load_data

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("kept_ray")]  # one Ray for the module


@pytest.fixture(scope="module")
def digits():
    d = load_data("digits", seed=0)
    flat = lambda x: x.reshape(len(x), -1).astype("float32")  # noqa: E731
    return flat(d.x_train), d.y_train, flat(d.x_val), d.y_val


def build_model(hp):
    """The guide's build function: layers declared in a loop, a conditional branch, one-hot labels."""
    import keras

    model = keras.Sequential([keras.layers.Input((64,))])
    for i in range(hp.Int("num_layers", 1, 2)):
        model.add(keras.layers.Dense(hp.Int(f"units_{i}", 16, 64, step=16),
                                     activation=hp.Choice("activation", ["relu", "tanh"])))
    if hp.Boolean("dropout"):
        with hp.conditional_scope("dropout", [True]):
            model.add(keras.layers.Dropout(rate=hp.Float("rate", 0.1, 0.3)))
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-2, sampling="log")),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model


class MyHyperModel(kt.HyperModel):
    """The guide's HyperModel that tunes fit arguments in its own fit."""

    def build(self, hp):
        return build_model(hp)

    def fit(self, hp, model, *args, **kwargs):
        return model.fit(*args, shuffle=hp.Boolean("shuffle"), batch_size=hp.Choice("batch_size", [16, 32]),
                         **kwargs)


def test_a_build_function_with_callbacks_and_class_weight(digits, tmp_path: Path) -> None:
    """``nas.search(space=build_model, ..., callbacks=[EarlyStopping])`` as ``kt.RandomSearch(build_model)``:
    the space is the function's, one-hot labels train, the user's EarlyStopping ends a trial early (it is
    recorded as completed with its epochs) and the best model reloads and predicts."""
    import keras

    x, y, xv, yv = digits
    onehot = np.eye(10, dtype="float32")
    # no epoch improves val_loss by 10: it stops after epoch 2 (patience 1), if its patience spans the epochs
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=10.0, patience=1)
    run = nas.search(space=build_model, strategy="random", data=(x, onehot[y]), validation_data=(xv, onehot[yv]),
                     trials=2, epochs=4, max_concurrent=1, storage=str(tmp_path), name="bf", progress=False,
                     seed=3, callbacks=[stop], class_weight={i: 1.0 for i in range(10)})
    names = [h["name"] for h in run.spec["hyperparameters"]]
    assert set(names) == {"num_layers", "units_0", "units_1", "activation", "dropout", "rate", "lr"}, names
    assert [(t["status"], t["metrics"]["epochs"]) for t in run.trials] == [("completed", 2)] * 2
    model = run.best_model()
    accuracy = float(np.mean(np.argmax(model.predict(xv, verbose=0), axis=1) == yv))
    assert accuracy == pytest.approx(run.best["metrics"]["val_accuracy"], abs=1e-6)


def test_a_hypermodels_own_fit_tunes_fit_arguments(digits, tmp_path: Path) -> None:
    """``fit(self, hp, model, *args, **kwargs)`` setting ``shuffle`` and ``batch_size`` itself: no keyword twice,
    the hyperparameters it declares are searched, and a user's EarlyStopping counts patience across epochs."""
    import keras

    x, y, xv, yv = digits
    onehot = np.eye(10, dtype="float32")
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=10.0, patience=1)
    run = nas.search(space=MyHyperModel(), strategy="random", data=(x, onehot[y]),
                     validation_data=(xv, onehot[yv]), trials=2, epochs=4, max_concurrent=1, storage=str(tmp_path),
                     name="hm", progress=False, seed=1, callbacks=[stop])
    names = {h["name"] for h in run.spec["hyperparameters"]}
    assert {"shuffle", "batch_size"} <= names
    assert [(t["status"], t["metrics"]["epochs"]) for t in run.trials] == [("completed", 2)] * 2, run.trials
    assert {t["config"]["batch_size"] for t in run.trials} <= {16, 32}


BUILD_FILE = """
import keras


def build_model(hp):
    model = keras.Sequential([keras.layers.Input((8, 8)), keras.layers.Flatten()])
    for i in range(hp.Int("num_layers", 1, 2)):
        model.add(keras.layers.Dense(hp.Int(f"units_{i}", 16, 64, step=16), activation="relu"))
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
"""


class CustomLoop(kt.HyperModel):
    """KerasTuner's "tune hyperparameters in your custom training loop" guide: an uncompiled model, its own
    training loop in fit, the objective reported to the callbacks as my_metric; trained once per trial."""

    def build(self, hp):
        import keras

        return keras.Sequential([keras.layers.Input((64,)),
                                 keras.layers.Dense(hp.Int("units", 16, 64, step=16), activation="relu"),
                                 keras.layers.Dense(10)])

    def fit(self, hp, model, x, y, validation_data, callbacks=None, **kwargs):
        import keras
        import tensorflow as tf

        batch_size = hp.Int("batch_size", 32, 128, step=32, default=64)
        train_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
        validation_data = tf.data.Dataset.from_tensor_slices(validation_data).batch(batch_size)
        optimizer = keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"))
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        epoch_loss_metric = keras.metrics.Mean()

        @tf.function
        def run_train_step(images, labels):
            with tf.GradientTape() as tape:
                loss = loss_fn(labels, model(images))
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))

        @tf.function
        def run_val_step(images, labels):
            epoch_loss_metric.update_state(loss_fn(labels, model(images)))

        for callback in callbacks:
            callback.set_model(model)
        best_epoch_loss = float("inf")
        for epoch in range(2):
            for images, labels in train_ds:
                run_train_step(images, labels)
            for images, labels in validation_data:
                run_val_step(images, labels)
            epoch_loss = float(epoch_loss_metric.result().numpy())
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs={"my_metric": epoch_loss})
            epoch_loss_metric.reset_state()
            best_epoch_loss = min(best_epoch_loss, epoch_loss)
        return best_epoch_loss


def test_the_custom_training_loop_guide_with_only_the_import_changed(digits, tmp_path: Path) -> None:
    from nas import tuners as kt

    x, y, xv, yv = digits
    tuner = kt.RandomSearch(objective=kt.Objective("my_metric", "min"), max_trials=2, hypermodel=CustomLoop(),
                            directory=str(tmp_path), project_name="custom_training", overwrite=True, seed=2,
                            max_concurrent=1, progress=False)
    tuner.search(x=x, y=y, validation_data=(xv, yv))
    best_hps = tuner.get_best_hyperparameters()[0]
    assert set(best_hps.values) == {"units", "batch_size", "learning_rate"}  # fit's too
    run = tuner.run
    assert [(t["status"], t["metrics"]["epochs"]) for t in run.trials] == [("completed", 2)] * 2, run.trials
    best = tuner.oracle.get_best_trials(1)[0]
    model = tuner.get_best_models()[0]
    assert model.count_params() == CustomLoop().build(best_hps).count_params() and best.score < 2.3


def test_the_command_line_takes_a_build_function_in_a_file(cli, tmp_path: Path, capsys, monkeypatch) -> None:
    """Through the CLI's entry point in this process, on the module's one Ray (``kept_ray``)."""
    path = tmp_path / "my_model.py"
    path.write_text(BUILD_FILE)
    code, out, err = cli.inprocess("search", "--space", f"{path}:build_model", "--strategy", "random", "--trials", "1",
                                   "--epochs", "1", "--name", "file-bf", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and "finished: 1 completed, 0 failed" in out, out + err
    status = cli.status("file-bf")
    assert status["space"] == f"{path}:build_model" and set(status["best"]["config"]) >= {"num_layers", "units_0"}


@pytest.mark.parametrize("build, says", [
    ("raises", "space 'raises': build(hp) raised ValueError: no such layer"),
    ("not_a_model", "space 'not_a_model': build(hp) returned str, not a keras.Model"),
    ("uncompiled", "space 'uncompiled': build(hp) returned a model that is not compiled"),
])
def test_a_build_function_that_cannot_build_is_one_line(build: str, says: str) -> None:
    import keras

    from nas.plugins.registry import create_space
    from nas.plugins.task import Task

    def raises(hp):
        raise ValueError("no such layer")

    def not_a_model(hp):
        return "model"

    def uncompiled(hp):
        return keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(hp.Int("units", 1, 4))])

    fn = {"raises": raises, "not_a_model": not_a_model, "uncompiled": uncompiled}[build]
    with pytest.raises(PluginError) as e:
        create_space(fn, task=Task("classification", (64,), num_classes=10))
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("keywords, says", [
    ({"initial_epoch": 2}, "fit argument initial_epoch= is set by nas for every trial; give nas.resume(name)"),
    ({"validation_split": 0.1}, "give validation_data=, or nothing: a seeded 20 % of data is held out"),
    ({"shuffle": True}, "nas orders each epoch's batches itself"),
    ({"callbaks": []}, "option 'callbaks' is not valid (did you mean callbacks?)"),
    ({"callbacks": [lambda: (yield)]}, None),  # a generator function pickles (cloudpickle): accepted
])
def test_fit_arguments_nas_cannot_take_are_one_line_before_anything_starts(keywords: dict, says: str | None) -> None:
    from nas.api import fit_arguments

    if says is None:
        assert set(fit_arguments(dict(keywords))) == set(keywords)
        return
    with pytest.raises(NasError) as e:
        fit_arguments(dict(keywords))
        nas.search_options(**keywords)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_fit_argument_that_cannot_reach_the_workers_is_one_line() -> None:
    import threading

    from nas.api import fit_arguments

    with pytest.raises(NasError, match=r"fit argument callbacks=\[<unlocked _thread.lock .* cannot be sent to the "
                                       r"trial workers: it does not pickle \(TypeError"):
        fit_arguments({"callbacks": [threading.Lock()]})


def test_the_fit_arguments_nas_knows_are_exactly_keras_model_fit_s() -> None:
    import keras

    params = set(inspect.signature(keras.Model.fit).parameters) - {"self"}
    assert set(FIT_PASSED) | set(FIT_BY_NAS) == params


def test_the_getting_started_guide_with_only_the_import_changed(digits, tmp_path: Path, capsys) -> None:
    """KerasTuner's getting-started guide, its tuner part as written there (``import keras_tuner as kt`` became
    ``from nas import tuners as kt``; nas's max_concurrent added): search, the best models and hyperparameters,
    the summaries; a second tuner on the same project continues it (overwrite=False), one with overwrite=True
    starts afresh."""
    from nas import tuners as kt

    x, y, xv, yv = digits
    onehot = np.eye(10, dtype="float32")
    tuner = kt.RandomSearch(hypermodel=build_model, objective="val_accuracy", max_trials=2, executions_per_trial=1,
                            overwrite=True, directory=str(tmp_path), project_name="helloworld", max_concurrent=1,
                            seed=5, progress=False)
    tuner.search_space_summary()
    assert "Default search space size: 7" in capsys.readouterr().out
    tuner.search(x, onehot[y], epochs=2, validation_data=(xv, onehot[yv]))
    models = tuner.get_best_models(num_models=2)
    best_model = models[0]
    best_model.build(input_shape=(None, 64))
    accuracy = float(np.mean(np.argmax(best_model.predict(xv, verbose=0), axis=1) == yv))
    best = tuner.oracle.get_best_trials(1)[0]
    assert accuracy == pytest.approx(best.score, abs=1e-6) and len(models) == 2
    best_hps = tuner.get_best_hyperparameters(5)
    assert isinstance(best_hps[0], kt.HyperParameters) and best_hps[0].values == best.hyperparameters.values
    assert build_model(best_hps[0]).count_params() == best_model.count_params()
    tuner.results_summary()
    out = capsys.readouterr().out
    assert "Showing 2 best trials" in out and 'Objective(name="val_accuracy", direction="max")' in out
    assert f"Score: {best.score}" in out

    again = kt.RandomSearch(build_model, objective=kt.Objective("val_accuracy", "max"), max_trials=3,
                            directory=str(tmp_path), project_name="helloworld", progress=False)
    run = again.search(x, onehot[y], epochs=2, validation_data=(xv, onehot[yv]))
    assert [t["trial_id"] for t in run.trials] == ["0", "1", "2"]  # the stored 2 kept, one more run
    fresh = kt.GridSearch(build_model, objective="val_loss", max_trials=1, directory=str(tmp_path),
                          project_name="helloworld", overwrite=True, progress=False)
    run = fresh.search(x, onehot[y], epochs=1, validation_split=0.25)
    assert len(run.trials) == 1 and run.spec["objectives"] == [{"metric": "val_loss", "mode": "min"}]
    assert abs(run.spec["data"]["val"] - 0.25 * len(x)) <= 1  # validation_split: the held-out share


@pytest.mark.parametrize("make, says", [
    (lambda kt: kt.RandomSearch(build_model, objective="val_weirdness"), "the direction of an unknown metric"),
    (lambda kt: kt.RandomSearch(), "hypermodel= is required"),
    (lambda kt: kt.RandomSearch(hypermodel=42), "hypermodel=42 is not valid; give a build function"),
])
def test_what_the_tuners_do_not_take_is_one_line(make, says: str) -> None:
    from nas import tuners as kt

    with pytest.raises(NasError) as e:
        make(kt)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_tuner_that_overrides_run_trial_tunes_anything(tmp_path: Path) -> None:
    """KerasTuner's "tune anything" idiom: run_trial declares and returns the value to minimise; each trial runs
    it in a Ray worker (search() with no data: nas's default data are loaded and not used)."""
    from nas import tuners as kt

    class MyTuner(kt.RandomSearch):
        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            x = hp.Float("x", -1.0, 1.0)
            return x * x + 1

    tuner = MyTuner(max_trials=3, overwrite=True, directory=str(tmp_path), project_name="tune_anything", seed=4,
                    max_concurrent=1, progress=False)
    tuner.search()
    best = tuner.get_best_hyperparameters()[0].get("x")
    values = sorted(t["config"]["x"] ** 2 + 1 for t in tuner.run.trials)
    assert [t["status"] for t in tuner.run.trials] == ["completed"] * 3
    assert tuner.oracle.get_best_trials(1)[0].score == pytest.approx(values[0]) == pytest.approx(best * best + 1)
    assert tuner.run.spec["objectives"] == [{"metric": "default_objective", "mode": "min"}]


def test_a_restricted_space_as_kerastuner_restricts_it(digits, tmp_path: Path) -> None:
    """KerasTuner's "tailor the search space": given entries win, tune_new_entries=False fixes the others at
    their defaults; allow_new_entries=False refuses a hypermodel declaring more, in one line."""
    from nas import tuners as kt

    x, y, xv, yv = digits
    onehot = np.eye(10, dtype="float32")
    hp = kt.HyperParameters()
    hp.Fixed("lr", 0.005)
    hp.Choice("units_0", [32, 48])
    tuner = kt.RandomSearch(build_model, objective="val_accuracy", max_trials=2, hyperparameters=hp,
                            tune_new_entries=False, directory=str(tmp_path), project_name="tailored",
                            overwrite=True, max_concurrent=1, progress=False)
    run = tuner.search(x, onehot[y], epochs=1, validation_data=(xv, onehot[yv]))
    configs = [t["config"] for t in run.trials]
    assert all(c["lr"] == 0.005 and c["units_0"] in (32, 48) and c["num_layers"] == 1 and c["activation"] == "relu"
               and c["dropout"] is False for c in configs), configs
    refused = kt.RandomSearch(build_model, objective="val_accuracy", max_trials=1, hyperparameters=hp,
                              allow_new_entries=False, directory=str(tmp_path), project_name="refused",
                              progress=False)
    with pytest.raises(PluginError, match="declares num_layers, activation, .* not in hyperparameters="):
        refused.search(x, onehot[y], epochs=1, validation_data=(xv, onehot[yv]))


def test_a_nas_space_name_is_a_hypermodel(tmp_path: Path, capsys) -> None:
    """Beyond KerasTuner: the facade takes nas's own spaces by name, as `nas.search(space="mlp")` does."""
    from nas import tuners as kt

    tuner = kt.RandomSearch("mlp", max_trials=1, directory=str(tmp_path), project_name="named", progress=False)
    tuner.search_space_summary()
    out = capsys.readouterr().out
    assert "Search space summary" in out and "learning_rate (Float)" in out


def test_executions_per_trial_averages_several_models_of_each_configuration(digits, tmp_path: Path) -> None:
    """KerasTuner's ``executions_per_trial``: each configuration trains N models (each from its own seed) and
    the trial reports their per-epoch mean. The trial's own execution is the model an executions_per_trial=1
    search trains (the same seed), so each reported epoch is exactly the mean of that run's epoch and the extra
    execution's (kept in the trial's executions.json, for resume). 0 is one line before anything starts."""
    import json

    from nas import tuners as kt

    x, y, xv, yv = digits
    onehot = np.eye(10, dtype="float32")
    runs = {}
    for n in (1, 2):
        tuner = kt.RandomSearch(build_model, objective="val_accuracy", max_trials=1, executions_per_trial=n, seed=5,
                                directory=str(tmp_path), project_name=f"x{n}", progress=False)
        runs[n] = tuner.search(x[:400], onehot[y[:400]], epochs=2, validation_data=(xv, onehot[yv]))
    once, twice = runs[1].trials[0], runs[2].trials[0]
    assert once["config"] == twice["config"] and twice["status"] == "completed"
    extra = json.loads((tmp_path / "x2" / "trials" / "0" / "executions.json").read_text())["executions"]
    assert len(extra) == 1 and len(extra[0]) == 2  # one more model, two epochs
    for epoch in range(2):
        mine, its, mean = once["history"][epoch], extra[0][epoch], twice["history"][epoch]
        assert mean["executions"] == 2 and "executions" not in mine
        for key in ("val_accuracy", "val_loss", "loss"):
            assert mean[key] == pytest.approx((mine[key] + its[key]) / 2, abs=1e-6), (epoch, key)
    assert extra[0][1]["val_loss"] != once["history"][1]["val_loss"]  # another seed: another model
    with pytest.raises(NasError, match="--executions-per-trial 0 is not valid"):
        kt.RandomSearch(build_model, executions_per_trial=0, directory=str(tmp_path), project_name="x0",
                        progress=False).search(x, onehot[y], epochs=1, validation_data=(xv, onehot[yv]))
    assert not (tmp_path / "x0").exists()
