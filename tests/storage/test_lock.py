"""RunLock (nas.storage.lock): one driver per run, held by the kernel, so a killed driver leaves no stale lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nas.errors import RunError
from nas.storage.lock import RunLock, driver_state, owning

HOLD = ("import sys, time\nfrom pathlib import Path\nfrom nas.storage.lock import RunLock\n"
        "RunLock(Path(sys.argv[1])).acquire()\nprint('held', flush=True)\ntime.sleep(60)\n")


def _holder(root: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_driver_is_refused_naming_the_first_and_a_kill_frees_the_run(tmp_path: Path) -> None:
    root = tmp_path / "run"
    proc = _holder(root)
    try:
        state = driver_state(root)
        assert state["live"] and state["pid"] == proc.pid
        with pytest.raises(RunError, match=rf"run 'run' is in use by process {proc.pid} on .* since "):
            RunLock(root).acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert not driver_state(root)["live"]  # the kernel let go with the process: no stale lock
    lock = RunLock(root).acquire()
    assert driver_state(root)["pid"] == os.getpid()
    lock.release("finished")
    assert driver_state(root)["outcome"] == "finished" and not driver_state(root)["live"]


def test_owning_puts_back_the_previous_drivers_record_when_refused_for_bad_input(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with owning(root, "run", print) as lock:
        lock.outcome = "finished"
    first = json.loads((root / "driver.json").read_text())
    with pytest.raises(RunError, match="bad input"):
        with owning(root, "run", print):
            raise RunError("bad input")
    assert json.loads((root / "driver.json").read_text()) == first
    with pytest.raises(KeyboardInterrupt):
        with owning(root, "run", print):
            raise KeyboardInterrupt
    assert driver_state(root)["outcome"] == "interrupted"


def test_a_new_run_that_fails_before_writing_leaves_no_trace(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    with pytest.raises(ValueError):
        with owning(root, "fresh", print, fresh=lambda: True):
            raise ValueError("no data")
    assert not root.exists()
