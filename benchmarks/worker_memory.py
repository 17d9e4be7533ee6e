"""Worker memory over a long search: RSS of reused workers over 300 tiny trials, with and without recycling.

Keras grows ~6-9 MB per model built in a long-lived process whatever is freed (clear_session, gc). `nas search`
reuses workers (TensorFlow imported once per worker) and replaces a worker once its resident memory passes
`--max-worker-rss-mb` (default auto: 1.5x a fresh worker's). This runs the same seeded search through the real CLI
twice, with the default and with `--max-worker-rss-mb off`, and prints for each the wall time, how many worker
processes ran, the peak worker RSS and the growth per trial, from the `worker_rss_mb` every trial reports.

    python benchmarks/worker_memory.py [--trials 300] [--limit auto|MB]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

from _cli import records, search


def run(storage: Path, name: str, trials: int, limit: str) -> dict:
    wall, proc = search(storage, name, "--space", "mlp", "--strategy", "random", "--trials", str(trials), "--epochs",
                        "1", "--max-concurrent", "2", "--seed", "0", "--max-worker-rss-mb", limit)
    recs = records(storage, name)
    by_pid: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for r in recs:
        if r.get("pid") and r.get("worker_rss_mb"):
            by_pid[r["pid"]].append((r["finished"], r["worker_rss_mb"]))
    workers = []
    for pid, rows in by_pid.items():
        rows.sort()
        workers.append({"pid": pid, "trials": len(rows), "first_mb": rows[0][1], "last_mb": rows[-1][1],
                        "max_mb": max(r[1] for r in rows)})
    said = [ln for ln in proc.stdout.splitlines() if "fresh workers" in ln][:1]  # the first states the limit
    return {"wall_s": wall, "workers": sorted(workers, key=lambda w: -w["trials"]), "said": said,
            "completed": sum(r["status"] == "completed" for r in recs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--limit", default="auto", help="--max-worker-rss-mb of the recycled run (default: auto)")
    args = ap.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="nas-mem-"))
    print(f"{args.trials} mlp trials x 1 epoch on digits, 2 at a time")
    for label, limit in ((f"recycled ({args.limit})", args.limit), ("never recycled", "off")):
        res = run(storage, label.split()[0], args.trials, limit)
        peak = max(w["max_mb"] for w in res["workers"])
        print(f"{label}: {res['completed']} trials in {res['wall_s']:.0f} s, {len(res['workers'])} worker "
              f"processes, peak worker RSS {peak:.0f} MB")
        for line in res["said"]:
            print(f"  {line}")
        for w in res["workers"][:4]:
            growth = (w["last_mb"] - w["first_mb"]) / max(1, w["trials"] - 1)
            print(f"  worker {w['pid']}: {w['trials']} trials, RSS {w['first_mb']:.0f} -> {w['last_mb']:.0f} MB "
                  f"(max {w['max_mb']:.0f}; {growth:.1f} MB per trial)")


if __name__ == "__main__":
    main()
