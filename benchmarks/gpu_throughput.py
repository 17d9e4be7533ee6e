"""GPU throughput: the lecture CNN trained by `nas search` on one GPU, alone and packed several to a GPU.

On MNIST-sized data (60,000 28x28 images: real MNIST when keras can download it, else generated images of the
same shape; throughput does not depend on the pixels), the `LECTURE_CNN` point of the cnn space (1,256,080
parameters, adam, batch 128) is trained:

1. by a plain `model.fit` in one process: the physical reference (raw samples/s);
   and, as the profile of where a trial's time goes, the same plain fit fed by the stream of batches a trial
   trains on (`nas.trials.worker.epoch_batches`: each epoch in its seeded order) instead of Keras' own arrays;
2. by `nas search --backend jax --gpus-per-trial 1`: one trial on the GPU; per-trial samples/s, target >= 0.95x raw;
3. by `nas search --gpus-per-trial 0.5, 0.25, 0.125, 0.0625`: 2, 4, 8, 16 trials sharing the GPU at once; aggregate
   samples/s (sum of the trials' steady rates while all run) and trials per hour (wall clock, start-up included);
   target at 0.125: aggregate >= 5x the aggregate at 1 trial per GPU.

Steady rates leave out each run's first epoch (it includes compiling the training step). Every trial is the
same configuration (`Fixed`, a strategy that always proposes it), so the figures measure the engine, not the
search.

    python benchmarks/gpu_throughput.py --generated --epochs 3           # on a GPU machine (jax installed)
    python benchmarks/gpu_throughput.py --samples 2000 --fractions 1,0.5 --num-gpus 1   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # `strategies` is a package of ours
sys.path.insert(0, str(_HERE.parent))

from nas.plugins.strategy import Strategy  # noqa: E402
from search_spaces.cnn import LECTURE_CNN  # noqa: E402

CONFIG = {**LECTURE_CNN, "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 128}


class Fixed(Strategy):
    """Always the lecture CNN (adam, learning rate 1e-3, batch 128): every trial is the same work."""

    name = "fixed"

    def _ask(self) -> dict[str, Any]:
        return dict(CONFIG)


def make_data(path: Path, samples: int, generated: bool = False, seed: int = 0) -> str:
    """An .npz of MNIST (first `samples` training images, 10,000 validation), or generated images."""
    import numpy as np

    try:
        if generated:
            raise RuntimeError("--generated")
        import keras

        (x, y), (xv, yv) = keras.datasets.mnist.load_data()
        source = "mnist"
    except Exception:  # offline (the GPU machine has no network): same shapes, generated pixels
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, size=(max(samples, 60000), 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=len(x))
        xv, yv = x[:10000].copy(), y[:10000].copy()
        source = "generated 28x28"
    n_val = min(10000, max(1000, samples // 6))
    np.savez(path, x_train=(x[:samples] / 255.0).astype("float32"), y_train=y[:samples].astype("int64"),
             x_val=(xv[:n_val] / 255.0).astype("float32"), y_val=yv[:n_val].astype("int64"))
    return source


def raw_fit(data: str, epochs: int, feed: str = "arrays") -> None:
    """In its own process: plain `model.fit` of the same model on the same data (`feed`: Keras' own arrays, or
    `stream`, the seeded batch stream a trial's one fit call trains on); prints per-epoch seconds."""
    import keras
    import numpy as np

    from nas.plugins import params as P
    from nas.plugins.task import Task
    from search_spaces.cnn import CNNSpace

    with np.load(data) as f:
        x, y, xv, yv = f["x_train"], f["y_train"], f["x_val"], f["y_val"]
    space = CNNSpace(Task("classification", x.shape[1:], num_classes=10))
    hp = P.to_hp(space.hyperparameters(), CONFIG)
    model = space.build(hp)
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.t)

    if feed == "stream":
        from nas.trials.worker import epoch_batches

        batches, steps = epoch_batches(x, y, 1, CONFIG["batch_size"], 0, epochs, keras.backend.backend())
        model.fit(batches, steps_per_epoch=steps, epochs=epochs, validation_data=(xv, yv), verbose=0,
                  shuffle=False, callbacks=[Clock()])
    else:
        model.fit(x, y, batch_size=CONFIG["batch_size"], epochs=epochs, validation_data=(xv, yv), verbose=0,
                  callbacks=[Clock()])
    print(json.dumps({"epoch_s": times, "params": int(model.count_params())}))


def steady_rate(samples: int, epoch_s: list[float]) -> float:
    """Samples per second over the epochs after the first (which compiles)."""
    steady = epoch_s[1:] or epoch_s
    return samples / statistics.median(steady)


