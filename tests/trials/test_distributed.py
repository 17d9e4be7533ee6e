"""Per-trial data parallelism: 2 Horovod ranks on CPU (Gloo, loopback) inside a real `nas search`, compared with
the same training loop in one process; MirroredStrategy; a clear error without Horovod.

Horovod is required here, not optional: CI builds it with launch/install-horovod.sh (cached wheel per machine).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from nas.trials.horovod import horovod_missing

pytestmark = pytest.mark.ray

TINY = '''"""A small fixed MLP without dropout: ranks and the single-process reference do the same arithmetic."""
from search_spaces.mlp import MLPSpace

class Tiny(MLPSpace):
    name = "tiny"
    def declare(self, hp):
        hp.Int("num_layers", 1, 1)
        hp.Int("units_0", 32, 32)
        hp.Fixed("activation", "relu")
        hp.Fixed("dropout", 0.0)
        hp.Fixed("optimizer", "adam")
        hp.Fixed("learning_rate", 0.01)
        hp.Fixed("batch_size", 64)
'''


def test_horovod_is_installed() -> None:
    """Not a skip: the 2-worker test below must run. Build it with `bash launch/install-horovod.sh`."""
    assert horovod_missing() is None, f"Horovod is missing ({horovod_missing()}): run bash launch/install-horovod.sh"


def test_two_horovod_ranks_in_a_search_match_one_process(cli, tmp_path: Path) -> None:
    (tmp_path / "tiny_space.py").write_text(TINY)
    out = cli("search", "--space", "tiny_space.py:Tiny", "--trials", "1", "--epochs", "2", "--name", "hvd",
              "--workers-per-trial", "2", "--distributed", "horovod", "--cpus-per-trial", "0.5",
              "--num-cpus", "2", "--keep-checkpoints", timeout=400).stdout  # the checkpoint is compared below
    assert "[1/1] trial 0:" in out, out
    run = cli.storage / "hvd"
    spec = json.loads((run / "spec.json").read_text())
    assert spec["options"]["workers_per_trial"] == 2 and spec["options"]["distributed"] == "horovod"
    rec = json.loads((run / "trials" / "0.json").read_text())
    assert rec["status"] == "completed", rec
    assert rec["workers"] == 2 and rec["node_id"]
    hist = rec["history"]
    assert [h["epoch"] for h in hist] == [1, 2]
    # both ranks end with identical weights (measured by the trial after its last epoch)
    assert hist[-1]["ranks_max_weight_diff"] == 0.0, hist[-1]

    # the same loop in this process, one rank, the same global batch and shuffling
    from nas.options import TrialSetup
    from nas.plugins.data import load_data
    from nas.plugins.objective import Objective
    from nas.plugins.task import Task
    from nas.trials.horovod import DataParallelTrainer

    setup = TrialSetup(space=spec["space"], task=Task.from_json(spec["task"]), epochs=2,
                       objective=Objective("val_accuracy", "max"), seed=spec["seed"])
    ref = DataParallelTrainer({"__nas_trial__": "0", **rec["config"]}, load_data("digits", seed=spec["seed"]),
                              setup, use_horovod=False)
    worst = 0.0
    for h in hist:
        m = ref.train_epoch()
        for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert abs(m[k] - h[k]) < 2e-3, (k, m[k], h[k])
            worst = max(worst, abs(m[k] - h[k]))
    with np.load(run / "trials" / "0" / "resume.npz") as f:  # rank 0's checkpoint, the nas/trials/worker.py format
        meta = json.loads(bytes(f["meta"]).decode())
        dist = [f[f"w{i}"] for i in range(meta["n_weights"])]
    assert meta["epoch"] == 2
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ref.weights(), dist))
    print(f"2 ranks vs 1 process: max |weight diff| {diff:.2e}, max |metric diff| {worst:.2e}; "
          f"val_accuracy {hist[-1]['val_accuracy']:.4f} vs {m['val_accuracy']:.4f}")
    assert diff < 2e-3

    # the checkpoint is the single-worker format: a trial resumed from it continues at epoch 3 with its weights
    again = DataParallelTrainer({"__nas_trial__": "0", **rec["config"]}, load_data("digits", seed=spec["seed"]),
                                dataclasses.replace(setup, run_dir=str(run)), use_horovod=False)
    assert again.epoch == 2 and again.resumed["metrics"]["workers"] == 2
    assert all(np.array_equal(a, b) for a, b in zip(again.weights(), dist))


def test_mirrored_strategy_trial_runs(cli) -> None:
    cli("search", "--trials", "1", "--epochs", "1", "--name", "mirrored", "--distributed", "mirrored",
        "--num-cpus", "1")
    rec = json.loads((cli.storage / "mirrored" / "trials" / "0.json").read_text())
    assert rec["status"] == "completed", rec
    assert rec["history"][0]["replicas"] == 1  # one device on CPU, through MirroredStrategy


def test_horovod_missing_fails_before_any_trial(cli, capsys, monkeypatch) -> None:
    for mod in ("horovod", "horovod.ray", "horovod.tensorflow"):
        monkeypatch.setitem(sys.modules, mod, None)  # import fails as if not installed
    code, out, err = cli.inprocess("search", "--trials", "1", "--name", "nohvd", "--workers-per-trial", "2",
                                   "--distributed", "horovod", capsys=capsys, monkeypatch=monkeypatch)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "bash launch/install-horovod.sh" in lines[0], err
    assert not (cli.storage / "nohvd").exists()


def test_workers_need_horovod_flag(cli, capsys, monkeypatch) -> None:
    code, out, err = cli.inprocess("search", "--trials", "1", "--workers-per-trial", "2",
                                   capsys=capsys, monkeypatch=monkeypatch)
    assert code != 0 and "--distributed horovod" in err and "Traceback" not in err
