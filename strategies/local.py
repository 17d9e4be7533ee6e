"""Best-first local search (prototype)."""

from __future__ import annotations

from typing import Any, Mapping

import keras_tuner as kt
import numpy as np

from nas import params as P
from nas.objective import Objective
from nas.strategy import Strategy
from strategies.gp import _Column


class LocalSearch(Strategy):
    """Best-first local search: unevaluated one-parameter neighbours of the best configuration."""

    name = "local"

    def __init__(self, space: kt.HyperParameters, objective: str | Objective | list = "val_accuracy:max",
                 seed: int | None = None, *, n_startup_trials: int = 10, top: int = 1) -> None:
        super().__init__(space, objective, seed)
        self.n_startup_trials = n_startup_trials
        self.top = top
        self.columns = [_Column(p) for p in space.space if P.n_values(p) != 1]

    def _neighbours(self, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        out = []
        for c in self.columns:
            if c.name not in values:
                continue
            for v in c.neighbours(values[c.name], self.rng):
                child = dict(values)
                child[c.name] = v
                out.append(P.complete(self.space, child, self.rng))
        return out

    def _ask(self) -> dict[str, Any] | None:
        seen = self.seen()
        done = self.completed()
        if len(self.history) >= self.n_startup_trials and done:
            order = sorted(range(len(done)), key=lambda i: -done[i][1])
            for i in order:
                nb = [v for v in self._neighbours(done[i][0].values) if P.canonical(v) not in seen]
                if nb:
                    return nb[int(self.rng.integers(len(nb)))]
        values = P.sample_values(self.space, self.rng)
        for _ in range(100):
            if P.canonical(values) not in seen:
                break
            values = P.sample_values(self.space, self.rng)
        return values


class TpeLocal(LocalSearch):
    """Prototype: Optuna TPE (our bayes) for the first ``switch`` proposals, then best-first local search."""

    name = "tpe_local"

    def __init__(self, space, objective="val_accuracy:max", seed=None, *, switch: int = 20, top: int = 1,
                 n_startup_trials: int = 10) -> None:
        super().__init__(space, objective, seed, n_startup_trials=switch, top=top)
        from strategies.bayes import BayesSearch

        self.inner = BayesSearch(space, objective, seed, n_startup_trials=n_startup_trials)
        self.ids: dict[str, str] = {}

    def _ask(self):
        if len(self.history) + len(self.pending) < self.n_startup_trials:
            p = self.inner.ask()
            self.ids[str(self._next_id)] = p.trial_id
            return p.values
        return super()._ask()

    def _tell(self, obs):
        if obs.trial_id in self.ids:
            self.inner.tell(self.ids.pop(obs.trial_id), obs.metrics)
