"""The strategy contract: ask / tell / get_state / set_state, usable without Ray.

    s = nas.create_strategy("random", space=hp, objective="val_accuracy:max", seed=0)
    p = s.ask()                                   # Proposal(.trial_id, .values) or None when exhausted
    s.tell(p.trial_id, {"val_accuracy": 0.93})    # a finished trial's metrics
    s.tell(p.trial_id, None)                      # a failed trial
    s.observe({"units": 64, ...}, {"val_accuracy": 0.9})  # a result it did not propose (warm start)
    s.enqueue({"units": 128, ...})                # proposed next, before the strategy's own (Optuna's enqueue_trial)
    state = s.get_state(); s2.set_state(state)    # JSON; s2 continues exactly as s would

The public methods keep the bookkeeping (trial ids, pending proposals, history, RNG state) in one place;
a strategy implements only ``_ask`` and ``_tell`` (and ``_get_state``/``_set_state`` for its own state),
as in DeepHyper's search base.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Mapping

import keras_tuner as kt
import numpy as np

from nas.errors import NasError
from nas.plugins import params as P
from nas.plugins.objective import Objective, parse_objectives

STATE_VERSION = 1
#: the trial ids of observations a strategy was told but did not propose (``observe``): prior-0, prior-1, ...
PRIOR = "prior-"


@dataclass(frozen=True)
class Proposal:
    trial_id: str
    values: dict[str, Any]


@dataclass
class Observation:
    """A finished trial as the strategy saw it: ``metrics`` is None for a failed or infeasible trial."""

    trial_id: str
    values: dict[str, Any]
    metrics: dict[str, float] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "values": self.values, "metrics": self.metrics}


class Strategy(abc.ABC):
    """Base class of every search strategy."""

    name: ClassVar[str] = ""

    def __init__(
        self,
        space: kt.HyperParameters,
        objective: str | Objective | Iterable[str | Objective] = "val_accuracy:max",
        seed: int | None = None,
    ) -> None:
        if not isinstance(space, kt.HyperParameters) or not space.space:
            raise NasError("a strategy needs a non-empty keras_tuner.HyperParameters space")
        self.space = space
        self.objectives: list[Objective] = parse_objectives(objective)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._next_id = 0
        self.pending: dict[str, dict[str, Any]] = {}
        self.history: list[Observation] = []
        self.queue: list[dict[str, Any]] = []  # enqueued configurations, proposed first, in order

    # -- public contract --------------------------------------------------------------------------------------
    @property
    def objective(self) -> Objective:
        """The primary (first) objective."""
        return self.objectives[0]

    @property
    def asked(self) -> int:
        """How many proposals were made (trial ids run 0 .. asked - 1)."""
        return self._next_id

    @property
    def priors(self) -> int:
        """How many observations it was told without proposing them (``observe``)."""
        return sum(o.trial_id.startswith(PRIOR) for o in self.history)

    def ask(self) -> Proposal | None:
        """The next configuration to try (an enqueued one first), or None when the strategy has nothing more to
        propose."""
        with one_blas_thread():
            values = self._ask_given(self.queue.pop(0)) if self.queue else self._ask()
        if values is None:
            return None
        values = {k: P.to_python(v) for k, v in values.items()}
        trial_id = str(self._next_id)
        self._next_id += 1
        self.pending[trial_id] = values
        return Proposal(trial_id, dict(values))

    def tell(self, trial_id: str, metrics: Mapping[str, Any] | None) -> None:
        """Report a proposal's outcome: its metrics, or None when the trial failed."""
        trial_id = str(trial_id)
        if trial_id not in self.pending:
            raise NasError(f"trial {trial_id!r} is not pending for this strategy; pending: {sorted(self.pending)}")
        values = self.pending.pop(trial_id)
        clean = None if metrics is None else {k: P.to_python(v) for k, v in dict(metrics).items()}
        obs = Observation(trial_id, values, clean)
        self.history.append(obs)
        with one_blas_thread():
            self._tell(obs)

    def observe(self, values: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> str:
        """Tell a result the strategy did not propose: a trial of an earlier run (``--warm-start``), a known
        configuration's score. It learns from it as from a told trial and avoids proposing it again (as it
        avoids its own repeats); it is no trial of this search and takes no trial id from it. ``values`` must be
        a point of the space (else ``NasError`` naming the value); returns the observation's id, ``prior-N``."""
        values = {k: P.to_python(v) for k, v in dict(values).items()}
        P.validate(self.space, values)
        clean = None if metrics is None else {k: P.to_python(v) for k, v in dict(metrics).items()}
        obs = Observation(f"{PRIOR}{self.priors}", values, clean)
        self.history.append(obs)
        with one_blas_thread():
            self._observe(obs)
        return obs.trial_id

    def enqueue(self, values: Mapping[str, Any]) -> None:
        """Propose ``values`` before anything of the strategy's own (after those enqueued before), as Optuna's
        ``enqueue_trial``: a configuration a user knows, trained as a trial of the search and told like any
        other. ``values`` must be a point of the space (else ``NasError`` naming the value)."""
        values = {k: P.to_python(v) for k, v in dict(values).items()}
        P.validate(self.space, values)
        self.queue.append(values)

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly, as plain JSON."""
        return {
            "strategy": self.name,
            "state_version": STATE_VERSION,
            "seed": self.seed,
            "objectives": [o.to_json() for o in self.objectives],
            "next_id": self._next_id,
            "pending": copy.deepcopy(self.pending),
            "history": [o.to_json() for o in self.history],
            "queue": copy.deepcopy(self.queue),
            "rng": _jsonable(self.rng.bit_generator.state),
            "own": self._get_state(),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue from ``get_state()`` output; the next proposals equal those the saved strategy would make."""
        if state.get("strategy") != self.name:
            raise NasError(f"state belongs to strategy {state.get('strategy')!r}, not {self.name!r}")
        if state.get("state_version") != STATE_VERSION:
            raise NasError(f"strategy state version {state.get('state_version')!r} is not supported")
        self.seed = state["seed"]
        self._next_id = int(state["next_id"])
        self.pending = copy.deepcopy(dict(state["pending"]))
        self.history = [Observation(o["trial_id"], o["values"], o["metrics"]) for o in state["history"]]
        self.queue = [dict(v) for v in state.get("queue", [])]  # a state saved before queues existed has none
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        with one_blas_thread():
            self._set_state(state["own"])

    # -- helpers for subclasses -------------------------------------------------------------------------------
    def score(self, metrics: Mapping[str, Any] | None) -> float | None:
        """The primary objective oriented so larger is better; None for failed trials or missing metrics."""
        return self.objective.score(metrics)

    def completed(self) -> list[tuple[Observation, float]]:
        """Finished trials with a usable score, in the order they were told."""
        out = []
        for o in self.history:
            s = self.score(o.metrics)
            if s is not None:
                out.append((o, s))
        return out

    def seen(self) -> set[str]:
        """Canonical keys of every configuration proposed so far (pending or finished)."""
        keys = {P.canonical(o.values) for o in self.history}
        keys.update(P.canonical(v) for v in self.pending.values())
        return keys

    # -- what a strategy implements ---------------------------------------------------------------------------
    @abc.abstractmethod
    def _ask(self) -> dict[str, Any] | None:
        """Values for the next trial (active parameters only), or None when exhausted."""

    def _tell(self, observation: Observation) -> None:
        """Learn from a finished trial (``observation.metrics`` is None when it failed)."""

    def _observe(self, observation: Observation) -> None:
        """Learn from a result it did not propose (``observe``; already in ``history``). By default as from a
        told trial: a strategy whose ``_tell`` needs what its ``_ask`` kept (Optuna's trial number) overrides."""
        self._tell(observation)

    def _ask_given(self, values: dict[str, Any]) -> dict[str, Any]:
        """Propose the enqueued ``values`` (``enqueue``); a strategy that keeps something per proposal in
        ``_ask`` (Optuna's trial) does so here too."""
        return values

    def _get_state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        return None


@functools.cache
def _blas() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # inspects the loaded libraries once (~ms); each limit then costs ~10 us


def one_blas_thread() -> contextlib.AbstractContextManager:
    """NumPy's BLAS on one thread while a strategy computes (its ``_ask``, ``_tell``, ...). A strategy's matrices
    are small (an LSTM policy of a few dozen units, a GP over at most some hundred trials), and a multi-threaded
    OpenBLAS spends more than it saves on them: its threads busy-wait between calls, on the cores the trials of a
    local Ray train on. Measured on a 2-core machine: the rl lstm policy's conformance tests took 51 CPU-s in 30 s
    with OpenBLAS's default threads, 19 CPU-s in 20 s with one. Only the calls are limited (threadpoolctl): the
    process's own BLAS setting is restored after each, for whatever else it runs (a notebook's own work)."""
    return _blas().limit(limits=1, user_api="blas")


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return P.to_python(x)
