"""Engine overhead: `nas search` with 2 concurrent trials vs the same configurations trained in a plain loop.

20 digits trials run through the real CLI (local Ray, 2 concurrent trials, workers reused). Then the same 20
configurations are trained one after another in a plain Keras loop in this process (same space, same data,
same epochs, same batch sizes), and that time is halved: perfect 2-way parallelism with zero overhead.

    ratio = nas wall time after start-up / (plain loop time / 2)        target <= 1.10

Halving assumes the machine runs two trials at once twice as fast as one, so the same configurations are also
trained by two plain loops at once (two processes, one TensorFlow thread each, as nas gives each trial, taking
the next configuration not yet taken): nas after start-up / that is the engine's own overhead on this machine.

"After start-up" starts when the first trial starts building its model (Ray started, workers have imported
TensorFlow); the figure including start-up is printed too.

    python benchmarks/engine_overhead.py [--trials 20] [--epochs 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _cli import at_once, claim, search
from _cli import records as run_records
from _cli import status as run_status


def train(space_name: str, configs: list, epochs: int, seed: int, claims: str | None = None) -> tuple[float, float]:
    """Train ``configs`` one after another in this process (with ``claims``: only those this process claims
    first); when training started (after a warm-up build) and ended."""
    import keras

    from nas.plugins import params as P
    from nas.plugins.data import load_data
    from nas.plugins.registry import create_space
    from nas.plugins.task import make_task
    from nas.trials.worker import trial_seed

    data = load_data("digits", seed=seed)
    space = create_space(space_name, task=make_task(data, "classification"))
    hp_space = space.hyperparameters()
    space.build(P.to_hp(hp_space, configs[0]))  # warm-up: TensorFlow initialised, as the workers were
    keras.backend.clear_session(free_memory=False)
    t1 = time.time()
    for i, values in enumerate(configs):
        if claims and not claim(claims, i):
            continue
        keras.backend.clear_session(free_memory=False)
        keras.utils.set_random_seed(trial_seed(seed, str(i)))
        hp = P.to_hp(hp_space, values)
        model = space.build(hp)
        space.fit(hp, model, data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                  epochs=epochs, verbose=0)
    return t1, time.time()


def two_at_once(args: argparse.Namespace, configs: list, work: Path) -> float:
    """Two plain loops in two processes, one thread each, sharing ``configs``: seconds from the first one's first
    training step to the last one's end (as nas's figure after start-up is counted)."""
    (work / "claims").mkdir()
    (work / "configs.json").write_text(json.dumps(configs))
    cmd = [sys.executable, __file__, "--space", args.space, "--epochs", str(args.epochs), "--seed", str(args.seed),
           "--loop", str(work)]
    spans = at_once(cmd, 2)
    return max(end for _, end in spans) - min(start for start, _ in spans)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--space", default="mlp")
    ap.add_argument("--loop", help=argparse.SUPPRESS)  # internal: one of the two plain loops, in this folder
    args = ap.parse_args()
    if args.loop:
        configs = json.loads((Path(args.loop) / "configs.json").read_text())
        print(json.dumps(train(args.space, configs, args.epochs, args.seed, str(Path(args.loop) / "claims"))))
        return

    storage = Path(tempfile.mkdtemp(prefix="nas-bench-"))
    name = "overhead"
    nas_total, _ = search(storage, name, "--space", args.space, "--strategy", "random", "--trials", str(args.trials),
                          "--epochs", str(args.epochs), "--seed", str(args.seed), "--max-concurrent", "2")
    status = run_status(storage, name)
    records = run_records(storage, name)
    first_fit = min(r["fit_started"] for r in records)
    last_end = max(r["finished"] for r in records)
    nas_after_startup = last_end - first_fit
    configs = [t["config"] for t in sorted(status["trials"], key=lambda t: int(t["trial_id"]))]

    # the same configurations, one after another, in one process; then two such loops at once
    start, end = train(args.space, configs, args.epochs, args.seed)
    plain = end - start
    both = two_at_once(args, configs, storage)
    ideal = plain / 2

    print(f"trials: {len(configs)} x {args.epochs} epochs of {args.space} on digits, 2 concurrent")
    print(f"nas search, whole command:        {nas_total:7.1f} s")
    print(f"nas search, after start-up:       {nas_after_startup:7.1f} s")
    print(f"plain Keras loop, sequential:     {plain:7.1f} s  (halved: {ideal:.1f} s)")
    print(f"ratio after start-up:             {nas_after_startup / ideal:7.2f}   (target <= 1.10)")
    print(f"ratio including start-up:         {nas_total / ideal:7.2f}")
    print(f"two plain loops at once:          {both:7.1f} s  ({both / plain:.2f}x the sequential loop; "
          f"perfect 2-way parallelism: 0.50x)")
    print(f"nas after start-up / that:        {nas_after_startup / both:7.2f}   (the engine's own overhead here)")


if __name__ == "__main__":
    main()
