"""The typed records of a run directory, shared by every layer that reads or writes them.

``RunSpec``: what ``spec.json`` holds (what was searched, and how), read from the spec of any earlier version;
``TrialRecord``: what ``trials/<id>.json`` holds (one trial: its configuration, epochs, best metrics, status);
``TrialStatus``: a trial record's ``status``. Each reads what every earlier version wrote, writes the same JSON,
and reports a file that is not one by name (``RunError``) without changing it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nas.errors import NasError, RunError
from nas.plugins.objective import Objective
from nas.plugins.task import Task


class TrialStatus(str, enum.Enum):
    """A trial record's ``status``. A ``str``: records store and compare its value ("completed", ...), so the
    JSON of the records, and records written by earlier versions, are unchanged."""

    COMPLETED = "completed"
    FAILED = "failed"
    RUNNING = "running"  # a worker trains it (or did, when its driver was killed: pending again on resume)
    PENDING = "pending"  # proposed, not started

    __str__ = str.__str__
    __format__ = str.__format__

    @property
    def ended(self) -> bool:
        return self in ENDED


#: every status, in the order counts are shown
STATUSES = tuple(s.value for s in TrialStatus)
#: the statuses of a trial that never runs again
ENDED = (TrialStatus.COMPLETED, TrialStatus.FAILED)


def ended(record: Any) -> bool:
    """The trial of ``record`` (a ``TrialRecord``, or its JSON) completed or failed: it never runs again."""
    status = record.status if isinstance(record, TrialRecord) else record.get("status")
    return status in ENDED


def _kind_error(source: Path | str, key: str, value: Any, word: str) -> RunError:
    return RunError(f"{source}: {key!r} is {value!r}; {word} was expected")


@dataclass
class TrialRecord:
    """One trial, as ``trials/<id>.json`` holds it: written by the driver as the trial starts, after each epoch,
    and when it ends.

    ``metrics`` are the best epoch's (``nas.storage.results.best_epoch``), ``history`` every epoch's. The
    fields after ``history`` say where and how it ran (written once known); keys this version does not know are
    kept in ``extra``. ``to_json`` writes what earlier versions wrote (``status`` as its string).
    """

    trial_id: str
    status: TrialStatus = TrialStatus.PENDING
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    ray_trial_id: str | None = None
    node: str | None = None
    started: float | None = None
    finished: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    node_id: str | None = None
    gpu_ids: str | None = None
    device: str | None = None  # "cpu", or the GPU's name
    fit_started: float | None = None
    pid: int | None = None
    worker_rss_mb: float | None = None
    workers: int | None = None  # data-parallel ranks (Horovod)
    resumed_from_epoch: int | None = None  # continued from its epoch checkpoint after a kill
    stopped_early: bool | None = None  # by a scheduler (ASHA)
    updated: float | None = None  # when the driver last wrote it (nas.views.report.searching_s)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in _TRIAL_ALWAYS}
        out["status"] = self.status.value
        out.update({k: getattr(self, k) for k in _TRIAL_KNOWN if getattr(self, k) is not None})
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, d: Any, source: Path | str = "trial record") -> "TrialRecord":
        """The record of ``d``; one that is not a trial record raises ``RunError`` naming ``source`` and the bad
        entry (what was computed is never rewritten from a record nas cannot read)."""
        if not isinstance(d, Mapping):
            raise RunError(f"{source} is not a trial record (a JSON object expected, found {type(d).__name__})")
        if not isinstance(d.get("trial_id"), (str, int)) or isinstance(d.get("trial_id"), bool):
            raise _kind_error(source, "trial_id", d.get("trial_id"), "a trial id (a string)")
        if d.get("status") not in STATUSES:
            raise _kind_error(source, "status", d.get("status"), f"one of {', '.join(STATUSES)}")
        for key, (kind, word) in _TRIAL_KINDS.items():
            if d.get(key) is not None and not isinstance(d[key], kind):
                raise _kind_error(source, key, d[key], word)
        if any(not isinstance(h, Mapping) for h in d.get("history") or []):
            raise _kind_error(source, "history", d["history"], "a list of per-epoch objects")
        known = {k: d[k] for k in (*_TRIAL_ALWAYS, *_TRIAL_KNOWN) if k in d}
        known.update(trial_id=str(d["trial_id"]), status=TrialStatus(d["status"]),
                     config=dict(d.get("config") or {}), metrics=dict(d.get("metrics") or {}),
                     history=[dict(h) for h in d.get("history") or []])
        return cls(**known, extra={k: v for k, v in d.items() if k not in _TRIAL_FIELDS})


#: the fields every trial record has (in the order they are written); then those written once known
_TRIAL_ALWAYS = ("trial_id", "status", "config", "metrics", "error", "ray_trial_id", "node", "started", "finished",
                 "history")
_TRIAL_KNOWN = ("node_id", "gpu_ids", "device", "fit_started", "pid", "worker_rss_mb", "workers",
                "resumed_from_epoch", "stopped_early", "updated")
_TRIAL_FIELDS = {*_TRIAL_ALWAYS, *_TRIAL_KNOWN}
_TRIAL_KINDS = {"config": (Mapping, "a JSON object of hyperparameter values"),
                "metrics": (Mapping, "a JSON object of metrics"), "history": (list, "a list of per-epoch objects"),
                "error": (str, "a message (a string)")}


@dataclass
class DataSpec:
    """The data a run was searched on: how to load it again (``spec``, ``target``, ``window``) and what it was
    (``description``: source, sizes, input shape, ... as ``Dataset.describe`` gave them)."""

    spec: str
    target: str | None = None
    window: int | None = None
    description: dict[str, Any] = field(default_factory=dict)

    def load(self, seed: int | None) -> Any:
        """The same data, split as the run split it (``seed``: the run's)."""
        from nas.plugins.data import load_data

        return load_data(self.spec, target=self.target, window=self.window, seed=seed or 0)

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "target": self.target, "window": self.window, **self.description}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "DataSpec":
        rest = {k: v for k, v in d.items() if k not in ("spec", "target", "window")}
        return cls(str(d["spec"]), d.get("target"), d.get("window"), rest)


