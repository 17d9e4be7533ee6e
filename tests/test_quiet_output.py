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
                  r"  metrics: |results: |next: nas status )")


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
