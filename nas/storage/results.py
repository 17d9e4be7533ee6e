"""Turning per-epoch reports into a trial's result, and trials into a leaderboard.

A trial reports every epoch; its result is the epoch where the primary objective was best (so a model that
overfits late is judged by its best epoch, and exported from it), plus how many epochs it ran.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

from nas.plugins.objective import Objective
from nas.storage.records import TrialRecord, TrialStatus

#: keys Ray or our runner add to every report that are bookkeeping, not metrics
BOOKKEEPING = {
    "timestamp", "checkpoint_dir_name", "should_checkpoint", "done", "training_iteration", "trial_id", "date",
    "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "config", "time_since_restore",
    "iterations_since_restore", "experiment_tag", "node", "gpu_ids", "fit_started", "resumed_from_epoch", "worker_rss_mb",
    "node_id", "workers",
}


def epoch_metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics of one epoch report (finite numbers, bookkeeping dropped)."""
    out: dict[str, Any] = {}
    for k, v in result.items():
        if k in BOOKKEEPING or k.startswith("__") or isinstance(v, (dict, list, str)) or v is None:
            continue
        if isinstance(v, bool):
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        out[k] = f if math.isfinite(f) else None
    return out


def add_epoch(history: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
    """Append an epoch's metrics; a resumed trial re-reporting an epoch replaces what came from it on."""
    epoch = metrics.get("epoch")
    if epoch is not None:
        history[:] = [h for h in history if h.get("epoch") is None or h["epoch"] < epoch]
    history.append(metrics)


def best_epoch(history: Sequence[Mapping[str, Any]], objective: Objective) -> dict[str, Any] | None:
    """The best epoch's metrics (all of them), with ``epochs`` set to how many epochs ran."""
    if not history:
        return None
    scored = [(objective.score(h), i) for i, h in enumerate(history)]
    usable = [(s, i) for s, i in scored if s is not None]
    i = max(usable)[1] if usable else len(history) - 1
    best = dict(history[i])
    best["best_epoch"] = int(history[i].get("epoch", i + 1))
    best["epochs"] = int(history[-1].get("epoch", len(history)))
    best["train_time_s"] = history[-1].get("train_time_s", best.get("train_time_s"))
    best.pop("epoch", None)
    return best


def rank(trials: Iterable[TrialRecord], objective: Objective) -> list[TrialRecord]:
    """Completed trials with a usable objective, best first."""
    scored = [(objective.score(t.metrics), t) for t in trials if t.status == TrialStatus.COMPLETED]
    scored = [(s, t) for s, t in scored if s is not None]
    scored.sort(key=lambda st: (-st[0], _id_key(st[1])))
    return [t for _, t in scored]


def _id_key(t: TrialRecord) -> tuple[int, str]:
    tid = t.trial_id
    return (int(tid), tid) if tid.isdigit() else (1 << 30, tid)


def sort_by_id(trials: Iterable[TrialRecord]) -> list[TrialRecord]:
    return sorted(trials, key=_id_key)


def format_value(v: Any) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(v)


def format_config(values: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in values.items())


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere (scores: larger is better)."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_front(trials: Iterable[TrialRecord], objectives: Sequence[Objective]) -> list[TrialRecord]:
    """Completed trials no other completed trial dominates on all objectives (ids ascending).

    Trials whose objectives are not all reported are left out; with one objective this is the best trial(s).
    """
    scored = []
    for t in trials:
        if t.status != TrialStatus.COMPLETED:
            continue
        s = [o.score(t.metrics) for o in objectives]
        if all(v is not None for v in s):
            scored.append((s, t))
    front = [t for s, t in scored if not any(dominates(s2, s) for s2, _ in scored)]
    return list(sort_by_id(front))

