"""The Python API: what ``nas search`` does, from a notebook or a script, in KerasTuner's and Optuna's terms.

    import nas
    run = nas.search(space="cnn", strategy="rl", data=(x_train, y_train), validation_data=(x_val, y_val),
                     trials=30, epochs=5, max_concurrent=2, name="my-run")
    run.best                 # the best trial's record: config, metrics
    run.best_model()         # its keras.Model, at its best epoch
    run.trials_frame()       # a pandas DataFrame, one row per trial
    run = nas.resume("my-run", trials=50)

The command line is a thin layer over these functions (one code path): the same run directory, the same
resume, the same status JSON. Every option of ``nas search`` is a keyword here (``max_concurrent=2`` for
``--max-concurrent 2``), and ``config=`` takes the same YAML/JSON file as ``nas search --config``.
Errors raise ``nas.NasError`` subclasses carrying the one-line messages the command line prints.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nas.errors import DataError, NasError, RunError
from nas.estimation import SHARED
from nas.options import FIT_BY_NAS, FIT_PASSED, SearchOptions, SearchResult
from nas.plugins.data import Dataset
from nas.plugins.objective import Objective
from nas.storage.records import TrialStatus
from nas.storage.results import pareto_front, rank
from nas.storage.store import ExperimentStore, choose_trial

__all__ = ["Run", "open_run", "resume", "search", "search_options"]

#: keys of a config file / keywords of ``search`` beyond the option names themselves
ALIASES = {"objective": "objectives", "strategy_option": "strategy_options", "space_option": "space_options",
           "supernet_option": "supernet_options"}
#: options a search has but a config file does not set (where it runs from, not what it searches; the fit
#: arguments' file, which the driver writes)
NOT_IN_CONFIG = ("name", "storage", "fit_arguments")


def search_options(config: str | Path | Mapping[str, Any] | None = None, **options: Any) -> SearchOptions:
    """``SearchOptions`` from a config file (YAML or JSON) or mapping, with ``options`` overriding its keys.

    Keys are the command line's option names, with ``-`` or ``_`` (``max-concurrent: 2``); ``objective`` may be
    one string or a list. An unknown key is one ``NasError`` naming it and listing the accepted ones.

    >>> search_options({"space": "cnn", "max-concurrent": 2}, trials=30).trials
    30
    """
    values: dict[str, Any] = {}
    for source in (_read_config(config), options):
        for key, value in source.items():
            if value is None and source is options:
                continue
            values[_key(key)] = value
    for key in ("objectives", "warm_start"):  # one string or a list
        if isinstance(values.get(key), (str, os.PathLike)):
            values[key] = [os.fspath(values[key])]
    if "strategy" not in values and values.get("estimation") == SHARED:  # ENAS's controller
        values["strategy"] = "rl"
    opts = SearchOptions(**_pairs_as_dicts(values))
    opts.check()  # checked options, as documented: a bad value is one NasError here, not later in a search
    return opts


def _pairs_as_dicts(values: dict[str, Any]) -> dict[str, Any]:
    """``*_options`` given as the command line's KEY=VALUE pairs, as mappings."""
    for key in ("space_options", "strategy_options", "supernet_options"):
        if isinstance(values.get(key), (list, tuple)):
            values[key] = dict(values[key])
    return values


def _key(key: str, in_file: str | None = None) -> str:
    """The option ``key`` names (``-`` or ``_``, singular aliases); an unknown one is one line listing the
    accepted ones: those a config file may set when it comes from ``in_file``, else the API's."""
    k = key.replace("-", "_")
    k = ALIASES.get(k, k)
    accepted = {f.name for f in fields(SearchOptions)} - set(NOT_IN_CONFIG[2:])
    if k not in accepted:
        offered = accepted - set(NOT_IN_CONFIG) if in_file else accepted
        names = sorted(n.replace("_", "-") for n in offered | set(ALIASES) - set(ALIASES.values()))
        near = difflib.get_close_matches(k, [*offered, *ALIASES, *([] if in_file else FIT_PASSED)], n=3, cutoff=0.7)
        hint = f" (did you mean {' or '.join(near)}?)" if near else ""
        if in_file:
            raise NasError(f"config file {in_file!r}: option {key!r} is not valid{hint}; accepted: {', '.join(names)}")
        raise NasError(f"option {key!r} is not valid{hint}; accepted: {', '.join(names)} (and, in nas.search, "
                       f"Model.fit's {', '.join(FIT_PASSED)})")
    return k


