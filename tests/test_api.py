"""The Python API end to end: arrays, tf.data, a KerasTuner HyperModel and a strategy object; resume through the
API after the command line and the other way round; the trials DataFrame, the best model, export; config files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nas
from nas.plugins.data import load_data

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("kept_ray")]  # one Ray for the module
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    """A real search through nas.search on in-memory digits arrays (with a validation split of the caller's)."""
    from conftest import CLI

    root = tmp_path_factory.mktemp("api")
    cli = CLI(root / "runs", root)
    d = load_data("digits", seed=0)
    from ray import tune  # noqa: F401 - its import adds hooks of its own, before the count
    from ray._private import worker as ray_worker

    hooks = len(ray_worker._post_init_hooks)
    run = nas.search(space="mlp", strategy="random", data=(d.x_train, d.y_train), validation_data=(d.x_val, d.y_val),
                     trials=3, epochs=2, max_concurrent=1, name="api", storage=str(cli.storage), seed=1,
                     progress=False)
    # the search released what Tune keeps process-wide for it (nas.runtime.cluster.tune_parameters): the hook
    # holding its data's object references, which would outlive the Ray session they belong to
    API_RUN_LEFT["hooks"] = len(ray_worker._post_init_hooks) - hooks
    return cli, run, d


API_RUN_LEFT: dict[str, int] = {}


def test_search_returns_a_run_with_its_trials_and_best_model(api_run) -> None:
    cli, run, d = api_run
    assert isinstance(run, nas.Run) and run.name == "api" and run.interrupted is False
    assert API_RUN_LEFT == {"hooks": 0}  # nothing of the search left in Ray's process-wide state
    assert len(run.trials) == 3 and all(t["status"] == "completed" for t in run.trials)
    best = run.best
    assert best == max(run.trials, key=lambda t: t["metrics"]["val_accuracy"])
    model = run.best_model()
    assert model.count_params() == best["metrics"]["params"]
    accuracy = float(np.mean(np.argmax(model.predict(d.x_val, verbose=0), axis=1) == d.y_val))
    assert accuracy == pytest.approx(best["metrics"]["val_accuracy"], abs=1e-6)  # the best epoch's weights
    assert [t["trial_id"] for t in run.pareto_front()] == [best["trial_id"]]
    # the arrays were saved with the run: it resumes and exports like any other (same spec, same status)
    spec = run.spec
    assert spec["data"]["source"] == "in-memory arrays" and Path(spec["data"]["spec"]).is_file()
    assert run.status()["best"]["trial_id"] == best["trial_id"] == cli.status("api")["best"]["trial_id"]


def test_trials_frame(api_run) -> None:
    _, run, _ = api_run
    frame = run.trials_frame()
    assert list(frame["trial_id"]) == ["0", "1", "2"] and set(frame["status"]) == {"completed"}
    assert {"config_num_layers", "config_learning_rate", "val_accuracy", "val_loss", "params", "epochs"} <= set(frame)
    assert frame["val_accuracy"].max() == pytest.approx(run.best["metrics"]["val_accuracy"])


def test_export_through_the_api(api_run, tmp_path) -> None:
    _, run, d = api_run
    result = run.export(tmp_path / "model", formats=["keras", "onnx"])
    assert set(result.files) == {"keras", "onnx"} and all(v <= 1e-4 for v in result.differences.values())
    assert (tmp_path / "model" / "README.md").is_file()


def test_resume_through_the_cli_then_the_api(api_run, capsys, monkeypatch) -> None:
    """The CLI's entry point in this process, on the module's one Ray, then the API."""
    cli, run, _ = api_run
    before = {t["trial_id"]: t for t in nas.open_run("api", str(cli.storage)).trials}
    code, out, err = cli.inprocess("resume", "api", "--trials", "4", "--max-concurrent", "1", capsys=capsys,
                                   monkeypatch=monkeypatch)
    assert code == 0, out + err
    after = {t["trial_id"]: t for t in nas.open_run("api", str(cli.storage)).trials}
    assert len(after) == 4
    # raising the budget of a finished run runs only the extra trial: the completed ones are not touched again
    assert all(after[k]["finished"] == t["finished"] and after[k]["history"] == t["history"]
               for k, t in before.items()), (before, after)
    again = nas.resume("api", storage=str(cli.storage), trials=5, progress=False)
    assert len(again.trials) == 5 and all(t["status"] == "completed" for t in again.trials)
    assert len({json.dumps(t["config"], sort_keys=True) for t in again.trials}) == 5


def test_searches_inside_local_ray_share_it_and_leave_it_up(api_run, kept_ray, cli) -> None:
    """nas.local_ray (this module's kept_ray): the searches above ran on it and left it up; a search that needs
    another Ray (other CPUs, verbose workers) is refused in one line, and the kept Ray still runs."""
    import ray

    assert ray.is_initialized() and ray.get_runtime_context().gcs_address == kept_ray["address"]
    other = int(ray.cluster_resources()["CPU"]) + 1  # never the kept Ray's, whatever this machine's size
    for bad, says in [({"num_cpus": other}, f"--num-cpus {other}: this process already runs a local Ray with"),
                      ({"verbose": True}, "this process keeps a local Ray (nas.local_ray) whose workers have "
                                          "NAS_VERBOSE=(unset); this search needs NAS_VERBOSE=1")]:
        with pytest.raises(nas.RunError) as e:
            nas.search(space="mlp", strategy="random", trials=1, epochs=1, storage=str(cli.storage),
                       progress=False, **bad)
        assert str(e.value).startswith(says) and "\n" not in str(e.value), e.value
    assert ray.is_initialized()
    with pytest.raises(nas.RunError, match="nas.local_ray is already open in this process"):
        with nas.local_ray():
            raise AssertionError("a second local_ray was opened")

HYPERMODEL = '''
import keras, keras_tuner as kt

class TwoLayers(kt.HyperModel):
    """A plain KerasTuner HyperModel: its hyperparameters are declared while it builds."""
    def build(self, hp):
        model = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten()])
        model.add(keras.layers.Dense(hp.Int("units", 8, 64, step=8), activation="relu"))
        if hp.Boolean("second"):
            model.add(keras.layers.Dense(hp.Int("units_2", 8, 32, step=8), activation="relu"))
        model.add(keras.layers.Dense(10, activation="softmax"))
        model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-2, sampling="log")),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model
'''


def test_hypermodel_tf_data_and_a_strategy_object(cli, tmp_path, monkeypatch) -> None:
    import tensorflow as tf

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "user_models.py").write_text(HYPERMODEL)
    from user_models import TwoLayers

    from strategies.random_search import RandomSearch

    d = load_data("digits", seed=0)
    train = tf.data.Dataset.from_tensor_slices((d.x_train, d.y_train)).batch(64)
    run = nas.search(space=TwoLayers(), strategy=RandomSearch, data=train, trials=2, epochs=1, name="hm",
                     storage=str(cli.storage), max_concurrent=1, progress=False)
    spec = run.spec
    assert {h["name"] for h in spec["hyperparameters"]} == {"units", "second", "units_2", "lr"}  # every branch
    assert all(t["status"] == "completed" for t in run.trials), run.trials
    assert spec["data"]["train"] + spec["data"]["val"] == len(d.x_train)  # 20 % of the tf.data set held out
    assert run.best["metrics"]["val_accuracy"] > 0
    # the command line reads and resumes it like any run: its space and strategy were kept with it
    cli("resume", "hm", "--trials", "3")
    assert len(cli.status("hm")["trials"]) == 3


