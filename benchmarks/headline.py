"""The headline command, `nas search --space cnn --strategy rl` (10 trials x 5 epochs on digits, local Ray), with
other strategies and seeds: the best val_accuracy each ends at.

Each row is one whole `nas search` command in a fresh process (its own local Ray), with `--seed S` and
`--strategy-option` as given (``rl[update=reinforce]`` = `--strategy rl --strategy-option update=reinforce`).
Digits' validation split has 360 images: one image is 0.0028 of val_accuracy, so seeds differ by a few images.

    python benchmarks/headline.py                                             # rl, rl[update=reinforce], gp, random
    python benchmarks/headline.py --strategies "rl,gp" --seeds 0,1,2 --trials 30
    python benchmarks/headline.py --strategies rl --space-option version=1    # the cnn space before 2026-12-07
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _cli import search, status


def parse(spec: str) -> tuple[str, list[str]]:
    """``name[k=v,k=v]`` -> the strategy's name and its `--strategy-option k=v` flags."""
    name, _, rest = spec.partition("[")
    flags: list[str] = []
    for kv in filter(None, rest.rstrip("]").split(",")):
        flags += ["--strategy-option", kv]
    return name, flags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategies", default="rl,rl[update=reinforce],gp,random")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--space", default="cnn")
    ap.add_argument("--space-option", action="append", default=[], metavar="KEY=VALUE",
                    help="passed on to every search (e.g. version=1: the cnn space as it was before 2026-12-07)")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    specs = [s.strip() for s in a.strategies.split(";" if ";" in a.strategies else ",") if s.strip()]
    # "rl[update=ppo,select=0]" holds a comma: rejoin the pieces of a bracket split by the comma above
    joined: list[str] = []
    for s in specs:
        if joined and joined[-1].count("[") > joined[-1].count("]"):
            joined[-1] += "," + s
        else:
            joined.append(s)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nas-headline-") as tmp:
        storage = Path(tmp)
        for spec in joined:
            name, flags = parse(spec)
            best, walls = [], []
            for seed in seeds:
                run = f"{name}-{len(rows)}-{seed}"
                space_flags = [f for kv in a.space_option for f in ("--space-option", kv)]
                wall, _ = search(storage, run, "--space", a.space, *space_flags, "--strategy", name, *flags, "--trials",
                                 str(a.trials), "--epochs", str(a.epochs), "--seed", str(seed))
                b = status(storage, run)["best"]["metrics"]["val_accuracy"]
                best.append(b)
                walls.append(wall)
                print(f"  {spec} seed {seed}: best val_accuracy {b:.4f} in {wall:.0f} s", flush=True)
            rows.append((spec, best, walls))
    shown = a.space + "".join(f" --space-option {kv}" for kv in a.space_option)
    print(f"\n{shown}, {a.trials} trials x {a.epochs} epochs on digits, seeds {a.seeds}: best val_accuracy\n")
    print("| strategy | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | wall s (mean) |")
    print("|---|" + "---:|" * (len(seeds) + 2))
    for spec, best, walls in rows:
        print(f"| `{spec}` | " + " | ".join(f"{b:.4f}" for b in best)
              + f" | {statistics.mean(best):.4f} | {statistics.mean(walls):.0f} |")


if __name__ == "__main__":
    main()
