"""`nas search --estimation shared-weights` end to end on a real local Ray: the supernet phase, then the top-k
trained from scratch as ordinary trials, leaving a normal run directory that `nas status` and `nas export` read;
kill -9 during the supernet phase, then `nas resume`, continues from its last epoch and ends with the controller
state and trials an uninterrupted run has. The run killed is a driver of its own (a subprocess); the reference,
the resume after the kill and the export go through the CLI's entry point in this process, on one local Ray for
the module (``kept_ray``), so each skips Ray's start and TensorFlow's import."""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

ENAS = "search_spaces.enas_cnn:ENASSpace"
ARGS = ("--space", ENAS, "--space-option", "layers=3", "--space-option", "filters=8", "--estimation",
        "shared-weights", "--supernet-epochs", "3", "--top-k", "2", "--epochs", "1", "--seed", "5",
        "--supernet-option", "controller_steps=2", "--supernet-option", "children_per_step=3",
        "--supernet-option", "candidates=6", "--max-concurrent", "1")


def _here(cli, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``nas ARGS`` through the CLI's entry point in this process (with ``cli``'s environment and directory, its
    output captured as a subprocess's would be); its exit code must be 0 unless ``check`` is false."""
    from nas.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in cli.env().items():
            mp.setenv(k, v)
        mp.chdir(cli.cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    proc = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"nas {' '.join(args)} exited {code}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory, kept_ray):
    from conftest import CLI

    root = tmp_path_factory.mktemp("shared")
    cli = CLI(root / "runs", root)
    proc = _here(cli, "search", *ARGS, "--name", "ref")
    return cli, proc


def _phase(run: Path) -> dict | None:
    try:
        return json.loads((run / "supernet" / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def test_a_shared_weights_search_leaves_a_normal_run(reference) -> None:
    cli, proc = reference
    out = proc.stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("[supernet ")]
    assert [ln.split("]")[0] for ln in lines] == ["[supernet 1/3", "[supernet 2/3", "[supernet 3/3"], out
    assert all("loss=" in ln and "reward_ma=" in ln for ln in lines), out
    # the first of 3 epochs (half, rounded down) trains on uniform children; then the controller learns
    assert "warm-up: children drawn uniformly" in lines[0] and "0 children" in lines[0], out
    assert all("best val_accuracy=" in ln for ln in lines[1:]), out
    assert "top 1/2 by shared-weight val_accuracy=" in out and "2 completed, 0 failed" in out, out

    status = cli.status("ref")
    assert status["estimation"] == "shared-weights" and status["strategy"] == "rl"
    sn = status["supernet"]
    assert sn["phase"] == "trials" and sn["epoch"] == sn["epochs"] == 3 and len(sn["history"]) == 3
    assert sn["best"]["metrics"]["val_accuracy"] > 0 and sn["candidates_ranked"] >= 6
    top = [r["values"] for r in sn["ranking"][:2]]
    trials = sorted(status["trials"], key=lambda t: int(t["trial_id"]))
    assert [t["config"] for t in trials] == top  # the top-k by shared-weight accuracy, trained from scratch
    assert all(t["status"] == "completed" and t["metrics"]["epochs"] == 1 for t in trials)
    text = cli("status", "ref").stdout
    assert "supernet: 3/3 epochs, done, top 2 of" in text, text

    run = cli.storage / "ref"
    spec = json.loads((run / "spec.json").read_text())
    assert spec["options"]["estimation"] == "shared-weights" and spec["supernet"]["top_k"] == 2
    assert spec["supernet"]["warmup_epochs"] == 1
    assert spec["supernet"]["controller_options"] == {"policy": "lstm", "unique": False, "learning_rate": 0.03,
                                                       "update": "reinforce", "batch": 3}
    assert (run / "supernet" / "resume.npz").is_file() and (run / "supernet" / "controller.json").is_file()
    exp = _here(cli, "export", "ref", "--format", "keras", "--out", str(cli.cwd / "exp")).stdout
    assert "every format verified" in exp, exp
    arch = json.loads((cli.cwd / "exp" / "architecture.json").read_text())
    assert arch["hyperparameters"] == status["best"]["config"] and arch["space_options"] == {"layers": 3, "filters": 8}
    # a finished run resumes to nothing more
    again = _here(cli, "resume", "ref").stdout
    assert "already has its 2 trials" in again, again


def test_kill_9_in_the_supernet_phase_then_resume_is_exact(reference) -> None:
    ref_cli, _ = reference
    from conftest import CLI

    cli = CLI(ref_cli.storage, ref_cli.cwd)
    run = cli.storage / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "search", *ARGS, "--name", "cut"], cwd=cli.cwd,
                            env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 400
    while time.time() < deadline:  # until the first supernet epoch is checkpointed
        st = _phase(run)
        if st and st["phase"] == "supernet" and st["epoch"] >= 1:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    st = _phase(run)
    assert st["phase"] == "supernet" and 1 <= st["epoch"] < 3, st
    assert not list(run.glob("trials/*.json"))  # no trial before the supernet phase ends
    status = cli.status("cut")
    assert status["supernet"]["phase"] == "supernet" and status["counts"]["completed"] == 0

    out = _here(cli, "resume", "cut").stdout
    # the supernet's worker may checkpoint one more epoch before Ray ends it (the driver is gone, not its worker
    # at once): the resume continues after the last epoch on disk, which is at least the one seen at the kill
    found = re.search(r"continuing after epoch (\d+)", out)
    assert found and st["epoch"] <= int(found.group(1)) < 3, out
    epochs = [ln.split("]")[0] for ln in out.splitlines() if ln.startswith("[supernet ")]
    assert epochs == [f"[supernet {e}/3" for e in range(int(found.group(1)) + 1, 4)], out

    ref_run = cli.storage / "ref"
    assert json.loads((run / "supernet" / "controller.json").read_text()) == \
        json.loads((ref_run / "supernet" / "controller.json").read_text())  # the rl strategy's whole JSON state
    ref_state, cut_state = _phase(ref_run), _phase(run)
    untimed = lambda hs: [{k: v for k, v in h.items() if k != "time_s"} for h in hs]  # noqa: E731
    assert untimed(cut_state["history"]) == untimed(ref_state["history"])  # losses, rewards, each epoch's best
    assert cut_state["ranking"] == ref_state["ranking"] and cut_state["best"] == ref_state["best"]
    ref_trials = {t["trial_id"]: t["config"] for t in cli.status("ref")["trials"]}
    assert {t["trial_id"]: t["config"] for t in cli.status("cut")["trials"]} == ref_trials