@pytest.mark.parametrize("bad, message", [
    ({"trials": 0}, "--trials 0 is not valid"),
    ({"bogus_option": 1}, "option 'bogus_option' is not valid; accepted:"),
    ({"space": "nope"}, "unknown space 'nope'"),
    ({"data": (np.zeros((10, 4)), np.zeros(9))}, "10 inputs but 9 labels"),
    # values no command line gives: the same one line, never a TypeError from deep inside
    ({"seed": "abc"}, "--seed 'abc' is not valid; give an integer"),
    ({"cpus_per_trial": "2"}, "--cpus-per-trial '2' is not valid; give a finite number > 0"),
    ({"gpus_per_trial": "half"}, "--gpus-per-trial 'half' is not valid"),
    ({"storage": 123}, "--storage 123 is not valid; give a directory path"),
    ({"space_option": "units=3"}, "--space-option 'units=3' is not valid; give a mapping"),
])
def test_errors_are_nas_errors_with_the_cli_messages(cli, bad, message) -> None:
    with pytest.raises(nas.NasError, match=message.replace("(", r"\(")):
        nas.search(**{"trials": 1, "storage": str(cli.storage), "progress": False, **bad})


@pytest.mark.parametrize("options, message", [
    ({"max_concurrent": -1}, "--max-concurrent -1 is not valid"),
    ({"num_cpus": 0}, "--num-cpus 0 is not valid"),
    ({"seed": "abc"}, "--seed 'abc' is not valid"),
])
def test_search_options_are_checked_options(options, message) -> None:
    with pytest.raises(nas.NasError, match=message):
        nas.search_options(**options)


def test_config_file_round_trip(cli, tmp_path) -> None:
    """--dump-config writes the file for a command line; --config reads it back to the same options, and
    command-line flags override its keys."""
    dumped = cli("search", "--space", "cnn", "--strategy", "rl", "--trials", "7", "--epochs", "3",
                 "--objective", "val_loss:min", "--max-concurrent", "2", "--space-option", "x=1",
                 "--dump-config").stdout
    path = tmp_path / "search.yaml"
    path.write_text(dumped)
    again = cli("search", "--config", str(path), "--dump-config").stdout
    assert again == dumped
    override = cli("search", "--config", str(path), "--trials", "9", "--dump-config").stdout
    import yaml

    conf = yaml.safe_load(override)
    assert conf["trials"] == 9 and conf["epochs"] == 3 and conf["space"] == "cnn" and conf["strategy"] == "rl"
    assert conf["objective"] == ["val_loss:min"] and conf["space-option"] == {"x": 1}
    assert nas.search_options(path) == nas.search_options(yaml.safe_load(dumped))
    bad = tmp_path / "bad.yaml"
    bad.write_text("trails: 3\n")
    proc = cli("search", "--config", str(bad), check=False)
    assert proc.returncode == 2 and "option 'trails' is not valid (did you mean trials?); accepted:" in proc.stderr, proc.stderr


def test_docstrings_have_examples() -> None:
    from nas import api

    for name in api.__all__:
        doc = getattr(api, name).__doc__ or ""
        assert ">>>" in doc or name == "Run", f"nas.{name} has no example in its docstring"
    assert subprocess.run([sys.executable, "-c", "import nas; help(nas.search)"], capture_output=True,
                          cwd=ROOT).returncode == 0
