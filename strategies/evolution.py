"""Regularized (aging) evolution, after Real et al., "Regularized Evolution for Image Classifier Architecture
Search" (AAAI 2019).

* The first ``population`` proposals are random (``params.sample_values``).
* After that, each proposal is a child: ``sample`` members are drawn (without replacement) from the population,
  the best of them is the parent, and the child is the parent with ONE active hyperparameter mutated to a
  different value; conditional parameters are then re-completed with ``params.complete`` (parameters made
  inactive are dropped, newly active ones drawn at random) using ``self.rng``.
* The population is the ``population`` most recently *finished* trials: a finished trial joins it and the
  oldest member leaves (aging), whatever its fitness.
* Failed trials (``metrics`` None or the objective missing) never join the population (they are not "worst
  fitness" members that would only crowd good ones out); they still count as proposed, so they are not repeated.

Asynchronous completion is fine: children are made from whatever has finished; until ``population`` trials have
finished, proposals stay random.

The population is a pure function of the told history (the last ``population`` successful trials, in tell
order), so the strategy's own state is just its options: ``set_state`` rebuilds it from the base's history.
Fitness is the primary objective (``self.score``); a Pareto-rank fitness for several objectives can replace
``_fitness`` without touching the rest.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping

import keras_tuner as kt

from nas.errors import PluginError
from nas.plugins import params as P
from nas.plugins.objective import Objective
from nas.plugins.strategy import Observation, Strategy
from nas.storage.results import dominates

#: mutations tried before accepting a child already proposed (small discrete spaces)
_RETRIES = 20
#: discrete parameters with at most this many values mutate to a uniformly chosen *different* value
_ENUMERATE = 256


class RegularizedEvolution(Strategy):
    """Regularized (aging) evolution: tournament selection, one-parameter mutation, oldest member removed."""

    name = "evolution"

    def __init__(
        self,
        space: kt.HyperParameters,
        objective: str | Objective | list = "val_accuracy:max",
        seed: int | None = None,
        *,
        population: int = 20,
        sample: int = 10,
    ) -> None:
        super().__init__(space, objective, seed)
        for opt, v, lo in (("population", population, 2), ("sample", sample, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise PluginError(f"evolution option {opt}={v!r} is not valid; give an integer >= {lo}")
        if sample > population:
            raise PluginError(f"evolution option sample={sample} must not exceed population={population}")
        self.population_size = population
        self.sample_size = sample
        self.population: deque[tuple[dict[str, Any], tuple[float, ...]]] = deque(maxlen=population)

    # -- fitness ----------------------------------------------------------------------------------------------
    def _fitness(self, observation: Observation) -> tuple[float, ...] | None:
        """Every objective's score (larger is better); None for a failed trial."""
        scores = tuple(o.score(observation.metrics) for o in self.objectives)
        return None if any(v is None for v in scores) else scores

    def _select(self, members: list[tuple[dict[str, Any], tuple[float, ...]]]) -> dict[str, Any]:
        """Tournament winner. One objective: the fittest. Several: a member no other sampled member Pareto-
        dominates, preferring the one that dominates most of the sample, then the first objective."""
        if len(self.objectives) == 1:
            return max(members, key=lambda m: m[1])[0]
        front = [m for m in members if not any(dominates(o[1], m[1]) for o in members)]
        return max(front, key=lambda m: (sum(dominates(m[1], o[1]) for o in members), m[1][0]))[0]

    # -- ask / tell -------------------------------------------------------------------------------------------
    def _ask(self) -> dict[str, Any] | None:
        seen = self.seen()
        if len(self.population) < self.population_size:
            return self._random(seen)
        idx = self.rng.choice(len(self.population), size=self.sample_size, replace=False)
        parent = self._select([self.population[int(i)] for i in idx])
        child = self.mutate(parent)
        for _ in range(_RETRIES):
            if P.canonical(child) not in seen:
                return child
            child = self.mutate(parent)
        return self._random(seen)

    def _random(self, seen: set[str]) -> dict[str, Any]:
        values = P.sample_values(self.space, self.rng)
        for _ in range(100):
            if P.canonical(values) not in seen:
                break
            values = P.sample_values(self.space, self.rng)
        return values

    def mutate(self, parent: Mapping[str, Any]) -> dict[str, Any]:
        """``parent`` with one active, non-fixed hyperparameter changed; conditionals re-completed."""
        mutable = [p for p in P.active_params(self.space, parent) if P.n_values(p) != 1]
        if not mutable:
            return dict(parent)
        p = mutable[int(self.rng.integers(len(mutable)))]
        child = dict(parent)
        child[p.name] = self._new_value(p, parent[p.name])
        return P.complete(self.space, child, self.rng)

    def _new_value(self, param: Any, current: Any) -> Any:
        n = P.n_values(param)
        if n is None:  # continuous: a fresh draw from the parameter's own distribution
            return P.sample(param, self.rng)
        if n <= _ENUMERATE:
            cands = [v for v in _all_values(param) if v != current]
            if cands:
                return cands[int(self.rng.integers(len(cands)))]
        for _ in range(20):
            v = P.sample(param, self.rng)
            if v != current:
                return v
        return current

    def _tell(self, observation: Observation) -> None:
        f = self._fitness(observation)
        if f is not None:
            self.population.append((observation.values, f))

    # -- state ------------------------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {"population": self.population_size, "sample": self.sample_size}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self.population_size = int(state["population"])
        self.sample_size = int(state["sample"])
        self.population = deque(maxlen=self.population_size)
        for o in self.history:
            self._tell(o)


def _all_values(param: Any) -> list[Any]:
    """Every value of a discrete parameter."""
    n = P.n_values(param)
    return P.candidates(param, points=int(n))