def search(storage: Path, name: str, data: str, epochs: int, backend: str, fraction: float, trials: int,
           extra: list[str]) -> tuple[float, list[dict[str, Any]], str]:
    cmd = [sys.executable, "-m", "nas.cli", "search", "--name", name, "--space", "cnn", "--strategy",
           f"{Path(__file__).resolve()}:Fixed", "--data", data, "--epochs", str(epochs), "--trials", str(trials),
           "--max-concurrent", str(trials), "--backend", backend, "--gpus-per-trial", f"{fraction:g}",
           "--cpus-per-trial", "1", *extra]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, NAS_STORAGE=str(storage)))
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"nas search {name} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    recs = [json.loads(p.read_text()) for p in (storage / name / "trials").glob("*.json")]
    return wall, recs, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--samples", type=int, default=60000)
    ap.add_argument("--fractions", default="1,0.5,0.25,0.125,0.0625")
    ap.add_argument("--backend", default="jax")
    ap.add_argument("--num-gpus", type=int, help="local Ray: GPUs to advertise (default: detected)")
    ap.add_argument("--generated", action="store_true", help="do not try to download MNIST (offline machines)")
    ap.add_argument("--out", type=Path, help="also write the figures here (JSON and Markdown)")
    ap.add_argument("--raw", help=argparse.SUPPRESS)  # internal: the plain-fit child process
    ap.add_argument("--feed", default="arrays", help=argparse.SUPPRESS)  # internal: what the plain fit trains on
    args = ap.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend
    if args.raw:
        return raw_fit(args.raw, args.epochs, args.feed)

    work = Path(tempfile.mkdtemp(prefix="nas-gpu-bench-"))
    data = str(work / "mnist.npz")
    source = make_data(Path(data), args.samples, args.generated)
    plain = {}
    for feed in ("arrays", "stream"):
        child = subprocess.run([sys.executable, __file__, "--raw", data, "--epochs", str(args.epochs),
                                "--backend", args.backend, "--feed", feed], capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"plain fit ({feed}) failed:\n{child.stderr[-4000:]}")
        plain[feed] = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"plain model.fit on {feed}: {steady_rate(args.samples, plain[feed]['epoch_s']):,.0f} samples/s "
              f"(epochs {', '.join(f'{t:.2f}' for t in plain[feed]['epoch_s'])} s)", flush=True)
    raw = plain["arrays"]
    raw_rate = steady_rate(args.samples, raw["epoch_s"])
    stream_rate = steady_rate(args.samples, plain["stream"]["epoch_s"])
    extra = ["--num-gpus", str(args.num_gpus)] if args.num_gpus is not None else []

    rows = []
    for fraction in [float(f) for f in args.fractions.split(",")]:
        k = max(1, round(1 / fraction))
        wall, recs, _ = search(work / "runs", f"k{k}", data, args.epochs, args.backend, fraction, k, extra)
        bad = [r for r in recs if r["status"] != "completed"]
        if bad:
            sys.exit(f"{len(bad)} trial(s) did not complete at --gpus-per-trial {fraction:g}: {bad[0].get('error')}")
        rates, epochs_s = [], []
        for r in recs:
            t = [h["train_time_s"] for h in r["history"]]
            epochs_s.append([round(b - a, 3) for a, b in zip([0.0] + t[:-1], t)])
            rates.append(steady_rate(args.samples, epochs_s[-1]))
        window = max(r["finished"] for r in recs) - min(r["fit_started"] for r in recs)
        rows.append({"gpus_per_trial": fraction, "trials": k, "per_trial": statistics.median(rates),
                     "aggregate": sum(rates), "trials_per_hour": 3600 * k / window, "search_wall_s": wall,
                     "device": recs[0].get("device"), "gpu_mem_peak_mb": max(
                         (r["metrics"].get("gpu_mem_peak_mb") or 0) for r in recs),
                     # where one trial's time goes: worker start to fit, the epochs, fit's end to the record
                     "profile": {"epoch_s": epochs_s[0],
                                 "to_fit_s": round(recs[0]["fit_started"] - recs[0]["started"], 2)
                                 if recs[0].get("started") else None,
                                 "fit_to_end_s": round(recs[0]["finished"] - recs[0]["fit_started"]
                                                       - sum(epochs_s[0]), 2)}})
        print(f"--gpus-per-trial {fraction:g}: {json.dumps(rows[-1])}", flush=True)

    base = rows[0]["aggregate"]
    lines = [f"device: {rows[0]['device']}; backend {args.backend}; data {source}, {args.samples:,} training "
             f"images, {args.epochs} epochs per trial (the first, which compiles, left out of the rates); "
             f"lecture CNN, {raw['params']:,} parameters, batch 128",
             f"plain model.fit in one process: {raw_rate:,.0f} samples/s on Keras' arrays, {stream_rate:,.0f} on "
             f"the seeded batch stream a trial trains on ({stream_rate / raw_rate:.2f}x)", "",
             "| gpus per trial | trials at once | samples/s per trial | vs plain fit | aggregate samples/s "
             "| vs 1 per GPU | trials/hour | peak GPU MB per trial |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['gpus_per_trial']:g} | {r['trials']} | {r['per_trial']:,.0f} | "
                     f"{r['per_trial'] / raw_rate:.2f}x | {r['aggregate']:,.0f} | {r['aggregate'] / base:.2f}x | "
                     f"{r['trials_per_hour']:,.0f} | {r['gpu_mem_peak_mb']:,.0f} |")
    one = rows[0]["per_trial"] / raw_rate
    lines += ["", f"1 trial per GPU: {one:.2f}x the plain fit (target >= 0.95); its epochs "
              f"{rows[0]['profile']['epoch_s']} s against the plain fit's {[round(t, 3) for t in raw['epoch_s']]} "
              f"(on the stream: {[round(t, 3) for t in plain['stream']['epoch_s']]}); worker start to fit "
              f"{rows[0]['profile']['to_fit_s']} s, after the last epoch {rows[0]['profile']['fit_to_end_s']} s"]
    for r in rows[1:]:
        if r["trials"] == 8:
            lines.append(f"8 per GPU: {r['aggregate'] / base:.2f}x the aggregate of 1 per GPU (target >= 5.0)")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_throughput.md").write_text(text + "\n")
        (args.out / "gpu_throughput.json").write_text(json.dumps(
            {"raw_samples_per_s": raw_rate, "raw_epoch_s": raw["epoch_s"], "stream_samples_per_s": stream_rate,
             "stream_epoch_s": plain["stream"]["epoch_s"], "rows": rows, "source": source,
             "samples": args.samples, "epochs": args.epochs, "backend": args.backend}, indent=1))


if __name__ == "__main__":
    main()
