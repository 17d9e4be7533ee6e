"""What `--deterministic` costs: the same seeded search with and without it, K trials at once, and whether it
was the same search.

In deterministic mode the strategy is told results in trial order and proposal n waits for trial n-2K to end
(nas.driver.searcher.StrategySearcher), so a slot can stand idle behind a slow trial. The strategy is evolution
with a population of 5: from the sixth proposal on, what it proposes depends on what it was told, so two
default runs may differ where two deterministic ones must not. Each row is one whole
`nas search` command (a fresh process, its local Ray); the two modes alternate, run by run, so that a drift of
the machine's speed falls on both. K above the CPU count uses logical resources (`--num-cpus K`, one CPU per
trial): the K trials then share the cores. Two deterministic runs of each K are compared trial by trial
(configuration and per-epoch metrics), and so are the two default ones.

    python benchmarks/deterministic.py                          # cnn on digits, 20 trials x 3 epochs, K = 2, 4
    python benchmarks/deterministic.py --trials 6 --epochs 1 --space mlp --concurrency 2   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from _cli import records, search

#: the per-epoch figures that must agree between two runs of the same search (the rest are timings)
SAME = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "params")


def trials(storage: Path, name: str) -> list[tuple[Any, ...]]:
    """A run's trials as (id, configuration, per-epoch figures), in trial order."""
    return [(r["trial_id"], r["config"], [{k: h.get(k) for k in SAME} for h in r.get("history", [])])
            for r in sorted(records(storage, name), key=lambda r: int(r["trial_id"]))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="cnn")
    ap.add_argument("--strategy", default="evolution")
    ap.add_argument("--strategy-option", default="--strategy-option population=5 --strategy-option sample=2",
                    help="flags passed as they are")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--concurrency", default="2,4", help="comma-separated K values")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each mode per K (alternating)")
    args = ap.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="nas-deterministic-"))
    print(f"{args.space} x {args.strategy} on digits, {args.trials} trials x {args.epochs} epochs; "
          f"{args.repeat} runs of each mode per K, alternating")
    print("| K | default wall s (median) | --deterministic wall s (median) | ratio | same search: default | "
          "same search: --deterministic |")
    print("|---:|---:|---:|---:|---|---|")
    for k in [int(v) for v in args.concurrency.split(",")]:
        walls: dict[bool, list[float]] = {False: [], True: []}
        seen: dict[bool, list[list[tuple[Any, ...]]]] = {False: [], True: []}
        for r in range(args.repeat):
            for det in (False, True):
                name = f"k{k}-{'det' if det else 'free'}-{r}"
                flags = ["--space", args.space, "--strategy", args.strategy, *args.strategy_option.split(),
                         "--trials", str(args.trials),
                         "--epochs", str(args.epochs), "--seed", "0", "--max-concurrent", str(k),
                         "--num-cpus", str(k)] + (["--deterministic"] if det else [])
                wall, _ = search(storage, name, *flags)
                walls[det].append(wall)
                seen[det].append(trials(storage, name))
        free, det = statistics.median(walls[False]), statistics.median(walls[True])
        same = {m: all(s == seen[m][0] for s in seen[m][1:]) for m in (False, True)}
        print(f"| {k} | {free:.1f} | {det:.1f} | {det / free:.2f}x | {'yes' if same[False] else 'no'} | "
              f"{'yes' if same[True] else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
