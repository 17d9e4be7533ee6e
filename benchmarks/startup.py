"""Start-up of `nas search`: from the command's start to the moment its first trial starts training.

Runs a small search (2 trials x 1 epoch, 2 at a time, local Ray) RUNS times through the real command line, each
in a fresh process, and prints every run's start-up and whole wall time, then the median, min and max. What the
start-up holds: Python and nas, Ray's start, the data, Keras and the framework in the driver, the space and the
strategy, and a trial worker's own import of the framework. Target (issue 19): <= 8 s on a warm machine.

    python benchmarks/startup.py [--runs 5] [--space cnn] [--data digits]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _cli import records, search


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--space", default="cnn")
    ap.add_argument("--data", default="digits")
    args = ap.parse_args()

    storage = Path(tempfile.mkdtemp(prefix="nas-startup-"))
    startups, walls = [], []
    for i in range(args.runs):
        t0 = time.time()
        wall, _ = search(storage, f"s{i}", "--space", args.space, "--strategy", "random", "--data", args.data,
                         "--trials", "2", "--epochs", "1", "--max-concurrent", "2", "--seed", str(i))
        startup = min(r["fit_started"] for r in records(storage, f"s{i}")) - t0
        startups.append(startup)
        walls.append(wall)
        print(f"run {i + 1}: start-up {startup:5.1f} s, whole command {wall:5.1f} s", flush=True)
    print(f"start-up over {args.runs} runs: median {statistics.median(startups):.1f} s, min {min(startups):.1f} s, "
          f"max {max(startups):.1f} s (target <= 8 s); whole command median {statistics.median(walls):.1f} s")


if __name__ == "__main__":
    main()
