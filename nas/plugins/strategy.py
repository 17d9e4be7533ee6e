"""The strategy contract: ask / tell / get_state / set_state, usable without Ray.

    s = nas.create_strategy("random", space=hp, objective="val_accuracy:max", seed=0)
    p = s.ask()                                   # Proposal(.trial_id, .values) or None when exhausted
    s.tell(p.trial_id, {"val_accuracy": 0.93})    # a finished trial's metrics
    s.tell(p.trial_id, None)                      # a failed trial
    state = s.get_state(); s2.set_state(state)    # JSON; s2 continues exactly as s would

The public methods keep the bookkeeping (trial ids, pending proposals, history, RNG state) in one place;
a strategy implements only ``_ask`` and ``_tell`` (and ``_get_state``/``_set_state`` for its own state),
as in DeepHyper's search base.
"""

from __future__ import annotations

import abc
import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Mapping

import keras_tuner as kt
import numpy as np

from nas.errors import NasError
from nas.plugins import params as P
from nas.plugins.objective import Objective, parse_objectives

STATE_VERSION = 1


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

    # -- public contract --------------------------------------------------------------------------------------
    @property
    def objective(self) -> Objective:
        """The primary (first) objective."""
        return self.objectives[0]

    @property
    def asked(self) -> int:
        """How many proposals were made (trial ids run 0 .. asked - 1)."""
        return self._next_id

    def ask(self) -> Proposal | None:
        """The next configuration to try, or None when the strategy has nothing more to propose."""
        values = self._ask()
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
        self._tell(obs)

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
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
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

    def _get_state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        return None


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return P.to_python(x)
