"""KerasTuner's tuner API over nas: change ``import keras_tuner as kt`` to ``from nas import tuners as kt`` and the
rest of a KerasTuner script runs, its trials in parallel on Ray, resumable, with nas's strategies.

    from nas import tuners as kt

    tuner = kt.RandomSearch(build_model, objective="val_accuracy", max_trials=10, directory="runs",
                            project_name="hello", max_concurrent=2)        # nas's own keywords: see Tuner
    tuner.search(x_train, y_train, epochs=5, validation_data=(x_val, y_val), callbacks=[...])
    best_model = tuner.get_best_models(num_models=1)[0]
    best_hp = tuner.get_best_hyperparameters(1)[0]                        # a real keras_tuner.HyperParameters
    tuner.results_summary()

``RandomSearch``, ``BayesianOptimization`` (nas's ``gp``), ``GridSearch``, ``Hyperband`` (random proposals, Ray
Tune's HyperBand scheduler stopping trials early) take KerasTuner's constructor arguments; ``RL`` and
``Evolution`` are nas's own. Each search is a nas run ``<directory>/<project_name>``: ``nas status``,
``nas plot``, ``nas export`` and ``nas resume`` work on it, and with ``overwrite=False`` (KerasTuner's default) a
tuner on an existing run continues it exactly where it stopped (raising its budget to ``max_trials``).
``HyperParameters``, ``HyperModel`` and ``Objective`` are KerasTuner's own, re-exported (loaded on first use, so
importing this module loads no Keras).

A subclass may override ``run_trial(self, trial, *args, **kwargs)`` (KerasTuner's way to tune a custom loop, or
anything): it runs as each trial, in a Ray worker, and returns a number (the objective, ``default_objective``
when none is given) or a dict of metrics. ``hyperparameters=``, ``tune_new_entries``, ``allow_new_entries``
restrict a hypermodel's space as in KerasTuner; ``executions_per_trial`` trains N models per configuration and
reports their per-epoch mean.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.api import Run, open_run, resume, search
from nas.errors import NasError
from nas.storage.store import ExperimentStore

__all__ = ["BayesianOptimization", "Evolution", "GridSearch", "HyperModel", "HyperParameters", "Hyperband",
           "Objective", "RL", "RandomSearch", "Trial", "Tuner"]

#: KerasTuner's names, re-exported as they are (``kt.HyperParameters()`` in a user's build function's tests)
_REEXPORTED = ("HyperParameters", "HyperModel", "Objective")


def __getattr__(name: str) -> Any:
    if name in _REEXPORTED:
        import keras_tuner

        return getattr(keras_tuner, name)
    raise AttributeError(f"module 'nas.tuners' has no attribute {name!r}")


def objective_text(objective: Any) -> str | None:
    """A KerasTuner objective (``"val_accuracy"``, ``kt.Objective("val_mae", "min")``) as nas's ``metric:mode``;
    a bare metric name's direction as KerasTuner infers it."""
    if objective is None:
        return None
    if isinstance(objective, (list, tuple)):
        raise NasError("a list of objectives: give nas's objective=['metric:max', 'metric:min'] keyword instead")
    name = getattr(objective, "name", None)
    direction = getattr(objective, "direction", None)
    if name is not None and direction in ("min", "max"):
        return f"{name}:{direction}"
    if not isinstance(objective, str):
        raise NasError(f"objective {objective!r} is not valid; give a metric name or keras_tuner.Objective(name, "
                       f"direction)")
    if ":" in objective:
        return objective
    from keras_tuner.src.engine.metrics_tracking import infer_metric_direction  # KerasTuner's own rule

    direction = infer_metric_direction(objective)
    if direction is None:
        raise NasError(f"objective {objective!r}: the direction of an unknown metric cannot be inferred; give "
                       f"kt.Objective({objective!r}, direction='min') or 'max'")
    return f"{objective}:{direction}"


