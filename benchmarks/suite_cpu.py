"""Where the test suite's CPU goes: run pytest and sample every process it starts.

    python benchmarks/suite_cpu.py                       # the whole suite, as the README's command runs it
    python benchmarks/suite_cpu.py -- tests/test_api.py  # any pytest arguments after --

The suite is CPU-bound on the 2-core machine CI uses (its xdist workers keep both cores busy), so its wall
time follows the CPU-seconds its processes spend. This script starts pytest with a marker of its own in the
environment (``MARK``), which every process of the run inherits (pytest and its xdist workers, CLI drivers, Ray's
daemons and workers, subprocesses), reads /proc once a second for every process carrying it and keeps each one's
last CPU time (user + system). It prints the total, the CPU per kind of process (Ray trial workers, the xdist
workers' own in-process work, CLI drivers, ``python -c`` subprocesses, Ray's daemons) and per test that started
them (from ``PYTEST_CURRENT_TEST`` in their environment; a kept Ray's workers count for the test that started
that Ray), how many Ray runtimes started and how many processes loaded TensorFlow. A shared machine's speed drifts
by tens of percent within a day (measured here: a fresh ``import keras`` took 4.7 CPU-s one morning, 7.2 that
afternoon), so it also measures that import before the run (median of 3) and states the run's CPU and wall time
in those units: figures from different hours or machines compare in them. Processes that live under a
second may be missed; Linux only (/proc). No library samples a process tree with its environment, so this is
written here.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
#: the environment variable this script's pytest run and everything it starts carry (its value: this run's)
MARK = "NAS_SUITE_CPU"


def _environ(pid: str) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return dict(e.split("=", 1) for e in raw.split("\0") if "=" in e)


class Sampler(threading.Thread):
    """Every process whose environment has ``MARK=token``: command, test, kind and CPU seconds."""

    def __init__(self, token: str, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.token = token
        self.interval = interval
        self.procs: dict[tuple[str, int], dict[str, Any]] = {}  # (pid, start time) -> what was seen
        self.skip: set[tuple[str, int]] = set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.interval)
        self.sample()

    def sample(self) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            comm, rest = stat.split("(", 1)[1].rsplit(")", 1)
            fields = rest.split()
            key = (pid, int(fields[19]))
            if key in self.skip:
                continue
            seen = self.procs.get(key)
            if seen is None:
                env = _environ(pid)
                if env is None or env.get(MARK) != self.token:
                    self.skip.add(key)
                    continue
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                seen = self.procs[key] = {"cmd": cmd.strip(), "test": env.get("PYTEST_CURRENT_TEST", ""),
                                          "tf": False, "cpu": 0.0, "comm": comm}
            seen["comm"] = comm  # Ray renames its workers (ray::IDLE, ray::ImplicitFunc.train)
            seen["cpu"] = (int(fields[11]) + int(fields[12])) / TICK
            if not seen["tf"] and seen["cpu"] > 1.5:
                with contextlib.suppress(OSError):  # the process has just ended
                    seen["tf"] = "libtensorflow" in Path(f"/proc/{pid}/maps").read_text()


def keras_import_cpu(runs: int = 3) -> float:
    """Median CPU-seconds (user + system) of a fresh ``python -c "import keras"``: the machine's speed now."""
    import resource
    import statistics

    times = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", "import keras"], check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(times)


def kind(p: dict[str, Any]) -> str:
    cmd, comm = p["cmd"], p["comm"]
    if comm.startswith("ray::") or "default_worker.py" in cmd:
        return f"Ray worker {comm}"
    if (" -u -c " in cmd[:80] or "-m pytest" in cmd) and not p["test"]:
        return "pytest and its xdist workers (in-process tests)"
    if "-m nas.cli" in cmd or cmd.split(" ", 1)[0].endswith("/nas"):
        return "CLI driver (python -m nas.cli)"
    if " -c " in cmd[:80]:
        return "python -c subprocess"
    for daemon in ("gcs_server", "raylet", "dashboard.py", "log_monitor.py", "monitor.py", "slurmctld", "slurmd"):
        if daemon in cmd:
            return daemon
    return comm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=25, help="tests listed by the CPU of the processes they started")
    ap.add_argument("pytest_args", nargs="*", help="after --: pytest's arguments (default: the whole suite)")
    args = ap.parse_args(argv)
    probe = keras_import_cpu()
    token = f"{os.getpid()}-{time.time():.0f}"
    sampler = Sampler(token)
    sampler.start()
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_args],
                          cwd=ROOT, env={**os.environ, MARK: token})
    wall = time.time() - started
    sampler.done.set()
    sampler.join()
    procs = list(sampler.procs.values())
    total = sum(p["cpu"] for p in procs)
    print(f"\npytest exited {proc.returncode} after {wall:.0f} s; {total:.0f} CPU-seconds in {len(procs)} processes "
          f"({total / wall:.2f} cores busy on average), {sum(p['tf'] for p in procs)} of which loaded TensorFlow; "
          f"{sum('gcs_server' in p['cmd'] for p in procs)} Ray runtimes started")
    print(f"machine speed: a fresh `import keras` {probe:.2f} CPU-s (median of 3, before the run); in those units "
          f"the run took {total / probe:.0f} CPU and {wall / probe:.0f} wall")
    by_kind: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for p in procs:
        by_kind[kind(p)][0] += p["cpu"]
        by_kind[kind(p)][1] += 1
    print("\nCPU-s  processes  kind")
    for k, (cpu, n) in sorted(by_kind.items(), key=lambda kv: -kv[1][0]):
        if cpu >= 1:
            print(f"{cpu:6.0f} {n:9d}  {k}")
    by_test: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0, 0])
    for p in procs:
        test = p["test"].rsplit(" (", 1)[0] if p["test"] else f"({kind(p)})"
        by_test[test][0] += p["cpu"]
        by_test[test][1] += 1
        by_test[test][2] += p["tf"]
    print(f"\nCPU-s  processes  TensorFlow  test that started them (top {args.top})")
    for test, (cpu, n, tf) in sorted(by_test.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{cpu:6.0f} {n:9d} {tf:11d}  {test}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
