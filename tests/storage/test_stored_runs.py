"""Stored runs keep working: run directories written by an earlier version (committed under tests/data, exactly as
that version wrote them) are listed, shown, exported and resumed by this one.

``runs_af59df6/`` was written by commit af59df6 (the last main before the engine's re-layout), with the default
digits data and the built-in ``mlp`` space and ``given`` strategy (tiny models: the copy is 480 KB):
- ``finished``: 2 trials x 2 epochs, done;
- ``interrupted``: 3 trials x 30 epochs at concurrency 1, its driver killed with SIGKILL while trial 1 was
  running (trial 0 completed, trial 2 not started; trial 1's record has 3 epochs, its checkpoint 4: the kill came
  between the two writes).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import nas

DATA = Path(__file__).resolve().parents[1] / "data" / "runs_af59df6"

pytestmark = pytest.mark.ray


@pytest.fixture
def stored(cli) -> object:
    shutil.copytree(DATA, cli.storage)
    return cli


def _record(run: Path, tid: str) -> dict:
    return json.loads((run / "trials" / f"{tid}.json").read_text())


def test_an_earlier_versions_runs_are_listed_and_shown(stored, capsys, monkeypatch) -> None:
    code, out, err = stored.inprocess("runs", "--json", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert (rows["finished"]["state"], rows["finished"]["completed"], rows["finished"]["budget"]) == ("finished", 2, 2)
    assert (rows["interrupted"]["state"], rows["interrupted"]["completed"]) == ("interrupted", 1)
    code, out, err = stored.inprocess("status", "interrupted", "--json", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, err
    status = json.loads(out)
    assert status["counts"] == {"completed": 1, "failed": 0, "running": 0, "pending": 1}, status["counts"]
    assert status["next"] == "nas resume interrupted"
    code, out, err = stored.inprocess("status", "finished", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and "2 completed, 0 failed" in out and "state: finished" in out, out + err
    run = nas.open_run("finished", storage=str(stored.storage))
    assert [t["trial_id"] for t in run.trials] == ["0", "1"] and run.best["trial_id"] == "0"


def test_an_earlier_versions_run_is_exported(stored, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "exported"
    code, text, err = stored.inprocess("export", "finished", "--out", str(out), capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and "exported trial 0" in text and "every format verified" in text, text + err
    assert (out / "model.keras").stat().st_size > 10_000 and (out / "saved_model").is_dir()


def test_an_earlier_versions_interrupted_run_resumes_where_it_stopped(stored, kept_ray, capsys, monkeypatch) -> None:
    """Through the CLI's entry point in this process, on the kept Ray (tests/conftest.py)."""
    run = stored.storage / "interrupted"
    before = {tid: _record(run, tid) for tid in ("0", "1")}
    code, out, err = stored.inprocess("resume", "interrupted", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and "resuming run interrupted" in out, out + err
    status = stored.status("interrupted")
    assert status["state"] == "finished"
    assert status["counts"] == {"completed": 3, "failed": 0, "running": 0, "pending": 0}, status["counts"]
    after = {tid: _record(run, tid) for tid in ("0", "1", "2")}
    assert after["0"]["finished"] == before["0"]["finished"]  # the completed trial was not run again
    # from its checkpoint: the driver was killed after the epoch-4 checkpoint, before the record said so
    assert len(before["1"]["history"]) == 3 and after["1"]["resumed_from_epoch"] == 4
    assert [h["epoch"] for h in after["1"]["history"]] == list(range(1, 31))
    assert after["1"]["history"][:3] == before["1"]["history"]  # its earlier epochs kept as they were
    configs = [after[t]["config"]["activation"] + after[t]["config"]["optimizer"] for t in ("0", "1", "2")]
    assert configs == ["reluadam", "tanhsgd", "relusgd"]  # the given strategy went on from its stored state


def test_a_run_searched_with_cnn_version_1_resumes_and_exports_with_version_1(cli, kept_ray, tmp_path: Path,
                                                                              capsys, monkeypatch) -> None:
    """The cnn space is at version 2 since 2026-12-07 (learning rates up to 1e-2, batch normalisation's momentum
    0.9, He initialisation); a run an earlier version stored (spec.json: ``space_version`` "1", no ``version``
    option) goes on with version 1: its strategy takes version 1's ranges (a learning rate of 0.05, outside version
    2's), and its trials and exports build version 1's layers."""
    import keras

    small = {"num_blocks": 1, "convs_per_block": 1, "filters_0": 8, "kernel_size": 3, "pooling": "max",
             "batch_norm": True, "dropout": 0.0, "dense_layers": 0, "optimizer": "sgd", "batch_size": 128}
    configs = tmp_path / "configs.json"
    configs.write_text(json.dumps([{**small, "learning_rate": 0.001}, {**small, "learning_rate": 0.05}]))
    code, out, err = cli.inprocess("search", "--space", "cnn", "--space-option", "version=1", "--strategy", "given",
                                   "--strategy-option", f"file={configs}", "--trials", "1", "--epochs", "1",
                                   "--max-concurrent", "1", "--name", "old", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, out + err
    run = cli.storage / "old"
    spec = json.loads((run / "spec.json").read_text())
    assert spec["space_version"] == "1" and spec["space_options"] == {"version": 1}  # as the CLI parsed it
    for options in (spec["space_options"], spec["options"]["space_options"]):  # as an earlier version wrote it
        del options["version"]
    (run / "spec.json").write_text(json.dumps(spec, indent=1))

    code, out, err = cli.inprocess("resume", "old", "--trials", "2", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and "resuming run old" in out, out + err
    second = _record(run, "1")
    assert second["status"] == "completed" and second["config"]["learning_rate"] == 0.05, second
    trained = keras.saving.load_model(run / "trials" / "1" / "best.keras")
    assert trained.get_layer("bn_0_0").momentum == 0.99  # built in a Ray worker: version 1
    exported = tmp_path / "exported"
    code, out, err = cli.inprocess("export", "old", "--trial", "1", "--retrain", "--epochs", "1", "--format", "keras",
                                   "--out", str(exported), capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, out + err
    rebuilt = keras.saving.load_model(exported / "model.keras")  # built here, from the stored spec
    assert rebuilt.get_layer("bn_0_0").momentum == 0.99
    assert type(rebuilt.get_layer("conv_0_0").kernel_initializer).__name__ == "GlorotUniform"
    assert json.loads((exported / "architecture.json").read_text())["space_version"] == "1"