@dataclass
class BestTrial:
    """A finished trial as KerasTuner's ``oracle.get_best_trials`` gives it."""

    trial_id: str
    hyperparameters: Any  # keras_tuner.HyperParameters holding the trial's values
    score: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str = "COMPLETED"


def _is_nas_space(hypermodel: Any) -> bool:
    from nas.plugins.space import SearchSpace

    cls = hypermodel if isinstance(hypermodel, type) else type(hypermodel)
    return issubclass(cls, SearchSpace)


def _hypermodel(hypermodel: Any) -> Any:
    """A build function as a ``keras_tuner.HyperModel`` (``self.hypermodel.build(hp)`` in a ``run_trial``); a
    string is one of nas's space references (``"cnn"``, ``module:Class``, ``file.py:Class``) and stays one, as
    ``nas.search(space=...)`` takes it."""
    import inspect

    if hypermodel is None or isinstance(hypermodel, str) or inspect.isclass(hypermodel) or hasattr(hypermodel, "build"):
        return hypermodel
    if not callable(hypermodel):
        raise NasError(f"hypermodel={hypermodel!r} is not valid; give a build function build(hp) -> compiled "
                       f"keras.Model, a keras_tuner.HyperModel, or a nas space name such as 'cnn'")
    from nas.plugins.space import BuildFunction

    return BuildFunction(hypermodel)


@dataclass
class Trial:
    """What a ``run_trial`` override is handed (KerasTuner's ``Trial``: its ``hyperparameters``)."""

    hyperparameters: Any
    trial_id: str | None = None


def _run_trial_model(tuner: "Tuner") -> Any:
    """A tuner whose ``run_trial`` is overridden as a hypermodel: ``fit`` runs ``run_trial``, ``build`` the
    tuner's hypermodel (or a one-weight placeholder when ``run_trial`` builds nothing nas can see)."""
    import copy

    import keras_tuner

    copied = copy.copy(tuner)  # what travels to the workers: no run, no oracle
    copied.run, copied.oracle = None, None

    class RunTrial(keras_tuner.HyperModel):
        def __init__(self) -> None:
            super().__init__(name=type(tuner).__name__)
            self.tuner = copied

        def build(self, hp: Any) -> Any:
            if self.tuner.hypermodel is not None:
                return self.tuner.hypermodel.build(hp)
            import keras

            return keras.Sequential([keras.layers.Input((1,)), keras.layers.Dense(1)])

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            return self.tuner.run_trial(Trial(hp), *args, **kwargs)

    return RunTrial()


class _Oracle:
    def __init__(self, tuner: "Tuner") -> None:
        self.tuner = tuner

    def get_best_trials(self, num_trials: int = 1) -> list[BestTrial]:
        return self.tuner._best_trials(num_trials)


