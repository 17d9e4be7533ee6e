"""A trial resumed from its mid-trial checkpoint trains the epochs an uninterrupted trial trains: the same
per-epoch metrics, exactly, on the CPU (weights, optimizer state, the layers' random state and the data order
are all restored or derived from the trial's seed and the epoch)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

#: the mlp space with dropout always on, so a resumed trial that drew other dropout masks would show it
DROPOUT_SPACE = '''from search_spaces.mlp import MLPSpace

class Dropout(MLPSpace):
    name = "dropout"
    def build_model(self, hp):
        hp.values["dropout"] = 0.3
        return super().build_model(hp)
'''

MODEL_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
ARGS = ("--space", "dropout_space.py:Dropout", "--trials", "2", "--epochs", "5", "--seed", "3",
        "--max-concurrent", "1")


def _history(run: Path) -> dict[str, list[dict[str, float]]]:
    out = {}
    for p in sorted((run / "trials").glob("*.json")):
        rec = json.loads(p.read_text())
        assert rec["status"] == "completed", rec
        out[rec["trial_id"]] = [{k: h[k] for k in ("epoch", *MODEL_METRICS)} for h in rec["history"]]
    return out


def test_a_resumed_trial_equals_an_uninterrupted_one(cli) -> None:
    (cli.cwd / "dropout_space.py").write_text(DROPOUT_SPACE)
    cli("search", *ARGS, "--name", "ref", timeout=400)
    reference = _history(cli.storage / "ref")

    run = cli.storage / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "search", *ARGS, "--name", "cut"], cwd=cli.cwd,
                            env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # until trial 0 has 2 epochs checkpointed and is still running
        p = run / "trials" / "0.json"
        try:
            rec = json.loads(p.read_text()) if p.is_file() else None
        except json.JSONDecodeError:
            rec = None
        if rec and rec["status"] == "running" and len(rec["history"]) >= 2:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    cut = json.loads((run / "trials" / "0.json").read_text())
    assert cut["status"] == "running" and 2 <= len(cut["history"]) < 5, cut

    cli("resume", "cut", timeout=400)
    resumed = _history(run)
    assert json.loads((run / "trials" / "0.json").read_text())["resumed_from_epoch"] >= 2
    assert resumed == reference, (resumed, reference)
