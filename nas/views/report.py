"""Reading stored runs back for people: `nas status` (one run's leaderboard) and `nas runs` (every run).

Both print a rich table on a terminal and plain, grep-able text otherwise (pipes, CI, tests).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from pathlib import Path
from typing import Any, Mapping

from nas.errors import NasError, RunError
from nas.estimation.status import status_line, supernet_status
from nas.plugins.objective import Objective
from nas.storage.lock import driver_state, when
from nas.storage.records import STATUSES, RunSpec, TrialRecord, TrialStatus
from nas.storage.results import format_config, format_value, pareto_front, rank
from nas.storage.store import ExperimentStore, default_storage, storage_flag
from nas.views.progress import format_duration, interactive

_SLIM = ("trial_id", "status", "config", "metrics", "error", "node", "device", "started", "finished")


def _slim(t: TrialRecord) -> dict[str, Any]:
    record = t.to_json()
    return {k: record.get(k) for k in _SLIM}


def searching_s(spec: RunSpec, trials: list[TrialRecord], live: bool) -> float | None:
    """How long drivers searched, idle time between sessions left out: the sum of every session's time, from
    its start (``spec.sessions``) to its clean end, or for a killed driver to its last trial write, or to
    now for the driver running now."""
    sessions = spec.sessions
    if not sessions:  # a run from before sessions were recorded: its creation and each resume
        if spec.created is None:
            return None
        sessions = [{"started": t} for t in [spec.created, *spec.resumed]]
    writes = [float(w) for t in trials for w in [t.updated or t.finished or t.started] if w]
    total = 0.0
    for i, s in enumerate(sessions):
        start = float(s["started"])
        following = float(sessions[i + 1]["started"]) if i + 1 < len(sessions) else float("inf")
        end = s.get("ended")
        if end is None and live and i == len(sessions) - 1:
            end = time.time()
        elif end is None:
            end = max([w for w in writes if start <= w < following], default=start)
        total += max(0.0, float(end) - start)
    return total


def wall_s(spec: RunSpec, trials: list[TrialRecord], live: bool) -> float | None:
    """From the run's creation to its last trial write (to now while a driver runs): idle time included."""
    if spec.created is None:
        return None
    ends = [float(w) for t in trials for w in [t.updated or t.finished] if w]
    ends += [float(s["ended"]) for s in spec.sessions if s.get("ended")]
    end = time.time() if live else max(ends, default=float(spec.created))
    return max(0.0, end - float(spec.created))


def run_state(counts: Mapping[str, int], budget: int, driver: Mapping[str, Any]) -> str:
    """running (a live driver holds the run's lock), finished (budget spent, or the strategy had nothing more
    to propose), stopped (too many failures in a row, storage failure) or interrupted (Ctrl-C, kill -9, a lost
    head: `nas resume` continues it). From the lock and the records, never from clocks."""
    if driver.get("live"):
        return "running"
    if counts[TrialStatus.COMPLETED] + counts[TrialStatus.FAILED] >= budget:
        return "finished"
    if driver.get("outcome") in ("finished", "stopped"):
        return driver["outcome"]
    return "interrupted"


def status_json(store: ExperimentStore) -> dict[str, Any]:
    """The `nas status --json` contract (see README); keys are only ever added."""
    spec = store.spec()
    objectives = spec.objectives
    driver = driver_state(store.root)
    trials = store.trials()
    if not driver["live"]:  # nothing runs without a driver: what was running continues after `nas resume`
        trials = [dataclasses.replace(t, status=TrialStatus.PENDING) if t.status == TrialStatus.RUNNING else t
                  for t in trials]
    ranked = rank(trials, objectives[0])
    counts = {s: sum(t.status == s for t in trials) for s in STATUSES}
    out = {
        "name": spec.name,
        "directory": str(store.root),
        "space": spec.space,
        "strategy": spec.strategy,
        "backend": spec.backend,
        "objective": objectives[0].to_json(),
        "objectives": [o.to_json() for o in objectives],
        "budget": {"trials": spec.trials, "epochs": spec.epochs},
        "seed": spec.seed,
        "counts": counts,
        "trials": [_slim(t) for t in trials],
        "best": _slim(ranked[0]) if ranked else None,
        "created": spec.created,
        "elapsed_s": searching_s(spec, trials, driver["live"]),
        "wall_s": wall_s(spec, trials, driver["live"]),
        "remaining": max(0, spec.trials - counts[TrialStatus.COMPLETED] - counts[TrialStatus.FAILED]),
        "state": run_state(counts, spec.trials, driver),
        "driver": ({k: driver.get(k) for k in ("pid", "host", "since", "ended", "outcome")}
                   if driver.get("pid") else None),
        "next": None,
    }
    if out["state"] in ("interrupted", "stopped"):
        out["next"] = store.command("resume")
    if len(objectives) > 1:
        out["pareto_front"] = [t.trial_id for t in pareto_front(trials, objectives)]
    supernet = supernet_status(store.root)  # weight sharing (nas.estimation): its supernet phase
    if supernet is not None:
        out["estimation"], out["supernet"] = "shared-weights", supernet
    return out


