"""Weight-sharing NAS (ENAS) against the RL controller training every child from scratch, on the enas_cnn space.

Three real searches through the `nas` command line, one storage directory:

1. standalone: `--strategy rl` (the LSTM controller, Zoph & Le) with every trial trained from scratch;
2. shared weights: `--estimation shared-weights` (ENAS: the same controller, one supernet, then the top-k trained
   from scratch), the same epochs per trial;
3. rank correlation: `--tau-archs` architectures drawn uniformly from the space, trained from scratch (the `given`
   strategy), against their accuracy with the shared weights of run 2's supernet; also over run 1's trials.

Prints each run's wall time and best from-scratch val_accuracy, what the standalone search had reached by the
time the shared-weight search ended (the same wall-time budget), when (if ever) it first reached the shared-weight
search's best, the time ratio, and Kendall's tau (scipy.stats.kendalltau) of shared-weight vs from-scratch accuracy.

    python benchmarks/enas.py                        # CPU, CI-sized: digits (8x8), 20 standalone trials
    python benchmarks/enas.py --supernet-option warmup_epochs=0                  # ENAS without the warm-up
    python benchmarks/enas.py --generated --backend jax --gpus-per-trial 0.25 --max-concurrent 4   # GPU
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import search as cli_search  # noqa: E402
from _cli import status as run_status  # noqa: E402

ENAS = "search_spaces.enas_cnn:ENASSpace"
GIVEN = "strategies.given:GivenConfigurations"


def mnist_sized(path: Path, samples: int, seed: int = 0) -> str:
    """MNIST-sized data without a network: 28x28 images made from scikit-learn's real 8x8 handwritten digits
    (3x upsampled, placed at a random offset, random stroke gain, pixel noise), `samples` for training and
    samples/6 for validation, drawn from disjoint source digits (20 % of the 1,797 are validation-only)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(d.images))
    n_val_src = len(idx) // 5
    sources = {"val": idx[:n_val_src], "train": idx[n_val_src:]}

    def make(src: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        pick = rng.choice(src, size=n)
        big = np.kron(d.images[pick] / 16.0, np.ones((1, 3, 3)))  # (n, 24, 24)
        out = np.zeros((n, 28, 28), np.float32)
        dy, dx = rng.integers(0, 5, size=n), rng.integers(0, 5, size=n)
        for k in range(n):
            out[k, dy[k]:dy[k] + 24, dx[k]:dx[k] + 24] = big[k]
        out *= rng.uniform(0.6, 1.0, size=(n, 1, 1)).astype(np.float32)
        out += rng.normal(0, 0.1, size=out.shape).astype(np.float32)
        return np.clip(out, 0, 1), d.target[pick].astype(np.int64)

    x, y = make(sources["train"], samples)
    xv, yv = make(sources["val"], max(1000, samples // 6))
    np.savez(path, x_train=x, y_train=y, x_val=xv, y_val=yv)
    return f"MNIST-sized, generated from real digits: {len(x)} + {len(xv)} 28x28 images"


def search(storage: Path, name: str, *flags: str) -> tuple[float, float, str]:
    """`_cli.search`, also giving its start time (trial finish times count from it) and printing its wall time."""
    t0 = time.time()
    wall, proc = cli_search(storage, name, *flags)
    print(f"  {name}: {wall:.0f}s", flush=True)
    return t0, wall, proc.stdout


def best_curve(status: dict[str, Any], t0: float) -> list[tuple[float, float]]:
    """(seconds since the search started, best from-scratch val_accuracy so far) at each finished trial."""
    done = sorted((t["finished"] - t0, t["metrics"].get("val_accuracy", 0.0)) for t in status["trials"]
                  if t["status"] == "completed")
    out, best = [], -1.0
    for when, acc in done:
        best = max(best, acc)
        out.append((when, best))
    return out


def shared_accuracies(run: Path, configs: list[dict[str, Any]], backend: str) -> list[float]:
    """Each architecture's val_accuracy with the final shared weights of a shared-weights run (in a
    subprocess, under the run's backend)."""
    code = (
        "import json, sys\n"
        "from nas.estimation.trainer import trainer_from_run\n"
        "t = trainer_from_run(sys.argv[1])\n"
        "configs = json.load(open(sys.argv[2]))\n"
        "print(json.dumps([m['val_accuracy'] for m in t.evaluate_many(configs)]))\n"
    )
    path = run / "tau-configs.json"
    path.write_text(json.dumps(configs))
    proc = subprocess.run([sys.executable, "-c", code, str(run), str(path)], capture_output=True, text=True,
                          env=dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES=os.environ.get(
                              "CUDA_VISIBLE_DEVICES", "")))
    if proc.returncode != 0:
        sys.exit(f"evaluating with shared weights failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="standalone rl trials (default: 20)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of every from-scratch trial (default: 10)")
    ap.add_argument("--supernet-epochs", type=int, default=30)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--tau-archs", type=int, default=20, help="random architectures for Kendall's tau (>= 20)")
    ap.add_argument("--space-option", action="append", default=[], metavar="KEY=VALUE",
                    help="enas_cnn options (default: layers=6 filters=16)")
    ap.add_argument("--supernet-option", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to the shared-weight search, e.g. warmup_epochs=0 (ENAS without the warm-up)")
    ap.add_argument("--generated", action="store_true", help="MNIST-sized 28x28 data made from real digits")
    ap.add_argument("--samples", type=int, default=60000, help="--generated: training images (default: 60000)")
    ap.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    ap.add_argument("--gpus-per-trial", default="0")
    ap.add_argument("--max-concurrent", default="2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storage", help="keep the runs here (default: a temporary directory)")
    args = ap.parse_args()

    storage = Path(args.storage or tempfile.mkdtemp(prefix="nas-enas-"))
    storage.mkdir(parents=True, exist_ok=True)
    data, source = "digits", "digits (1,437 + 360 8x8 images)"
    if args.generated:
        data = str(storage / "mnist-sized.npz")
        source = mnist_sized(Path(data), args.samples, args.seed)
    common = ["--space", ENAS, "--data", data, "--epochs", str(args.epochs), "--seed", str(args.seed),
              "--backend", args.backend, "--gpus-per-trial", args.gpus_per_trial,
              "--max-concurrent", args.max_concurrent]
    for opt in args.space_option:
        common += ["--space-option", opt]
    print(f"enas_cnn on {source}; backend {args.backend}; storage {storage}", flush=True)

    t_s, wall_s, _ = search(storage, "standalone", *common, "--strategy", "rl", "--strategy-option", "policy=lstm",
                            "--trials", str(args.trials))
    t_w, wall_w, out_w = search(storage, "shared", *common, "--estimation", "shared-weights", "--supernet-epochs",
                                str(args.supernet_epochs), "--top-k", str(args.top_k),
                                *[f for opt in args.supernet_option for f in ("--supernet-option", opt)])
    st_s, st_w = run_status(storage, "standalone"), run_status(storage, "shared")
    best_s = st_s["best"]["metrics"]["val_accuracy"]
    best_w = st_w["best"]["metrics"]["val_accuracy"]
    curve = best_curve(st_s, t_s)
    at_budget = max([b for when, b in curve if when <= wall_w], default=float("nan"))
    reach = next((when for when, b in curve if b >= best_w), None)
    phase_end = json.loads((storage / "shared" / "supernet" / "state.json").read_text())
    supernet_s = sum(h["time_s"] for h in phase_end["history"])

    # Kendall's tau: random architectures trained from scratch vs their shared-weight accuracy
    from scipy.stats import kendalltau

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from nas.plugins import params as P
    from nas.plugins.data import load_data
    from nas.plugins.registry import create_space
    from nas.plugins.task import make_task

    task = make_task(load_data(data), "classification")
    space_opts = dict(o.split("=", 1) for o in args.space_option)
    space = create_space(ENAS, task=task, **{k: json.loads(v) for k, v in space_opts.items()})
    hp = space.hyperparameters()
    rng = np.random.default_rng(args.seed + 1)
    archs: list[dict[str, Any]] = []
    while len(archs) < args.tau_archs:
        v = P.sample_values(hp, rng)
        if v not in archs:
            archs.append(v)
    (storage / "tau-archs.json").write_text(json.dumps(archs))
    _, wall_t, _ = search(storage, "tau", *common, "--strategy", GIVEN, "--strategy-option",
                          f"file={storage / 'tau-archs.json'}", "--trials", str(len(archs)))
    st_t = run_status(storage, "tau")
    by_id = sorted(st_t["trials"], key=lambda t: int(t["trial_id"]))
    scratch = [t["metrics"]["val_accuracy"] for t in by_id]
    shared = shared_accuracies(storage / "shared", [t["config"] for t in by_id], args.backend)
    tau, p = kendalltau(shared, scratch)
    rl_trials = sorted(st_s["trials"], key=lambda t: int(t["trial_id"]))
    rl_shared = shared_accuracies(storage / "shared", [t["config"] for t in rl_trials], args.backend)
    tau_rl, p_rl = kendalltau(rl_shared, [t["metrics"]["val_accuracy"] for t in rl_trials])

    print()
    print(f"{'approach':<34} {'wall s':>8} {'from-scratch trials':>20} {'best val_accuracy':>18}")
    print(f"{'standalone rl (LSTM controller)':<34} {wall_s:>8.1f} {args.trials:>20} {best_s:>18.4f}")
    print(f"{'shared weights (ENAS)':<34} {wall_w:>8.1f} {args.top_k:>20} {best_w:>18.4f}")
    warmup = json.loads((storage / "shared" / "spec.json").read_text())["supernet"].get("warmup_epochs", 0)
    print(f"  shared weights: supernet phase {supernet_s:.1f}s of training ({args.supernet_epochs} epochs, "
          f"{warmup} of them warm-up, "
          f"{phase_end.get('children', '?')} children evaluated, {len(phase_end.get('ranking') or [])} ranked), "
          f"then {args.top_k} trials")
    print(f"time ratio shared/standalone: {wall_w / wall_s:.3f} (goal <= 0.1 with at least the standalone best)")
    print(f"same wall-time budget ({wall_w:.0f}s): standalone best by then {at_budget:.4f}, shared weights {best_w:.4f}")
    print("standalone first reached the shared-weight best " + (f"after {reach:.0f}s" if reach is not None else
                                                                  "never"))
    print(f"shared weights reached the standalone best ({best_s:.4f}): "
          + ("yes" if best_w >= best_s else f"no ({best_w - best_s:+.4f})"))
    print(f"Kendall tau, shared-weight vs from-scratch val_accuracy: {len(archs)} random architectures "
          f"tau={tau:.3f} (p={p:.3g}); the standalone rl's {len(rl_trials)} trials tau={tau_rl:.3f} (p={p_rl:.3g})")
    print(f"  ({wall_t:.0f}s to train the {len(archs)} random architectures from scratch)")
    print("  random architectures, shared vs scratch: " + " ".join(
        f"{a:.3f}/{b:.3f}" for a, b in sorted(zip(shared, scratch))))


if __name__ == "__main__":
    main()
