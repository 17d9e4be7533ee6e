"""launch/slurm/nas-search.sbatch, run for real under a one-node Slurm: Debian's slurm-wlm and munge (installed
with apt-get as root when missing), slurmctld, slurmd and munged started by this module on 127.0.0.1 with a
configuration of its own (SLURM_CONF: nothing under /etc is changed) and stopped at the end, by pid. The script's
Ray head listens on 127.0.0.1 too (a loopback head: Ray's single-machine mode), with token authentication on.

What one node does not cover: a Ray worker joining from a second node. Debian's slurmd runs two nodes on one
machine (tried: one NodeHostname, two ports, both idle), but a two-node Ray on one machine would have to listen on
the machine's network address: Ray keeps a cluster on 127.0.0.1 only in its single-machine mode, which no second
node can join, and the tests bind every server to 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import _describe, apt_install, free_port

SCRIPT = Path(__file__).resolve().parents[1] / "launch" / "slurm" / "nas-search.sbatch"
DAEMONS = ("sbatch", "scancel", "scontrol", "sinfo", "slurmctld", "slurmd", "munged")
PACKAGES = ("slurm-wlm", "munge")

pytestmark = pytest.mark.slow


def _installed() -> bool:
    return all(shutil.which(c) for c in DAEMONS)


class Slurm:
    """A one-node Slurm of this module's own: its configuration, its daemons (by pid) and job helpers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []
        node = dict(kv.split("=", 1) for kv in subprocess.run(["slurmd", "-C"], capture_output=True, text=True,
                                                               check=True).stdout.split() if "=" in kv)
        self.node, self.cpus = node["NodeName"], int(node["CPUs"])
        for d in ("state", "spool", "log", "munge"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.chown(root / "munge", "munge", "munge")
        self.munge_socket = root / "munge" / "munge.socket"
        conf = {
            "ClusterName": "nastest", "SlurmctldHost": f"{self.node}(127.0.0.1)",
            "SlurmctldPort": free_port(), "SlurmdPort": free_port(), "SlurmUser": "root",
            "AuthType": "auth/munge", "AuthInfo": f"socket={self.munge_socket}",
            "StateSaveLocation": root / "state", "SlurmdSpoolDir": root / "spool",
            "SlurmctldPidFile": root / "slurmctld.pid", "SlurmdPidFile": root / "slurmd.pid",
            "SlurmctldLogFile": root / "log" / "slurmctld.log", "SlurmdLogFile": root / "log" / "slurmd.log",
            # no cgroups in a container: processes tracked by parent pid, no task binding
            "ProctrackType": "proctrack/linuxproc", "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres", "SelectTypeParameters": "CR_Core_Memory", "MpiDefault": "none",
            "ReturnToService": 2, "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none", "KillWait": 10,
        }
        lines = [f"{k}={v}" for k, v in conf.items()]
        lines.append(f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={node['RealMemory']} "
                     f"State=UNKNOWN")
        lines.append(f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP")
        self.conf = root / "slurm.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.env.pop("RAY_ADDRESS", None)

    def start(self) -> None:
        logs = self.root / "log"
        self._spawn(["munged", "--foreground", "--force", f"--socket={self.munge_socket}",
                     f"--pid-file={self.root / 'munge' / 'munged.pid'}", f"--seed-file={self.root / 'munge' / 'seed'}",
                     f"--log-file={logs / 'munged.log'}"], logs / "munged.out")
        self._wait(lambda: self.munge_socket.exists(), 20, "munged did not create its socket")
        self._spawn(["slurmctld", "-D", "-i"], logs / "slurmctld.out")
        time.sleep(1)
        self._spawn(["slurmd", "-D", "-N", self.node], logs / "slurmd.out")
        self._wait(lambda: "idle" in self.run("sinfo", "-h", "-o", "%t").stdout, 60,
                   "the Slurm node did not become idle")

    def _spawn(self, cmd: list[str], out: Path) -> None:
        with open(out, "w") as f:
            self.procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=self.env))

    def _wait(self, ok: Any, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ok():
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        logs = "\n".join(f"{p.name}: {p.read_text()[-500:]}" for p in sorted((self.root / "log").glob("*")))
        raise AssertionError(f"{what}\n{logs}")

    def run(self, *cmd: str, **kw: Any) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=60, **kw)

    def submit(self, storage: Path, *args: str, env: dict[str, str] | None = None) -> str:
        """Submit the script with nas arguments ``args``; returns the job id."""
        out = self.root / "job-%j.log"
        proc = subprocess.run(
            ["sbatch", "--parsable", "--nodes=1", f"--cpus-per-task={self.cpus}", "--gpus-per-node=0",
             f"--output={out}", str(SCRIPT), *args],
            capture_output=True, text=True, timeout=60,
            env={**self.env, "NAS_STORAGE": str(storage), "NAS_HEAD_IP": "127.0.0.1", "RAY_PORT": str(free_port()),
                 "KERAS_HOME": str(storage / ".keras"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                 **(env or {})})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().split(";")[0]

    def state(self, job: str) -> str:
        m = re.search(r"JobState=(\w+)", self.run("scontrol", "show", "job", job).stdout)
        return m.group(1) if m else "GONE"

    def wait(self, job: str, timeout: float = 300) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.state(job)
            if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
                return state
            time.sleep(1)
        self.run("scancel", job)
        raise AssertionError(f"job {job} still {self.state(job)} after {timeout:.0f}s:\n{self.log(job)}")

    def log(self, job: str) -> str:
        path = self.root / f"job-{job}.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self.run("scancel", "--user", "root")
        deadline = time.time() + 30
        while time.time() < deadline and self.run("squeue", "-h").stdout.strip():
            time.sleep(0.5)
        for p in reversed(self.procs):  # slurmd, slurmctld, munged
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: Any) -> Iterator[Slurm]:
    why = apt_install(PACKAGES, _installed, "Slurm", tmp_path_factory.getbasetemp().parent)
    if why:
        pytest.skip(why)
    cluster = Slurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _records(run: Path) -> list[dict]:
    out = []
    for p in (run / "trials").glob("*.json"):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):  # being replaced
            pass
    return out