def _early(trial: TrialRecord, data: Mapping[str, Any]) -> str:
    """A note for a trial a scheduler stopped before its last epoch."""
    epochs = int(trial.metrics.get("epochs", 0) or 0)
    return " (stopped early)" if 0 < epochs < int(data["budget"]["epochs"]) else ""


# -- nas status ----------------------------------------------------------------------------------------------
def print_status(data: dict[str, Any], top: int, rich: bool | None = None) -> None:
    rich = interactive() if rich is None else rich
    objectives = [Objective(**o) for o in data["objectives"]]  # the status JSON's
    obj = objectives[0]
    c = data["counts"]
    records = [TrialRecord.from_json(t, source=f"the status of run {data['name']!r}") for t in data["trials"]]
    by_id = {t.trial_id: t for t in records}
    if len(objectives) > 1:
        rows = [by_id[i] for i in data.get("pareto_front", [])]
        title = f"Pareto front of {', '.join(map(str, objectives))} ({len(rows)} trials)"
    else:
        rows = rank(records, obj)[:top]
        title = f"top {len(rows)} by {obj}"
    summary = (
        f"trials: {c['completed']} completed, {c['failed']} failed, {c['running']} running, "
        f"{c['pending']} pending of {data['budget']['trials']} ({data['remaining']} remaining), "
        f"{data['budget']['epochs']} epochs each; searched {format_duration(data.get('elapsed_s'))} "
        f"({format_duration(data.get('wall_s'))} since created)"
    )
    if data.get("supernet"):
        summary += "\n" + status_line(data["supernet"])
    state = f"state: {data['state']}"
    d = data.get("driver") or {}
    if data["state"] == "running":
        state += f" (driver process {d.get('pid')} on {d.get('host')} since {when(d.get('since'))})"
    elif data.get("next"):
        state += f"; continue with: {data['next']}"
    header = f"run {data['name']}: space {data['space']}, strategy {data['strategy']}, backend {data['backend']}, " \
        f"objective " + \
        ", ".join(map(str, objectives))
    metrics = [o.metric for o in objectives]
    failed = [t for t in records if t.status == TrialStatus.FAILED]
    if rich:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        con = Console()
        con.print(header, highlight=False, markup=False)
        con.print(summary, highlight=False, markup=False)
        con.print(state, highlight=False, markup=False)
        con.print(f"directory: {data['directory']}", style="dim", highlight=False, markup=False)
        if rows:
            t = Table(title=title, title_justify="left")
            t.add_column("rank", justify="right")
            t.add_column("trial", justify="right")
            for m in metrics:
                t.add_column(m, justify="right", style="bold")
            t.add_column("epochs", justify="right")
            t.add_column("params", justify="right") if "params" not in metrics else None
            t.add_column("config")
            for i, tr in enumerate(rows, 1):
                m = tr.metrics
                t.add_row(str(i), tr.trial_id, *[format_value(m.get(k)) for k in metrics],
                          str(int(m.get("epochs", 0))),
                          *([f"{int(m.get('params', 0)):,}"] if "params" not in metrics else []),
                          Text(format_config(tr.config) + _early(tr, data)))
            con.print(t)
        for tr in failed:
            con.print(f"failed trial {tr.trial_id}: {tr.error}", style="red", highlight=False, markup=False)
        return
    print(header)
    print(summary)
    print(state)
    print(f"directory: {data['directory']}")
    if rows:
        print(f"\n{title}")
        print(f"{'rank':>4}  {'trial':>5}  " + "  ".join(f"{m:>14}" for m in metrics) + f"  {'epochs':>6}  " + ("" if "params" in metrics else f"{'params':>10}  ") + "config")
        for i, tr in enumerate(rows, 1):
            m = tr.metrics
            print(f"{i:>4}  {tr.trial_id:>5}  " + "  ".join(f"{format_value(m.get(k)):>14}" for k in metrics)
                  + f"  {int(m.get('epochs', 0)):>6}  " + ("" if "params" in metrics else f"{int(m.get('params', 0)):>10,}  ")
                  + format_config(tr.config) + _early(tr, data))
    for tr in failed:
        print(f"failed trial {tr.trial_id}: {tr.error}")


