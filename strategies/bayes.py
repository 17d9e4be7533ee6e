"""Bayesian optimisation through Optuna's ask-and-tell interface (TPE by default, GP optionally).

Each hyperparameter maps to an Optuna distribution, suggested define-by-run in declaration order with inactive
conditional parameters skipped:

* Int (linear, step or not) -> ``IntDistribution(lo, hi, step)``; Int with log sampling and step 1 ->
  ``IntDistribution(lo, hi, log=True)``;
* Float -> ``FloatDistribution(lo, hi, log=..., step=...)``;
* Int/Float whose grid Optuna cannot express (log sampling with a multiplicative step, KerasTuner's
  ``Int(8, 64, step=2, sampling="log")`` = 8, 16, 32, 64), and ordered numeric Choice -> an ordinal
  ``IntDistribution`` over the index of the value, so TPE/GP model the order instead of treating the values as
  unrelated categories;
* unordered Choice and Boolean -> ``CategoricalDistribution``; Fixed -> no distribution (the value is set).

Failed trials (``tell(.., None)`` or a missing/non-finite objective) are told as ``TrialState.FAIL``.

Optuna does not persist sampler state, so ``get_state`` stores the random states of the sampler's RNGs and
``set_state`` replays the told history (and the still-pending proposals, as RUNNING trials) into a fresh
in-memory study with ``optuna.trial.create_trial`` + ``study.add_trial``, in the original trial order: the next
proposals equal those of an uninterrupted run.

Several objectives make a multi-objective study (one direction per objective) with the same samplers (TPE's
multi-objective mode; GP's multi-objective mode).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from typing import Any, Mapping

import keras_tuner as kt
import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from nas.errors import PluginError
from nas.plugins import params as P
from nas.plugins.objective import Objective
from nas.plugins.strategy import Strategy

optuna.logging.set_verbosity(optuna.logging.WARNING)
optuna.logging.disable_default_handler()
logging.getLogger("optuna").setLevel(logging.WARNING)

_SAMPLERS = ("tpe", "gp")


class _Mapping:
    """How one hyperparameter is represented in Optuna: a distribution and value <-> internal converters."""

    def __init__(self, param: Any, ordinal: bool) -> None:
        self.name = param.name
        self.fixed = P.kind(param) == "fixed"
        self.values: list[Any] | None = None  # set when the Optuna value is an index into ``values``
        self.dist: BaseDistribution | None = None
        k = P.kind(param)
        if k == "fixed":
            self.fixed_value = param.value
            return
        if k == "boolean":
            self.dist = CategoricalDistribution([False, True])
            return
        if k == "choice":
            vals = list(param.values)
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
            if ordinal and numeric and getattr(param, "ordered", False) and len(vals) > 1:
                self.values = vals
                self.dist = IntDistribution(0, len(vals) - 1)
            else:
                self.dist = CategoricalDistribution(vals)
            return
        lo, hi = param.min_value, param.max_value
        log = param.sampling in ("log", "reverse_log")
        step = getattr(param, "step", None)
        if k == "int":
            if step is None or (log and step == 1):
                self.dist = IntDistribution(int(lo), int(hi), log=log)
            elif not log:
                self.dist = IntDistribution(int(lo), int(hi), step=int(step))
            else:  # multiplicative grid: ordinal index
                self._indexed(param)
            return
        # float
        if step is None:
            self.dist = FloatDistribution(float(lo), float(hi), log=log)
        elif not log and _divides(float(hi) - float(lo), float(step)):
            self.dist = FloatDistribution(float(lo), float(hi), step=float(step))
        else:
            self._indexed(param)

    def _indexed(self, param: Any) -> None:
        n = int(param._get_n_values())
        self.values = list(dict.fromkeys(P._cast(param, param._get_value_by_index(i)) for i in range(n)))
        self.dist = IntDistribution(0, len(self.values) - 1)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.fixed:
            return self.fixed_value
        d = self.dist
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(self.name, d.choices)
        if isinstance(d, IntDistribution):
            x = trial.suggest_int(self.name, d.low, d.high, step=d.step, log=d.log)
            return self.values[x] if self.values is not None else int(x)
        return float(trial.suggest_float(self.name, d.low, d.high, step=d.step, log=d.log))

    def internal(self, value: Any) -> Any:
        """The Optuna parameter value standing for ``value`` (for replaying history)."""
        if self.values is not None:
            return self.values.index(value)
        return value


def _divides(span: float, step: float) -> bool:
    q = span / step
    return abs(q - round(q)) < 1e-9


def _rng_holders(sampler: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Every ``LazyRandomState`` reachable from a sampler (its own and those of its sub-samplers)."""
    from optuna.samplers._lazy_random_state import LazyRandomState

    out: dict[str, Any] = {}
    if depth > 3:
        return out
    for k, v in sorted(vars(sampler).items()):
        if isinstance(v, LazyRandomState):
            out[prefix + k] = v
        elif isinstance(v, optuna.samplers.BaseSampler):
            out.update(_rng_holders(v, prefix + k + ".", depth + 1))
    return out


