"""What a search is asked to do: its options, their accepted values, and what a trial is handed.

- ``SearchOptions``: every option of ``nas search`` (the CLI builds one; ``check`` validates it).
- The choice lists the CLI offers (``BACKENDS``, ``SCHEDULERS``, ``DISTRIBUTED_MODES``, ``TASK_KINDS``,
  ``DATA_SOURCES``).
- ``TrialSetup``: the frozen, typed part of the options every trial needs, sent to the Ray workers once.
- ``Budget``: the trial budget of a search, counted in one place.
- ``SearchResult``: what a finished (or interrupted) search returns.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from nas.errors import NasError
from nas.estimation.settings import ESTIMATIONS, SHARED, SupernetSettings
from nas.plugins.data import BUILTIN as DATA_SOURCES
from nas.plugins.objective import LATENCY_METRICS, Objective
from nas.plugins.task import TASK_KINDS, Task
from nas.runtime.backends import BACKENDS
from nas.runtime.backends import default as default_backend
from nas.storage.records import TrialRecord

SCHEDULERS = ("none", "asha", "hyperband", "median")
#: a float bound meaning "> 0" (exclusive): the smallest positive float
_ABOVE_ZERO = sys.float_info.min
#: Ray refuses a resource quantity above this (ray 2.60: "Resource quantities must be at most 1e14")
_RAY_MOST = 10**14
#: every typed option: its kind and accepted range (None: unbounded); str/bool/dict/list options: their type.
#: Seeds reach numpy's legacy RandomState (keras.utils.set_random_seed): 0 to 2**32 - 1.
_KINDS: dict[str, tuple[type, Any, Any]] = {
    "trials": (int, 1, None), "epochs": (int, 1, None), "seed": (int, 0, 2**32 - 1),
    "executions_per_trial": (int, 1, None), "min_epochs": (int, 1, None), "max_params": (int, 1, None),
    "max_latency_ms": (float, _ABOVE_ZERO, None),
    "max_failures": (int, 0, None), "max_consecutive_failures": (int, 0, None),
    "max_concurrent": (int, 1, None), "cpus_per_trial": (float, _ABOVE_ZERO, _RAY_MOST),
    "gpus_per_trial": (float, 0, _RAY_MOST), "num_cpus": (int, 1, _RAY_MOST), "num_gpus": (int, 0, _RAY_MOST),
    "workers_per_trial": (int, 1, None), "window": (int, 1, None), "normal_class": (int, 0, None),
    # threading's longest wait (a larger one is an OverflowError): about 292 years on Linux
    "connect_timeout": (float, _ABOVE_ZERO, threading.TIMEOUT_MAX), "top_k": (int, 1, None),
    "supernet_epochs": (int, 1, None),
    "space": (str, None, None), "strategy": (str, None, None), "data": (str, None, None),
    "target": (str, None, None), "task": (str, None, None), "name": (str, None, None),
    "address": (str, None, None), "scheduler": (str, None, None), "distributed": (str, None, None),
    "backend": (str, None, None), "estimation": (str, None, None), "fit_arguments": (str, None, None),
    "objectives": (list, None, None), "strategy_options": (dict, None, None), "space_options": (dict, None, None),
    "supernet_options": (dict, None, None), "scale_lr": (bool, None, None), "keep_checkpoints": (bool, None, None),
    "deterministic": (bool, None, None), "warm_start": (list, None, None),
    "verbose": (bool, None, None),
}
#: the command line's (singular) flag of an option whose API name differs
_FLAGS = {"objectives": "objective", "strategy_options": "strategy_option", "space_options": "space_option",
          "supernet_options": "supernet_option"}
#: options whose None means "not given" (their default)
_OPTIONAL = {"seed", "max_params", "max_latency_ms", "max_concurrent", "num_cpus", "num_gpus", "window",
             "normal_class", "target", "task", "name", "address", "backend", "fit_arguments"}
DISTRIBUTED_MODES = ("none", "horovod", "mirrored")
STORAGE_HELP = "directory holding runs (default: $NAS_STORAGE or ~/nas-runs)"

__all__ = ["BACKENDS", "DATA_SOURCES", "DISTRIBUTED_MODES", "RESUME_MAY_CHANGE", "SCHEDULERS", "STORAGE_HELP", "TASK_KINDS",
           "Budget", "SearchOptions", "SearchResult", "TrialSetup"]


@dataclass
class SearchOptions:
    space: str = "mlp"
    strategy: str = "gp"  # the best of the built-ins at every budget (benchmarks/strategies.py)
    data: str = "digits"
    target: str | None = None
    window: int | None = None
    task: str | None = None
    normal_class: int | None = None
    objectives: list[str] = field(default_factory=list)
    trials: int = 10
    epochs: int = 5
    executions_per_trial: int = 1  # models per configuration, their per-epoch metrics averaged (KerasTuner's)
    seed: int | None = 0
    name: str | None = None
    storage: str | None = None
    address: str | None = None
    max_concurrent: int | None = None
    # the same seed, the same search at any concurrency: asks and tells in one fixed sequence (nas.driver.searcher)
    deterministic: bool = False
    # earlier runs whose completed trials the strategy is told first (nas.driver.warmstart): names or paths
    warm_start: list[str] = field(default_factory=list)
    # configurations trained first, in order (a JSON file's path, or the list; the run keeps the list)
    enqueue: list[dict[str, Any]] | str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    strategy_options: dict[str, Any] = field(default_factory=dict)
    space_options: dict[str, Any] = field(default_factory=dict)
    num_cpus: int | None = None  # local Ray only: CPUs it may use (default: all)
    num_gpus: int | None = None  # local Ray only: logical GPUs it advertises
    scheduler: str = "none"  # early stopping: asha | hyperband | median | none
    min_epochs: int = 1  # grace period before a scheduler may stop a trial
    max_params: int | None = None  # constraint: reject larger models before training
    max_latency_ms: float | None = None  # constraint: reject slower models before training
    max_failures: int = 0  # retries of a trial whose worker died, from its last checkpoint
    max_consecutive_failures: int = 5  # stop the search after this many failed trials in a row (0: never)
    workers_per_trial: int = 1  # data-parallel ranks per trial (--distributed horovod)
    distributed: str = "none"  # none | horovod | mirrored
    scale_lr: bool = False  # horovod: multiply the learning rate by the number of ranks
    max_worker_rss_mb: float | str = "auto"  # replace reused workers above this RSS ("auto": 1.5x fresh; "off")
    backend: str | None = None  # tensorflow | jax | torch (None: $KERAS_BACKEND, else tensorflow)
    connect_timeout: float = 30.0  # seconds to reach the Ray cluster of --address before failing
    keep_checkpoints: bool = False  # keep a completed trial's mid-trial checkpoint (trials/<id>/resume.npz)
    verbose: bool = False
    # the user's Model.fit arguments (nas.search's keywords that are not options: FIT_PASSED), saved with the run
    # (<run>/plugins/fit.pkl; nas.driver.inputs) and loaded afresh by every trial: its path, set by the driver
    fit_arguments: str | None = None
    # -- weight sharing (nas.estimation): a supernet phase, then the top-k trained from scratch as the trials
    estimation: str = "standalone"  # standalone | shared-weights
    top_k: int = 5
    supernet_epochs: int = 30
    supernet_options: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise ``NasError`` naming the first bad value and what is accepted."""
        self._check_types()
        if self.scheduler not in SCHEDULERS:
            raise NasError(f"--scheduler {self.scheduler!r} is not valid; accepted: {', '.join(SCHEDULERS)}")
        if not isinstance(self.min_epochs, int) or not 1 <= self.min_epochs <= self.epochs:
            raise NasError(f"--min-epochs {self.min_epochs!r} is not valid; give an integer from 1 to --epochs "
                           f"({self.epochs})")
        if self.max_worker_rss_mb not in ("auto", "off"):
            try:
                ok = float(self.max_worker_rss_mb) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise NasError(f"--max-worker-rss-mb {self.max_worker_rss_mb!r} is not valid; give a number of MB "
                               f"> 0, 'auto' (1.5x a fresh worker's) or 'off'")
            self.max_worker_rss_mb = float(self.max_worker_rss_mb)
        if self.distributed not in DISTRIBUTED_MODES:
            raise NasError(f"--distributed {self.distributed!r} is not valid; accepted: {', '.join(DISTRIBUTED_MODES)}")
        if self.executions_per_trial > 1 and self.distributed != "none":
            raise NasError(f"--executions-per-trial {self.executions_per_trial} trains its models in one process; it "
                           f"cannot be combined with --distributed {self.distributed} (give one or the other)")
        if self.workers_per_trial > 1 and self.distributed != "horovod":
            raise NasError(f"--workers-per-trial {self.workers_per_trial} needs --distributed horovod "
                           f"(--distributed mirrored uses the GPUs of one worker: raise --gpus-per-trial instead)")
        backend = self.backend or default_backend()
        if backend not in BACKENDS:
            raise NasError(f"--backend {backend!r} is not valid; accepted: {', '.join(BACKENDS)}")
        if self.distributed != "none" and backend != "tensorflow":
            raise NasError(f"--distributed {self.distributed} is TensorFlow-only; it needs --backend tensorflow "
                           f"(this search asks for --backend {backend})")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise NasError(
                f"--gpus-per-trial {self.gpus_per_trial!r} is not valid; give 0, a fraction below 1, or a whole number"
            )
        # -- weight sharing (nas.estimation) --
        if self.estimation not in ESTIMATIONS:
            raise NasError(f"--estimation {self.estimation!r} is not valid; accepted: {', '.join(ESTIMATIONS)}")
        if self.estimation == SHARED and (self.warm_start or self.enqueue):
            flag = "--warm-start" if self.warm_start else "--enqueue"
            raise NasError(f"{flag} tells the strategy of the trials; --estimation {SHARED} trains the supernet "
                           f"phase's top-{self.top_k} as its trials instead: give one or the other")
        if self.estimation == SHARED:
            SupernetSettings.of(self.supernet_epochs, self.top_k, self.supernet_options)  # one line for a bad one
            self.trials = self.top_k  # the trials are the top-k, trained from scratch after the supernet phase

    def _check_types(self) -> None:
        """Every option's type and range (``_KINDS``): a value the command line could not have given (the API's
        ``seed="abc"``, ``space_options="units=3"``) is one line too, never a TypeError deep in a library."""
        for name, (kind, low, high) in _KINDS.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            flag = "--" + _FLAGS.get(name, name).replace("_", "-")
            if kind in (int, float):
                whole = isinstance(value, int) and not isinstance(value, bool)
                number = whole or (kind is float and isinstance(value, float) and math.isfinite(value))
                if not number or value < low or (high is not None and value > high):
                    what = "an integer" if kind is int else "a finite number"
                    bound = "> 0" if low == _ABOVE_ZERO else f">= {low}"
                    raise NasError(f"{flag} {value!r} is not valid; give {what} {bound}"
                                   + (f" and <= {high:,.0f}" if high is not None else ""))
            elif not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
                accepted = {str: "a string", bool: "true or false", dict: "a mapping of KEY: VALUE (KEY=VALUE "
                            "pairs on the command line)", list: "a list of strings"}[kind]
                raise NasError(f"{flag} {value!r} is not valid; give {accepted}")
        if self.storage is not None and not isinstance(self.storage, (str, os.PathLike)):
            raise NasError(f"--storage {self.storage!r} is not valid; give a directory path")

    @property
    def ranks(self) -> int:
        """Processes one trial trains on: its Horovod ranks, else 1."""
        return self.workers_per_trial if self.distributed == "horovod" else 1


