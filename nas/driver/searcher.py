"""Adapters between our contracts and Ray Tune.

``StrategySearcher`` turns any ``nas.Strategy`` into a ``ray.tune.search.Searcher`` (what to try next);
``TrialRecorder`` is a ``ray.tune.Callback`` that writes trial records and prints progress (what happened).
Trials themselves run in ``nas.trials.single.train_trial`` (or ``nas.trials.horovod.train_trial_horovod``); early
stopping, when asked for, is a Ray scheduler.
Keeping the three apart is Ray Tune's own separation of concerns.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback, Stopper
from ray.tune.search import Searcher

from nas.options import Budget
from nas.plugins.objective import Objective
from nas.plugins.strategy import Strategy
from nas.storage.layout import BEST_MODEL, BEST_WEIGHTS, CHECKPOINT, trial_dir, trial_record
from nas.storage.records import TrialRecord, TrialStatus
from nas.storage.results import add_epoch, best_epoch, epoch_metrics
from nas.trials.worker import GENERATION_KEY, TRIAL_KEY, split_config


class StrategySearcher(Searcher):
    """Ray Tune asks ``suggest``; the strategy ``ask``s. A finished trial's best epoch is ``tell``-ed.

    The searcher is where the trial budget is counted (``Budget.finished``): Tune runs with ``num_samples=-1``
    and the searcher proposes while finished + running + waiting-to-rerun trials stay below the total.

    ``deterministic=L`` (``--deterministic``; L = 2K for K trials at once): the same seed gives the same search
    at any concurrency. What the strategy proposes as trial n is a function of its seed and of the calls made on
    it before: the asks of trials 0 .. n-1 and the tells made between them, in their order. Asynchronously,
    trials end in an order the machine decides, so the tells (and which of them come before ask n) vary from run
    to run. Here the calls follow one fixed sequence, whatever the order trials end in:

        ask 0, ask 1, ..., ask L-1, tell 0, ask L, tell 1, ask L+1, ..., tell n-L, ask n, ...

    then, once no trial is left to ask (the budget is spent or the strategy has nothing more), every remaining
    tell in trial order. Two rules produce it: a finished trial is told only when every trial numbered below it
    has been told and its number is at most n-L, n being the number of trials asked so far (those tells would
    come before ask n in the sequence, and no ask happens in between); and ask n waits (``suggest`` returns None,
    Tune asks again later) until trial n-L has been told. Each call is thus the sequence's next, so by induction
    every proposal, and every tell's content (a trial's training is seeded by its number), is the same as in any
    other run of the command. Any fixed L gives that; the lag trades what a proposal knows for throughput. With
    L = K a trial that ends late holds the next ask at once; with L = 2K the other slots go on through up to
    2K-1 younger trials, while each proposal still knows every trial but the last 2K (asynchronously it knows
    all but the K or so running). Measured (benchmarks/deterministic.py, 20 cnn trials whose costs differ 10x,
    2-core machine, 2026-12-04): L = 2K costs 1.46x the default's wall at K = 2 and 1.66x at K = 4; L = K 1.48x
    and 1.26x with evolution's default population (another mix of trials, in a faster hour: not comparable
    pair for pair). Part of the cost is Ray Tune's: a finished trial's worker is not kept for reuse while the
    next ask waits, so the next trial starts a new worker (3 worker processes instead of 2 at K = 2, 6 instead
    of 4 at K = 4), which imports the framework again. A killed and resumed driver continues the same sequence:
    trials that finished but were not told yet are handed back (``untold``) and wait for their turn. What it
    does not fix: a scheduler's early stops (``--scheduler``) depend on when trials report, and so do the tells'
    contents then.
    """

    def __init__(self, strategy: Strategy, on_state: Callable[[dict[str, Any]], None] | None = None,
                 replay: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] | None = None,
                 recycler: WorkerRecycler | None = None, budget: Budget | None = None,
                 deterministic: int | None = None, untold: dict[str, Any] | None = None) -> None:
        obj = strategy.objective
        super().__init__(metric=obj.metric, mode=obj.mode)
        self.strategy = strategy
        self.on_state = on_state  # called with the strategy state after every change (persisted by the engine)
        # resumed search: proposals the strategy made before the interruption, run again first (same ids)
        self.replay = list(replay or [])
        self.exhausted = False
        self.ray_to_nas: dict[str, str] = {}  # the trials running now (Tune's ids to ours)
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.recycler = recycler
        self.budget = budget  # None: propose until the strategy is exhausted
        self.max_concurrent: int | None = None
        self.deterministic = deterministic  # L: tells and asks in the fixed sequence (class docstring)
        self.untold: dict[str, Any] = dict(untold or {})  # deterministic: finished trials not told yet (metrics)
        self.last_ask = False  # deterministic: no trial is left to ask; the rest are told in trial order

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        # Handled here rather than by Tune's ConcurrencyLimiter, which counts a trial as running until the
        # searcher hears it ended; Tune never says so for a trial it errors when a reused worker cannot be
        # reset, and the search would lose a slot for good. ``requeue`` frees it.
        self.max_concurrent = max_concurrent
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        # The budget is counted here, not by Tune's num_samples, so a trial re-queued by ``requeue`` still runs.
        if self.max_concurrent and len(self.ray_to_nas) >= self.max_concurrent:
            return None
        if self.replay:
            nas_id, values, history = self.replay.pop(0)
            return self._start(trial_id, nas_id, values, history)
        if self.budget is not None and self.budget.finished + len(self.ray_to_nas) >= self.budget.total:
            self._tell_in_turn(last=True)
            return Searcher.FINISHED if not self.ray_to_nas else None  # a running trial may still need a re-run
        if self.deterministic and not self._tell_in_turn():
            return None  # trial n-L has not been told: ask n waits for it
        proposal = self.strategy.ask()
        if proposal is None:
            self.exhausted = True
            self._tell_in_turn(last=True)
            return Searcher.FINISHED if not self.ray_to_nas else None
        self._changed()
        return self._start(trial_id, proposal.trial_id, proposal.values, [])

    def _start(self, trial_id: str, nas_id: str, values: dict[str, Any], history: list) -> dict[str, Any]:
        self.ray_to_nas[trial_id] = nas_id
        self.history[trial_id] = list(history)
        config = {**values, TRIAL_KEY: nas_id}
        if self.recycler is not None:
            config[GENERATION_KEY] = self.recycler.generation
        return config

    def requeue(self, trial_id: str) -> str | None:
        """Run a trial Tune dropped without telling us (see ``LostTrials``) again, first, with the same id."""
        nas_id = self.ray_to_nas.pop(trial_id, None)
        if nas_id is None:
            return None
        # still pending for the strategy (never told), which keeps its configuration
        self.replay.insert(0, (nas_id, self.strategy.pending[nas_id], self.history.pop(trial_id, [])))
        return nas_id

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
        if self.deterministic:
            self.untold[nas_id] = metrics
            self._tell_in_turn()
        else:
            self.strategy.tell(nas_id, metrics)
        if self.budget is not None:  # before Tune's callbacks hear of it: the progress line counts it
            self.budget.finished += 1
        self._changed()

    def _tell_in_turn(self, last: bool = False) -> bool:
        """Deterministic mode: tell the finished trials whose turn has come (class docstring), in trial order;
        True when ask n may be made (trial n-L told). ``last``: no ask follows, every finished trial's turn has
        come, still in trial order."""
        if not self.deterministic:
            return True
        self.last_ask = self.last_ask or last
        upto = None if self.last_ask else self.strategy.asked - self.deterministic
        for nas_id in sorted(self.strategy.pending, key=int):
            if (upto is not None and int(nas_id) > upto) or nas_id not in self.untold:
                break
            self.strategy.tell(nas_id, self.untold.pop(nas_id))
        return upto is None or not any(int(t) <= upto for t in self.strategy.pending)

    def _changed(self) -> None:
        if self.on_state is not None:
            self.on_state(self.strategy.get_state())

    # Ray Tune's experiment checkpointing: plain JSON, never pickle, so a state file is readable and portable.
    def get_state(self) -> dict[str, Any]:
        return {"strategy": self.strategy.get_state(), "ray_to_nas": self.ray_to_nas, "history": self.history,
                "replay": self.replay, "exhausted": self.exhausted,
                "finished": self.budget.finished if self.budget else None, "untold": self.untold,
                "last_ask": self.last_ask}

    def set_state(self, state: dict[str, Any]) -> None:
        self.strategy.set_state(state["strategy"])
        self.ray_to_nas = dict(state["ray_to_nas"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.replay = [tuple(r) for r in state.get("replay", [])]
        self.exhausted = bool(state.get("exhausted", False))
        self.untold = dict(state.get("untold") or {})
        self.last_ask = bool(state.get("last_ask", False))
        if self.budget is not None and state.get("finished") is not None:
            self.budget.finished = int(state["finished"])

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


class LostTrials(Callback):
    """Re-runs trials that Tune ends without telling the searcher or the callbacks.

    Ray 2.60: when a reused worker cannot be reset for the next trial (its previous trial's thread has not
    ended in time), Tune marks the new trial ERROR without calling ``on_trial_error`` or the searcher
    (ray-project/ray#29268). Nothing is wrong with that configuration, so it runs again, with the same id (from
    its last epoch checkpoint, if it has one). Without this the trial would also keep its concurrency slot and
    the budget would never be reached: the search stalls.
    """

    MAX_RUNS = 10  # a trial dropped this often is recorded failed instead: never an endless loop

    def __init__(self, searcher: StrategySearcher, announce: Callable[[str], None] | None = None,
                 recorder: TrialRecorder | None = None) -> None:
        self.searcher = searcher
        self.announce = announce or (lambda s: None)
        self.recorder = recorder
        self.requeued: list[str] = []

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        for trial in trials:
            # a trial Tune ended normally was handed to the searcher already, in the same step
            if trial.status not in ("ERROR", "TERMINATED") or trial.trial_id not in self.searcher.ray_to_nas:
                continue
            if self.requeued.count(self.searcher.ray_to_nas[trial.trial_id]) + 1 >= self.MAX_RUNS:
                self.searcher.on_trial_complete(trial.trial_id, error=True)
                if self.recorder is not None:
                    self.recorder.on_trial_error(iteration, trials, trial)
                continue
            nas_id = str(self.searcher.requeue(trial.trial_id))
            if nas_id not in self.requeued:  # said once per trial: it may be unlucky again
                self.announce(f"Ray ended trial {nas_id} without telling the search ({_error_text(trial)}); "
                              f"running it again")
            self.requeued.append(nas_id)


class WorkerRecycler:
    """Keeps worker memory bounded by replacing workers that grew past a resident-memory limit.

    Keras grows ~6-9 MB per model built in a long-lived process whatever is freed (``clear_session()``,
    ``gc.collect()``), and workers are reused across trials. Ray 2.60 offers no public way to retire one reused worker: a
    ``reset_config`` that returns False errors the trial. What Tune does honour is resources: a cached worker is
    reused only by a trial requesting exactly the resources it was started with. So trials carry a worker
    *generation* in their config, and each generation requests a different, negligible number of bytes of Ray's
    ``memory`` resource (``trial_resources``). Once a worker reports more than ``limit_mb``, later trials belong
    to the next generation: Tune stops the old workers as their trials end instead of caching them, and starts
    fresh ones (paying the TensorFlow import once more). Every worker thus stays under the limit plus one
    trial's growth. Ray has no per-actor recycling setting, which is why this is written here.
    """

    AUTO_FACTOR = 1.5  # "auto": this many times a fresh worker's RSS at its first report

    def __init__(self, limit_mb: float | str | None, announce: Callable[[str], None] | None = None) -> None:
        self.limit_mb = None if limit_mb in ("auto", None, "off") else float(limit_mb)  # auto: set at first report
        self.enabled = limit_mb not in (None, "off")
        self.announce = announce or (lambda s: None)
        self.why = ""  # how an auto limit was chosen, said with the first replacement
        self.generation = 0
        self.recycled: list[dict[str, Any]] = []  # one entry per new generation: which worker, at what RSS

    def observe(self, config: dict[str, Any], pid: Any, rss_mb: Any) -> None:
        """A trial's report: the RSS of the worker (``pid``) running it."""
        if not self.enabled or not isinstance(rss_mb, (int, float)):
            return
        if self.limit_mb is None:  # auto: fixed at the first report, from a worker that has run one trial
            self.limit_mb = round(self.AUTO_FACTOR * float(rss_mb))
            self.why = f"auto: {self.AUTO_FACTOR}x a fresh worker's {rss_mb:,.0f} MB; --max-worker-rss-mb sets it"
        # only a worker of the current generation starts a new one; older ones are already on their way out
        if rss_mb > self.limit_mb and config.get(GENERATION_KEY, 0) == self.generation:
            self.generation += 1
            self.recycled.append({"pid": pid, "rss_mb": rss_mb, "generation": self.generation})
            why = f"; {self.why}" if self.why and self.generation == 1 else ""  # the limit explained once
            self.announce(f"worker {pid} reached {rss_mb:,.0f} MB resident memory (limit {self.limit_mb:,.0f} MB"
                          f"{why}): next trials start in fresh workers")


