"""A portfolio that hands over between strategies as results accumulate (prototype)."""

from __future__ import annotations

from typing import Any, Mapping

import keras_tuner as kt

from nas.errors import PluginError
from nas.objective import Objective
from nas.registry import create_strategy
from nas.strategy import Observation, Strategy


class PortfolioSearch(Strategy):
    """Model-based start (gp), then another strategy trained on every result so far."""

    name = "auto"

    def __init__(
        self,
        space: kt.HyperParameters,
        objective: str | Objective | list = "val_accuracy:max",
        seed: int | None = None,
        *,
        first: str = "strategies.gp:GaussianProcessSearch",
        then: str = "rl",
        switch: int = 60,
        then_options: dict | None = None,
    ) -> None:
        super().__init__(space, objective, seed)
        if not isinstance(switch, int) or switch < 0:
            raise PluginError(f"auto option switch={switch!r} is not valid; give an int >= 0")
        self.first_name, self.then_name, self.switch = first, then, switch
        self.then_options = dict(then_options or {})
        self.members = [
            create_strategy(first, space=space, objective=self.objectives, seed=seed),
            create_strategy(then, space=space, objective=self.objectives, seed=seed, **self.then_options),
        ]
        self._link()

    def _link(self) -> None:
        """Members share this strategy's bookkeeping: history, pending proposals, RNG, trial ids."""
        for m in self.members:
            m.history, m.pending, m.rng = self.history, self.pending, self.rng

    def _ask(self) -> dict[str, Any] | None:
        m = self.members[0] if len(self.history) + len(self.pending) < self.switch else self.members[1]
        m._next_id = self._next_id
        return m._ask()

    def _tell(self, observation: Observation) -> None:
        for m in self.members:
            m._tell(observation)

    def _get_state(self) -> dict[str, Any]:
        return {"members": [m._get_state() for m in self.members]}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._link()
        for m, s in zip(self.members, state["members"]):
            m._set_state(s)
