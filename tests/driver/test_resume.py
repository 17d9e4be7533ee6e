"""Resume exactly and survive failures, with real processes: SIGKILL, SIGINT, failing trials, corrupt files."""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DETERMINISTIC, deterministic_records

import nas
from nas.plugins import params as P
from nas.plugins.data import load_data
from nas.plugins.registry import create_space
from nas.plugins.task import make_task
from nas.storage.results import format_value

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


def _here(cli, capsys, monkeypatch, *args: str) -> subprocess.CompletedProcess:
    """``nas ARGS`` through the CLI's entry point in this process, on the module's one Ray (``kept_ray``): for the
    commands whose property is not a driver process of their own (a resume after a kill, a refusal, a reference
    run), so each skips Ray's start and Python's and TensorFlow's imports."""
    code, out, err = cli.inprocess(*args, capsys=capsys, monkeypatch=monkeypatch)
    return subprocess.CompletedProcess(args, code, out, err)


def _session_processes(session_dir: str) -> list[int]:
    from nas.runtime.cluster import uses_session

    name = Path(session_dir).name
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and uses_session(p, name)]


def test_kill_9_then_resume_is_exact_with_one_driver_per_run(cli, kept_ray, capsys, monkeypatch) -> None:
    """Two `nas search --name killed` started at the same moment: one runs, the other is refused at once with the
    owner's pid, host and start; so is a resume while the first runs, and the run reads running. Then kill -9 of
    the driver mid-trial: the run reads interrupted at once; a resume with a larger budget completes it exactly
    (nothing re-run, the trial in flight continued from its checkpoint, the proposals of an uninterrupted seeded
    run), the killed driver's Ray is gone, and a resume that contradicts the run is refused."""
    budget, seed = 4, 11
    run = cli.storage / "killed"
    args = ("search", "--strategy", "random", "--trials", str(budget), "--epochs", "6", "--max-concurrent", "1",
            "--seed", str(seed), "--name", "killed")
    racers = [_start(cli, *args), _start(cli, *args)]
    deadline = time.time() + 120
    while all(p.poll() is None for p in racers) and time.time() < deadline:
        time.sleep(0.05)
    loser = next((p for p in racers if p.poll() is not None), None)
    assert loser is not None, "neither driver was refused"
    proc = racers[1 - racers.index(loser)]
    out, err = loser.communicate()
    assert loser.returncode == 2, out + err
    err = err.strip()
    host = re.escape(socket.gethostname())
    assert re.fullmatch(rf"nas: error: run 'killed' is in use by process {proc.pid} on {host}"
                        r" since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d; wait for it or stop it", err), err
    assert "run killed ->" not in out

    _wait_for(run, proc, completed=0)  # running, a trial under way
    code, out, _ = cli.inprocess("runs", capsys=capsys, monkeypatch=monkeypatch)
    row = next(ln for ln in out.splitlines() if ln.startswith("killed "))
    assert code == 0 and row.split()[3] == "running", row
    code, out, _ = cli.inprocess("status", "killed", "--json", capsys=capsys, monkeypatch=monkeypatch)
    status = json.loads(out)
    assert status["state"] == "running" and status["driver"]["pid"] == proc.pid
    refused = _here(cli, capsys, monkeypatch, "resume", "killed")
    assert refused.returncode == 2 and f"run 'killed' is in use by process {proc.pid} " in refused.stderr, \
        refused.stderr
    assert proc.poll() is None  # still running: the refusal came from the lock, not from a finished run

    _wait_for(run, proc, completed=2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.5)
    before = _records(run)  # final state on disk at the moment of the kill
    completed_before = {k: r for k, r in before.items() if r["status"] == "completed"}
    in_flight = [k for k, r in before.items() if r["status"] == "running"]
    assert completed_before and in_flight
    session_dir = json.loads((run / "ray" / "local.json").read_text())["session_dir"]

    # at once (no clock to wait out): the driver is gone, so the run is interrupted and nothing runs
    code, out, _ = cli.inprocess("runs", capsys=capsys, monkeypatch=monkeypatch)
    row = next(ln for ln in out.splitlines() if ln.startswith("killed "))
    assert code == 0 and row.split()[3] == "interrupted", row
    code, out, _ = cli.inprocess("status", "killed", "--json", capsys=capsys, monkeypatch=monkeypatch)
    status = json.loads(out)
    assert status["state"] == "interrupted" and status["counts"]["running"] == 0, status["counts"]
    assert status["next"] == "nas resume killed"

    # resumed with a larger budget (raising the budget of a finished run: tests/test_api.py)
    total = budget + 1
    resumed = _here(cli, capsys, monkeypatch, "resume", "killed", "--trials", str(total), "--max-concurrent", "1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    out = resumed.stdout
    assert "resuming run killed" in out
    # one line per trial it ran: the one continued and those not yet begun
    assert out.count("] trial ") == total - len(completed_before), out

    # the killed driver's Ray processes are gone (its agents ignore SIGTERM and outlive the driver)
    assert _session_processes(session_dir) == []

    status = cli.status("killed")
    trials = status["trials"]
    assert sum(t["status"] == "completed" for t in trials) == total == len(trials)
    assert status["state"] == "finished" and status["driver"]["outcome"] == "finished"
    configs = [P.canonical(t["config"]) for t in trials]
    assert len(set(configs)) == total, "a configuration was trained twice"
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
    for _ in range(total):
        p = ref.ask()
        expected.append(P.canonical(p.values))
        ref.tell(p.trial_id, {"val_accuracy": 0.5})
    by_id = sorted(trials, key=lambda t: int(t["trial_id"]))
    assert [P.canonical(t["config"]) for t in by_id] == expected

    # resuming with another space or strategy is refused clearly, and changes nothing
    proc = _here(cli, capsys, monkeypatch, "search", "--name", "killed", "--resume", "--strategy", "grid")
    assert proc.returncode != 0 and "--strategy 'random'" in proc.stderr and "contradicts" in proc.stderr
    assert len(cli.status("killed")["trials"]) == total
    proc = _here(cli, capsys, monkeypatch, *args)  # a finished run: its name is taken (not "in use")
    assert proc.returncode == 2 and "already exists" in proc.stderr and "nas resume killed" in proc.stderr


BEST_FIRST = '''
import time
import keras
from search_spaces.mlp import MLPSpace

class BestFirst(MLPSpace):
    """Two configurations in grid order: one that learns, then one that learns nothing; each epoch lasts at
    least 0.5 s, so a signal can land mid-trial."""
    name = "best-first"
    def declare(self, hp):
        hp.Choice("learning_rate", [0.01, 1e-9])
        hp.Fixed("num_layers", 1)
        hp.Fixed("units_0", 32)
        hp.Fixed("activation", "relu")
        hp.Fixed("dropout", 0.0)
        hp.Fixed("optimizer", "adam")
        hp.Fixed("batch_size", 64)
    def fit(self, hp, model, *args, **kwargs):
        slow = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: time.sleep(0.5))
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [slow]
        return super().fit(hp, model, *args, **kwargs)
'''


def test_a_deterministic_search_killed_and_resumed_is_the_uninterrupted_search(cli, kept_ray, capsys, monkeypatch,
                                                                              deterministic_run) -> None:
    """--deterministic across a kill -9: the driver is killed with trials finished (those whose turn had not
    come not yet told to the strategy) and one mid-trial; `nas resume` ends with the records of the same command
    run without a kill (the session's ``deterministic_run``, tests/conftest.py): the same configurations under
    the same ids, the same per-epoch metrics. The killed driver is a process of its own; the resume goes through
    the CLI's entry point in this process, on the module's one Ray (another Ray, other workers: the same records
    all the same)."""
    proc = _start(cli, "search", *DETERMINISTIC, "--name", "det-killed")
    _wait_for(cli.storage / "det-killed", proc, completed=2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    resumed = _here(cli, capsys, monkeypatch, "resume", "det-killed")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    whole = deterministic_records(deterministic_run)
    assert len(whole) == 6 and all(t[1] == "completed" for t in whole)
    assert deterministic_records(cli.storage / "det-killed") == whole
    refused = _here(cli, capsys, monkeypatch, "resume", "det-killed", "--trials", "8", "--max-concurrent", "3")
    assert refused.returncode == 2 and "is --deterministic with --max-concurrent 2" in refused.stderr


def test_ctrl_c_saves_state_and_says_how_to_resume(cli, kept_ray, tmp_path: Path, capsys, monkeypatch) -> None:
    """Ctrl-C in a run outside the default storage: stdout says interrupted and how to go on (a command that
    works when pasted), the run reads interrupted at once, the resumed session's "best so far" counts the
    earlier session's trials, and the searching time leaves out the idle time between sessions. The Ctrl-C'd
    driver is a process of its own; the resume, the printed command as pasted, goes through the CLI's entry point
    in this process, on the module's one Ray."""
    (tmp_path / "best_first.py").write_text(BEST_FIRST)
    storage = tmp_path / "elsewhere"  # not $NAS_STORAGE: every printed command must name it
    run = storage / "interrupted"
    t0 = time.time()
    proc = _start(cli, "search", "--space", "best_first.py:BestFirst", "--strategy", "grid", "--trials", "2",
                  "--epochs", "4", "--max-concurrent", "1", "--name", "interrupted", "--storage", str(storage))
    _wait_for(run, proc, completed=1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    first_session_end = time.time()
    assert proc.returncode == 130, out + err
    resume = f"nas resume interrupted --storage {storage}"
    assert "interrupted: state saved" in err and resume not in err  # the command once (on stdout)
    assert (out + err).count(resume) == 1, out + err
    assert "Traceback" not in err
    assert "finished:" not in out and out.count("interrupted: 1 completed, 0 failed in ") == 1, out
    assert "best trial so far 0:" in out and out.rstrip().endswith(f"next: continue with: {resume}"), out
    recs = _records(run)
    assert all(r["status"] in ("completed", "pending") for r in recs.values()), recs

    # at once, from the lock and the records (no clock): interrupted, nothing running, the way on
    def status_of(*args: str) -> str:
        code, out, err = cli.inprocess("status", "interrupted", "--storage", str(storage), *args, capsys=capsys,
                                       monkeypatch=monkeypatch)
        assert code == 0, err
        return out

    status = json.loads(status_of("--json"))
    assert status["state"] == "interrupted" and status["counts"]["running"] == 0 and status["next"] == resume
    assert f"state: interrupted; continue with: {resume}" in status_of()
    time.sleep(2)  # the run lies idle (and the resumed driver's start-up adds to it)

    second_session_start = time.time()
    resumed = _here(cli, capsys, monkeypatch, *shlex.split(resume)[1:])  # the printed command, as pasted
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    out = resumed.stdout
    lines = [ln for ln in out.splitlines() if "] trial " in ln]
    assert len(lines) == 1 and lines[0].startswith("[2/2] trial 1: val_accuracy="), out
    status = json.loads(status_of("--json"))
    by_id = {t["trial_id"]: t for t in status["trials"]}
    assert [by_id[i]["status"] for i in ("0", "1")] == ["completed", "completed"]
    good, bad = by_id["0"]["metrics"]["val_accuracy"], by_id["1"]["metrics"]["val_accuracy"]
    assert good > bad + 0.2, (good, bad)
    # trial 1's line names trial 0, finished in the earlier session, as the best so far
    assert f"best {format_value(good)} (trial 0)" in lines[0], lines[0]
    assert status["state"] == "finished" and status["next"] is None

    # searching time: both sessions, not the idle time between them (nor the time before the first began)
    spec = json.loads((run / "spec.json").read_text())
    last = max(t["finished"] for t in status["trials"])
    idle = second_session_start - first_session_end
    assert status["elapsed_s"] <= (last - spec["created"]) - idle, (status["elapsed_s"], last - spec["created"], idle)
    assert status["elapsed_s"] <= time.time() - t0 - idle
    assert status["wall_s"] >= status["elapsed_s"] + idle


def _driver_processes(marker: str) -> list[int]:
    """Processes started by the driver given ``NAS_TEST_DRIVER=marker`` (its Ray: they inherit its environment)."""
    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and f"NAS_TEST_DRIVER={marker}".encode() in (p / "environ").read_bytes().split(b"\0"):
                out.append(int(p.name))
        except OSError:
            continue
    return out


def _start_marked(cli, marker: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nas.cli", *args], cwd=cli.cwd,
                            env={**cli.env(), "NAS_TEST_DRIVER": marker}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _epochs_recorded(run: Path) -> int:
    return sum(len(r.get("history") or []) for r in _records(run).values())


def _names_pid(path: Path, key: str, pid: int) -> bool:
    try:
        return json.loads(path.read_text()).get(key) == pid
    except (OSError, json.JSONDecodeError):
        return False


#: moments of a driver's life, each an observed event (never a delay, which a fast machine outruns): just
#: started (the interpreter), owning the run (its lock taken, Ray not yet up), its Ray up, a new epoch recorded
MOMENTS = ("interpreter", "lock", "ray", "epoch")


def _wait_for_moment(moment: str, run: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    epochs = _epochs_recorded(run)
    reached = {
        "interpreter": lambda: True,
        "lock": lambda: _names_pid(run / "driver.json", "pid", proc.pid),
        "ray": lambda: _names_pid(run / "ray" / "local.json", "driver_pid", proc.pid),
        "epoch": lambda: _epochs_recorded(run) > epochs,
    }[moment]
    deadline = time.time() + timeout
    while not reached():
        assert proc.poll() is None, f"the driver ended before its kill ({moment}): {proc.communicate()}"
        assert time.time() < deadline, f"the driver never reached its kill ({moment})"
        time.sleep(0.05)


def test_kill_9_at_random_moments_with_a_scheduler(cli, kept_ray, capsys, monkeypatch) -> None:
    """5 kill -9 of the driver (one surely mid-trial, then one at each moment of MOMENTS in a random order),
    concurrency 2 with ASHA, a resume after each: the budget completes, no trial id twice, no completed trial
    re-run, trials continue from their last epoch, and nothing of the killed drivers' Ray is left. Each killed
    driver is a process of its own; the last resume, never killed, goes through the CLI's entry point in this
    process, on the module's one Ray."""
    budget, epochs = 6, 4  # five kills leave most of the budget for the last driver
    run = cli.storage / "scale"
    moments = random.Random(16).sample(MOMENTS, len(MOMENTS))
    proc = _start_marked(cli, "0", "search", "--trials", str(budget), "--epochs", str(epochs), "--max-concurrent", "2",
                         "--scheduler", "asha", "--seed", "5", "--name", "scale")
    completed_at_kill: dict[str, dict] = {}
    running_at_kill: dict[str, list[int]] = {}
    for k in range(1, 6):
        if k == 1:  # surely mid-trial
            _wait_for(run, proc, completed=1)
        else:
            _wait_for_moment(moments[k - 2], run, proc)
        assert proc.poll() is None, f"driver {k - 1} ended before its kill: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for tid, r in _records(run).items():
            if r["status"] == "completed":
                completed_at_kill.setdefault(tid, r)
            elif (run / "trials" / tid / "resume.npz").is_file() and r["history"]:
                running_at_kill[tid] = [h["epoch"] for h in r["history"]]
        if k < 5:
            proc = _start_marked(cli, str(k), "resume", "scale")
    last = _here(cli, capsys, monkeypatch, "resume", "scale")
    assert last.returncode == 0, last.stdout + last.stderr

    status = cli.status("scale")
    trials = status["trials"]
    assert status["counts"] == {"completed": budget, "failed": 0, "running": 0, "pending": 0}, status["counts"]
    assert sorted(int(t["trial_id"]) for t in trials) == list(range(budget))  # each id once, none skipped
    assert len({P.canonical(t["config"]) for t in trials}) == budget
    after = _records(run)
    for tid, r in completed_at_kill.items():  # never re-run
        assert after[tid]["finished"] == r["finished"] and after[tid]["history"] == r["history"], tid
    for tid, r in after.items():  # every history runs 1..n once: no restart at epoch 1
        assert [h["epoch"] for h in r["history"]] == list(range(1, len(r["history"]) + 1)), (tid, r["history"])
    for tid, seen in running_at_kill.items():  # continued from its checkpoint, its earlier epochs kept
        if tid not in completed_at_kill:
            assert [h["epoch"] for h in after[tid]["history"]][:len(seen) - 1] == seen[:-1], tid
    assert any(r.get("resumed_from_epoch") for r in after.values()), "no trial was continued mid-way"
    left = {k: _driver_processes(str(k)) for k in range(5)}  # the killed drivers' Ray processes
    assert not any(left.values()), left
    assert status["state"] == "finished"


def test_a_killed_worker_is_retried_from_its_checkpoint_then_recorded_failed(cli, tmp_path: Path) -> None:
    """One trial, --max-failures 1: its worker killed mid-trial, the trial goes on in another worker from its last
    checkpoint; that one killed too, the retries are spent and the trial is recorded failed (as it is at the first
    death with the default --max-failures 0), with one clear line and no traceback."""
    (tmp_path / "best_first.py").write_text(BEST_FIRST)
    run = cli.storage / "retried"
    proc = _start(cli, "search", "--space", "best_first.py:BestFirst", "--strategy", "grid", "--trials", "1",
                  "--epochs", "6", "--name", "retried", "--max-failures", "1")

    def kill_worker_when(reached) -> dict:
        deadline = time.time() + 240
        while time.time() < deadline:
            rec = _records(run).get("0")
            if rec and rec.get("pid") and reached(rec):
                os.kill(int(rec["pid"]), signal.SIGKILL)  # the Ray worker training the trial, not the driver
                return rec
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        proc.kill()
        raise AssertionError(f"the trial never reached its kill: {_records(run).get('0')}")

    first = kill_worker_when(lambda rec: len(rec["history"]) >= 2)
    # retried in another worker, from the checkpoint of an epoch >= 2, its earlier epochs kept: killed again
    second = kill_worker_when(lambda rec: rec["pid"] != first["pid"] and (rec.get("resumed_from_epoch") or 0) >= 2
                              and len(rec["history"]) > rec["resumed_from_epoch"])
    assert second["status"] == "running" and second["resumed_from_epoch"] >= 2, second
    epochs = [h["epoch"] for h in second["history"]]
    assert epochs == list(range(1, len(epochs) + 1)), epochs  # went on from its checkpoint, earlier epochs kept
    assert epochs[:len(first["history"])] == [h["epoch"] for h in first["history"]]

    out, err = proc.communicate(timeout=300)
    rec = _records(run)["0"]
    assert proc.returncode == 1 and "no trial completed" in out, out + err
    assert rec["status"] == "failed" and rec["error"], rec
    assert "died" in rec["error"].lower() or "worker" in rec["error"].lower(), rec["error"]
    assert "Traceback" not in out + err


def test_storage_that_cannot_be_written_mid_run_stops_with_one_line_and_resumes(cli, kept_ray, capsys,
                                                                                monkeypatch) -> None:
    """The driver can no longer write its files mid-run: one line, exit 2, every earlier record intact, the run
    resumable. How: the driver's file-size limit (RLIMIT_FSIZE) drops to 100 bytes, so each write it makes from
    then on fails as on a full disk (EFBIG, "File too large", where a full disk says ENOSPC), while the trials'
    own processes and everything else on the machine go on unaffected. Unlike a full or read-only mount (a tiny
    tmpfs, a remount), this needs neither root nor mount rights, so it runs the same in CI. The limited drivers
    are processes of their own; the last resume, on writable storage, goes through the CLI's entry point in this
    process, on the module's one Ray."""
    run = cli.storage / "full"
    proc = _start(cli, "search", "--trials", "3", "--epochs", "6", "--max-concurrent", "1", "--name", "full")
    _wait_for(run, proc, completed=1)
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (100, 100))
    files = {p.name: p.read_bytes() for p in (run / "trials").glob("*.json")}
    spec, strategy = (run / "spec.json").read_bytes(), (run / "strategy.json").read_bytes()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 2, out + err
    # the limit also hits the driver's own Ray log under /tmp/ray (on a real full disk elsewhere it would not):
    # Ray's logger says so in its own lines, which are the test's doing; ours is one line
    ours = [ln for ln in err.strip().splitlines() if "[ray_log_sink] Failed flush to file /tmp/ray/" not in ln]
    assert len(ours) == 1, err
    assert re.fullmatch(rf"nas: error: cannot write {re.escape(str(run))}/\S+: File too large; the search stopped and "
                        r"every record written before is intact; free space or fix the storage, then continue with: "
                        r"nas resume full", ours[0]), err
    assert "Traceback" not in out + err
    for name, data in files.items():  # as they were, or replaced whole by a later write that fitted
        now = (run / "trials" / name).read_bytes()
        assert now == data or json.loads(now)["trial_id"] == name[:-5], name
    assert json.loads((run / "spec.json").read_bytes()) and json.loads((run / "strategy.json").read_bytes())
    assert not [p.name for p in run.rglob(".*.tmp")], "half-written files left behind"
    done = [r for r in _records(run).values() if r["status"] == "completed"]
    assert done and all(json.loads(files[f"{r['trial_id']}.json"])["history"] == r["history"]
                        for r in done if f"{r['trial_id']}.json" in files and
                        json.loads(files[f"{r['trial_id']}.json"])["status"] == "completed")
    del spec, strategy

    # still full when resumed: the same kind of line, nothing changed
    before = {p: p.read_bytes() for p in run.rglob("*.json")}
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "resume", "full"], cwd=cli.cwd, env=cli.env(),
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100)))
    assert proc.returncode == 2 and proc.stderr.startswith(f"nas: error: cannot write {run}/"), proc.stderr
    assert "File too large" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert {p: p.read_bytes() for p in run.rglob("*.json")} == before

    resumed = _here(cli, capsys, monkeypatch, "resume", "full")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    status = cli.status("full")
    assert status["counts"]["completed"] == 3 and len(status["trials"]) == 3, status["counts"]


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


