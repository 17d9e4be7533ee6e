"""Adapters between our contracts and Ray Tune.

``StrategySearcher`` turns any ``nas.Strategy`` into a ``ray.tune.search.Searcher`` (what to try next);
``TrialRecorder`` is a ``ray.tune.Callback`` that writes trial records and prints progress (what happened).
Trials themselves run in ``nas.trial.train_trial``; early stopping, when asked for, is a Ray scheduler.
Keeping the three apart is Ray Tune's own separation of concerns.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback, Stopper
from ray.tune.search import Searcher

from nas.objective import Objective
from nas.results import add_epoch, best_epoch, epoch_metrics
from nas.strategy import Strategy
from nas.trial import TRIAL_KEY, split_config


class StrategySearcher(Searcher):
    """Ray Tune asks ``suggest``; the strategy ``ask``s. A finished trial's best epoch is ``tell``-ed."""

    def __init__(self, strategy: Strategy, on_state: Callable[[dict[str, Any]], None] | None = None,
                 replay: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] | None = None) -> None:
        obj = strategy.objective
        super().__init__(metric=obj.metric, mode=obj.mode)
        self.strategy = strategy
        self.on_state = on_state  # called with the strategy state after every change (persisted by the engine)
        # resumed search: proposals the strategy made before the interruption, run again first (same ids)
        self.replay = list(replay or [])
        self.exhausted = False
        self.ray_to_nas: dict[str, str] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.replay:
            nas_id, values, history = self.replay.pop(0)
            self.ray_to_nas[trial_id] = nas_id
            self.history[trial_id] = list(history)
            return {**values, TRIAL_KEY: nas_id}
        proposal = self.strategy.ask()
        if proposal is None:
            self.exhausted = True
            return Searcher.FINISHED
        self.ray_to_nas[trial_id] = proposal.trial_id
        self.history[trial_id] = []
        self._changed()
        return {**proposal.values, TRIAL_KEY: proposal.trial_id}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        add_epoch(self.history.setdefault(trial_id, []), epoch_metrics(result))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        nas_id = self.ray_to_nas.pop(trial_id, None)
        history = self.history.pop(trial_id, [])
        if nas_id is None:
            return
        if result and not error:  # a scheduler's STOP hands the last epoch only to on_trial_complete
            add_epoch(history, epoch_metrics(result))
        metrics = None if error else best_epoch(history, self.strategy.objective)
        self.strategy.tell(nas_id, metrics)
        self._changed()

    def _changed(self) -> None:
        if self.on_state is not None:
            self.on_state(self.strategy.get_state())

    # Ray Tune's experiment checkpointing: plain JSON, never pickle, so a state file is readable and portable.
    def get_state(self) -> dict[str, Any]:
        return {"strategy": self.strategy.get_state(), "ray_to_nas": self.ray_to_nas, "history": self.history,
                "replay": self.replay, "exhausted": self.exhausted}

    def set_state(self, state: dict[str, Any]) -> None:
        self.strategy.set_state(state["strategy"])
        self.ray_to_nas = dict(state["ray_to_nas"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.replay = [tuple(r) for r in state.get("replay", [])]
        self.exhausted = bool(state.get("exhausted", False))

    def save(self, checkpoint_path: str) -> None:
        tmp = Path(checkpoint_path).with_suffix(".tmp")
        tmp.write_text(json.dumps(self.get_state(), default=str))
        tmp.replace(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or ""
    text = ""
    if path and Path(path).is_file():
        text = Path(path).read_text(errors="replace")
    else:
        text = str(getattr(trial, "error_msg", "") or "")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    # the last line of a Python traceback says what went wrong
    for ln in reversed(lines):
        if not ln.startswith(("File ", "^", "~")) and ":" in ln:
            return ln[:500]
    return lines[-1][:500] if lines else "trial failed"


class FailureGuard(Stopper):
    """Stops the whole search after ``limit`` failed trials in a row instead of burning the budget."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.consecutive = 0
        self.errors: list[str] = []
        self.reason: str | None = None

    @property
    def tripped(self) -> bool:
        return self.reason is not None

    def record(self, failed: bool, error: str | None = None) -> None:
        if not failed:
            self.consecutive, self.errors = 0, []
            return
        self.consecutive += 1
        self.errors.append(error or "")
        if self.limit and self.consecutive >= self.limit and not self.reason:
            self.reason = f"{self.consecutive} trials failed in a row; last error: {self.errors[-1]}"

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.tripped


class TrialRecorder(Callback):
    """Writes a record per trial into the store as it progresses, and tells the user what finished."""

    def __init__(self, store: Any, objective: Objective, printer: Callable[[str, dict[str, Any]], None],
                 guard: FailureGuard | None = None, max_epochs: int | None = None) -> None:
        self.store = store
        self.objective = objective
        self.printer = printer
        self.guard = guard
        self.max_epochs = max_epochs
        self.records: dict[str, dict[str, Any]] = {}

    def _record(self, trial: Any) -> dict[str, Any]:
        nas_id, values = split_config(trial.config)
        rec = self.records.get(nas_id)
        if rec is None and (self.store.trials_dir / f"{nas_id}.json").is_file():
            rec = self.records[nas_id] = self.store.trial(nas_id)  # a resumed trial keeps its earlier epochs
        if rec is None:
            rec = {
                "trial_id": nas_id,
                "status": "pending",
                "config": values,
                "metrics": {},
                "error": None,
                "ray_trial_id": trial.trial_id,
                "node": None,
                "started": None,
                "finished": None,
                "history": [],
            }
            self.records[nas_id] = rec
        return rec

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rec = self._record(trial)
        rec.update(status="running", started=rec["started"] or time.time())
        self.store.write_trial(rec)
        self.printer("started", rec)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        rec = self._record(trial)
        add_epoch(rec["history"], epoch_metrics(result))
        if result.get("resumed_from_epoch"):
            rec["resumed_from_epoch"] = int(result["resumed_from_epoch"])
        rec["node"] = result.get("node") or rec["node"]
        rec["node_id"] = result.get("node_id") or rec.get("node_id")
        if result.get("workers"):
            rec["workers"] = int(result["workers"])
        rec["gpu_ids"] = result.get("gpu_ids", "")
        rec.setdefault("fit_started", result.get("fit_started"))
        rec["pid"], rec["worker_rss_mb"] = result.get("pid"), result.get("worker_rss_mb")
        rec["metrics"] = best_epoch(rec["history"], self.objective) or {}
        rec["status"] = "running"
        self.store.write_trial(rec)
        self.printer("epoch", rec)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rec = self._record(trial)
        rec.update(status="completed", finished=time.time(), metrics=best_epoch(rec["history"], self.objective) or {})
        if self.max_epochs and rec["metrics"].get("epochs", self.max_epochs) < self.max_epochs:
            rec["stopped_early"] = True  # by the scheduler; the strategy is told its best epoch all the same
        self.store.write_trial(rec)
        if self.guard:
            self.guard.record(False)
        self.printer("completed", rec)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rec = self._record(trial)
        rec.update(status="failed", finished=time.time(), error=_error_text(trial))
        self.store.write_trial(rec)
        if self.guard:
            self.guard.record(True, rec["error"])
        self.printer("failed", rec)
