"""A real search prints only our own lines: no Ray, TensorFlow or absl noise; --verbose brings it back."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ONEDNN_ON, ROOT

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
    cli.extra_env.update(ONEDNN_ON)
    proc = cli("search", "--trials", "1", "--epochs", "1", "--name", "loud", "--verbose")
    both = proc.stdout + proc.stderr
    assert "Trial status" in both or "ray" in both.lower(), both
    assert "oneDNN custom operations are on" in proc.stderr, proc.stderr  # TensorFlow's banner, shown again
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
    cli.extra_env.update(ONEDNN_ON)
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


# -- TensorFlow's import banner (nas.runtime.quiet), alone: the real TensorFlow, and one that writes what we choose
def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, **ONEDNN_ON, **env})


def test_the_real_tensorflow_imports_without_its_banner() -> None:
    """With oneDNN on (as on every CPU with AVX-512), TensorFlow writes its banner while it is imported, before any
    log level applies; after `import nas` the import prints nothing, here through keras_tuner -> keras ->
    tensorflow, the chain a trial takes. NAS_VERBOSE=1 (what --verbose sets, for every worker too) shows it."""
    quiet = _python("import nas, keras_tuner; import tensorflow as tf; print(tf.constant(2) * 3)")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and quiet.stdout.strip().startswith("tf.Tensor(6"), quiet.stdout + quiet.stderr
    loud = _python("import nas, tensorflow", NAS_VERBOSE="1")  # also: the banner's condition holds on this machine
    assert "oneDNN custom operations are on" in loud.stderr, loud.stderr


FAKE_TENSORFLOW = r"""
import os, sys
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
os.write(2, b"I0000 00:00:1796171916.932469    2114 port.cc:153] oneDNN custom operations are on. ...\n")
os.write(2, b"I1202 00:38:31.812345    2114 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...\n"
            b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow.\n")
os.write(2, b"W1202 00:38:31.900000    2114 some_op.cc:12] a warning that TF_CPP_MIN_LOG_LEVEL would hide\n")
os.write(2, b"E1202 00:38:32.000000    2114 loader.cc:99] Could not load dynamic library 'libmissing.so.1'\n")
print("a warning of Python's own", file=sys.stderr, flush=True)
os.write(2, b"F1202 00:38:32.100000    2114 crash.cc:7] Check failed: the last line before the crash")
if os.environ.get("FAKE_TF_CRASH"):
    os.kill(os.getpid(), 11)  # a segfault in a native library: no Python cleanup runs
"""


@pytest.mark.parametrize("crash", [False, True])
def test_the_filter_hides_only_the_banner_and_a_crash_still_reaches_the_user(tmp_path: Path, crash: bool) -> None:
    """INFO and WARNING records (and their continuation lines) go; errors, fatal records, Python's own lines and
    what TensorFlow writes just before it crashes the interpreter reach stderr; stderr is the real one after."""
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(FAKE_TENSORFLOW)
    code = "import sys, nas, tensorflow; print('after', file=sys.stderr)"
    proc = _python(code, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", **({"FAKE_TF_CRASH": "1"} if crash else {}))
    kept = ["E1202 00:38:32.000000    2114 loader.cc:99] Could not load dynamic library 'libmissing.so.1'",
            "a warning of Python's own",
            "F1202 00:38:32.100000    2114 crash.cc:7] Check failed: the last line before the crash"]
    assert proc.stderr.splitlines() == kept + ([] if crash else ["after"]), proc.stderr
    assert proc.returncode == (-signal.SIGSEGV if crash else 0), proc.stderr
