"""A trial resumed from its mid-trial checkpoint trains the epochs an uninterrupted trial trains: the same
per-epoch metrics, exactly, on the CPU (weights, optimizer state, the layers' random state and the data order
are all restored or derived from the trial's seed and the epoch)."""

from __future__ import annotations

import json
import os
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


def test_a_resumed_trial_equals_an_uninterrupted_one(cli, kept_ray, capsys, monkeypatch) -> None:
    """The reference runs through the CLI's entry point in this process, on one kept Ray; the run that is cut
    runs in a driver of its own (a subprocess, killed with SIGKILL) and resumes through the CLI's entry point in
    this process, on the kept Ray (another Ray than the one it was cut on, in workers that trained the
    reference: the same epochs all the same)."""
    (cli.cwd / "dropout_space.py").write_text(DROPOUT_SPACE)
    code, out, err = cli.inprocess("search", *ARGS, "--name", "ref", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, out + err
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

    code, out, err = cli.inprocess("resume", "cut", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, out + err
    resumed = _history(run)
    assert json.loads((run / "trials" / "0.json").read_text())["resumed_from_epoch"] >= 2
    assert resumed == reference, (resumed, reference)


#: one fit call over ``epoch_batches`` for epochs 1..3 against one fit call per epoch on the reordered arrays
STREAM_VS_EPOCHS = '''
import numpy as np, keras
from nas.trials.worker import epoch_batches, epoch_order
rng = np.random.default_rng(0)
x = rng.normal(size=(70, 4)).astype("float32")
y = (x.sum(1) > 0).astype("int32")

def model():
    keras.utils.set_random_seed(1)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(2, activation="softmax")])
    m.compile("sgd", "sparse_categorical_crossentropy")
    return m

def by_epoch(epochs):
    m = model()
    for e in epochs:
        o = epoch_order(5, e, len(x))
        m.fit(x[o], y[o], batch_size=16, shuffle=False, verbose=0)
    return m.get_weights()

a = model()
stream, steps = epoch_batches(x, y, 5, 16, 1, 4, keras.backend.backend())
a.fit(stream, epochs=4, initial_epoch=1, steps_per_epoch=steps, verbose=0)
diff = lambda w: max(float(np.abs(u - v).max()) for u, v in zip(a.get_weights(), w))
print(steps, diff(by_epoch([1, 2, 3])), diff(by_epoch([0, 1, 2])))
'''


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_one_fit_over_the_epoch_stream_trains_the_epochs_per_epoch_fits_train(backend: str, tmp_path: Path) -> None:
    """What lets a trial train all its epochs in one ``fit`` call and still resume exactly: the stream's epoch k
    is the k-th epoch's order (a tf.data pipeline on TensorFlow, a generator elsewhere), batch boundaries and
    the last, smaller batch included; trained on the epochs one earlier, the weights differ."""
    out = subprocess.run([sys.executable, "-c", STREAM_VS_EPOCHS], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, KERAS_BACKEND=backend), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    steps, same, shifted = out.stdout.split()[-3:]
    assert int(steps) == 5  # 70 examples in batches of 16: 4 full, 1 of 6
    assert float(same) == 0.0
    assert float(shifted) > 1e-4
