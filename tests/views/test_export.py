"""`nas export` end to end: real small searches through the CLI, every format reloaded and compared."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import CLI, copy_run

from nas.plugins.objective import Objective
from nas.plugins.registry import SPACES, available
from nas.storage.records import TrialRecord, TrialStatus
from nas.storage.results import pareto_front
from nas.storage.store import ExperimentStore

pytestmark = pytest.mark.ray

ALL_FORMATS = "keras,savedmodel,onnx,tflite"
DIFF = re.compile(r"^(keras|savedmodel|onnx|tflite)\s+(\S+)\s+max abs difference (\S+) on (\d+) validation inputs",
                  re.M)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, small_run) -> tuple[CLI, dict]:
    """The session's small mlp search (3 trials x 2 epochs on digits, tests/conftest.py), copied as run `exp`
    into a storage of this module's: its tests add exports and runs beside it, the shared run stays as it was."""
    root = tmp_path_factory.mktemp("export")
    cli = CLI(root / "runs", root)
    copy_run(small_run[0], small_run[1], cli, "exp")
    return cli, cli.status("exp")


def seed(cli: CLI) -> int:
    """The seed of run `exp`, which also split its data set into training and validation examples."""
    return json.loads((cli.storage / "exp" / "spec.json").read_text())["seed"]


def here(cli: CLI, capsys, monkeypatch, *args: str) -> str:
    """``nas ARGS`` through the CLI's entry point in this process (Keras, already imported here, is not imported
    again); its exit code must be 0. The CLI in a subprocess exports in tests/views/test_export_out.py too."""
    code, out, err = cli.inprocess(*args, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, out + err
    return out


def differences(out: str) -> dict[str, float]:
    return {m.group(1): float(m.group(3)) for m in DIFF.finditer(out)}


def test_trials_save_their_best_epoch_model(run) -> None:
    cli, status = run
    for t in status["trials"]:
        d = cli.storage / "exp" / "trials" / t["trial_id"]
        assert (d / "best.keras").is_file()
        # completed for good: its mid-trial checkpoint is dropped (--keep-checkpoints keeps it)
        assert not (d / "resume.npz").exists() and not list(d.glob("*.npz")), sorted(p.name for p in d.iterdir())
        info = json.loads((d / "best.json").read_text())
        assert info["epoch"] == t["metrics"]["best_epoch"]
        assert info["metrics"]["val_accuracy"] == pytest.approx(t["metrics"]["val_accuracy"])
        # best.keras (written when the trial ends) holds the best epoch's weights, not the last epoch's: its
        # accuracy on the validation split is the best epoch's (and best.npz, the same weights, is gone)
        import keras

        from nas.plugins.data import load_data

        data = load_data("digits", seed=seed(cli))
        model = keras.models.load_model(d / "best.keras")
        accuracy = float(np.mean(np.argmax(model.predict(data.x_val, verbose=0), axis=1) == data.y_val))
        assert accuracy == pytest.approx(t["metrics"]["val_accuracy"], abs=1e-6)


def test_export_from_the_best_weights_of_a_trial_cut_before_its_end(run, tmp_path: Path, capsys, monkeypatch) -> None:
    """A trial whose thread was ended before it wrote best.keras still exports its best epoch."""
    import keras

    cli, status = run
    d = cli.storage / "exp" / "trials" / status["best"]["trial_id"]
    moved = tmp_path / "best.keras"
    # what such a trial leaves: the best epoch's weights as best.npz (written as it happened), no best.keras
    weights = keras.models.load_model(d / "best.keras").get_weights()
    np.savez(d / "best.npz", **{f"w{i}": w for i, w in enumerate(weights)})
    (d / "best.keras").rename(moved)
    try:
        out = here(cli, capsys, monkeypatch, "export", "exp", "--format", "keras", "--out", str(tmp_path / "m"))
        assert "best.npz" in out and "every format verified" in out, out
        exported = keras.models.load_model(tmp_path / "m" / "model.keras").get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(keras.models.load_model(moved).get_weights(), exported))
    finally:
        moved.rename(d / "best.keras")
        (d / "best.npz").unlink()


