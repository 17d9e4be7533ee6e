"""What the benchmarks share: run `nas` through its real command line against one storage directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


# -P: the caller's folder is not put first on the search path, so a benchmark started from inside benchmarks/
# (whose strategies.py would shadow the `strategies` package, in the driver and in its Ray workers) runs the same.
NAS = [sys.executable, "-P", "-m", "nas.cli"]


def search(storage: Path, name: str, *flags: str) -> tuple[float, subprocess.CompletedProcess]:
    """`nas search --name NAME FLAGS...`: its wall time and output; a failed search ends the benchmark."""
    t0 = time.time()
    proc = subprocess.run([*NAS, "search", "--name", name, *flags],
                          env=dict(os.environ, NAS_STORAGE=str(storage)), capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"nas search {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc


def status(storage: Path, name: str) -> dict[str, Any]:
    """`nas status NAME --json`."""
    out = subprocess.run([*NAS, "status", name, "--json"], capture_output=True,
                         text=True, check=True, env=dict(os.environ, NAS_STORAGE=str(storage))).stdout
    return json.loads(out)


def records(storage: Path, name: str) -> list[dict[str, Any]]:
    """Every trial record of a run, as written (worker pid and RSS, timestamps)."""
    return [json.loads(p.read_text()) for p in (storage / name / "trials").glob("*.json")]


def claim(folder: str | Path, index: int) -> bool:
    """True for the one process that claims configuration ``index`` first (an exclusive file in ``folder``): how
    plain loops running at once share a list of configurations without training one twice."""
    try:
        os.close(os.open(os.path.join(folder, str(index)), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def at_once(cmd: list[str], k: int) -> list[dict[str, Any]]:
    """``cmd`` in ``k`` processes at once, one TensorFlow thread each (as nas gives a one-CPU trial); the JSON
    object each prints last. A failed one ends the benchmark."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(k)]
    outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            sys.exit(f"one of {k} plain loops failed:\n{err[-4000:]}")
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