def test_failed_trials_are_recorded_and_consecutive_failures_stop(cli, kept_ray, tmp_path: Path, capsys,
                                                                 monkeypatch) -> None:
    """The CLI's entry point in this process, on the module's one Ray (``kept_ray``): nothing here is about a
    driver process of its own, and the refused resumes below start no Ray of their own only to fail."""
    (tmp_path / "flaky.py").write_text(FAILING_SPACE)
    proc = _here(cli, capsys, monkeypatch, "search", "--space", "flaky.py:Flaky", "--strategy", "grid", "--trials",
                 "3", "--epochs", "2", "--max-concurrent", "1", "--max-consecutive-failures", "2", "--name", "flaky")
    # two failures in a row stop the search before the budget is burnt, with a summary and a way on
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "2 trials failed in a row" in proc.stderr  # why, on stderr; the way on once, with the next steps
    assert "next: fix the cause, then continue with: nas resume flaky" in proc.stdout
    assert (proc.stdout + proc.stderr).count("nas resume flaky") == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    status = cli.status("flaky")
    errors = {t["config"]["mode"]: t["error"] for t in status["trials"] if t["status"] == "failed"}
    assert "cannot be built" in errors["raise"]
    assert "nan" in errors["nan"].lower()
    assert len(status["trials"]) == 2

    # the strategy was told and goes on after a resume
    proc = _here(cli, capsys, monkeypatch, "resume", "flaky", "--max-consecutive-failures", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = cli.status("flaky")
    by_mode = {t["config"]["mode"]: t for t in status["trials"]}
    assert by_mode["ok"]["status"] == "completed" and by_mode["ok"]["metrics"]["val_accuracy"] > 0.3
    assert [by_mode[m]["status"] for m in ("raise", "nan")] == ["failed", "failed"]
    state = json.loads((cli.storage / "flaky" / "strategy.json").read_text())
    assert [h["metrics"] is None for h in state["history"]] == [True, True, False]

    # missing, partial or corrupted state: a clear message naming the file; nothing deleted or changed
    strategy_file = cli.storage / "flaky" / "strategy.json"
    strategy_file.write_text('{"strategy": "grid", "next_id": ')
    proc = _here(cli, capsys, monkeypatch, "resume", "flaky", "--trials", "4")
    assert proc.returncode != 0 and str(strategy_file) in proc.stderr and "corrupted" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert strategy_file.read_text() == '{"strategy": "grid", "next_id": '
    strategy_file.unlink()
    proc = _here(cli, capsys, monkeypatch, "resume", "flaky", "--trials", "4")
    assert proc.returncode != 0 and "strategy.json is missing" in proc.stderr
    trial_file = cli.storage / "flaky" / "trials" / "0.json"
    trial_file.write_text("{ not json")
    proc = cli("status", "flaky", check=False)  # the command itself, in a process of its own
    assert proc.returncode != 0 and str(trial_file) in proc.stderr and "Traceback" not in proc.stderr
    assert (cli.storage / "flaky" / "spec.json").is_file()
