"""Early stopping: cnn on digits, the same seeded 30 trials x up to 10 epochs, with and without ASHA.

Prints each run's wall time and the best validation accuracy it reached.

    python benchmarks/early_stopping.py [--trials 30] [--epochs 10] [--space cnn]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _cli import search
from _cli import status as run_status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--space", default="cnn")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="nas-asha-"))
    rows = []
    for scheduler in ("none", "asha"):
        name = f"{args.space}-{scheduler}"
        wall, _ = search(storage, name, "--space", args.space, "--strategy", "random", "--trials", str(args.trials),
                         "--epochs", str(args.epochs), "--scheduler", scheduler, "--seed", str(args.seed))
        status = run_status(storage, name)
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