def test_export_best_trial_every_format_round_trips(run, tmp_path: Path, capsys, monkeypatch) -> None:
    cli, status = run
    best = status["best"]
    out_dir = tmp_path / "model"
    out = here(cli, capsys, monkeypatch, "export", "exp", "--format", ALL_FORMATS, "--out", str(out_dir))
    diffs = differences(out)
    assert set(diffs) == {"keras", "savedmodel", "onnx", "tflite"}, out
    assert all(0 <= d <= 1e-4 for d in diffs.values()), diffs
    assert f"exported trial {best['trial_id']}" in out and "every format verified" in out
    for name in ("model.keras", "saved_model/saved_model.pb", "model.onnx", "model.tflite", "architecture.json",
                 "metrics.json", "summary.txt", "README.md"):
        assert (out_dir / name).is_file(), name

    arch = json.loads((out_dir / "architecture.json").read_text())
    assert arch["trial_id"] == best["trial_id"] and arch["hyperparameters"] == best["config"]
    assert arch["space"] == "mlp" and arch["space_version"] == "1"
    assert arch["data"]["spec"] == "digits" and arch["objective"] == {"metric": "val_accuracy", "mode": "max"}
    assert arch["task"]["kind"] == "classification" and arch["params"] == best["metrics"]["params"]
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["metrics"] == best["metrics"] and metrics["retrain"] is None
    assert metrics["verification"]["max_abs_difference"] == pytest.approx(diffs, abs=1e-9)
    card = (out_dir / "README.md").read_text()
    for text in ("## What was searched", "## How this model was chosen",
                 f"best of {len(status['trials'])} completed trials", "val_accuracy", "keras.models.load_model(\"model.keras\")", "model.onnx"):
        assert text in card, text
    summary = (out_dir / "summary.txt").read_text()
    assert "Total params" in summary and "Param #" in summary, summary
    rows = [ln for ln in summary.splitlines() if ln and ln[0] in "┏┃┡│├└"]
    assert rows and all(ln[-1] in "┓┃┩│┤┘" for ln in rows), summary  # every row whole: nothing cut at 80 columns
    assert f"{best['metrics']['params']:,.0f}" in summary

    # A fresh Python with only keras and numpy imported (not nas): loads with no custom objects, and the model
    # is the trial's best epoch: it reproduces the recorded validation accuracy.
    from nas.plugins.data import load_data

    data = load_data("digits", seed=seed(cli))
    np.save(tmp_path / "x.npy", data.x_val)
    np.save(tmp_path / "y.npy", data.y_val)
    code = textwrap.dedent(f"""
        import sys, numpy as np, keras
        model = keras.models.load_model({str(out_dir / 'model.keras')!r})
        x, y = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'y.npy')!r})
        print(float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y)))
        print(sorted(m for m in sys.modules if m == "nas" or m.startswith("nas.")))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**cli.env(), "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    accuracy, modules = proc.stdout.strip().splitlines()[-2:]
    assert modules == "[]"
    assert float(accuracy) == pytest.approx(best["metrics"]["val_accuracy"], abs=1e-6)


def test_export_default_formats_and_retrain(run, capsys, monkeypatch) -> None:
    cli, status = run
    other = next(t for t in status["trials"] if t["trial_id"] != status["best"]["trial_id"])
    out = here(cli, capsys, monkeypatch, "export", "exp", "--trial", other["trial_id"], "--retrain", "--epochs", "1")
    assert f"retraining trial {other['trial_id']} on train+validation (1797 examples) for 1 epochs" in out
    assert re.search(r"^  epoch 1/1: .*loss=", out, re.M), out
    assert set(differences(out)) == {"keras", "savedmodel"}  # the default formats
    out_dir = cli.storage / "exp" / "exports" / f"trial-{other['trial_id']}-retrained"
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["retrain"]["epochs"] == 1 and len(metrics["retrain"]["history"]) == 1
    assert json.loads((out_dir / "architecture.json").read_text())["hyperparameters"] == other["config"]
    assert "retrained from scratch on train+validation for 1 epochs" in (out_dir / "README.md").read_text()
    assert "chosen with `--trial" in (out_dir / "README.md").read_text()


@pytest.mark.parametrize("args, message", [
    (("export", "exp", "--trial", "99"), "run 'exp' has no trial '99'; trials: 0, 1, 2"),
    (("export", "missing-run"), "no run named 'missing-run'"),
    (("export", "exp", "--format", "keras,pdf"), "format 'pdf' is not valid; accepted: keras, savedmodel, onnx"),
    (("export", "exp", "--epochs", "3"), "--epochs 3 applies only with --retrain"),
])
def test_export_errors_are_one_line(run, capsys, monkeypatch, args, message) -> None:
    cli, _ = run
    code, out, err = cli.inprocess(*args, capsys=capsys, monkeypatch=monkeypatch)
    assert code != 0 and message in err and err.count("\n") == 1, err


def test_multi_objective_run_lists_the_front_and_asks(run, capsys, monkeypatch) -> None:
    """A run with two objectives (written as the engine writes runs): no single best, so a choice is asked for."""
    cli, _ = run
    objectives = [Objective("val_accuracy", "max"), Objective("params", "min")]
    store = ExperimentStore(cli.storage / "multi")
    store.write_spec(dataclasses.replace(ExperimentStore(cli.storage / "exp").spec(), name="multi",
                                         objectives=objectives))
    rows = [("0", 0.90, 1000), ("1", 0.95, 5000), ("2", 0.85, 2000), ("3", 0.95, 800), ("4", 0.5, 800)]
    for tid, acc, params in rows:
        store.write_trial(TrialRecord(tid, TrialStatus.COMPLETED, config={"num_layers": 1},
                                      metrics={"val_accuracy": acc, "params": params}))
    store.write_trial(TrialRecord("5", TrialStatus.FAILED, error="boom"))
    assert [t.trial_id for t in pareto_front(store.trials(), objectives)] == ["3"]
    assert [t.trial_id for t in pareto_front(store.trials(), objectives[:1])] == ["1", "3"]

    store.write_trial(TrialRecord("6", TrialStatus.COMPLETED, config={"num_layers": 1},
                                  metrics={"val_accuracy": 0.97, "params": 9000}))
    code, out, err = cli.inprocess("export", "multi", capsys=capsys, monkeypatch=monkeypatch)
    assert code != 0 and "choose one with --trial ID" in err and err.count("\n") == 1
    assert "trial 3: val_accuracy=0.95 params=800" in out and "trial 6: val_accuracy=0.97" in out
    assert "trial 1:" not in out and "trial 0:" not in out


# Spaces other than mlp, once registered (cnn; ae with its variational kind, whose sampling is the hard case).
VAE_FILE = '''
from search_spaces.ae import AutoencoderSpace

class VariationalAE(AutoencoderSpace):
    """The ae space with kind fixed to variational."""
    def declare(self, hp):
        hp.Fixed("kind", "variational")
        super().declare(hp)
'''
OTHER_SPACES = [s for s in ("cnn", "ae") if s in available(SPACES)]


@pytest.mark.parametrize("space", OTHER_SPACES)
def test_export_other_spaces(space: str, cli, request, kept_ray, tmp_path: Path, capsys, monkeypatch) -> None:
    if space == "cnn":  # the session's cnn search (tests/conftest.py), read only: the export goes to --out
        cli, name = request.getfixturevalue("cnn_run")
    else:
        (tmp_path / "vae.py").write_text(VAE_FILE)
        name = space
        # the search in this process too, on the kept Ray (tests/conftest.py)
        here(cli, capsys, monkeypatch, "search", "--space", f"{tmp_path / 'vae.py'}:VariationalAE", "--trials", "1",
             "--epochs", "1", "--name", name)
    status = cli.status(name)
    assert status["counts"]["completed"] >= 1, status
    if space == "ae":
        assert all(t["config"]["kind"] == "variational" for t in status["trials"])
    out = here(cli, capsys, monkeypatch, "export", name, "--format", ALL_FORMATS, "--out", str(tmp_path / "model"))
    diffs = differences(out)
    assert set(diffs) == {"keras", "savedmodel", "onnx", "tflite"} and max(diffs.values()) <= 1e-4, out
    print(f"{space}: max abs differences {diffs}")
    code = f"import keras; m = keras.models.load_model({str(tmp_path / 'model' / 'model.keras')!r}); print(m.name)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**cli.env(), "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_export_hints_name_the_storage(run, capsys, monkeypatch, tmp_path) -> None:
    """A run outside the default storage: the command the error points to works when pasted."""
    cli, _ = run
    storage = tmp_path / "elsewhere"
    shutil.copytree(cli.storage / "exp", storage / "allfail")
    for path in (storage / "allfail" / "trials").glob("*.json"):  # a run where every trial failed
        rec = json.loads(path.read_text())
        path.write_text(json.dumps({**rec, "status": "failed", "error": "ValueError: boom"}))
    spec = json.loads((storage / "allfail" / "spec.json").read_text())
    (storage / "allfail" / "spec.json").write_text(json.dumps({**spec, "name": "allfail"}))
    code, _, err = cli.inprocess("export", "allfail", "--storage", str(storage), capsys=capsys,
                                 monkeypatch=monkeypatch)
    hint = f"nas status allfail --storage {storage}"
    assert code == 2 and f"has no completed trial to export (see `{hint}`)" in err, err
    code, out, err = cli.inprocess(*shlex.split(hint)[1:], capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and "failed trial 0: ValueError: boom" in out