class BayesSearch(Strategy):
    """Bayesian optimisation with Optuna (TPE by default; sampler="gp" for Gaussian-process BO, needs torch)."""

    name = "bayes"

    def __init__(
        self,
        space: kt.HyperParameters,
        objective: str | Objective | list = "val_accuracy:max",
        seed: int | None = None,
        *,
        sampler: str = "tpe",
        n_startup_trials: int = 10,
        multivariate: bool = True,
        ordinal: bool = True,
    ) -> None:
        super().__init__(space, objective, seed)
        if sampler not in _SAMPLERS:
            raise PluginError(f"bayes option sampler={sampler!r} is not valid; use one of {', '.join(_SAMPLERS)}")
        if sampler == "gp" and importlib.util.find_spec("torch") is None:
            raise PluginError(
                "bayes option sampler='gp' uses Optuna's GPSampler, which needs PyTorch: `pip install torch` "
                "(or use the default sampler='tpe')"
            )
        if not isinstance(n_startup_trials, int) or n_startup_trials < 1:
            raise PluginError(f"bayes option n_startup_trials={n_startup_trials!r} is not valid; give an int >= 1")
        self.sampler_name = sampler
        self.n_startup_trials = n_startup_trials
        self.multivariate = bool(multivariate)
        self.ordinal = bool(ordinal)
        self.mappings = {p.name: _Mapping(p, self.ordinal) for p in space.space}
        self.conditional = any(getattr(p, "conditions", None) for p in space.space)
        self._sampler_seed = int(self.rng.integers(2**31 - 1))
        self.study = self._new_study()
        self.numbers: dict[str, int] = {}  # trial id -> Optuna trial number

    # -- construction -----------------------------------------------------------------------------------------
    def _new_sampler(self) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning for group / GPSampler arguments
            if self.sampler_name == "gp":
                return optuna.samplers.GPSampler(seed=self._sampler_seed, n_startup_trials=self.n_startup_trials)
            multi = self.multivariate
            return optuna.samplers.TPESampler(
                seed=self._sampler_seed,
                n_startup_trials=self.n_startup_trials,
                multivariate=multi,
                group=bool(multi and self.conditional),
            )

    def _new_study(self) -> optuna.Study:
        directions = ["maximize" if o.mode == "max" else "minimize" for o in self.objectives]
        return optuna.create_study(sampler=self._new_sampler(), directions=directions)

    # -- ask / tell -------------------------------------------------------------------------------------------
    def _ask(self) -> dict[str, Any] | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self.study.ask()
            values: dict[str, Any] = {}
            for p in self.space.space:
                if P.is_active(p, values):
                    values[p.name] = self.mappings[p.name].suggest(trial)
        self.numbers[str(self._next_id)] = trial.number  # the id the base class gives this proposal
        return values

    def _ask_given(self, values: dict[str, Any]) -> dict[str, Any]:
        """An enqueued configuration through Optuna's own ``enqueue_trial``: the study's next trial takes its
        values, so trial numbers keep following proposals and ``_tell`` needs nothing else."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.study.enqueue_trial(self._params(values), skip_if_exists=False)
        return self._ask()

    def _params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {k: self.mappings[k].internal(v) for k, v in values.items() if not self.mappings[k].fixed}

    def _frozen(self, values: Mapping[str, Any], obs: Any) -> optuna.trial.FrozenTrial:
        """A finished (``obs``) or, without one, running trial of ``values`` for ``study.add_trial``."""
        params = self._params(values)
        dists = {k: self.mappings[k].dist for k in params}
        if obs is None:
            return optuna.trial.create_trial(state=TrialState.RUNNING, params=params, distributions=dists)
        vals = self._objective_values(obs.metrics)
        if vals is None:
            return optuna.trial.create_trial(state=TrialState.FAIL, params=params, distributions=dists)
        return optuna.trial.create_trial(state=TrialState.COMPLETE, params=params, distributions=dists, values=vals)

    def _number(self, trial_id: str) -> int:
        """A trial's Optuna number: kept in ``numbers``, else (a state saved before they were kept) its ask
        order, i.e. its trial id."""
        if trial_id in self.numbers:
            return self.numbers[trial_id]
        try:
            return int(trial_id)
        except ValueError:
            raise PluginError(f"bayes state is inconsistent: observation {trial_id!r} has no trial number") from None

    def _observe(self, observation: Any) -> None:
        """A prior observation is a trial added to the study (Optuna's ``add_trial``: how its docs warm-start)."""
        self.numbers[observation.trial_id] = len(self.study.trials)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.study.add_trial(self._frozen(observation.values, observation))

    def _objective_values(self, metrics: Mapping[str, Any] | None) -> list[float] | None:
        vals = [o.value(metrics) for o in self.objectives]
        return None if any(v is None for v in vals) else [float(v) for v in vals]

    def _tell(self, observation: Any) -> None:
        number = self.numbers[observation.trial_id]  # kept: the state's replay orders the study by it
        vals = self._objective_values(observation.metrics)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if vals is None:
                self.study.tell(number, state=TrialState.FAIL)
            else:
                self.study.tell(number, vals if len(vals) > 1 else vals[0])

    # -- state ------------------------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        rngs = {}
        for k, holder in _rng_holders(self.study.sampler).items():
            name, keys, pos, has_gauss, cached = holder.rng.get_state()
            rngs[k] = [name, [int(x) for x in keys], int(pos), int(has_gauss), float(cached)]
        return {
            "sampler": self.sampler_name,
            "n_startup_trials": self.n_startup_trials,
            "multivariate": self.multivariate,
            "ordinal": self.ordinal,
            "sampler_seed": self._sampler_seed,
            "numbers": dict(self.numbers),
            "sampler_rngs": rngs,
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self.sampler_name = state["sampler"]
        self.n_startup_trials = int(state["n_startup_trials"])
        self.multivariate = bool(state["multivariate"])
        self.ordinal = bool(state["ordinal"])
        self.mappings = {p.name: _Mapping(p, self.ordinal) for p in self.space.space}
        self._sampler_seed = int(state["sampler_seed"])
        self.numbers = {str(k): int(v) for k, v in state["numbers"].items()}
        self.study = self._new_study()
        # Replay every trial in its original Optuna order: told ones with their outcome, pending ones as RUNNING.
        # Each row's Optuna number is kept in ``numbers`` (prior observations' too); a state saved before numbers
        # were kept after a tell has none for told trials, whose numbers then follow ask order, i.e. numeric
        # trial-id order (one study.ask() per proposal, and no priors then).
        rows: list[tuple[int, dict[str, Any], Any]] = []
        for o in self.history:
            rows.append((self._number(o.trial_id), o.values, o))
        for tid, values in self.pending.items():
            rows.append((self._number(tid), values, None))
        rows.sort(key=lambda r: r[0])
        if [r[0] for r in rows] != list(range(len(rows))):
            raise PluginError("bayes state is inconsistent: trial numbers do not follow trial ids")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _, values, obs in rows:
                self.study.add_trial(self._frozen(values, obs))
        holders = _rng_holders(self.study.sampler)
        for k, (name, keys, pos, has_gauss, cached) in state["sampler_rngs"].items():
            holders[k].rng.set_state((name, np.array(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))