#: options a resumed search may change; any other option given must equal the stored one
#: Keras' ``Model.fit`` arguments every trial's ``fit`` is given when ``nas.search`` is (``callbacks=[...]``, as
#: ``tuner.search(x, y, callbacks=[...])``); ``tests/test_api.py`` checks these and ``FIT_BY_NAS`` are exactly
#: ``Model.fit``'s parameters, so a new Keras argument is noticed
FIT_PASSED = ("batch_size", "verbose", "callbacks", "class_weight", "sample_weight", "validation_batch_size")
#: the ``Model.fit`` arguments nas sets itself, with what a user gives instead
FIT_BY_NAS = {
    "x": "data=(x, y)", "y": "data=(x, y)", "validation_data": "validation_data=(x_val, y_val)",
    "validation_split": "validation_data=, or nothing: a seeded 20 % of data is held out",
    "epochs": "epochs=", "initial_epoch": "nas.resume(name) (each trial continues from its last epoch checkpoint)",
    "steps_per_epoch": "batch_size=", "validation_steps": "validation_batch_size=",
    "validation_freq": "nothing: every epoch is validated (strategies and schedulers read each epoch's metrics)",
    "shuffle": "nothing: nas orders each epoch's batches itself, seeded, so a resumed trial trains exactly as an "
               "uninterrupted one (a HyperModel's own fit may still set shuffle=)",
}

