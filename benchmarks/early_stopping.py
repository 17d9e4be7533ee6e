"""Early stopping: cnn on digits, the same seeded 30 trials x up to 10 epochs, with and without ASHA.

Prints each run's wall time and the best validation accuracy it reached.

    python benchmarks/early_stopping.py [--trials 30] [--epochs 10] [--space cnn]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--space", default="cnn")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="nas-asha-"))
    env = dict(os.environ, NAS_STORAGE=str(storage))
    rows = []
    for scheduler in ("none", "asha"):
        name = f"{args.space}-{scheduler}"
        cmd = [sys.executable, "-m", "nas.cli", "search", "--space", args.space, "--strategy", "random",
               "--trials", str(args.trials), "--epochs", str(args.epochs), "--scheduler", scheduler,
               "--seed", str(args.seed), "--name", name]
        t0 = time.time()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        if proc.returncode != 0:
            sys.exit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        status = json.loads(subprocess.run([sys.executable, "-m", "nas.cli", "status", name, "--json"], env=env,
                                           capture_output=True, text=True, check=True).stdout)
        epochs = sum(t["metrics"].get("epochs", 0) for t in status["trials"] if t["status"] == "completed")
        best = status["best"]["metrics"]["val_accuracy"] if status["best"] else float("nan")
        rows.append((scheduler, wall, best, epochs))
    print(f"{args.space} on digits, {args.trials} seeded random trials x up to {args.epochs} epochs")
    print(f"{'scheduler':<10} {'wall s':>8} {'best val_accuracy':>18} {'epochs trained':>15}")
    for scheduler, wall, best, epochs in rows:
        print(f"{scheduler:<10} {wall:>8.1f} {best:>18.4f} {epochs:>15}")
    print(f"ASHA: {rows[0][1] / rows[1][1]:.2f}x faster, best accuracy {rows[1][2] - rows[0][2]:+.4f}")


if __name__ == "__main__":
    main()