def _job_ray_processes(job: str) -> list[int]:
    """The job's Ray processes: those naming its Ray directory, and its agents and workers (``ray::...``, whose
    command line names none), found by the job id in their environment."""
    mark = f"/tmp/ray-nas-{job}/".encode()
    pids = []
    for p in Path("/proc").iterdir():
        try:
            cmd = (p / "cmdline").read_bytes() if p.name.isdigit() else b""
            if mark in cmd or (cmd.startswith(b"ray::")
                               and f"SLURM_JOB_ID={job}".encode() in (p / "environ").read_bytes().split(b"\0")):
                pids.append(int(p.name))
        except OSError:
            pass
    return pids


def _job_ray_left(job: str, wait: float = 15) -> dict[int, str]:
    """The job's Ray processes still there after ``wait`` seconds (what the script's cleanup killed may take a
    moment to exit), each described (conftest's ``_describe``)."""
    deadline = time.time() + wait
    while time.time() < deadline and _job_ray_processes(job):
        time.sleep(0.5)
    return {pid: _describe(pid) for pid in _job_ray_processes(job)}


def _seconds(log: str, what: str) -> int:
    m = re.search(rf"nas-search: {what}.*?(\d+)s into the job\)", log)
    assert m, log
    return int(m.group(1))


def test_the_sbatch_script_runs_a_search_under_slurm(slurm: Slurm, tmp_path: Path) -> None:
    """The job starts a token-authenticated Ray head at the address Ray reports, runs the search to its budget,
    and stops its Ray; the token is in a file only the user can read, and never in the job's log. A Ray
    directory left by an earlier job with the same id (this test's controller numbers its jobs from 1 again),
    whose address file names a Ray that is gone, does not hold it up (it did: a 120 s wait, then FAILED)."""
    storage = tmp_path / "runs"
    # the ids this test's jobs get; a directory already there (left by an earlier run on this machine) is stale too
    stale = {i: Path(f"/tmp/ray-nas-{i}") for i in range(1, 11)}
    made = [d for d in stale.values() if not d.exists()]
    for d in made:
        d.mkdir()
        (d / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}\n")
    try:
        job = slurm.submit(storage, "--space", "mlp", "--strategy", "random", "--trials", "2", "--epochs", "1",
                           "--name", "slurm1")
        assert int(job) in stale, job
        assert slurm.wait(job) == "COMPLETED", slurm.log(job)
    finally:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)
    log = slurm.log(job)
    assert re.search(r"nas-search: Ray head up at 127\.0\.0\.1:\d+ ", log), log
    records = _records(storage / "slurm1")
    assert sorted(r["trial_id"] for r in records) == ["0", "1"]
    assert all(r["status"] == "completed" for r in records)
    token = storage / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text().strip() not in log
    assert not (left := _job_ray_left(job)), (left, log)
    print(f"\nslurm job {job}: Ray head up {_seconds(log, 'Ray head up')} s into the job, search ended "
          f"{_seconds(log, 'the search ended')} s in (2 mlp trials x 1 epoch)")


def test_a_cancelled_job_stops_its_ray_and_resumes_in_a_new_job(slurm: Slurm, tmp_path: Path) -> None:
    """scancel after the first completed trial ends the job and its Ray; `--name RUN --resume` in a new job
    completes the budget with every trial once."""
    storage = tmp_path / "runs"
    run = storage / "slurm2"
    job = slurm.submit(storage, "--space", "mlp", "--strategy", "random", "--trials", "3", "--epochs", "3",
                       "--max-concurrent", "1", "--name", "slurm2")
    deadline = time.time() + 240
    while time.time() < deadline and not any(r["status"] == "completed" for r in _records(run)):
        assert slurm.state(job) in ("PENDING", "RUNNING", "CONFIGURING"), slurm.log(job)
        time.sleep(0.5)
    done = [r["trial_id"] for r in _records(run) if r["status"] == "completed"]
    assert done, slurm.log(job)
    assert slurm.run("scancel", job).returncode == 0
    assert slurm.wait(job, timeout=90) == "CANCELLED", slurm.log(job)
    # the script's cleanup runs as the job is cancelled; Slurm kills what is left
    assert not (left := _job_ray_left(job)), (left, slurm.log(job))
    assert len([r for r in _records(run) if r["status"] == "completed"]) < 3  # cancelled before the end
    again = slurm.submit(storage, "--name", "slurm2", "--resume")
    assert slurm.wait(again) == "COMPLETED", slurm.log(again)
    records = _records(run)
    assert sorted(r["trial_id"] for r in records) == ["0", "1", "2"], slurm.log(again)
    assert all(r["status"] == "completed" for r in records)
    assert len({json.dumps(r["config"], sort_keys=True) for r in records}) == 3
    assert set(done) <= {r["trial_id"] for r in records}
    assert not (left := _job_ray_left(again)), (left, slurm.log(again))