class FailureGuard(Stopper):
    """Stops the whole search after ``limit`` failed trials in a row instead of burning the budget."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.consecutive = 0
        self.errors: list[str] = []
        self.reason: str | None = None
        self.storage: str | None = None  # a run file the driver could not write (full or read-only storage)

    @property
    def tripped(self) -> bool:
        return self.reason is not None or self.storage is not None

    def write(self, write: Callable[..., Any], *args: Any) -> bool:
        """Write a run file; a full or read-only storage stops the whole search (what was written before stays
        intact: every file is replaced atomically) instead of raising into Ray Tune's loop, which would
        leave it half-told."""
        try:
            write(*args)
            return True
        except OSError as e:
            if self.storage is None:
                where = f" {e.filename}" if e.filename else ""
                self.storage = f"cannot write{where}: {e.strerror or e}"
            return False

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

    def __init__(self, store: Any, objective: Objective, printer: Callable[[str, TrialRecord], None],
                 guard: FailureGuard | None = None, max_epochs: int | None = None,
                 recycler: WorkerRecycler | None = None, keep_checkpoints: bool = True) -> None:
        self.store = store
        self.keep_checkpoints = keep_checkpoints
        self.recycler = recycler
        self.objective = objective
        self.printer = printer
        self.guard = guard
        self.max_epochs = max_epochs
        self.records: dict[str, TrialRecord] = {}

    def _record(self, trial: Any) -> TrialRecord:
        nas_id, values = split_config(trial.config)
        rec = self.records.get(nas_id)
        if rec is None and trial_record(self.store.root, nas_id).is_file():
            rec = self.records[nas_id] = self.store.trial(nas_id)  # a resumed trial keeps its earlier epochs
        if rec is None:
            rec = self.records[nas_id] = TrialRecord(nas_id, config=values, ray_trial_id=trial.trial_id)
        return rec

    def _drop_checkpoint(self, rec: TrialRecord) -> None:
        """A completed trial is done for good: its best-epoch model (``best.keras``) stays, its mid-trial
        checkpoint goes, and so do the best epoch's bare weights ``best.npz`` once ``best.keras`` holds them,
        unless --keep-checkpoints."""
        if not self.keep_checkpoints and rec.status == TrialStatus.COMPLETED:
            directory = trial_dir(self.store.root, rec.trial_id)
            try:
                (directory / CHECKPOINT).unlink(missing_ok=True)
                if (directory / BEST_MODEL).is_file():
                    (directory / BEST_WEIGHTS).unlink(missing_ok=True)
            except OSError:
                pass

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # a trial a scheduler stopped may still have finished its epoch, and checkpointed it, after it completed
        for rec in self.records.values():
            self._drop_checkpoint(rec)

    def _write(self, rec: TrialRecord) -> bool:
        if self.guard is None:
            self.store.write_trial(rec)
            return True
        return self.guard.write(self.store.write_trial, rec)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rec = self._record(trial)
        rec.status, rec.started = TrialStatus.RUNNING, rec.started or time.time()
        if self._write(rec):
            self.printer("started", rec)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        rec = self._record(trial)
        add_epoch(rec.history, epoch_metrics(result))
        if result.get("resumed_from_epoch"):
            rec.resumed_from_epoch = int(result["resumed_from_epoch"])
        rec.node = result.get("node") or rec.node
        rec.node_id = result.get("node_id") or rec.node_id
        if result.get("workers"):
            rec.workers = int(result["workers"])
        rec.gpu_ids = result.get("gpu_ids", "")
        rec.device = result.get("device") or rec.device
        if rec.fit_started is None:
            rec.fit_started = result.get("fit_started")
        rec.pid, rec.worker_rss_mb = result.get("pid"), result.get("worker_rss_mb")
        if self.recycler is not None:
            self.recycler.observe(trial.config, rec.pid, rec.worker_rss_mb)
        rec.metrics = best_epoch(rec.history, self.objective) or {}
        rec.status = TrialStatus.RUNNING
        if self._write(rec):
            self.printer("epoch", rec)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rec = self._record(trial)
        rec.status, rec.finished = TrialStatus.COMPLETED, time.time()
        rec.metrics = best_epoch(rec.history, self.objective) or {}
        if self.max_epochs and rec.metrics.get("epochs", self.max_epochs) < self.max_epochs:
            rec.stopped_early = True  # by the scheduler; the strategy is told its best epoch all the same
        if not self._write(rec):
            return
        self._drop_checkpoint(rec)
        if self.guard:
            self.guard.record(False)
        self.printer(TrialStatus.COMPLETED, rec)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rec = self._record(trial)
        rec.status, rec.finished, rec.error = TrialStatus.FAILED, time.time(), _error_text(trial)
        if not self._write(rec):
            return
        if self.guard:
            self.guard.record(True, rec.error)
        self.printer(TrialStatus.FAILED, rec)
