"""Keras backends: a search trains every trial with the backend it asks for (jax here, on the CPU), keeps it on
resume, shows it, exports it; fractional GPUs confine each worker; bad requests are one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas.errors import NasError
from nas.runtime import backends

ROOT = Path(__file__).resolve().parents[2]

#: the mlp space, recording the environment its trial workers run with (the backend and GPU settings Ray gave
#: them) and the backend Keras actually uses there
PROBE_SPACE = '''import json, os
from pathlib import Path
from search_spaces.mlp import MLPSpace

KEYS = ("KERAS_BACKEND", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE", "CUDA_VISIBLE_DEVICES",
        "JAX_PLATFORMS")

class Probe(MLPSpace):
    name = "probe"
    def __init__(self, task, out=""):
        super().__init__(task)
        self.out = out
    def build_model(self, hp):
        import keras
        seen = {k: os.environ.get(k) for k in KEYS}
        seen["keras_backend"] = keras.backend.backend()
        (Path(self.out) / f"{os.getpid()}.json").write_text(json.dumps(seen))
        return super().build_model(hp)
'''


def test_bad_backend_names_and_missing_frameworks_are_one_line(cli, capsys, monkeypatch) -> None:
    proc = cli("search", "--backend", "mxnet", check=False)
    err = proc.stderr
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert "--backend: invalid choice: 'mxnet' (choose from 'tensorflow', 'jax', 'torch')" in err, err
    monkeypatch.setenv("KERAS_BACKEND", "mxnet")
    with pytest.raises(NasError, match="KERAS_BACKEND 'mxnet' is not valid; accepted: tensorflow, jax, torch"):
        backends.check(None)
    monkeypatch.delenv("KERAS_BACKEND")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    code, out, err = cli.inprocess("search", "--backend", "jax", "--name", "nojax", capsys=capsys,
                                   monkeypatch=monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert 'needs jax, which is not installed here: pip install "nas[jax]"' in err
    assert not (cli.storage / "nojax").exists()


@pytest.mark.parametrize("mode", ["horovod", "mirrored"])
def test_tensorflow_only_features_refuse_other_backends(cli, capsys, monkeypatch, mode: str) -> None:
    code, _, err = cli.inprocess("search", "--backend", "jax", "--distributed", mode, "--name", "x",
                                 capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and f"--distributed {mode} is TensorFlow-only" in err and "Traceback" not in err, err
    assert not (cli.storage / "x").exists()


def test_worker_environment_confines_each_trial_to_its_share(monkeypatch) -> None:
    eighth = backends.worker_env("jax", cpus=1, gpus=0.125)
    assert eighth["KERAS_BACKEND"] == "jax" and eighth["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert float(eighth["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == pytest.approx(0.9 * 0.125)
    assert "CUDA_VISIBLE_DEVICES" not in eighth  # Ray gives the trial its GPU
    whole = backends.worker_env("jax", cpus=4, gpus=2)
    assert float(whole["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == pytest.approx(0.9)
    cpu = backends.worker_env("jax", cpus=1, gpus=0)
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["JAX_PLATFORMS"] == "cpu"  # a CPU trial never takes a GPU
    assert cpu["XLA_FLAGS"].split()[-1] == "--xla_cpu_multi_thread_eigen=false"  # one core's share: one thread
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")  # a user's own flags are kept
    assert backends.worker_env("jax", cpus=1, gpus=0)["XLA_FLAGS"].split() == [
        "--xla_force_host_platform_device_count=2", "--xla_cpu_multi_thread_eigen=false"]
    tf = backends.worker_env("tensorflow", cpus=1, gpus=0.5)
    assert tf == {"KERAS_BACKEND": "tensorflow", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    assert backends.worker_env("torch", cpus=1, gpus=0) == {"KERAS_BACKEND": "torch", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    """One real search under jax on 2 logical half-GPUs: 2 trials at once, each in a worker confined to 0.45."""
    from conftest import CLI

    root = tmp_path_factory.mktemp("jax-run")
    cli = CLI(root / "runs", root)
    (root / "probe_space.py").write_text(PROBE_SPACE)
    (root / "seen").mkdir()
    proc = cli("search", "--backend", "jax", "--space", "probe_space.py:Probe", "--space-option",
               f"out={root / 'seen'}", "--trials", "2", "--epochs", "2", "--name", "jx", "--num-gpus", "2",
               "--gpus-per-trial", "0.5", "--cpus-per-trial", "0.5", "--max-concurrent", "2", timeout=400)
    return cli, root, proc


@pytest.mark.ray
def test_every_trial_trains_with_the_chosen_backend(jax_run) -> None:
    cli, root, proc = jax_run
    assert "2 completed, 0 failed" in proc.stdout, proc.stdout
    seen = [json.loads(p.read_text()) for p in (root / "seen").glob("*.json")]
    # the driver (it builds the default model once, to learn the metric names) and every worker run jax
    assert seen and all(s["keras_backend"] == "jax" and s["KERAS_BACKEND"] == "jax" for s in seen), seen
    workers = [s for s in seen if s["CUDA_VISIBLE_DEVICES"] is not None]
    assert len(workers) == 2, seen
    # each half-GPU worker: one device (Ray's), no preallocation, at most 90 % of its half of the memory
    assert all(s["CUDA_VISIBLE_DEVICES"] in ("0", "1") for s in workers), workers
    assert all(s["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and float(s["XLA_PYTHON_CLIENT_MEM_FRACTION"]) ==
               pytest.approx(0.45) for s in workers), workers
    status = cli.status("jx")
    assert status["backend"] == "jax"
    assert all(t["device"] == "cpu" for t in status["trials"])  # the trials' own report of their device
    spec = json.loads((cli.storage / "jx" / "spec.json").read_text())
    assert spec["backend"] == "jax" and spec["options"]["backend"] == "jax"
    assert "backend jax" in cli("status", "jx").stdout


@pytest.mark.ray
def test_resume_keeps_the_backend_and_refuses_another(jax_run) -> None:
    cli, root, _ = jax_run
    proc = cli("search", "--name", "jx", "--resume", "--backend", "tensorflow", check=False)
    assert proc.returncode == 2 and "--backend 'jax'" in proc.stderr and "contradicts" in proc.stderr, proc.stderr
    for p in (root / "seen").glob("*.json"):
        p.unlink()
    cli("resume", "jx", "--trials", "3", "--max-concurrent", "1", timeout=400)
    seen = [json.loads(p.read_text()) for p in (root / "seen").glob("*.json")]
    assert seen and all(s["keras_backend"] == "jax" for s in seen), seen
    assert sum(t["status"] == "completed" for t in cli.status("jx")["trials"]) == 3


@pytest.mark.ray
def test_export_of_a_jax_run(jax_run) -> None:
    cli, root, _ = jax_run
    out = cli("export", "jx", "--format", "keras,savedmodel", "--out", str(root / "exp"), timeout=300).stdout
    assert "every format verified" in out, out
    card = (root / "exp" / "README.md").read_text()
    assert "trained with the Keras backend `jax`" in card
    arch = json.loads((root / "exp" / "architecture.json").read_text())
    assert arch["backend"] == "jax" and arch["export_backend"] == "tensorflow"  # SavedModel is a TF format
    # the .keras file alone is made and loaded under jax itself
    cli("export", "jx", "--format", "keras", "--out", str(root / "exp-keras"), timeout=300)
    assert json.loads((root / "exp-keras" / "architecture.json").read_text())["export_backend"] == "jax"


@pytest.mark.slow
def test_every_space_and_strategy_conforms_under_jax() -> None:
    """The conformance suite in a process whose Keras runs on jax (the tests' own process runs tensorflow)."""
    code = (
        "import sys\n"
        "import keras\n"
        "assert keras.backend.backend() == 'jax', keras.backend.backend()\n"
        "from nas.plugins.registry import SPACES, STRATEGIES, available\n"
        "from nas.testing.conformance import check_space, check_strategy\n"
        "for name in sorted(available(SPACES)):\n"
        "    check_space(name, configurations=2)\n"
        "for name in sorted(available(STRATEGIES)):\n"
        "    check_strategy(name)\n"
        "print('conforms:', sorted(available(SPACES)), sorted(available(STRATEGIES)))\n"
    )
    import os

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env=dict(os.environ, KERAS_BACKEND="jax"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    from nas.plugins.registry import SPACES, STRATEGIES, available

    every = f"conforms: {sorted(available(SPACES))} {sorted(available(STRATEGIES))}"  # every registered plugin
    assert every in proc.stdout and "enas_cnn" in every and "rl" in every, proc.stdout


def test_commands_that_read_runs_import_no_framework(small_run) -> None:
    cli, name, _ = small_run
    code = (
        "import sys\n"
        "from nas.cli import main\n"
        f"for args in (['status', {name!r}], ['runs'], ['list'], ['status', {name!r}, '--json']):\n"
        "    assert main(args) == 0, args\n"
        "loaded = [m for m in ('keras', 'tensorflow', 'jax', 'torch', 'keras_tuner') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=cli.env())
    assert proc.returncode == 0, proc.stderr[-3000:]
