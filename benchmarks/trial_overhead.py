"""Where a trial's time goes besides training: nas's trial function vs a plain loop, in one process, no Ray.

The same N seeded configurations of a space, 5 epochs each, one TensorFlow thread (as a trial worker has), trained
(1) in a plain `space.fit` loop, (2) through `nas.trials.single.train_trial` exactly as a worker runs it (per-epoch fit
calls, reports, checkpoints, TensorBoard, the best-epoch model file) with Ray Tune's report made a no-op, (3) the
same trial function for a space that defines its own `fit` (it then gets one `fit` call per epoch on arrays,
instead of one call over every epoch), (4) the trial without TensorBoard's writes, (5) without the best-epoch
model file (`best.keras`). Each mode runs in a fresh process; the figure is the training loop's wall time after
a warm-up build.

    python benchmarks/trial_overhead.py [--space mlp] [--trials 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

MODES = {"plain": "plain fit loop", "trial": "nas trial function", "own-fit": "  space with its own fit",
         "no-tensorboard": "  without TensorBoard", "no-best-model": "  without best.keras"}


def run(mode: str, space_name: str, trials: int) -> float:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import numpy as np
    import ray.tune

    import nas.trials.single as T
    from nas.options import SearchOptions, TrialSetup
    from nas.plugins import params as P
    from nas.plugins.data import load_data
    from nas.plugins.objective import parse_objectives
    from nas.plugins.registry import create_space
    from nas.plugins.space import SearchSpace
    from nas.plugins.task import make_task

    ray.tune.report = lambda *a, **k: None  # no Tune session here: what the trial reports goes nowhere
    data = load_data("digits", seed=0)
    task = make_task(data, "classification")
    space = create_space(space_name, task=task)
    hs = space.hyperparameters()
    rng = np.random.default_rng(0)
    configs = [P.sample_values(hs, rng) for _ in range(trials)]
    opts = SearchOptions(space=space_name, strategy="random", epochs=5, seed=0, backend="tensorflow")
    setup = TrialSetup.of(opts, task, parse_objectives([space.default_objective()]), tempfile.mkdtemp())
    if mode == "own-fit":  # what a user's space with its own fit gets: one fit call per epoch, on arrays
        type(space).fit = lambda self, hp, model, *a, **k: SearchSpace.fit(self, hp, model, *a, **k)
    if mode == "no-tensorboard":
        T.TrialLogger.log = lambda self, *a, **k: None
    if mode == "no-best-model":
        T.BestModelSaver.finish = lambda self, model: None
    space.build(P.to_hp(hs, configs[0]))  # warm-up
    keras.backend.clear_session(free_memory=False)
    t = time.time()
    for i, values in enumerate(configs):
        if mode == "plain":
            keras.backend.clear_session(free_memory=False)
            hp = P.to_hp(hs, values)
            model = space.build(hp)
            space.fit(hp, model, data.x_train, data.y_train, validation_data=(data.x_val, data.y_val), epochs=5,
                      verbose=0)
        else:
            T.train_trial(dict(values, __nas_trial__=str(i)), data=data, setup=setup)
    return time.time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mlp")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)  # internal: one mode, this process
    args = ap.parse_args()
    if args.mode:
        print(run(args.mode, args.space, args.trials))
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    times = {}
    for mode, what in MODES.items():
        out = subprocess.run([sys.executable, __file__, "--space", args.space, "--trials", str(args.trials),
                              "--mode", mode], capture_output=True, text=True, env=env, check=True).stdout
        times[mode] = float(out.strip().splitlines()[-1])
        print(f"{what:24s} {times[mode]:7.1f} s  ({times[mode] / args.trials:.2f} s per trial)", flush=True)
    print(f"trial / plain: {times['trial'] / times['plain']:.2f} ({args.trials} {args.space} trials x 5 epochs)")


if __name__ == "__main__":
    main()