class Tuner:
    """KerasTuner's ``Tuner`` on nas (subclasses choose the strategy). KerasTuner's arguments keep their meaning
    (``max_retries_per_trial``: retries of a trial whose worker died; ``max_consecutive_failed_trials``: failures
    in a row that stop the search); nas's own go as keywords: ``max_concurrent``, ``cpus_per_trial``,
    ``gpus_per_trial``, ``address`` (a Ray cluster), ``backend``, ``scheduler``, and any other ``nas.search``
    option."""

    strategy = "random"
    scheduler = "none"

    def __init__(self, hypermodel: Any = None, objective: Any = None, max_trials: int = 10, seed: int | None = None,
                 hyperparameters: Any = None, tune_new_entries: bool = True, allow_new_entries: bool = True,
                 executions_per_trial: int = 1, max_retries_per_trial: int = 0,
                 max_consecutive_failed_trials: int = 3, directory: str | Path | None = None,
                 project_name: str | None = None, overwrite: bool = False, **options: Any) -> None:
        if hypermodel is None and not self._runs_trials():
            raise NasError("hypermodel= is required (a build function build(hp) or a keras_tuner.HyperModel), "
                           "unless the tuner overrides run_trial")
        restricted = hyperparameters is not None or not tune_new_entries or not allow_new_entries
        if restricted and _is_nas_space(hypermodel):
            raise NasError("hyperparameters=, tune_new_entries= and allow_new_entries= restrict a KerasTuner "
                           "hypermodel's space; a nas.SearchSpace takes its own space options instead")
        if hyperparameters is not None and not hasattr(hyperparameters, "get_config"):
            raise NasError(f"hyperparameters={hyperparameters!r} is not valid; give a keras_tuner.HyperParameters")
        self.hypermodel = _hypermodel(hypermodel)
        if objective is None and self._runs_trials():
            objective = "default_objective:min"  # KerasTuner's name for what run_trial returns
        self.objective = objective_text(objective)
        self.max_trials = max_trials
        self.seed = seed
        self.directory = Path(directory or ".").expanduser()
        self.project_name = project_name or "untitled_project"
        self.overwrite = overwrite
        self.options = {"max_failures": max_retries_per_trial, "executions_per_trial": executions_per_trial,
                        "max_consecutive_failures": max_consecutive_failed_trials,
                        "strategy": self.strategy, "scheduler": self.scheduler, **options}
        if restricted:  # HyperModelSpace's options, stored in the run's spec (the config is JSON)
            self.options["space_options"] = {
                **dict(self.options.get("space_options") or {}),
                "hyperparameters": hyperparameters.get_config() if hyperparameters is not None else None,
                "tune_new_entries": tune_new_entries, "allow_new_entries": allow_new_entries}
        self.oracle = _Oracle(self)
        self.run: Run | None = None
        if overwrite:
            shutil.rmtree(self.directory / self.project_name, ignore_errors=True)

    # -- KerasTuner's search ----------------------------------------------------------------------------------
    def search(self, *fit_args: Any, **fit_kwargs: Any) -> Run:
        """``tuner.search(x, y, epochs=, validation_data=, validation_split=, callbacks=, ...)``: a new nas run,
        or the stored one continued (``overwrite=False``) up to ``max_trials``."""
        x, y = (list(fit_args) + [None, None])[:2]
        x = fit_kwargs.pop("x", x)
        y = fit_kwargs.pop("y", y)
        epochs = fit_kwargs.pop("epochs", 1)
        validation_data = fit_kwargs.pop("validation_data", None)
        split = fit_kwargs.pop("validation_split", None)
        if len(fit_args) > 2:
            raise NasError("search() takes x and y positionally; give the other fit arguments as keywords")
        if ExperimentStore(self.directory / self.project_name).exists():  # overwrite=False: continue it
            self.run = resume(self.project_name, storage=str(self.directory), trials=self.max_trials,
                              progress=self.options.get("progress"))
            return self.run
        data: Any = (x, y) if y is not None else x
        if split and validation_data is None and y is not None:
            from nas.plugins.data import from_arrays

            data = from_arrays(x, y, source="in-memory arrays", val_fraction=float(split), seed=self.seed or 0)
        self.directory.mkdir(parents=True, exist_ok=True)
        space = _run_trial_model(self) if self._runs_trials() else self.hypermodel
        self.run = search(space=space, data=data, validation_data=validation_data,
                          objective=self.objective, trials=self.max_trials, epochs=epochs, seed=self.seed,
                          name=self.project_name, storage=str(self.directory), **self.options, **fit_kwargs)
        return self.run

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        """KerasTuner's ``run_trial``: build the trial's model and fit it. A subclass may override it (a custom
        loop, or anything returning a number or a dict of metrics): it then runs as each trial, in a Ray worker,
        given what ``search`` was given (with nas's callbacks in ``callbacks``)."""
        hp = trial.hyperparameters
        model = self.hypermodel.build(hp)
        return self.hypermodel.fit(hp, model, *args, **kwargs)

    def _runs_trials(self) -> bool:
        return type(self).run_trial is not Tuner.run_trial

    # -- reading the results ----------------------------------------------------------------------------------
    def _opened(self) -> Run:
        if self.run is None:
            self.run = open_run(self.project_name, storage=str(self.directory))
        return self.run

    def _space(self) -> Any:
        from nas.plugins.registry import stored_space

        return stored_space(self._opened().store.spec())

    def _best_trials(self, num_trials: int) -> list[BestTrial]:
        from nas.plugins import params as P
        from nas.storage.results import rank

        run = self._opened()
        objective = run.objectives[0]
        hp = self._space().hyperparameters()
        return [BestTrial(t.trial_id, P.to_hp(hp, t.config), objective.value(t.metrics), dict(t.metrics))
                for t in rank(run.store.trials(), objective)[:num_trials]]

    def get_best_hyperparameters(self, num_trials: int = 1) -> list[Any]:
        """The best trials' values as ``keras_tuner.HyperParameters`` (``build_model(hps[0])`` builds the best)."""
        return [t.hyperparameters for t in self._best_trials(num_trials)]

    def get_best_models(self, num_models: int = 1) -> list[Any]:
        """The best trials' trained models, at their best epoch."""
        run = self._opened()
        return [run.best_model(t.trial_id) for t in self._best_trials(num_models)]

    def results_summary(self, num_trials: int = 10) -> None:
        """KerasTuner's summary: the best trials' hyperparameters and scores."""
        run = self._opened()
        objective = run.objectives[0]
        best = self._best_trials(num_trials)
        print("Results summary")
        print(f"Results in {run.directory}")
        print(f"Showing {len(best)} best trials")
        print(f"Objective(name=\"{objective.metric}\", direction=\"{objective.mode}\")")
        for t in best:
            print(f"\nTrial {t.trial_id} summary\nHyperparameters:")
            for name, value in t.hyperparameters.values.items():
                print(f"{name}: {value}")
            print(f"Score: {t.score}")

    def search_space_summary(self, extended: bool = False) -> None:
        """KerasTuner's summary of the space: every hyperparameter with its range."""
        from nas.plugins import params as P
        from nas.plugins.registry import create_space

        if self.run is not None or ExperimentStore(self.directory / self.project_name).exists():
            space = self._space()
        else:  # before the search: the hypermodel's space (a task is needed to build; the default one's)
            from nas.plugins.task import Task

            space = create_space(self.hypermodel, task=Task("classification", (1,), num_classes=2))
        hp = space.hyperparameters()
        print("Search space summary")
        print(f"Default search space size: {len(hp.space)}")
        for p in hp.space:
            print(f"{p.name} ({type(p).__name__})")
            print(f"{P.describe(p)}" + (f" {p.get_config()}" if extended else ""))


