"""The options of the supernet phase (``--estimation shared-weights``), checked before anything runs.

``nas search`` gives them as ``--supernet-epochs N``, ``--top-k K`` and ``--supernet-option KEY=VALUE``; they are
stored in the run's spec (``options``) and kept by ``nas resume``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from nas.errors import NasError

#: --supernet-option keys: (default, minimum, what it is)
OPTIONS: dict[str, tuple[int, int, str]] = {
    "controller_steps": (10, 1, "controller updates per supernet epoch"),
    "children_per_step": (10, 1, "children sampled and evaluated (one validation minibatch each) per update"),
    "candidates": (100, 1, "architectures sampled from the final policy and ranked on the whole validation set"),
    "epoch_best": (3, 1, "an epoch's best children (by minibatch accuracy) re-evaluated on the whole validation set"),
}
#: the metrics a child evaluated with shared weights has (a controller can optimise either)
SHARED_METRICS = ("val_accuracy", "val_loss")
#: strategies that refit a model on every observation: too slow for the thousands of children a controller sees
SLOW_CONTROLLERS = ("gp", "bayes")
#: the rl strategy as ENAS's controller, unless --strategy-option says otherwise: the LSTM policy, children drawn
#: with repeats, and a smaller step than rl's per-trial default (0.1), which collapsed the policy onto a few
#: children within 2 supernet epochs on digits (0.03: it concentrates over ~8 epochs while the shared weights learn)
RL_DEFAULTS = {"policy": "lstm", "unique": False, "learning_rate": 0.03}


@dataclass(frozen=True)
class SupernetSettings:
    epochs: int = 10
    top_k: int = 5
    controller_steps: int = 10
    children_per_step: int = 10
    candidates: int = 100
    epoch_best: int = 3

    @classmethod
    def of(cls, supernet_epochs: int, top_k: int, options: Mapping[str, Any]) -> "SupernetSettings":
        """Checked settings; one line naming a bad value and what is accepted."""
        for flag, v in (("--supernet-epochs", supernet_epochs), ("--top-k", top_k)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise NasError(f"{flag} {v!r} is not valid; give an integer >= 1")
        values: dict[str, int] = {}
        for key, value in dict(options or {}).items():
            if key not in OPTIONS:
                raise NasError(f"--supernet-option {key}={value!r} is not valid; accepted keys: "
                               + ", ".join(f"{k} ({OPTIONS[k][2]}, default {OPTIONS[k][0]})" for k in OPTIONS))
            lo = OPTIONS[key][1]
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise NasError(f"--supernet-option {key}={value!r} is not valid; give an integer >= {lo}")
            values[key] = value
        return cls(epochs=supernet_epochs, top_k=top_k, **values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "SupernetSettings":
        return cls(**dict(d))


def controller_options(strategy_name: str, strategy_options: Mapping[str, Any], settings: SupernetSettings) -> dict:
    """The controller's options: the rl strategy (``strategy_name``: the class's ``name``) defaults to ENAS's
    controller (the LSTM policy, sampling with repeats, one update per ``children_per_step`` children); options
    given with --strategy-option win."""
    if strategy_name == "rl":
        return {**RL_DEFAULTS, "batch": settings.children_per_step, **dict(strategy_options)}
    return dict(strategy_options)
