"""The options of the supernet phase (``--estimation shared-weights``), checked before anything runs: part of
the search's options (``nas.options`` imports it; it imports only ``nas.errors``).

``nas search`` gives them as ``--supernet-epochs N``, ``--top-k K`` and ``--supernet-option KEY=VALUE``; they are
stored in the run's spec (``options``) and kept by ``nas resume``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from nas.errors import NasError

#: --estimation values
ESTIMATIONS = ("standalone", "shared-weights")
SHARED = "shared-weights"

#: --supernet-option keys: (default, minimum, what it is)
OPTIONS: dict[str, tuple[int | str, int, str]] = {
    "controller_steps": (10, 1, "controller updates per supernet epoch"),
    "children_per_step": (10, 1, "children sampled and evaluated (one validation minibatch each) per update"),
    "candidates": (100, 1, "architectures sampled from the final policy and ranked on the whole validation set"),
    "epoch_best": (3, 1, "an epoch's best children (by minibatch accuracy) re-evaluated on the whole validation set"),
    # supernet epochs at the start whose shared weights train on children drawn uniformly from the space, with no
    # controller update (ENAS's controller trains from the first step). Every operation then gets trained alike
    # before the controller concentrates on a few, which ranking architectures by shared-weight accuracy needs
    # (Bender et al. 2018; Guo et al. 2020 train only uniformly). Default: half of --supernet-epochs. Measured
    # (benchmarks/enas.py, digits, 30 supernet epochs): Kendall's tau of shared-weight vs from-scratch accuracy over
    # 20 random architectures -0.27 without a warm-up, +0.10 with 15 warm-up epochs, which also halve the
    # controller's evaluations (supernet phase 34.7 s instead of 52.8 s).
    "warmup_epochs": ("half of --supernet-epochs", 0, "first supernet epochs training the shared weights on "
                      "children drawn uniformly, before the controller samples them and learns"),
}
#: the metrics a child evaluated with shared weights has (a controller can optimise either)
SHARED_METRICS = ("val_accuracy", "val_loss")
#: strategies that refit a model on every observation: too slow for the thousands of children a controller sees
SLOW_CONTROLLERS = ("gp", "bayes")
#: the rl strategy as ENAS's controller, unless --strategy-option says otherwise: the LSTM policy, children drawn
#: with repeats, and a smaller step than rl's per-trial default (0.1), which collapsed the policy onto a few
#: children within 2 supernet epochs on digits (0.03: it concentrates over ~8 epochs while the shared weights learn),
#: and REINFORCE as Pham et al. trained it (thousands of noisy, repeated children are no data for update="ppo"'s
#: per-trial model)
RL_DEFAULTS = {"policy": "lstm", "unique": False, "learning_rate": 0.03, "update": "reinforce"}


@dataclass(frozen=True)
class SupernetSettings:
    epochs: int = 30
    top_k: int = 5
    controller_steps: int = 10
    children_per_step: int = 10
    candidates: int = 100
    epoch_best: int = 3
    warmup_epochs: int = 0

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
        warmup = values.setdefault("warmup_epochs", supernet_epochs // 2)
        if warmup > supernet_epochs:
            raise NasError(f"--supernet-option warmup_epochs={warmup} is not valid; give 0 to --supernet-epochs "
                           f"({supernet_epochs})")
        return cls(epochs=supernet_epochs, top_k=top_k, **values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "SupernetSettings":
        return cls(**dict(d))  # a run stored before warm-up existed has none: the field's default, 0


def controller_options(strategy_name: str, strategy_options: Mapping[str, Any], settings: SupernetSettings) -> dict:
    """The controller's options: the rl strategy (``strategy_name``: the class's ``name``) defaults to ENAS's
    controller (the LSTM policy, sampling with repeats, one update per ``children_per_step`` children); options
    given with --strategy-option win."""
    if strategy_name == "rl":
        return {**RL_DEFAULTS, "batch": settings.children_per_step, **dict(strategy_options)}
    return dict(strategy_options)
