"""`nas plot NAME`: one PNG that says how a search went (headless matplotlib, Agg).

- top: the objective of every trial vs its index, the best-so-far line, failed trials marked along the bottom;
- for several objectives, beside it: the first two objectives against each other, the Pareto front highlighted;
- below: the objective against each hyperparameter (categorical values on an index axis, log ranges on a log
  axis), the best trial starred.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nas.errors import RunError
from nas.plugins.objective import Objective
from nas.storage.records import RunSpec, TrialRecord, TrialStatus
from nas.storage.results import pareto_front, rank, sort_by_id

BEST = "#d62728"
POINT = "#1f77b4"
FRONT = "#ff7f0e"
FAILED = "#7f7f7f"


def _index(t: TrialRecord, fallback: int) -> int:
    tid = str(t.trial_id)
    return int(tid) if tid.isdigit() else fallback


def _better(obj: Objective) -> str:
    return "higher is better" if obj.mode == "max" else "lower is better"


def _hyperparameters(spec: RunSpec, trials: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    hps = [dict(h) for h in spec.hyperparameters]
    known = {h["name"] for h in hps}
    for t in trials:  # values a space summary does not list (older runs, custom spaces)
        for k in t.config:
            if k not in known:
                hps.append({"name": k, "type": "unknown", "range": ""})
                known.add(k)
    return hps


def _is_numeric_axis(h: Mapping[str, Any], values: list[Any]) -> bool:
    if h.get("type") in ("choice", "boolean", "fixed"):
        return False
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _choice_order(h: Mapping[str, Any], values: list[Any]) -> list[Any]:
    """Every declared choice in declared order (unexplored ones too), then anything else seen."""
    seen = list(dict.fromkeys(values))
    rng = str(h.get("range", ""))
    if rng.startswith("Choice(") and rng.endswith(")"):
        declared = [s.strip() for s in rng[len("Choice("):-1].split(",")]
        by_text = {str(v): v for v in seen}
        return [by_text.get(d, d) for d in declared] + [v for v in seen if str(v) not in declared]
    if h.get("type") == "boolean":
        return [False, True]
    try:
        return sorted(seen)
    except TypeError:
        return sorted(seen, key=str)


def _declared_range(h: Mapping[str, Any]) -> tuple[float, float] | None:
    m = re.match(r"^(?:Int|Float)\[([-+0-9.eE]+)\.\.([-+0-9.eE]+)", str(h.get("range", "")))
    if not m:
        return None
    try:
        return float(m.group(1)), float(m.group(2))
    except ValueError:
        return None


def _log_ticks(lo: float, hi: float, integer: bool) -> list[float]:
    """A few labelled ticks across a log range: powers of ten over two decades or more, powers of two for an
    integer range that has them, else 4 geometric steps. Matplotlib's own log ticks label minor ticks on a range
    under two decades ("10²1×4×10²" on a 16..128 range)."""
    if hi / lo >= 100:
        return [10.0 ** k for k in range(math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9) + 1)]
    if integer:
        twos = [2.0 ** k for k in range(math.ceil(math.log2(lo) - 1e-9), math.floor(math.log2(hi) + 1e-9) + 1)]
        if 2 <= len(twos) <= 6:
            return twos
    steps = [float(v) for v in np.geomspace(lo, hi, 4)]
    return sorted({float(round(v)) for v in steps}) if integer else steps


def plot_run(spec: RunSpec, trials: Sequence[TrialRecord], out: Path | str) -> Path:
    """Write the run's PNG to ``out`` and return its path."""
    import matplotlib.pyplot as plt

    fig = figure(spec, trials)
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def figure(spec: RunSpec, trials: Sequence[TrialRecord]) -> Any:
    """The run's figure (matplotlib, Agg): what ``plot_run`` writes."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, NullFormatter

    objectives = spec.objectives
    obj = objectives[0]
    trials = sort_by_id(trials)
    done = [t for t in trials if t.status == TrialStatus.COMPLETED and obj.value(t.metrics) is not None]
    failed = [t for t in trials if t.status == TrialStatus.FAILED]
    if not done:
        raise RunError(f"run {spec.name!r} has no completed trial with {obj.metric} yet; nothing to plot")
    best = rank(done, obj)[0]
    multi = len(objectives) > 1
    # a fixed value (Fixed, or a range of one value) has nothing to show
    hps = [h for h in _hyperparameters(spec, trials)
           if h.get("type") != "fixed" and (_declared_range(h) or (0, 1))[0] != (_declared_range(h) or (0, 1))[1]
           and any(h["name"] in t.config for t in done)]

    ncols = 4
    hp_rows = math.ceil(len(hps) / ncols) if hps else 0
    fig = plt.figure(figsize=(16, 4.6 + 3.1 * hp_rows), layout="constrained")
    grid = fig.add_gridspec(1 + hp_rows, ncols, height_ratios=[1.5] + [1] * hp_rows)
    fig.suptitle(
        f"nas run {spec.name}: space {spec.space}, strategy {spec.strategy} — "
        f"{len(done)} completed, {len(failed)} failed of {spec.trials} trials",
        fontsize=13, fontweight="bold",
    )

    # -- objective per trial and best so far -----------------------------------------------------------------
    ax = fig.add_subplot(grid[0, : (2 if multi else ncols)])
    xs = [_index(t, i) for i, t in enumerate(done)]
    ys = [obj.value(t.metrics) for t in done]
    ax.scatter(xs, ys, s=36, color=POINT, zorder=3, label=f"trial {obj.metric}")
    best_x, best_y, run_best = [], [], None
    for x, y in zip(xs, ys):
        if run_best is None or obj.better(y, run_best):
            run_best = y
        best_x.append(x)
        best_y.append(run_best)
    ax.step(best_x, best_y, where="post", color=BEST, lw=2, zorder=2, label="best so far")
    ax.scatter([_index(best, 0)], [obj.value(best.metrics)], marker="*", s=260, color=BEST, zorder=4,
               edgecolor="black", linewidth=0.6, label=f"best: trial {best.trial_id}")
    if failed:  # along the bottom edge: a failed trial has no value
        ax.scatter([_index(t, 0) for t in failed], [0.03] * len(failed), marker="x", s=60, color=FAILED, zorder=3,
                   transform=ax.get_xaxis_transform(), clip_on=False, label=f"failed ({len(failed)}, no value)")
    all_x = xs + [_index(t, 0) for t in failed]
    ax.set_xlim(min(all_x) - 0.5, max(all_x) + 0.5)
    ax.set_xlabel("trial (in the order proposed)")
    ax.set_ylabel(f"{obj.metric} ({_better(obj)})")
    ax.set_title(f"{obj.metric} per trial, best so far", loc="left")
    ax.grid(alpha=0.3)
    if len(set(xs)) <= 30:
        ax.set_xticks(sorted(set(xs) | {_index(t, 0) for t in failed}))
    ax.legend(loc="best", fontsize=9)

    # -- Pareto front of the first two objectives -------------------------------------------------------------
    if multi:
        o1, o2 = objectives[0], objectives[1]
        both = [t for t in done if o2.value(t.metrics) is not None]
        front_ids = {t.trial_id for t in pareto_front(both, objectives)}
        axp = fig.add_subplot(grid[0, 2:])
        rest = [t for t in both if t.trial_id not in front_ids]
        front = sorted((t for t in both if t.trial_id in front_ids), key=lambda t: o1.value(t.metrics))
        axp.scatter([o1.value(t.metrics) for t in rest], [o2.value(t.metrics) for t in rest], s=36,
                    color=POINT, alpha=0.6, label="dominated")
        fx = [o1.value(t.metrics) for t in front]
        fy = [o2.value(t.metrics) for t in front]
        axp.plot(fx, fy, "-o", color=FRONT, ms=8, lw=1.5, label=f"Pareto front ({len(front)})")
        for t, x, y in zip(front, fx, fy):
            axp.annotate(f"trial {t.trial_id}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        axp.set_xlabel(f"{o1.metric} ({_better(o1)})")
        axp.set_ylabel(f"{o2.metric} ({_better(o2)})")
        title = "Pareto front" + (f" (on the first 2 of {len(objectives)} objectives)" if len(objectives) > 2 else "")
        axp.set_title(title, loc="left")
        axp.grid(alpha=0.3)
        axp.legend(loc="best", fontsize=9)

    # -- objective vs each hyperparameter (one shared y range, so panels compare) ----------------------------
    lo, hi = min(ys), max(ys)
    pad = 0.06 * ((hi - lo) or abs(hi) or 1.0)
    ylim = (lo - pad, hi + pad)
    for i, h in enumerate(hps):
        a = fig.add_subplot(grid[1 + i // ncols, i % ncols])
        name = h["name"]
        have = [t for t in done if name in t.config]
        vals = [t.config[name] for t in have]
        ys_h = [obj.value(t.metrics) for t in have]
        if _is_numeric_axis(h, vals):
            xs_h = [float(v) for v in vals]
            log = "log" in str(h.get("range", "")) and all(v > 0 for v in xs_h)
            lo_hi = _declared_range(h)
            if log:
                a.set_xscale("log")
                lo, hi = lo_hi if lo_hi and lo_hi[0] > 0 else (min(xs_h), max(xs_h))
                a.set_xlim(lo / 1.5, hi * 1.5)
                if hi > lo:
                    ticks = _log_ticks(lo, hi, h.get("type") == "int")
                    a.set_xticks(ticks, [f"{t:g}" for t in ticks])
                a.xaxis.set_minor_formatter(NullFormatter())
            elif lo_hi:  # the whole declared range, so the unexplored part shows
                pad = 0.05 * ((lo_hi[1] - lo_hi[0]) or 1.0)
                a.set_xlim(lo_hi[0] - pad, lo_hi[1] + pad)
            if h.get("type") == "int" and not log:
                a.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            order = _choice_order(h, vals)
            pos = {repr(v): j for j, v in enumerate(order)}
            # a small deterministic spread so equal values do not hide each other
            xs_h = [pos[repr(v)] + ((k % 5) - 2) * 0.04 for k, v in enumerate(vals)]
            a.set_xticks(range(len(order)))
            a.set_xticklabels([str(v) for v in order])
            a.set_xlim(-0.5, len(order) - 0.5)
        a.set_ylim(*ylim)
        a.scatter(xs_h, ys_h, s=26, color=POINT, alpha=0.75)
        if name in best.config:
            k = have.index(best) if best in have else None
            if k is not None:
                a.scatter([xs_h[k]], [ys_h[k]], marker="*", s=200, color=BEST, edgecolor="black", linewidth=0.5,
                          zorder=4)
        missing = len(done) - len(have)
        a.set_title(name + (f"  (used by {len(have)} of {len(done)} trials)" if missing else ""), fontsize=10,
                    loc="left")
        a.tick_params(labelsize=8)
        a.grid(alpha=0.3)
        if i % ncols == 0:
            a.set_ylabel(obj.metric, fontsize=9)
        else:
            a.tick_params(labelleft=False)
    if hps:  # a figure label: the layout keeps room for it below the panels
        fig.supxlabel(f"lower panels: {obj.metric} vs each hyperparameter; red star = best trial", x=0.995,
                      ha="right", fontsize=9, color="#444444")
    return fig
