"""A real search prints only our own lines: no Ray, TensorFlow or absl noise; --verbose brings it back."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.ray

NOISE = [
    "Trial status", "Started a local Ray instance", "Ray instance", "oneDNN", "onednn", "cpu_feature_guard",
    "absl::", "WARNING", "Warning", "tensorflow/core", "Logical resource usage", "Current time",
    "Traceback", "(train_trial", "ray::", "Tune", "rebuild TensorFlow",
]
# every line `nas search` itself prints
OURS = re.compile(r"^(searching space |run \S+ -> |\[\d+/\d+\] trial |finished: |best trial |  config: |"
                  r"  metrics: |results: |next: nas status |      nas plot |      nas export )")


def test_default_search_output_is_ours_only(small_run) -> None:
    _, _, proc = small_run
    both = proc.stdout + proc.stderr
    for needle in NOISE:
        assert needle not in both, f"{needle!r} leaked:\n{both}"
    assert re.search(r"^[IWE]\d{4} ", both, re.M) is None, both  # absl/glog-style lines
    assert proc.stderr.strip() == "", proc.stderr
    for line in proc.stdout.splitlines():
        assert OURS.match(line), f"unexpected line {line!r}\n{proc.stdout}"
    assert proc.stdout.count("] trial ") == 3


def test_verbose_brings_ray_logs_back(cli) -> None:
    proc = cli("search", "--trials", "1", "--epochs", "1", "--name", "loud", "--verbose")
    both = proc.stdout + proc.stderr
    assert "Trial status" in both or "ray" in both.lower(), both
    assert len(both.splitlines()) > 12, both  # much more than our own lines


FAILING_SPACE = '''
from search_spaces.mlp import MLPSpace

class HalfBroken(MLPSpace):
    """Two configurations; the second cannot be built."""
    name = "half-broken"
    def declare(self, hp):
        hp.Int("num_layers", 1, 1)
        hp.Int("units_0", 16, 32, step=16)
        hp.Fixed("activation", "relu")
        hp.Fixed("dropout", 0.0)
        hp.Fixed("optimizer", "adam")
        hp.Fixed("learning_rate", 0.01)
        hp.Fixed("batch_size", 64)
    def build_model(self, hp):
        if hp.get("units_0") == 32:
            raise ValueError("units_0=32 is not supported here")
        return super().build_model(hp)
'''


def test_a_failed_trial_is_one_line_not_a_ray_traceback(cli, tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "half_broken.py").write_text(FAILING_SPACE)
    proc = cli("search", "--space", "half_broken.py:HalfBroken", "--strategy", "grid", "--trials", "2",
               "--epochs", "1", "--name", "broken")
    both = proc.stdout + proc.stderr
    assert "trial 1 failed: ValueError: units_0=32 is not supported here" in proc.stdout
    for needle in NOISE + ["(raylet)", "A worker died", "Trial task failed"]:
        assert needle not in both, f"{needle!r} leaked:\n{both}"
    assert proc.stderr.strip() == "", proc.stderr
    code, out, _ = cli.inprocess("status", "broken", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and "1 completed, 1 failed" in out and "failed trial 1: ValueError" in out
    code, out, err = cli.inprocess("plot", "broken", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and (cli.storage / "broken" / "plot.png").stat().st_size > 20_000, err
