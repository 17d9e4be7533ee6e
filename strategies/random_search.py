"""Random search: each active hyperparameter drawn from its own distribution."""

from __future__ import annotations

from typing import Any

from nas.plugins import params as P
from nas.plugins.strategy import Strategy

#: draws tried before accepting a configuration already proposed (small discrete spaces)
_RETRIES = 100


class RandomSearch(Strategy):
    """Random search over every active hyperparameter (log-uniform for log ranges); avoids repeats."""

    name = "random"

    def _ask(self) -> dict[str, Any] | None:
        seen = self.seen()
        values = P.sample_values(self.space, self.rng)
        for _ in range(_RETRIES):
            if P.canonical(values) not in seen:
                break
            values = P.sample_values(self.space, self.rng)
        return values
