"""The bad-input sweep: what a new user might type wrong, each through the real command line in a fresh process.

Every case must end in one clear line: exit 2, stderr exactly one ``nas: error: ...`` line (no traceback, no
``internal error``), within the timeout (never a hang); and it must not leave a run behind. Prints one row per
case (its wall time and the line it got) and the counts; exits 1 when any case is unclear.

    python benchmarks/bad_inputs.py            # every case (a few minutes: some import Keras, start Ray)
    python benchmarks/bad_inputs.py --quick    # only the cases that need neither (seconds each)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: (what, arguments, needs Keras or Ray to be found): {d} is a folder of prepared bad files
CASES: list[tuple[str, list[str], bool]] = [
    ("unknown space", ["search", "--space", "nope"], False),
    ("unknown strategy", ["search", "--strategy", "nope"], False),
    ("zero trials", ["search", "--trials", "0"], False),
    ("negative trials", ["search", "--trials", "-1"], False),
    ("text trials", ["search", "--trials", "abc"], False),
    ("fractional trials", ["search", "--trials", "1.5"], False),
    ("zero epochs", ["search", "--epochs", "0"], False),
    ("negative seed", ["search", "--seed", "-1"], False),
    ("seed too large", ["search", "--seed", str(2**40)], False),
    ("zero CPUs", ["search", "--num-cpus", "0"], False),
    ("huge CPUs", ["search", "--num-cpus", "99999999999999999999"], False),
    ("negative GPUs", ["search", "--num-gpus", "-1"], False),
    ("zero CPUs per trial", ["search", "--cpus-per-trial", "0"], False),
    ("NaN CPUs per trial", ["search", "--cpus-per-trial", "nan"], False),
    ("NaN GPUs per trial", ["search", "--gpus-per-trial", "nan"], False),
    ("GPUs per trial 1.5", ["search", "--gpus-per-trial", "1.5"], False),
    ("more CPUs per trial than the machine", ["search", "--num-cpus", "2", "--cpus-per-trial", "3"], False),
    ("more GPUs per trial than advertised", ["search", "--num-gpus", "1", "--gpus-per-trial", "2"], False),
    ("zero connect timeout", ["search", "--connect-timeout", "0"], False),
    ("infinite connect timeout", ["search", "--connect-timeout", "inf"], False),
    ("zero max concurrent", ["search", "--max-concurrent", "0"], False),
    ("zero max params", ["search", "--max-params", "0"], False),
    ("zero max latency", ["search", "--max-latency-ms", "0"], False),
    ("unknown scheduler", ["search", "--scheduler", "nope"], False),
    ("min epochs above epochs", ["search", "--epochs", "2", "--min-epochs", "3"], False),
    ("unknown distributed mode", ["search", "--distributed", "nope"], False),
    ("ranks without horovod", ["search", "--workers-per-trial", "2"], False),
    ("unknown backend", ["search", "--backend", "nope"], False),
    ("unknown estimation", ["search", "--estimation", "nope"], False),
    ("bad objective mode", ["search", "--objective", "val_accuracy:up"], False),
    ("negative worker RSS", ["search", "--max-worker-rss-mb", "-5"], False),
    ("unknown task", ["search", "--task", "poetry"], False),
    ("zero window", ["search", "--window", "0"], False),
    ("missing data file", ["search", "--data", "{d}/missing.npz"], False),
    ("directory as data file", ["search", "--data", "{d}/dir.npz"], False),
    ("unknown data set", ["search", "--data", "imagenet"], False),
    ("CSV without target", ["search", "--data", "{d}/ok.csv"], False),
    ("CSV target not a column", ["search", "--data", "{d}/ok.csv", "--target", "nope"], False),
    ("CSV target with blank cells", ["search", "--data", "{d}/blank.csv", "--target", "t"], False),
    ("NaN labels", ["search", "--data", "{d}/nan.npz"], False),
    ("not an npz", ["search", "--data", "{d}/text.npz"], False),
    ("npz without y_train", ["search", "--data", "{d}/nolabels.npz"], False),
    ("npz length mismatch", ["search", "--data", "{d}/mismatch.npz"], False),
    ("missing config", ["search", "--config", "{d}/missing.yaml"], False),
    ("directory as config", ["search", "--config", "{d}"], False),
    ("binary config", ["search", "--config", sys.executable], False),
    ("config not YAML", ["search", "--config", "{d}/broken.yaml"], False),
    ("config with a typo", ["search", "--config", "{d}/typo.yaml"], False),
    ("config naming the storage", ["search", "--config", "{d}/storage.yaml"], False),
    ("config that is a list", ["search", "--config", "{d}/list.yaml"], False),
    ("dump-config of bad options", ["search", "--trials", "-1", "--dump-config"], False),
    ("empty name", ["search", "--name", ""], False),
    ("name with a slash", ["search", "--name", "a/b"], False),
    ("name with a newline", ["search", "--name", "nl\n"], False),
    ("space option without value", ["search", "--space-option", "novalue"], False),
    ("storage that is a file", ["search", "--storage", "{d}/ok.csv"], False),
    ("refused address", ["search", "--address", "127.0.0.1:1"], False),
    ("status of no run", ["status", "nope"], False),
    ("plot of no run", ["plot", "nope"], False),
    ("export of no run", ["export", "nope"], False),
    ("resume of no run", ["resume", "nope"], False),
    ("runs of a file", ["runs", "--storage", "{d}/ok.csv"], False),
    ("status of a folder that is not a run", ["status", "notarun"], False),
    ("unknown space option", ["search", "--space-option", "bogus=1"], False),
    ("unknown strategy option", ["search", "--strategy", "grid", "--strategy-option", "bogus=1"], False),
    ("objective no trial reports", ["search", "--objective", "val_nothing"], True),
    ("class label 10**12", ["search", "--data", "{d}/huge.npz"], True),
    ("validation class never trained on", ["search", "--data", "{d}/unseen.npz"], True),
    ("max params no model meets", ["search", "--max-params", "1"], True),
    ("space class that is not one", ["search", "--space", "nas.errors:NasError"], True),
    ("normal class that is not a label", ["search", "--task", "anomaly", "--normal-class", "99"], True),
]


def prepare(d: Path, storage: Path) -> None:
    x = np.random.default_rng(0).random((50, 4), dtype="float32")
    (d / "dir.npz").mkdir()
    (d / "text.npz").write_text("not an archive")
    np.savez(d / "nan.npz", x_train=x, y_train=np.r_[np.zeros(49), np.nan])
    np.savez(d / "huge.npz", x_train=x, y_train=np.r_[np.zeros(49, "int64"), 10**12])
    np.savez(d / "unseen.npz", x_train=x, y_train=np.arange(50) % 2, x_val=x[:6], y_val=np.arange(6) % 3)
    np.savez(d / "nolabels.npz", x_train=x)
    np.savez(d / "mismatch.npz", x_train=x, y_train=np.zeros(49, "int64"))
    (d / "ok.csv").write_text("a,b,t\n" + "".join(f"{i},{2 * i},{i % 2}\n" for i in range(20)))
    (d / "blank.csv").write_text("a,b,t\n" + "".join(f"{i},{2 * i},{'' if i == 3 else i % 2}\n" for i in range(20)))
    (d / "broken.yaml").write_text("trials: [1, 2\n")
    (d / "typo.yaml").write_text("trails: 3\n")
    (d / "storage.yaml").write_text("storage: /tmp\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (storage / "notarun").mkdir(parents=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the cases found without Keras or Ray")
    ap.add_argument("--timeout", type=float, default=180)
    args = ap.parse_args()
    unclear = 0
    cases = [c for c in CASES if not (args.quick and c[2])]
    with tempfile.TemporaryDirectory() as tmp:
        d, storage = Path(tmp) / "files", Path(tmp) / "runs"
        d.mkdir()
        prepare(d, storage)
        env = dict(os.environ, NAS_STORAGE=str(storage))
        env.pop("RAY_ADDRESS", None)
        for what, argv, _ in cases:
            argv = [a.replace("{d}", str(d)) for a in argv]
            t0 = time.time()
            try:
                proc = subprocess.run([sys.executable, "-m", "nas.cli", *argv], env=env, capture_output=True,
                                      text=True, timeout=args.timeout, cwd=tmp)
                code, err = proc.returncode, proc.stderr.strip()
            except subprocess.TimeoutExpired:
                code, err = None, f"HANG (> {args.timeout:g} s)"
            wall = time.time() - t0
            lines = err.splitlines()
            left = sorted(p.name for p in storage.iterdir() if p.name != "notarun")
            clear = (code == 2 and len(lines) == 1 and lines[0].startswith("nas: error: ") and "internal error"
                     not in err and "Traceback" not in err and not left)
            unclear += not clear
            shown = lines[-1] if lines else f"(exit {code}, nothing on stderr)"
            print(f"{'ok ' if clear else 'BAD'} {wall:6.1f}s  {what:<40} {shown[:160]}"
                  + (f"  [left behind: {left}]" if left else ""), flush=True)
    print(f"\n{len(cases) - unclear} of {len(cases)} bad inputs were one clear line (exit 2); {unclear} were not")
    return 1 if unclear else 0


if __name__ == "__main__":
    sys.exit(main())
