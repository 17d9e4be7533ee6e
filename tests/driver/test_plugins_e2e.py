"""Every built-in space and strategy through the real `nas search` on digits (local Ray, real training): the
CLI's own entry point in this process, on one local Ray for the module (``kept_ray``), so each search skips
Ray's start (the CLI in a subprocess: tests/test_cli_search.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DETERMINISTIC, deterministic_records

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("kept_ray")]


@pytest.fixture
def search(cli, capsys, monkeypatch):
    """``nas search ARGS`` through the CLI's entry point in this process; its exit code must be 0."""
    def run(*args: str) -> str:
        code, out, err = cli.inprocess("search", *args, capsys=capsys, monkeypatch=monkeypatch)
        assert code == 0, out + err
        return out
    return run


@pytest.mark.parametrize("strategy", ["evolution", "rl"])  # bayes: tests/driver/test_early_stopping_multiobjective.py
def test_strategies_end_to_end(cli, search, strategy: str) -> None:
    search("--space", "mlp", "--strategy", strategy, "--trials", "3", "--epochs", "1", "--max-concurrent", "1",
           "--name", strategy, "--seed", "4")
    status = cli.status(strategy)
    assert status["strategy"] == strategy
    assert [t["status"] for t in status["trials"]] == ["completed"] * 3
    assert status["best"]["metrics"]["val_accuracy"] > 0.2
    assert len({str(sorted(t["config"].items())) for t in status["trials"]}) == 3


@pytest.mark.parametrize("space, objective", [("cnn", "val_accuracy"), ("ae", "val_loss"), ("lstm", "val_accuracy")])
def test_spaces_end_to_end(cli, search, request, space: str, objective: str) -> None:
    if space == "cnn":  # the session's cnn search (tests/conftest.py), shared with its export test
        cli, name = request.getfixturevalue("cnn_run")
    else:
        name = space
        search("--space", space, "--strategy", "random", "--trials", "2", "--epochs", "1", "--max-concurrent", "1",
               "--name", name)
    status = cli.status(name)
    assert status["space"] == space and status["strategy"] == "random"
    assert status["objective"]["metric"] == objective
    assert [t["status"] for t in status["trials"]] == ["completed"] * 2, status["trials"]
    for t in status["trials"]:
        assert np.isfinite(t["metrics"][objective])
        if space == "ae":  # kinds with different losses compare on reconstruction error in input units
            assert t["metrics"]["val_reconstruction_mse"] >= 0


def test_autoencoder_anomaly_detection_end_to_end(cli, search) -> None:
    search("--space", "ae", "--task", "anomaly", "--normal-class", "0", "--trials", "1", "--epochs", "2",
        "--objective", "val_f1:max", "--name", "anomaly")
    t = cli.status("anomaly")["trials"][0]
    assert t["status"] == "completed", t
    assert {"val_precision", "val_recall", "val_f1"} <= set(t["metrics"])
    assert 0.0 <= t["metrics"]["val_f1"] <= 1.0


def test_lstm_forecasting_and_refusals(cli, search, tmp_path: Path, capsys, monkeypatch) -> None:
    series = tmp_path / "series.csv"
    series.write_text("t,value\n" + "\n".join(f"{i},{np.sin(i / 8):.5f}" for i in range(300)))
    search("--space", "lstm", "--data", str(series), "--target", "value", "--window", "16",
        "--trials", "1", "--epochs", "2", "--name", "forecast")
    status = cli.status("forecast")
    assert status["objective"] == {"metric": "val_loss", "mode": "min"}
    assert status["trials"][0]["status"] == "completed"
    # data a space cannot use is refused before any trial starts
    code, _, err = cli.inprocess("search", "--space", "lstm", "--data", str(series), "--target", "value",
                                 "--name", "flat", capsys=capsys, monkeypatch=monkeypatch)
    assert code != 0 and "--window" in err
    flat = tmp_path / "flat.npz"
    np.savez(flat, x_train=np.random.rand(40, 5).astype("float32"), y_train=np.arange(40) % 2)
    code, _, err = cli.inprocess("search", "--space", "cnn", "--data", str(flat), "--name", "flat2",
                                 capsys=capsys, monkeypatch=monkeypatch)
    assert code != 0 and "(H, W)" in err
    assert not (cli.storage / "flat").exists() and not (cli.storage / "flat2").exists()


def test_a_deterministic_search_is_the_same_search_at_two_trials_at_once(cli, search, deterministic_run) -> None:
    """--deterministic: two runs of the same seeded command, 2 trials at once on the real Ray (trials of
    different sizes end in whatever order the machine decides), record the same trials: the same configurations
    under the same ids, the same per-epoch metrics (on CPU). The run keeps its K (--max-concurrent) for resume.
    The first run is the session's (``deterministic_run``, tests/conftest.py)."""
    search("--space", "mlp", *DETERMINISTIC, "--name", "det-b")
    first = deterministic_records(deterministic_run)
    assert len(first) == 6 and all(t[1] == "completed" for t in first)
    assert deterministic_records(cli.storage / "det-b") == first
    spec = json.loads((deterministic_run / "spec.json").read_text())
    assert spec["options"]["deterministic"] is True and spec["options"]["max_concurrent"] == 2
