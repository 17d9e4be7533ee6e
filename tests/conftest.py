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
#: Ray's workers, where trials train, at the priority of everything else the suite runs: Ray starts them at nice 15
#: (its raylet's ``worker_niceness``; measured with ray 2.60), so while other xdist workers train models or import
#: Keras in processes at nice 0, a trial gets a few percent of a core. Measured 2026-12-07 on the 2-core machine:
#: test_failed_trials_are_recorded_and_consecutive_failures_stop took 23 s alone, 200 s beside three busy-looping
#: processes (it ended when they did), 187 s inside the whole suite at -n 3. Every Ray a test starts on this
#: machine inherits the variable (a cluster started over ssh keeps Ray's default).
os.environ.setdefault("RAY_worker_niceness", "0")
#: jax's XLA compiles each model's train step with its optimisation passes off: the tests train a few batches of
#: each model, where compiling is most of the cost (measured 2026-12-08 on the 2-core machine, the conformance of
#: three spaces under jax with 2 configurations each: cnn 28.1 -> 13.0 CPU-s, enas_cnn 14.2 -> 7.9, lstm 13.2 ->
#: 8.3). What is tested is the same: Keras's jax code, compiled by XLA; only the machine code is slower. Every
#: process of the suite inherits it (nas adds its own single-thread flag for a jax trial to it).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")


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


#: a test starting a Ray (or reading a shared run built by one) weighs this much more than a unit test when the
#: modules are ordered for the xdist workers (see below): a rough ratio of their typical durations
_SLOW_WEIGHT = 60


def _xdist_worker() -> str | None:
    """The name of this pytest-xdist worker (gw0, gw1, ...), or None in the controller or a run without -n."""
    return os.environ.get("PYTEST_XDIST_WORKER")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """``-m "not slow"`` is the fast part of the suite for development: every test that starts a Ray (marked
    ``ray``, or using a shared run built by one) is slow, and so is every test marked ``slow`` explicitly.

    Under pytest-xdist (``-n 3 --dist loadfile``, the suite's default: pyproject.toml) each module runs whole on
    one worker (its module-scoped Ray is started once), and the modules are handed out in this order: the
    heaviest first (weight: ``_SLOW_WEIGHT`` per slow test, 1 per other test), so that no long module is left
    to start when the other workers are already done (longest-processing-time-first scheduling), those on the kept
    Ray (``kept_ray``) before the others."""
    shared_runs = {"small_run", "cnn_run"}
    for item in items:
        if item.get_closest_marker("ray") is not None or shared_runs & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if "kept_ray" in getattr(item, "fixturenames", ()):
            _KEPT_RAY_MODULES.add(item.nodeid.split("::")[0])
    if _xdist_worker() is None:
        return
    weight: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        weight[module] = weight.get(module, 0) + (_SLOW_WEIGHT if item.get_closest_marker("slow") else 1)
    # the modules that search on the kept Ray first (they are most of the heaviest), so that a worker goes from one
    # to the next on the same Ray; within each group the heaviest first. Stable: a module's own order is kept
    items.sort(key=lambda item: (item.nodeid.split("::")[0] not in _KEPT_RAY_MODULES,
                                 -weight[item.nodeid.split("::")[0]]))


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

    # what a test stopped may take a moment to exit, longer on a machine loaded by the xdist workers. A killed Ray's
    # agents (ray::DashboardAgent, ray::RuntimeEnvAgent) never exit by themselves (measured: still there 60 s
    # after the driver's SIGKILL): whoever killed the Ray must stop them, and they are reported here if not
    deadline = time.time() + 60
    while time.time() < deadline and (_ray_pids() - before):
        time.sleep(0.5)
    left = _ray_pids() - before
    described = {pid: _describe(pid) for pid in sorted(left)}  # which test's Ray it was, before it goes
    for pid in left:  # clean up anyway, then report
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    assert not left, f"Ray processes left running after the tests: {described}"