RESUME_MAY_CHANGE = ("trials", "max_concurrent", "cpus_per_trial", "gpus_per_trial", "address", "num_cpus",
                     "num_gpus", "verbose", "max_failures", "max_consecutive_failures", "max_worker_rss_mb",
                     "storage", "name", "connect_timeout", "keep_checkpoints")


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of one search needs besides its own configuration; sent to the workers once."""

    space: str  # a registered name, module:Class or an absolute file.py:Class
    task: Task
    epochs: int
    objective: Objective  # trials save their model at their best epoch by it
    backend: str = "tensorflow"
    space_options: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = 0
    run_dir: str = ""  # "": a trial outside a run (writes no checkpoint)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1
    distributed: str = "none"
    scale_lr: bool = False
    max_params: int | None = None
    max_latency_ms: float | None = None
    measure_latency: bool = True  # only searches whose objectives or constraints use latency pay for it
    fit_arguments: str | None = None  # SearchOptions.fit_arguments
    executions_per_trial: int = 1

    @classmethod
    def of(cls, opts: SearchOptions, task: Task, objectives: list[Objective], run_dir: Path | str) -> "TrialSetup":
        return cls(space=opts.space, task=task, epochs=opts.epochs, objective=objectives[0],
                   backend=opts.backend or default_backend(),
                   space_options=dict(opts.space_options), seed=opts.seed, run_dir=str(run_dir),
                   cpus_per_trial=opts.cpus_per_trial, gpus_per_trial=opts.gpus_per_trial,
                   workers_per_trial=opts.workers_per_trial, distributed=opts.distributed, scale_lr=opts.scale_lr,
                   max_params=opts.max_params, max_latency_ms=opts.max_latency_ms,
                   measure_latency=measures_latency([o.metric for o in objectives], opts.max_latency_ms),
                   fit_arguments=opts.fit_arguments, executions_per_trial=opts.executions_per_trial)


def measures_latency(metric_names: Iterable[str], max_latency_ms: float | None) -> bool:
    """Whether a search uses latency at all (an objective names it, or a constraint): measuring costs a
    compiled inference function per trial, so searches that do not use it skip it."""
    return bool(max_latency_ms) or any(m in LATENCY_METRICS for m in metric_names)


@dataclass
class Budget:
    """How many trials a search is to finish, and how many have (completed or failed, earlier sessions
    included). The searcher counts; the engine and the progress display read it."""

    total: int
    finished: int = 0

    @property
    def spent(self) -> bool:
        return self.finished >= self.total


@dataclass
class SearchResult:
    name: str
    directory: Path
    best: TrialRecord | None
    trials: list[TrialRecord]
    objective: Objective
    wall_s: float
    interrupted: bool = False
    stopped: str | None = None  # why the search stopped early (too many consecutive failures)