#: keys of spec.json in the order they are written
_SPEC_KEYS = ("name", "space", "space_version", "strategy", "backend", "strategy_options", "space_options", "data",
              "task", "objectives", "trials", "epochs", "seed", "resources", "hyperparameters", "options", "created",
              "versions", "command", "supernet", "resumed", "sessions")
#: in every spec any version wrote
_REQUIRED = ("name", "space", "strategy", "task", "data", "objectives", "trials", "epochs")
#: the entries that must be JSON objects or lists when present (``null`` is read as absent)
_SPEC_KINDS = {**{k: (Mapping, "object") for k in ("task", "data", "options", "strategy_options", "space_options",
                                                   "resources", "supernet", "versions")},
               **{k: (list, "list") for k in ("objectives", "hyperparameters", "resumed", "sessions")}}


@dataclass
class RunSpec:
    """What a run searched and how: the typed ``spec.json``.

    Written when a run starts, again at each session's start and end (``sessions``) and when a resume raises the
    budget. ``from_json`` reads the spec of every earlier version (keys they lacked get the value they meant:
    ``backend`` tensorflow, ``space_version`` "1", no ``options``: not resumable); keys this version does not
    know are kept in ``extra`` and written back unchanged. The trial budget is held once (``trials``) and written
    twice, as every version wrote it (``trials`` and ``options.trials``), so earlier versions still read it.
    """

    name: str
    space: str
    strategy: str
    task: Task
    data: DataSpec
    objectives: list[Objective]
    trials: int
    epochs: int
    space_version: str = "1"
    backend: str = "tensorflow"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    space_options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    hyperparameters: list[dict[str, Any]] = field(default_factory=list)
    #: the search's options as ``SearchOptions`` fields, less ``trials`` (held above); ``None``: a spec of a
    #: version that could not resume
    options: dict[str, Any] | None = None
    created: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    command: str | None = None
    #: the weight-sharing phase's settings (``--estimation shared-weights`` only)
    supernet: dict[str, Any] | None = None
    #: when each resume started (kept for specs written before ``sessions``)
    resumed: list[float] = field(default_factory=list)
    #: each driver session: ``{"started": t, "ended": t or None}``
    sessions: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def objective(self) -> Objective:
        """The objective that ranks the trials and picks the best."""
        return self.objectives[0]

    def search_options(self) -> dict[str, Any]:
        """The ``SearchOptions`` fields the run was searched with (runs before ``--backend``: tensorflow)."""
        if self.options is None:
            raise RunError(f"the spec of run {self.name!r} has no 'options' entry; this run cannot be resumed")
        return {"backend": "tensorflow", **self.options, "trials": self.trials}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in _SPEC_KEYS:
            value = getattr(self, key)
            if key == "task":
                value = value.to_json()
            elif key == "data":
                value = value.to_json()
            elif key == "objectives":
                value = [o.to_json() for o in value]
            elif key == "options" and value is not None:
                value = {**value, "trials": self.trials}
            elif key in ("supernet", "options") and value is None:
                continue
            elif key in ("resumed", "sessions") and not value:
                continue
            out[key] = value
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, d: Any, source: Path | str = "spec.json") -> "RunSpec":
        """The spec of ``d`` (``spec.json`` read as JSON); a spec that is not one raises ``RunError`` naming
        ``source`` and the bad entry."""
        if not isinstance(d, Mapping):
            raise RunError(f"{source} is not a run spec (a JSON object expected, found {type(d).__name__})")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise RunError(f"{source} has no {', '.join(repr(k) for k in missing)} "
                           f"entr{'y' if len(missing) == 1 else 'ies'}: it is not a run spec nas can read")
        for key, (kind, word) in _SPEC_KINDS.items():
            if d.get(key) is not None and not isinstance(d[key], kind):
                raise RunError(f"{source}: {key!r} is {d[key]!r}; a JSON {word} was expected")
        try:
            options = None if d.get("options") is None else {k: v for k, v in d["options"].items() if k != "trials"}
            return cls(
                name=str(d["name"]), space=str(d["space"]), strategy=str(d["strategy"]),
                task=Task.from_json(d["task"]), data=DataSpec.from_json(d["data"]),
                objectives=[Objective(**o) for o in d["objectives"]],
                trials=int(d["trials"]), epochs=int(d["epochs"]),
                space_version=str(d.get("space_version") or "1"), backend=d.get("backend") or "tensorflow",
                strategy_options=dict(d.get("strategy_options") or {}),
                space_options=dict(d.get("space_options") or {}), seed=d.get("seed"),
                resources=dict(d.get("resources") or {}), hyperparameters=list(d.get("hyperparameters") or []),
                options=options, created=d.get("created"), versions=dict(d.get("versions") or {}),
                command=d.get("command"), supernet=None if d.get("supernet") is None else dict(d["supernet"]),
                resumed=list(d.get("resumed") or []), sessions=list(d.get("sessions") or []),
                extra={k: v for k, v in d.items() if k not in _SPEC_KEYS},
            )
        except (KeyError, TypeError, ValueError, NasError) as e:
            raise RunError(f"{source} is not a run spec nas can read ({type(e).__name__}: {e})") from None
