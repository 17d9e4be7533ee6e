"""Resume exactly and survive failures, with real processes: SIGKILL, SIGINT, failing trials, corrupt files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nas
from nas import params as P
from nas.data import load_data
from nas.registry import create_space
from nas.task import make_task

pytestmark = pytest.mark.ray


def _records(run: Path) -> dict[str, dict]:
    out = {}
    for p in (run / "trials").glob("*.json"):
        try:
            out[p.stem] = json.loads(p.read_text())
        except (json.JSONDecodeError, OSError):
            pass
    return out


def _start(cli, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nas.cli", *args], cwd=cli.cwd, env=cli.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(run: Path, proc: subprocess.Popen, completed: int, timeout: float = 240) -> dict[str, dict]:
    """Until `completed` trials are done and another one is running with at least one epoch checkpointed."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        recs = _records(run)
        done = [r for r in recs.values() if r["status"] == "completed"]
        mid = [r for r in recs.values() if r["status"] == "running" and len(r["history"]) >= 1
               and (run / "trials" / r["trial_id"] / "resume.npz").is_file()]
        if len(done) >= completed and mid:
            return recs
        if proc.poll() is not None:
            raise AssertionError(f"search ended before it could be interrupted:\n{proc.communicate()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("timed out waiting for the search to reach the interruption point")


def _session_processes(session_dir: str) -> list[int]:
    from nas.ray_runtime import uses_session

    name = Path(session_dir).name
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and uses_session(p, name)]


def test_kill_9_then_resume_is_exact(cli) -> None:
    budget, seed = 4, 11
    run = cli.storage / "killed"
    proc = _start(cli, "search", "--strategy", "random", "--trials", str(budget), "--epochs", "6",
                  "--max-concurrent", "1", "--seed", str(seed), "--name", "killed")
    before = _wait_for(run, proc, completed=2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.5)
    before = _records(run)  # final state on disk at the moment of the kill
    completed_before = {k: r for k, r in before.items() if r["status"] == "completed"}
    in_flight = [k for k, r in before.items() if r["status"] == "running"]
    assert completed_before and in_flight
    session_dir = json.loads((run / "ray" / "local.json").read_text())["session_dir"]

    out = cli("resume", "killed").stdout
    assert "resuming run killed" in out

    # the killed driver's Ray processes are gone (its agents ignore SIGTERM and outlive the driver)
    assert _session_processes(session_dir) == []

    status = cli.status("killed")
    trials = status["trials"]
    assert sum(t["status"] == "completed" for t in trials) == budget == len(trials)
    configs = [P.canonical(t["config"]) for t in trials]
    assert len(set(configs)) == budget, "a configuration was trained twice"
    after = _records(run)
    for k, r in completed_before.items():  # never re-run: the record was not touched again
        assert after[k]["finished"] == r["finished"] and after[k]["history"] == r["history"]
    for k in in_flight:  # continued from its last epoch checkpoint, kept its earlier epochs
        assert after[k]["resumed_from_epoch"] >= 1
        assert [h["epoch"] for h in after[k]["history"]] == list(range(1, 7))

    # the same proposals an uninterrupted seeded run makes at concurrency 1
    hp = create_space("mlp", task=make_task(load_data("digits"), "classification")).hyperparameters()
    ref = nas.create_strategy("random", space=hp, objective="val_accuracy:max", seed=seed)
    expected = []
    for _ in range(budget):
        p = ref.ask()
        expected.append(P.canonical(p.values))
        ref.tell(p.trial_id, {"val_accuracy": 0.5})
    by_id = sorted(trials, key=lambda t: int(t["trial_id"]))
    assert [P.canonical(t["config"]) for t in by_id] == expected

    # raising the budget on a finished search runs only the extra trials
    cli("resume", "killed", "--trials", str(budget + 1), "--max-concurrent", "1")
    status = cli.status("killed")
    assert sum(t["status"] == "completed" for t in status["trials"]) == budget + 1
    ref_next = ref.ask()
    assert P.canonical(status["trials"][-1]["config"]) == P.canonical(ref_next.values)

    # resuming with another space or strategy is refused clearly, and changes nothing
    proc = cli("search", "--name", "killed", "--resume", "--strategy", "grid", check=False)
    assert proc.returncode != 0 and "--strategy 'random'" in proc.stderr and "contradicts" in proc.stderr
    assert len(cli.status("killed")["trials"]) == budget + 1


