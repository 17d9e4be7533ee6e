"""nas vs KerasTuner vs a plain loop: the same configurations, the same data, the same epochs, on this machine.

The cnn space on digits (an .npz with a fixed, seeded 80/20 split). `nas search --strategy random` picks N
configurations and trains them, K at a time, on its local Ray. The same N configurations are then trained
- by KerasTuner, one at a time in one process: its `Tuner` loop over our `CNNSpace` (a `keras_tuner.HyperModel`),
  with an oracle that hands it nas's configurations in nas's order (KerasTuner's `RandomSearch` would draw other
  ones, and cnn configurations differ in cost by 10x), so both do exactly the same training;
- by nas's KerasTuner-shaped `nas.tuners.RandomSearch`, as a KerasTuner script with its import changed, K at a
  time (its `given` strategy proposing the same configurations in the same order);
- by a plain `model.fit` loop, one after another, in one process;
- by K plain loops at once (K = --concurrent processes, one TensorFlow thread each, as nas gives each trial),
  each taking the next configuration not yet taken: what this machine can do K at a time with no engine at all,
  the ceiling for nas's own figure.
Every figure is a whole command's wall time (imports, Ray start, everything a user waits for), each in a fresh
process, run one after another on an otherwise idle machine. The start-up figure is from the command's start to
the moment its first trial starts training.

    python benchmarks/vs_kerastuner.py                         # 12 configurations x 5 epochs, 2 at a time
    python benchmarks/vs_kerastuner.py --trials 4 --epochs 2   # a quick look
    python benchmarks/vs_kerastuner.py --mnist-sized 12000 --backend jax --gpus-per-trial 0.125 --concurrent 8 \
        --trials 16 --epochs 2 --only kerastuner,facade      # on a GPU: KerasTuner one at a time, the facade 8
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
from typing import Any

from _cli import at_once, records, search

HERE = Path(__file__).resolve().parent

#: the KerasTuner and plain-loop runs, each in a fresh process (argv: mode, data, configs.json, epochs, out dir)
CHILD = r'''
import json, sys, time
t0 = time.time()
mode, data, configs, epochs, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
import numpy as np
import keras, keras_tuner as kt
sys.path.insert(0, sys.argv[6])
sys.path.append(sys.argv[6] + "/benchmarks")  # after the root: benchmarks/strategies.py is no package
from _cli import claim
from nas.plugins import params as P
from nas.plugins.task import Task
from search_spaces.cnn import CNNSpace

with np.load(data) as f:
    x, y, xv, yv = f["x_train"], f["y_train"], f["x_val"], f["y_val"]
space = CNNSpace(Task("classification", x.shape[1:], num_classes=10))
configs = json.loads(open(configs).read())
best, first = 0.0, None
if mode == "kerastuner":
    class Replay(kt.Oracle):
        """KerasTuner's oracle interface, proposing nas's configurations in order."""
        def populate_space(self, trial_id):
            i = int(trial_id)  # KerasTuner numbers trials 0, 1, ... in the order it creates them
            if i >= len(configs):
                return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
            hp = P.to_hp(space.hyperparameters(), configs[i])
            return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": hp.values}

    tuner = kt.Tuner(oracle=Replay(objective=kt.Objective("val_accuracy", "max"), max_trials=len(configs)),
                     hypermodel=space, directory=out, project_name="kt", overwrite=True)
    first = time.time()
    tuner.search(x, y, validation_data=(xv, yv), epochs=epochs, verbose=0)
    best = max(t.metrics.get_best_value("val_accuracy") for t in tuner.oracle.trials.values()
               if t.metrics.exists("val_accuracy"))
    done = sum(1 for t in tuner.oracle.trials.values() if t.metrics.exists("val_accuracy"))
elif mode == "facade":  # a KerasTuner script with `from nas import tuners as kt`: the same configurations
    from nas import tuners as nkt

    k = int(sys.argv[7])
    extra = json.loads(sys.argv[8]) if len(sys.argv) > 8 else {}  # gpus_per_trial, backend
    tuner = nkt.RandomSearch(hypermodel=space, objective="val_accuracy", max_trials=len(configs), directory=out,
                             project_name="facade", overwrite=True, max_concurrent=k, seed=0, progress=False,
                             strategy="given", strategy_options={"configurations": configs}, **extra)
    run = tuner.search(x, y, validation_data=(xv, yv), epochs=epochs)
    done_trials = [t for t in run.trials if t["status"] == "completed"]
    first = min(t["fit_started"] for t in done_trials)
    best = max(t["metrics"]["val_accuracy"] for t in done_trials)
    done = len(done_trials)
else:
    claims = sys.argv[7] if len(sys.argv) > 7 else None  # parallel loops: claim each configuration first
    hp_space = space.hyperparameters()
    done = 0
    for i, values in enumerate(configs):
        if claims and not claim(claims, i):
            continue
        keras.backend.clear_session(free_memory=False)
        hp = P.to_hp(hp_space, values)
        model = space.build(hp)
        first = first or time.time()
        h = space.fit(hp, model, x, y, validation_data=(xv, yv), epochs=epochs, verbose=0)
        best = max(best, max(h.history["val_accuracy"]))
        done += 1
print(json.dumps({"best": best, "trials": done, "startup": first - t0}))
'''


def make_data(path: Path, seed: int, mnist_sized: int = 0) -> None:
    """digits, a fixed seeded 80/20 split, as an .npz (nas reads it with --data, the others with numpy); or, with
    `mnist_sized` N, N 28x28 training images made from the real digits (`enas.mnist_sized`), for a GPU."""
    import numpy as np

    if mnist_sized:
        from enas import mnist_sized as make

        make(path, mnist_sized, seed)
        return
    sys.path.insert(0, str(HERE.parent))
    from nas.plugins.data import load_data

    d = load_data("digits", seed=seed)
    np.savez(path, x_train=d.x_train, y_train=d.y_train, x_val=d.x_val, y_val=d.y_val)


def child(mode: str, data: Path, configs: Path, epochs: int, work: Path, *extra: str) -> tuple[float, dict[str, Any]]:
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(data), str(configs), str(epochs), str(work),
                           str(HERE.parent), *extra], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"{mode} failed:\n{proc.stderr[-4000:]}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


def parallel_plain(k: int, data: Path, configs: Path, epochs: int, work: Path) -> tuple[float, dict[str, Any]]:
    """K plain loops in K processes at once, one TensorFlow thread each, sharing the configurations."""
    claims = work / "claims"
    claims.mkdir()
    t0 = time.time()
    results = at_once([sys.executable, "-c", CHILD, "plain", str(data), str(configs), str(epochs), str(work),
                       str(HERE.parent), str(claims)], k)
    wall = time.time() - t0
    return wall, {"best": max(r["best"] for r in results), "trials": sum(r["trials"] for r in results),
                  "startup": min(r["startup"] for r in results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--space", default="cnn")
    ap.add_argument("--nas-flags", default="", help="extra flags for nas search, e.g. '--backend jax'")
    ap.add_argument("--mnist-sized", type=int, default=0, metavar="N",
                    help="N generated 28x28 training images (from the real digits) instead of digits: GPU-sized")
    ap.add_argument("--backend", help="Keras backend of every run (default: KERAS_BACKEND, else tensorflow)")
    ap.add_argument("--gpus-per-trial", type=float, default=0.0, help="nas's trials (search and facade)")
    ap.add_argument("--only", default="kerastuner,facade,plain,parallel",
                    help="which of the comparisons to run after the nas search (comma-separated)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    nas_flags = args.nas_flags.split()
    facade_extra: dict[str, Any] = {}
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
        nas_flags += ["--backend", args.backend]
        facade_extra["backend"] = args.backend
    if args.gpus_per_trial:
        nas_flags += ["--gpus-per-trial", f"{args.gpus_per_trial:g}"]
        facade_extra["gpus_per_trial"] = args.gpus_per_trial

    work = Path(tempfile.mkdtemp(prefix="nas-vs-kt-"))
    data = work / "digits.npz"
    make_data(data, args.seed, args.mnist_sized)
    t0 = time.time()
    wall, _ = search(work / "runs", "vs", "--space", args.space, "--strategy", "random", "--data", str(data),
                     "--trials", str(args.trials), "--epochs", str(args.epochs), "--seed", str(args.seed),
                     "--max-concurrent", str(args.concurrent), *nas_flags)
    recs = sorted(records(work / "runs", "vs"), key=lambda r: int(r["trial_id"]))
    nas_best = max(r["metrics"].get("val_accuracy", 0.0) for r in recs if r["status"] == "completed")
    nas_startup = min(r["fit_started"] for r in recs) - t0
    configs = work / "configs.json"
    configs.write_text(json.dumps([r["config"] for r in recs]))

    nan = float("nan")
    skipped = (nan, {"best": nan, "startup": nan})
    kt_wall, kt = child("kerastuner", data, configs, args.epochs, work) if "kerastuner" in only else skipped
    facade_wall, facade = (child("facade", data, configs, args.epochs, work, str(args.concurrent),
                                 json.dumps(facade_extra)) if "facade" in only else skipped)
    plain_wall, plain = child("plain", data, configs, args.epochs, work) if "plain" in only else skipped
    par_wall, par = (parallel_plain(args.concurrent, data, configs, args.epochs, work) if "parallel" in only
                     else skipped)

    where = (f"{args.mnist_sized:,} generated 28x28 images" if args.mnist_sized else
             "digits (.npz, fixed 80/20 split)")
    print(f"{args.trials} {args.space} configurations x {args.epochs} epochs on {where}; nas runs "
          f"{args.concurrent} at a time{f' at --gpus-per-trial {args.gpus_per_trial:g}' if args.gpus_per_trial else ''}"
          f"; backend {os.environ.get('KERAS_BACKEND', 'tensorflow')}; {os.cpu_count()} CPUs")
    print("| system | wall s | start-up s | best val_accuracy | vs KerasTuner |")
    print("|---|---:|---:|---:|---:|")
    print(f"| nas search (local Ray, {args.concurrent} at once) | {wall:.1f} | {nas_startup:.1f} | {nas_best:.4f} | "
          f"{wall / kt_wall:.2f}x |")
    print(f"| KerasTuner Tuner loop, same configurations | {kt_wall:.1f} | {kt['startup']:.1f} | {kt['best']:.4f} "
          f"| 1.00x |")
    print(f"| nas.tuners.RandomSearch (a KerasTuner script, import changed; {args.concurrent} at once) | "
          f"{facade_wall:.1f} | {facade['startup']:.1f} | {facade['best']:.4f} | {facade_wall / kt_wall:.2f}x |")
    print(f"| plain model.fit loop | {plain_wall:.1f} | {plain['startup']:.1f} | {plain['best']:.4f} | "
          f"{plain_wall / kt_wall:.2f}x |")
    print(f"| {args.concurrent} plain loops at once, 1 thread each | {par_wall:.1f} | {par['startup']:.1f} | "
          f"{par['best']:.4f} | {par_wall / kt_wall:.2f}x |")
    print(f"nas / KerasTuner: {wall / kt_wall:.2f} (target <= 0.65); nas start-up {nas_startup:.1f} s (target <= 8)")
    print(f"nas.tuners facade / KerasTuner: {facade_wall / kt_wall:.2f} (target <= 0.85)")
    print(f"this machine, {args.concurrent} at once without any engine: {par_wall / plain_wall:.2f}x the sequential "
          f"loop's wall ({args.concurrent}-way parallelism would be {1 / args.concurrent:.2f}x); nas / that ceiling: "
          f"{wall / par_wall:.2f}")


if __name__ == "__main__":
    main()