def _describe(pid: int) -> str:
    """A leftover process as far as /proc tells whose it was: its command line, parent, and the environment
    entries that name a run, a Ray session or a Slurm job."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        env = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
        ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    except OSError:
        return "(gone)"
    keys = ("NAS_RUN", "RAY_", "SLURM_JOB_ID", "TMPDIR", "HOME", "PYTEST_XDIST_WORKER", "PYTEST_CURRENT_TEST")
    named = [e[:160] for e in env if e.startswith(keys)]
    return f"{cmd[:200]} (ppid {ppid}; {'; '.join(named)})"


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


_TEMP_BEFORE = "nas_temp_before"


def pytest_sessionstart(session: Any) -> None:
    if _xdist_worker() is None:  # the controller (or a run without -n): the whole run's start
        setattr(session.config, _TEMP_BEFORE, _our_temp_entries())


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    """No test leaves a nas temp directory behind, nor a run lock held once it ended (a driver still alive).
    Checked once all tests ended: in the controller under pytest-xdist (a worker cannot tell the other's
    entries in the shared temp directory from its own leftovers; the workers' base temp directories are under
    the controller's), at the end of a run without -n; a leftover fails the run."""
    if _xdist_worker() is not None or not hasattr(session.config, _TEMP_BEFORE):
        return
    import time

    base = session.config._tmp_path_factory.getbasetemp()  # what the tmp_path_factory fixture hands out
    before = getattr(session.config, _TEMP_BEFORE)
    deadline = time.time() + 20  # a driver a test killed may take a moment to be reaped
    while time.time() < deadline and (_held_locks(base) or _our_temp_entries() - before):
        time.sleep(0.5)
    problems = []
    held = _held_locks(base)
    if held:
        problems.append(f"run locks still held after the tests: {[str(p) for p in held]}")
    left = _our_temp_entries() - before
    if left:
        problems.append(f"temp directories left behind by the tests: {sorted(left)}")
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for line in problems:
            if reporter:
                reporter.ensure_newline()
                reporter.write_line(f"FAILED (session end): {line}", red=True)
            else:
                print(f"FAILED (session end): {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test starts there)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def apt_install(packages: tuple[str, ...], installed: Any, what: str, lock_dir: Path) -> str | None:
    """Debian ``packages`` installed with apt-get (as root) unless ``installed()`` says they are; None, or why
    they cannot be. Two xdist workers may both install at once (Slurm's module and the on-prem launcher's):
    a file lock in ``lock_dir`` (shared by the workers) takes them in turn, and apt's own lock is waited for
    (another apt on the machine) instead of failing at once."""
    if installed():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{what} is not installed, and installing it (apt-get install {' '.join(packages)}) needs root and apt-get"
    from filelock import FileLock

    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", "DPkg::Lock::Timeout=300"]
    install = ["apt-get", *wait, "install", "-y", "-q", "--no-install-recommends", *packages]
    with FileLock(str(lock_dir / "apt-get.lock")):
        if installed():  # another worker installed them meanwhile
            return None
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:  # a machine whose package lists are missing or stale
            subprocess.run(["apt-get", *wait, "update", "-q"], capture_output=True, text=True, env=env, timeout=900)
            proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0 or not installed():
        return f"apt-get could not install {' '.join(packages)}: {(proc.stderr or proc.stdout).strip()[-300:]}"
    return None


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
        capsys.readouterr()
        code = self.main_here(monkeypatch, *args)
        out, err = capsys.readouterr()
        return code, out, err

    def main_here(self, monkeypatch: Any, *args: str) -> int:
        """``nas ARGS`` through the CLI's entry point in this process, with this CLI's environment and working
        directory (set through ``monkeypatch``, which undoes them); its exit code."""
        from nas.cli import main

        for k, v in self.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.chdir(self.cwd)
        return main(list(args))

    def status(self, name: str) -> dict[str, Any]:
        return json.loads(self("status", name, "--json").stdout)


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path / "runs", tmp_path)


def _built_once(tmp_path_factory: Any, name: str, build: Any) -> Path:
    """A folder ``build(folder)`` filled once for the whole run: under pytest-xdist by the first worker that
    needs it (the others wait on a file lock, then read it: the workers' base temp directories share a parent),
    without -n in this session's temp directory. What is built there is only read by the tests."""
    if _xdist_worker() is None:
        root = tmp_path_factory.mktemp(name)
        build(root)
        return root
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent / name
    with FileLock(f"{root}.lock"):
        if not (root / ".built").exists():
            shutil.rmtree(root, ignore_errors=True)  # what a worker that failed building it left
            root.mkdir()
            build(root)
            (root / ".built").touch()
    return root


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: Any) -> tuple[CLI, str, subprocess.CompletedProcess]:
    """One small real search shared by the output tests (status, runs, plot, TensorBoard, quiet output)."""

    def build(root: Path) -> None:
        cli = CLI(root / "runs", root, extra_env=ONEDNN_ON)
        proc = cli("search", "--trials", "3", "--epochs", "2", "--name", "small", "--seed", "1",
                   "--max-concurrent", "2")
        (root / "search.json").write_text(json.dumps(
            {"args": proc.args, "returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}))

    root = _built_once(tmp_path_factory, "small-run", build)
    proc = subprocess.CompletedProcess(**json.loads((root / "search.json").read_text()))
    return CLI(root / "runs", root, extra_env=ONEDNN_ON), "small", proc


def copy_run(src: CLI, name: str, dest: CLI, new_name: str | None = None) -> str:
    """A copy of ``src``'s run ``name`` in ``dest``'s storage (renamed ``new_name``), for a test that changes a
    shared run or adds runs beside it: the shared run itself stays as it was built."""
    new_name = new_name or name
    shutil.copytree(src.storage / name, dest.storage / new_name)
    if new_name != name:
        spec = dest.storage / new_name / "spec.json"
        spec.write_text(json.dumps({**json.loads(spec.read_text()), "name": new_name}, indent=1))
    return new_name


def _search_on_kept_ray(holder: Any, root: Path, *args: str) -> None:
    """``nas search ARGS`` with its storage under ``root``, through the CLI's entry point in this process, on the
    kept Ray (for a shared run: the modules that use one keep the Ray)."""
    holder.get()
    with pytest.MonkeyPatch.context() as mp:
        code = CLI(root / "runs", root).main_here(mp, "search", *args)
    assert code == 0, f"the shared search {' '.join(args)} exited {code}"
    if os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[0] not in _KEPT_RAY_MODULES:
        holder.stop()  # built for a module that does not keep the Ray


@pytest.fixture(scope="session")
def cnn_run(tmp_path_factory: Any, _kept_ray_holder: Any) -> tuple[CLI, str]:
    """One real cnn search (2 random trials x 1 epoch on digits, one at a time) shared by the end-to-end test of
    the cnn space (tests/driver/test_plugins_e2e.py) and its export test (tests/views/test_export.py), which only
    read it."""
    root = _built_once(tmp_path_factory, "cnn-run", lambda root: _search_on_kept_ray(
        _kept_ray_holder, root, "--space", "cnn", "--strategy", "random", "--trials", "2", "--epochs", "1",
        "--max-concurrent", "1", "--name", "cnn"))
    return CLI(root / "runs", root), "cnn"


#: a seeded --deterministic search, 2 trials at once (evolution: what it proposes depends on what it was told)
DETERMINISTIC = ("--strategy", "evolution", "--strategy-option", "population=3", "--strategy-option", "sample=2",
                 "--trials", "6", "--epochs", "2", "--max-concurrent", "2", "--deterministic", "--seed", "5")
#: what two --deterministic runs must record alike: every trial's id, status, configuration and epochs' metrics
_SAME = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "params")


def deterministic_records(run: Path) -> list[tuple]:
    """A run's trials as two runs of the same --deterministic command must record them (``_SAME``), by id."""
    trials = sorted((json.loads(f.read_text()) for f in (run / "trials").glob("*.json")),
                    key=lambda t: int(t["trial_id"]))
    return [(t["trial_id"], t["status"], t["config"], [{k: h[k] for k in _SAME} for h in t["history"]])
            for t in trials]


@pytest.fixture(scope="session")
def deterministic_run(tmp_path_factory: Any, _kept_ray_holder: Any) -> Path:
    """The uninterrupted ``nas search DETERMINISTIC`` run, searched once for the run: the reference of the test
    that runs the same command again (tests/driver/test_plugins_e2e.py) and of the one that kills it and resumes
    it (tests/driver/test_resume.py)."""
    root = _built_once(tmp_path_factory, "deterministic-run",
                       lambda root: _search_on_kept_ray(_kept_ray_holder, root, *DETERMINISTIC, "--name", "det"))
    return root / "runs" / "det"


#: the modules (paths) that use ``kept_ray``
_KEPT_RAY_MODULES: set[str] = set()


class _KeptRay:
    """The local Ray (``nas.local_ray``) this process keeps for the modules that ask for it: started by the first
    of them, handed on to the next, stopped before a module that does not ask for it (whose searches start their
    own Ray, or need another backend or verbosity) and at the session's end. Measured on the 2-core machine: a
    Ray's start and its two workers' TensorFlow import cost ~15 CPU-s, and the suite is CPU-bound."""

    def __init__(self) -> None:
        self.block: Any = None
        self.info: dict[str, Any] = {}

    def get(self) -> dict[str, Any]:
        if self.block is not None:
            # a module hands it on only as it found it: every CPU free (no actor or task of a test left on it)
            # and every node alive; otherwise the next module gets a new one
            import time

            deadline = time.time() + 5  # what the last search released may take a moment to show as free
            while not self._as_found() and time.time() < deadline:
                time.sleep(0.2)
            if not self._as_found():
                self.stop()
        if self.block is None:
            import nas

            self.block = nas.local_ray()
            self.info = self.block.__enter__()
        return self.info

    @staticmethod
    def _as_found() -> bool:
        import ray

        have, free = ray.cluster_resources(), ray.available_resources()
        return have.get("CPU", 0) == free.get("CPU", 0) and all(n["Alive"] for n in ray.nodes())

    def stop(self) -> None:
        if self.block is not None:
            block, self.block = self.block, None
            block.__exit__(None, None, None)


@pytest.fixture(scope="session")
def _kept_ray_holder() -> Any:
    holder = _KeptRay()
    try:
        yield holder
    finally:
        holder.stop()


@pytest.fixture(scope="module", autouse=True)
def _kept_ray_only_where_asked(request: Any, _kept_ray_holder: Any) -> None:
    if request.node.nodeid.split("::")[0] not in _KEPT_RAY_MODULES:
        _kept_ray_holder.stop()


@pytest.fixture(scope="module")
def kept_ray(_kept_ray_holder: Any) -> Any:
    """One local Ray for in-process searches (``nas.local_ray``): each search skips Ray's start (its trial
    actors still start workers of their own). Kept from one module that asks for it to the next (see
    ``_KeptRay``); a module whose searches need another backend or verbosity does not ask for it."""
    return _kept_ray_holder.get()