# -- nas runs ------------------------------------------------------------------------------------------------
def list_runs(storage: Path | str | None = None) -> list[dict[str, Any]]:
    storage = Path(storage).expanduser() if storage else default_storage()
    if storage.exists() and not storage.is_dir():
        raise RunError(f"storage directory {storage} is a file, not a directory; give --storage DIR or set "
                       f"$NAS_STORAGE")
    if not storage.is_dir():
        raise RunError(f"storage directory {storage} does not exist; give --storage DIR or set $NAS_STORAGE")
    out = []
    for spec_path in sorted(storage.glob("*/spec.json")):
        try:
            data = status_json(ExperimentStore(spec_path.parent))
        except (NasError, KeyError, TypeError, ValueError) as e:
            out.append({"name": spec_path.parent.name, "error": str(e)})
            continue
        best = data["best"]
        obj = data["objective"]
        out.append({
            "name": data["name"], "space": data["space"], "strategy": data["strategy"], "state": data["state"],
            "completed": data["counts"]["completed"], "failed": data["counts"]["failed"],
            "budget": data["budget"]["trials"], "objective": obj,
            "best": (best["metrics"] or {}).get(obj["metric"]) if best else None,
            "best_trial": best["trial_id"] if best else None, "created": data.get("created"),
        })
    if not out:
        raise RunError(f"no runs in {storage}; start one with `nas search{storage_flag(storage) or ''}`")
    out.sort(key=lambda r: (r.get("created") or 0, r["name"]))
    return out


def _when(ts: float | None) -> str:
    return _dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M") if ts else "-"


def print_runs(runs: list[dict[str, Any]], rich: bool | None = None) -> None:
    rich = interactive() if rich is None else rich
    cols = ("name", "space", "strategy", "state", "trials", "objective", "best", "created")

    def cells(r: dict[str, Any]) -> list[str]:
        if "error" in r:
            return [r["name"], "-", "-", "unreadable", "-", "-", r["error"][:60], "-"]
        trials = f"{r['completed']}" + (f"+{r['failed']} failed" if r["failed"] else "") + f"/{r['budget']}"
        best = "-" if r["best"] is None else f"{format_value(r['best'])} (trial {r['best_trial']})"
        objective = f"{r['objective']['metric']}:{r['objective']['mode']}"
        return [r["name"], r["space"], r["strategy"], r["state"], trials, objective, best, _when(r.get("created"))]

    rows = [cells(r) for r in runs]
    if rich:
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        # compact on a terminal: space/strategy in one column, the best trial as #id, no year
        t = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        for c in ("name", "space/strategy", "state", "trials", "objective", "best", "created"):
            t.add_column(c, no_wrap=c in ("name", "state", "best", "created"), overflow="fold")
        for r, row in zip(runs, rows):
            best = row[6].replace(" (trial ", " #").rstrip(")") if r.get("best") is not None else row[6]
            created = row[7][5:] if len(row[7]) > 10 else row[7]
            t.add_row(*(Text(v) for v in (row[0], f"{row[1]}/{row[2]}", row[3], row[4], row[5], best, created)))
        Console().print(t)
        return
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