def test_ctrl_c_saves_state_and_says_how_to_resume(cli) -> None:
    run = cli.storage / "interrupted"
    proc = _start(cli, "search", "--trials", "3", "--epochs", "6", "--max-concurrent", "1", "--name", "interrupted")
    _wait_for(run, proc, completed=1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "nas resume interrupted" in err
    assert "Traceback" not in err
    recs = _records(run)
    assert all(r["status"] in ("completed", "pending") for r in recs.values()), recs
    cli("resume", "interrupted")
    status = cli.status("interrupted")
    assert [t["status"] for t in status["trials"]] == ["completed"] * 3


FAILING_SPACE = '''
import keras
from search_spaces.mlp import MLPSpace

class Flaky(MLPSpace):
    """Fails on purpose: one configuration raises, one trains into NaN."""
    name = "flaky"
    def declare(self, hp):
        hp.Choice("mode", ["raise", "nan", "ok"], ordered=False)
    def build_model(self, hp):
        if hp.get("mode") == "raise":
            raise ValueError("this configuration cannot be built")
        inputs = keras.Input(self.task.input_shape)
        x = keras.layers.Flatten()(inputs)
        if hp.get("mode") == "nan":
            x = keras.layers.Lambda(lambda t: t * float("inf"))(x)
        outputs = keras.layers.Dense(10, activation="softmax")(x)
        model = keras.Model(inputs, outputs)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model
'''


def test_failed_trials_are_recorded_and_consecutive_failures_stop(cli, tmp_path: Path) -> None:
    (tmp_path / "flaky.py").write_text(FAILING_SPACE)
    proc = cli("search", "--space", "flaky.py:Flaky", "--strategy", "grid", "--trials", "3", "--epochs", "2",
               "--max-concurrent", "1", "--max-consecutive-failures", "2", "--name", "flaky", check=False)
    # two failures in a row stop the search before the budget is burnt, with a summary and a way on
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "2 trials failed in a row" in proc.stderr and "nas resume flaky" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    status = cli.status("flaky")
    errors = {t["config"]["mode"]: t["error"] for t in status["trials"] if t["status"] == "failed"}
    assert "cannot be built" in errors["raise"]
    assert "nan" in errors["nan"].lower()
    assert len(status["trials"]) == 2

    # the strategy was told and goes on after a resume
    cli("resume", "flaky", "--max-consecutive-failures", "0")
    status = cli.status("flaky")
    by_mode = {t["config"]["mode"]: t for t in status["trials"]}
    assert by_mode["ok"]["status"] == "completed" and by_mode["ok"]["metrics"]["val_accuracy"] > 0.3
    assert [by_mode[m]["status"] for m in ("raise", "nan")] == ["failed", "failed"]
    state = json.loads((cli.storage / "flaky" / "strategy.json").read_text())
    assert [h["metrics"] is None for h in state["history"]] == [True, True, False]

    # missing, partial or corrupted state: a clear message naming the file; nothing deleted or changed
    strategy_file = cli.storage / "flaky" / "strategy.json"
    strategy_file.write_text('{"strategy": "grid", "next_id": ')
    proc = cli("resume", "flaky", "--trials", "4", check=False)
    assert proc.returncode != 0 and str(strategy_file) in proc.stderr and "corrupted" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert strategy_file.read_text() == '{"strategy": "grid", "next_id": '
    strategy_file.unlink()
    proc = cli("resume", "flaky", "--trials", "4", check=False)
    assert proc.returncode != 0 and "strategy.json is missing" in proc.stderr
    trial_file = cli.storage / "flaky" / "trials" / "0.json"
    trial_file.write_text("{ not json")
    proc = cli("status", "flaky", check=False)
    assert proc.returncode != 0 and str(trial_file) in proc.stderr and "Traceback" not in proc.stderr
    assert (cli.storage / "flaky" / "spec.json").is_file()