def fit_arguments(options: dict[str, Any], space: Any = None) -> dict[str, Any]:
    """Take from ``options`` (``nas.search``'s keywords) the ``Model.fit`` arguments every trial's ``fit`` gets
    (``FIT_PASSED``, and the keywords a hypermodel's own ``fit`` names), as KerasTuner's ``tuner.search(x, y,
    **fit_kwargs)`` does; one ``NasError`` for an argument nas sets itself (naming what to give instead) or one
    that cannot reach the trial workers (they get a pickled copy)."""
    own = _own_fit_keywords(space)
    options_named = {f.name for f in fields(SearchOptions)} | set(ALIASES)
    fit = {}
    for key in list(options):
        k = key.replace("-", "_")
        if k in options_named:
            continue
        if k in FIT_BY_NAS and k not in own:
            raise NasError(f"fit argument {key}= is set by nas for every trial; give {FIT_BY_NAS[k]} instead")
        if k in FIT_PASSED or k in own:
            value = options.pop(key)
            if value is not None:
                fit[k] = value
    import cloudpickle

    for k, v in fit.items():
        try:
            cloudpickle.dumps(v)
        except Exception as e:  # noqa: BLE001 - whatever pickling raises, the user's value is the cause
            raise NasError(f"fit argument {k}={_short(v)} cannot be sent to the trial workers: it does not pickle "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); give values that "
                           f"do (Keras callbacks, arrays, dicts)") from None
    return fit


