"""Shared fixtures: run the real CLI in a subprocess with its own storage; leave no Ray process behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


#: every process this test session starts inherits this marker; on a machine shared with other users' Ray
#: processes, only those carrying it count as ours
SESSION_MARK = f"NAS_TEST_SESSION={os.getpid()}-{os.urandom(4).hex()}"
os.environ["NAS_TEST_SESSION"] = SESSION_MARK.partition("=")[2]
#: a crash of this process prints every thread's Python stack (pytest's faulthandler): Ray's driver otherwise
#: replaces that handler with its own, which prints nothing here (measured with ray 2.60: a segfault after
#: ray.init ends the process with no line at all)
os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")


def _ours(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return SESSION_MARK.encode() in f.read().split(b"\0")
    except OSError:
        return False


def _ray_pids() -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    pids = set()
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if any(tag in args for tag in ("raylet", "gcs_server", "ray::", "ray/_private", "dashboard/agent.py")):
            if _ours(pid):
                pids.add(int(pid))
    return pids


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """``-m "not slow"`` is the fast part of the suite for development: every test that starts a Ray (marked
    ``ray``, or using a shared run built by one) is slow, and so is every test marked ``slow`` explicitly."""
    shared_runs = {"small_run", "cnn_run"}
    for item in items:
        if item.get_closest_marker("ray") is not None or shared_runs & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_configure(config: Any) -> None:
    """The data-parallel tests need Horovod built for the installed TensorFlow, which no PyPI wheel is: the
    test command builds it the first time (minutes; launch/install-horovod.sh caches the wheel in
    ~/.cache/nas/wheels, so later runs and fresh environments on the machine install it in seconds)."""
    from nas.trials.horovod import horovod_missing

    if not horovod_missing():
        return
    print("\nHorovod is not installed for this TensorFlow: building it once (launch/install-horovod.sh) ...",
          flush=True)
    proc = subprocess.run(["bash", str(ROOT / "launch" / "install-horovod.sh")],
                          env=dict(os.environ, PYTHON=sys.executable))
    import importlib

    importlib.invalidate_caches()  # the new package in site-packages, for this process too
    why = horovod_missing()
    if proc.returncode != 0 or why:
        pytest.exit(f"Horovod could not be built for the tests (launch/install-horovod.sh exited {proc.returncode}; "
                    f"{why}); see its output above", returncode=3)


@pytest.fixture(scope="session", autouse=True)
def no_leftover_ray_processes() -> Any:
    """Every Ray runtime a test starts is stopped by the test itself; leftovers fail the session."""
    before = _ray_pids()
    yield
    import time

    deadline = time.time() + 20
    while time.time() < deadline and (_ray_pids() - before):
        time.sleep(0.5)
    left = _ray_pids() - before
    for pid in left:  # clean up anyway, then report
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    assert not left, f"Ray processes left running after the tests: {sorted(left)}"


def _our_temp_entries() -> set[str]:
    """What nas itself puts in the system temp directory (an export's staging folder, a storage write check)."""
    import tempfile

    root = Path(tempfile.gettempdir())
    return {p.name for p in root.iterdir() if p.name.startswith(("nas-", ".nas-"))} if root.is_dir() else set()


def _held_locks(root: Path) -> list[Path]:
    """Every run lock under ``root`` that a process still holds (``driver_state``: the kernel asked, as
    ``nas runs`` asks it)."""
    from nas.storage.layout import LOCK
    from nas.storage.lock import driver_state

    return [lock for lock in root.rglob(LOCK) if driver_state(lock.parent)["live"]]


@pytest.fixture(scope="session", autouse=True)
def no_leftover_temp_or_locks(tmp_path_factory: Any) -> Any:
    """No test leaves a nas temp directory behind, nor a run lock held once it ended (a driver still alive)."""
    before = _our_temp_entries()
    yield
    import time

    base = tmp_path_factory.getbasetemp()
    deadline = time.time() + 20  # a driver a test killed may take a moment to be reaped
    while time.time() < deadline and (_held_locks(base) or _our_temp_entries() - before):
        time.sleep(0.5)
    held = _held_locks(base)
    assert not held, f"run locks still held after the tests: {[str(p) for p in held]}"
    left = _our_temp_entries() - before
    assert not left, f"temp directories left behind by the tests: {sorted(left)}"


#: TensorFlow's oneDNN on, as it is by default on a CPU with AVX-512: its import then writes a banner to stderr
#: before any log level applies (nas.runtime.quiet), so the quiet-output tests exercise its filter on every machine
ONEDNN_ON = {"TF_ENABLE_ONEDNN_OPTS": "1"}


class CLI:
    def __init__(self, storage: Path, cwd: Path, extra_env: dict[str, str] | None = None) -> None:
        self.storage = storage
        self.cwd = cwd
        self.extra_env = dict(extra_env or {})

    def env(self) -> dict[str, str]:
        env = dict(os.environ, **self.extra_env)
        env["NAS_STORAGE"] = str(self.storage)
        env["KERAS_HOME"] = str(self.storage / ".keras")  # never reuse a user's downloaded data sets
        env.pop("RAY_ADDRESS", None)
        return env

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True, cwd=self.cwd, env=self.env(),
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"nas {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def inprocess(self, *args: str, capsys: Any, monkeypatch: Any) -> tuple[int, str, str]:
        """The same CLI entry point in this process: for fast error-path checks (no TensorFlow re-import)."""
        from nas.cli import main

        for k, v in self.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.chdir(self.cwd)
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    def status(self, name: str) -> dict[str, Any]:
        return json.loads(self("status", name, "--json").stdout)


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path / "runs", tmp_path)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: Any) -> tuple[CLI, str, subprocess.CompletedProcess]:
    """One small real search shared by the output tests (status, runs, plot, TensorBoard, quiet output)."""
    root = tmp_path_factory.mktemp("small-run")
    cli = CLI(root / "runs", root, extra_env=ONEDNN_ON)
    proc = cli("search", "--trials", "3", "--epochs", "2", "--name", "small", "--seed", "1", "--max-concurrent", "2")
    return cli, "small", proc


def copy_run(src: CLI, name: str, dest: CLI, new_name: str | None = None) -> str:
    """A copy of ``src``'s run ``name`` in ``dest``'s storage (renamed ``new_name``), for a test that changes a
    shared run or adds runs beside it: the shared run itself stays as it was built."""
    new_name = new_name or name
    shutil.copytree(src.storage / name, dest.storage / new_name)
    if new_name != name:
        spec = dest.storage / new_name / "spec.json"
        spec.write_text(json.dumps({**json.loads(spec.read_text()), "name": new_name}, indent=1))
    return new_name


@pytest.fixture(scope="session")
def cnn_run(tmp_path_factory: Any) -> tuple[CLI, str]:
    """One real cnn search (2 random trials x 1 epoch on digits) shared by the end-to-end test of the cnn space
    (tests/driver/test_plugins_e2e.py) and its export test (tests/views/test_export.py), which only read it."""
    root = tmp_path_factory.mktemp("cnn-run")
    cli = CLI(root / "runs", root)
    cli("search", "--space", "cnn", "--strategy", "random", "--trials", "2", "--epochs", "1", "--name", "cnn")
    return cli, "cnn"


@pytest.fixture(scope="module")
def kept_ray() -> Any:
    """One local Ray for a module's in-process searches (``nas.local_ray``): each search skips Ray's start and
    its trials start in workers that imported Keras already. Per module, so a module whose searches need another
    backend or verbosity is never handed this one."""
    import nas

    with nas.local_ray() as info:
        yield info
