"""What the benchmarks share: run `nas` through its real command line against one storage directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def search(storage: Path, name: str, *flags: str) -> tuple[float, subprocess.CompletedProcess]:
    """`nas search --name NAME FLAGS...`: its wall time and output; a failed search ends the benchmark."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "search", "--name", name, *flags],
                          env=dict(os.environ, NAS_STORAGE=str(storage)), capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"nas search {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc


def status(storage: Path, name: str) -> dict[str, Any]:
    """`nas status NAME --json`."""
    out = subprocess.run([sys.executable, "-m", "nas.cli", "status", name, "--json"], capture_output=True,
                         text=True, check=True, env=dict(os.environ, NAS_STORAGE=str(storage))).stdout
    return json.loads(out)


def records(storage: Path, name: str) -> list[dict[str, Any]]:
    """Every trial record of a run, as written (worker pid and RSS, timestamps)."""
    return [json.loads(p.read_text()) for p in (storage / name / "trials").glob("*.json")]