def _own_fit_keywords(space: Any) -> set[str]:
    """The keywords a hypermodel's own ``fit(self, hp, model, *args, **kwargs)`` names (given as an object)."""
    if space is None or isinstance(space, str):
        return set()
    fit = getattr(space if inspect.isclass(space) else type(space), "fit", None)
    try:
        params = inspect.signature(fit).parameters.values() if fit is not None else []
    except (TypeError, ValueError):
        return set()
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self", "hp", "model"}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_config(config: str | Path | Mapping[str, Any] | None) -> Mapping[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return config
    if not isinstance(config, (str, os.PathLike)):
        raise NasError(f"config {config!r} is not valid; give a YAML or JSON file's path, or a mapping")
    path = Path(config).expanduser()
    if path.is_dir():
        raise NasError(f"config file {str(path)!r} is a directory; give a YAML or JSON file")
    if not path.is_file():
        raise NasError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise NasError(f"config file {str(path)!r} is not a text file (UTF-8 YAML or JSON expected)") from None
    except OSError as e:
        raise NasError(f"config file {str(path)!r} cannot be read: {e.strerror or e}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError, json.JSONDecodeError
        raise NasError(f"config file {str(path)!r} is not valid {path.suffix[1:] or 'YAML'}: "
                       f"{str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise NasError(f"config file {str(path)!r} must hold a mapping of option: value; it holds a "
                       f"{type(data).__name__}")
    bad = [k for k in data if _key(str(k), str(path)) in NOT_IN_CONFIG]
    if bad:
        raise NasError(f"config file {str(path)!r}: {bad[0]!r} is given on the command line (--{bad[0]}), not in "
                       f"a config file, so one file serves several runs")
    return data


def dump_config(opts: SearchOptions) -> str:
    """The YAML config file that reproduces ``opts`` (``nas search ... --dump-config``)."""
    import yaml

    flag = {option: key for key, option in ALIASES.items()}  # objectives: objective, as on the command line
    values = {flag.get(k, k).replace("_", "-"): v for k, v in asdict(opts).items() if k not in NOT_IN_CONFIG}
    return yaml.safe_dump(values, sort_keys=False, default_flow_style=None)


def as_dataset(data: Any, validation_data: Any = None, seed: int = 0) -> Dataset:
    """Arrays ``(x, y)``, a ``tf.data.Dataset`` of ``(x, y)`` or a ``nas.plugins.data.Dataset`` as one checked data set;
    without ``validation_data``, a seeded 20 % of ``data`` is held out, as for files."""
    from nas.plugins.data import from_arrays

    if isinstance(data, Dataset):
        return data
    x, y = _arrays(data, "data")
    xv, yv = _arrays(validation_data, "validation_data") if validation_data is not None else (None, None)
    return from_arrays(x, y, xv, yv, source="in-memory arrays", seed=seed)


def _arrays(data: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    if type(data).__module__.startswith("tensorflow"):  # a tf.data.Dataset of (x, y) elements or batches
        xs, ys = [], []
        for item in data.as_numpy_iterator():
            if not (isinstance(item, tuple) and len(item) == 2):
                raise DataError(f"{what}: a tf.data.Dataset must yield (x, y) pairs; it yields {type(item).__name__}")
            xs.append(np.asarray(item[0]))
            ys.append(np.asarray(item[1]))
        if not xs:
            raise DataError(f"{what}: the tf.data.Dataset is empty")
        batched = xs[0].ndim > 0 and ys[0].ndim > 0 and len(xs[0]) == len(ys[0]) and len(xs) > 1 \
            and all(x.shape[1:] == xs[0].shape[1:] for x in xs)
        stack = np.concatenate if batched else np.stack
        return stack(xs), stack(ys)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    raise DataError(f"{what} must be (x, y) arrays, a tf.data.Dataset of (x, y), a data set name or a file path; "
                    f"got {type(data).__name__}")


def search(space: Any = None, strategy: Any = None, *, data: Any = None, validation_data: Any = None,
           config: str | Path | Mapping[str, Any] | None = None, progress: bool | None = None,
           **options: Any) -> Run:
    """Run a search and return its ``Run``; every option of ``nas search`` is a keyword.

    ``space``: a registered name (``"cnn"``), ``module:Class``, ``file.py:Class``, a ``nas.SearchSpace`` subclass
    or instance, any ``keras_tuner.HyperModel`` (class or object), or a KerasTuner build function
    ``build(hp) -> compiled keras.Model``. Keywords that are ``Model.fit`` arguments (``callbacks``,
    ``class_weight``, ``sample_weight``, ``batch_size``, ...; those a hypermodel's own ``fit`` names) reach every
    trial's ``fit``, as in KerasTuner's ``tuner.search(x, y, **fit_kwargs)``. ``strategy``: a registered name
    (default ``"gp"``) or a ``nas.Strategy`` subclass or instance. ``data``: a name or path as on the command line (default ``"digits"``),
    arrays ``(x, y)`` or a ``tf.data.Dataset`` (``validation_data`` alike; without it a seeded 20 % is held
    out). In-memory data go to the trial workers once, through Ray's object store, and are saved in the run
    directory so that the run resumes and exports like any other.

    >>> run = nas.search(space="mlp", trials=4, epochs=2, max_concurrent=2)       # doctest: +SKIP
    >>> run.best["metrics"]["val_accuracy"] > 0.5                                # doctest: +SKIP
    True
    """
    from nas.driver.engine import run_search
    from nas.views.progress import Progress

    named = {"space": space if isinstance(space, str) else None,
             "strategy": strategy if isinstance(strategy, str) else None,
             "data": data if isinstance(data, str) else None}
    options = dict(options)
    fit = fit_arguments(options, space)
    opts = search_options(config, **named, **options)
    dataset = None if data is None or isinstance(data, str) else as_dataset(data, validation_data, opts.seed or 0)
    if dataset is None and validation_data is not None:
        raise DataError("validation_data goes with in-memory data=(x, y); a data set name or file brings its own")
    if fit and opts.distributed == "horovod":
        raise NasError(f"fit arguments ({', '.join(fit)}) do not reach --distributed horovod trials (their ranks run "
                       f"their own fit); leave them out, or use distributed='none' or 'mirrored'")
    if "sample_weight" in fit:
        if dataset is None or validation_data is None:
            raise DataError("sample_weight= goes with data=(x, y) and validation_data=(x_val, y_val): without them "
                            "nas holds out part of the data and the weights would no longer match the examples")
        if len(fit["sample_weight"]) != len(dataset.x_train):
            raise DataError(f"sample_weight= has {len(fit['sample_weight'])} weights for {len(dataset.x_train)} "
                            f"training examples; give one per example of data")
    with Progress(epochs=opts.epochs, live=progress) as shown:
        result = run_search(opts, printer_factory=shown.factory, announce=shown.announce, data=dataset,
                            space=None if isinstance(space, str) or space is None else space,
                            strategy=None if isinstance(strategy, str) or strategy is None else strategy, fit=fit)
    return Run(result.directory, result)


def resume(name: str, *, storage: str | None = None, progress: bool | None = None, **changes: Any) -> Run:
    """Continue a stored search exactly where it stopped, or raise its budget (``trials=``), as ``nas resume``.

    >>> run = nas.resume("my-run", trials=50)                                    # doctest: +SKIP
    """
    from nas.driver.engine import resume_search
    from nas.views.progress import Progress

    changes = _pairs_as_dicts({_key(k): v for k, v in changes.items() if v is not None})
    with Progress(epochs=None, live=progress) as shown:
        result = resume_search(name, storage, changes, printer_factory=shown.factory, announce=shown.announce)
    return Run(result.directory, result)


def open_run(name: str, storage: str | None = None) -> Run:
    """A stored run, to read (``nas status`` in Python).

    >>> nas.open_run("my-run").trials_frame().head()                             # doctest: +SKIP
    """
    return Run(ExperimentStore.open(name, storage).root)


class Run:
    """A search's run directory, read back: its trials, the best one, its models and exports.

    ``interrupted``, ``stopped`` and ``wall_s`` describe the ``search``/``resume`` call that returned this object
    (None when it was opened with ``open_run``). Everything else is read from disk when asked, so it is current.
    """

    def __init__(self, directory: str | Path, result: SearchResult | None = None) -> None:
        self.store = ExperimentStore(Path(directory))
        if not self.store.exists():
            raise RunError(f"{directory} holds no run (no spec.json)")
        self.result = result
        self.interrupted = result.interrupted if result else None
        self.stopped = result.stopped if result else None
        self.wall_s = result.wall_s if result else None

    def __repr__(self) -> str:
        records = self.store.trials()
        done = sum(t.status == TrialStatus.COMPLETED for t in records)
        obj = self.objectives[0]
        ranked = rank(records, obj)
        best = ranked[0] if ranked else None
        value = f", best {obj.metric}={best.metrics.get(obj.metric):.4g} (trial {best.trial_id})" if best else ""
        return f"<nas.Run {self.name!r}: {done}/{self.store.spec().trials} trials completed{value}>"

    def _repr_html_(self) -> str:
        """In a notebook a run shows as a compact leaderboard: the 10 best trials by the first objective."""
        from html import escape

        objective = self.objectives[0]
        head = f"<b>{escape(repr(self))}</b>"
        ranked = rank(self.store.trials(), objective)[:10]
        if not ranked:
            return head
        frame = self.trials_frame().set_index("trial_id").loc[[t.trial_id for t in ranked]]
        columns = [c for c in frame.columns if c.startswith("config_")] + \
            [c for c in (objective.metric, "params", "epochs") if c in frame.columns]
        return head + frame[columns].to_html(float_format=lambda v: f"{v:.4g}")

    @property
    def name(self) -> str:
        return self.store.name

    @property
    def directory(self) -> Path:
        return self.store.root

    @property
    def spec(self) -> dict[str, Any]:
        """What was searched and how: ``spec.json``'s content (``nas.storage.records.RunSpec`` names its keys)."""
        return self.store.spec().to_json()

    @property
    def objectives(self) -> list[Objective]:
        return self.store.spec().objectives

    @property
    def trials(self) -> list[dict[str, Any]]:
        """Every trial's record (config, per-epoch history, best-epoch metrics, status, error), by id: the JSON
        of ``trials/<id>.json`` (``nas.storage.records.TrialRecord`` names its fields)."""
        return [t.to_json() for t in self.store.trials()]

    @property
    def best(self) -> dict[str, Any] | None:
        """The best completed trial's record by the (first) objective; None before any completed."""
        ranked = rank(self.store.trials(), self.objectives[0])
        return ranked[0].to_json() if ranked else None

    def pareto_front(self) -> list[dict[str, Any]]:
        """The completed trials no other beats on every objective (the best trial(s) with one objective)."""
        return [t.to_json() for t in pareto_front(self.store.trials(), self.objectives)]

    def status(self) -> dict[str, Any]:
        """``nas status NAME --json``."""
        from nas.views.report import status_json

        return status_json(self.store)

    def trials_frame(self) -> Any:
        """A pandas DataFrame, one row per trial: ``trial_id``, ``status``, one ``config_*`` column per
        hyperparameter, one column per best-epoch metric, ``error``, ``started``, ``finished`` (as Ray Tune's
        ``ResultGrid.get_dataframe`` and Optuna's ``study.trials_dataframe`` give)."""
        import pandas as pd

        rows = []
        for t in self.store.trials():
            row: dict[str, Any] = {"trial_id": t.trial_id, "status": t.status.value}
            row.update({f"config_{k}": v for k, v in t.config.items()})
            row.update(t.metrics)
            row.update(error=t.error, started=t.started, finished=t.finished)
            rows.append(row)
        return pd.DataFrame(rows)

    def best_model(self, trial: str | int | None = None) -> Any:
        """The trained ``keras.Model`` of the best trial (or of ``trial``), at its best epoch."""
        from nas.plugins import params as P
        from nas.plugins.registry import stored_space
        from nas.storage.layout import trial_dir
        from nas.trials.artifacts import load_best

        t = choose_trial(self.store, self.objectives, trial, choose="trial=ID (one of run.pareto_front())",
                         completed=False)
        spec = self.store.spec()

        def build() -> Any:  # the trial's configuration, for a trial cut short before its end wrote best.keras
            space = stored_space(spec)
            return space.build(P.to_hp(space.hyperparameters(), t.config))

        directory = trial_dir(self.directory, t.trial_id)
        found = load_best(directory, build)
        if found is None:
            raise RunError(f"trial {t.trial_id} of run {self.name!r} saved no model ({directory})")
        return found[0]

    def export(self, out: str | Path | None = None, formats: str | Sequence[str] = ("keras", "savedmodel"),
               trial: str | int | None = None, retrain: bool = False, epochs: int | None = None) -> Any:
        """``nas export``: the best trial (or ``trial``) in ``formats``, verified, with a model card.

        >>> run.export("out/", formats=["keras", "onnx"])                         # doctest: +SKIP
        """
        from nas.views.export import ExportOptions, parse_formats, run_export

        opts = ExportOptions(name=self.name, storage=str(self.directory.parent), formats=parse_formats(formats),
                             trial=None if trial is None else str(trial), out=None if out is None else str(out),
                             retrain=retrain, epochs=epochs)
        return run_export(opts, log=lambda msg: None)

    def resume(self, **changes: Any) -> Run:
        """Continue this run (``nas.resume(run.name, ...)``)."""
        return resume(self.name, storage=str(self.directory.parent), **changes)