class RandomSearch(Tuner):
    strategy = "random"


class BayesianOptimization(Tuner):
    """KerasTuner's Gaussian-process Bayesian optimisation as nas's ``gp`` strategy."""

    strategy = "gp"


class GridSearch(Tuner):
    strategy = "grid"


class Hyperband(Tuner):
    """Random proposals with Ray Tune's HyperBand scheduler stopping the weaker trials early (KerasTuner's
    ``max_epochs`` is the epochs of a trial that is never stopped; ``factor`` and ``hyperband_iterations`` are
    Ray's)."""

    strategy = "random"
    scheduler = "hyperband"

    def __init__(self, hypermodel: Any = None, objective: Any = None, max_epochs: int = 100, factor: int = 3,
                 hyperband_iterations: int = 1, seed: int | None = None, max_trials: int = 10,
                 **kwargs: Any) -> None:
        super().__init__(hypermodel, objective, max_trials=max_trials, seed=seed, **kwargs)
        self.max_epochs = max_epochs

    def search(self, *fit_args: Any, **fit_kwargs: Any) -> Run:
        fit_kwargs.setdefault("epochs", self.max_epochs)
        return super().search(*fit_args, **fit_kwargs)


class RL(Tuner):
    """nas's RL controller (Zoph & Le's policy; PPO + Dyna + model-predictive proposals by default, REINFORCE with
    ``update="reinforce"``)."""

    strategy = "rl"


class Evolution(Tuner):
    """nas's regularized evolution."""

    strategy = "evolution"
