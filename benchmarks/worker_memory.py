"""Worker memory over a long search: RSS of reused workers over 300 tiny trials.

Keras grows ~6 MB per model built in a long-lived process whatever is freed (../shared/STACK.md). `nas search`
reuses workers (TensorFlow imported once per worker); this runs a seeded search through the real CLI and prints
each worker's RSS growth per trial, from the `worker_rss_mb` every trial reports.

Recycling a worker by refusing reuse (`reset_config` returning False) does not work with Ray 2.60: Tune errors
the trial ("Trainable runner reuse requires reset_config() to be implemented and return True") and, measured
here, the search then stalled. So no recycling option is offered yet.

    python benchmarks/worker_memory.py [--trials 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def run(storage: Path, name: str, trials: int) -> dict:
    env = dict(os.environ, NAS_STORAGE=str(storage))
    cmd = [sys.executable, "-m", "nas.cli", "search", "--space", "mlp", "--strategy", "random", "--trials",
           str(trials), "--epochs", "1", "--max-concurrent", "2", "--seed", "0", "--name", name]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"search failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    recs = [json.loads(p.read_text()) for p in (storage / name / "trials").glob("*.json")]
    by_pid: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for r in recs:
        if r.get("pid") and r.get("worker_rss_mb"):
            by_pid[r["pid"]].append((r["finished"], r["worker_rss_mb"]))
    workers = []
    for pid, rows in by_pid.items():
        rows.sort()
        workers.append({"pid": pid, "trials": len(rows), "first_mb": rows[0][1], "last_mb": rows[-1][1],
                        "max_mb": max(r[1] for r in rows)})
    return {"wall_s": wall, "workers": sorted(workers, key=lambda w: -w["trials"]),
            "completed": sum(r["status"] == "completed" for r in recs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=300)
    args = ap.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="nas-mem-"))
    res = run(storage, "reused-workers", args.trials)
    peak = max(w["max_mb"] for w in res["workers"])
    print(f"{res['completed']} trials in {res['wall_s']:.0f} s, {len(res['workers'])} worker processes, "
          f"peak worker RSS {peak:.0f} MB")
    for w in res["workers"][:6]:
        growth = (w["last_mb"] - w["first_mb"]) / max(1, w["trials"] - 1)
        print(f"  worker {w['pid']}: {w['trials']} trials, RSS {w['first_mb']:.0f} -> {w['last_mb']:.0f} MB "
              f"(max {w['max_mb']:.0f}; {growth:.1f} MB per trial)")


if __name__ == "__main__":
    main()
