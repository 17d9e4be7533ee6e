"""Grid search over the valid combinations only."""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Mapping

import keras_tuner as kt

from nas.errors import NasError
from nas.plugins import params as P
from nas.plugins.objective import Objective
from nas.plugins.strategy import Strategy


class GridSearch(Strategy):
    """Every valid combination in declaration order; continuous ranges discretised into `points` values."""

    name = "grid"

    def __init__(
        self,
        space: kt.HyperParameters,
        objective: str | Objective | list = "val_accuracy:max",
        seed: int | None = None,
        points: int = 3,
    ) -> None:
        super().__init__(space, objective, seed)
        if not isinstance(points, int) or points < 1:
            raise NasError(f"grid option points={points!r} is not valid; give an integer >= 1")
        self.points = points
        self.cursor = 0
        self._iter: Iterator[dict[str, Any]] = P.grid(space, points)

    @property
    def size(self) -> int:
        """How many configurations the grid holds."""
        return P.grid_size(self.space, self.points)

    def _ask(self) -> dict[str, Any] | None:
        # a point already observed (``observe``) or proposed from the queue (``enqueue``) is not proposed again;
        # the grid's own points never repeat each other
        seen = self.seen()
        while True:
            values = next(self._iter, None)
            if values is None:
                return None
            self.cursor += 1
            if P.canonical(values) not in seen:
                return values

    # Ray Tune pickles its search algorithm; the grid's iterator is rebuilt from the cursor instead.
    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("_iter")
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._iter = itertools.islice(P.grid(self.space, self.points), self.cursor, None)

    def _get_state(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "points": self.points}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self.__setstate__({"points": int(state["points"]), "cursor": int(state["cursor"])})
