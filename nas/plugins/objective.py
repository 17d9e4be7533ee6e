"""Objectives: ``METRIC[:max|min]``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from nas.errors import NasError

#: the latency metrics every trial can report (``nas.trials.measure``)
LATENCY = "latency_ms"  # per sample, batch 1, median of REPEATS calls after WARMUP
LATENCY_BATCH = "latency_ms_b256"  # per sample, batch 256 (throughput view)
LATENCY_METRICS = (LATENCY, LATENCY_BATCH)

_MIN_HINTS = ("loss", "error", "mse", "mae", "latency", "params", "time")


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str  # "max" | "min"

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise NasError(f"objective mode {self.mode!r} for {self.metric!r} is not valid; use 'max' or 'min'")

    def __str__(self) -> str:
        return f"{self.metric}:{self.mode}"

    def to_json(self) -> dict[str, str]:
        return {"metric": self.metric, "mode": self.mode}

    def value(self, metrics: Mapping[str, Any] | None) -> float | None:
        """The metric's value as a finite float, or None when missing or not finite."""
        if not metrics or self.metric not in metrics:
            return None
        try:
            v = float(metrics[self.metric])
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) else None

    def score(self, metrics: Mapping[str, Any] | None) -> float | None:
        """The value oriented so that larger is always better (None when missing)."""
        v = self.value(metrics)
        if v is None:
            return None
        return v if self.mode == "max" else -v

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b


def parse_objective(text: str | Objective) -> Objective:
    """Parse ``"val_accuracy:max"``; without a mode, names with loss/error/latency/params are minimised."""
    if isinstance(text, Objective):
        return text
    if not isinstance(text, str) or not text.strip():
        raise NasError(f"objective {text!r} is not valid; use METRIC[:max|min], e.g. val_accuracy:max")
    metric, _, mode = text.strip().partition(":")
    if not metric:
        raise NasError(f"objective {text!r} has no metric name; use METRIC[:max|min], e.g. val_accuracy:max")
    if not mode:
        mode = "min" if any(h in metric for h in _MIN_HINTS) else "max"
    if mode not in ("max", "min"):
        raise NasError(f"objective {text!r}: mode {mode!r} is not valid; use {metric}:max or {metric}:min")
    return Objective(metric, mode)


def parse_objectives(spec: str | Objective | Iterable[str | Objective]) -> list[Objective]:
    """One or several objectives (several make a multi-objective search)."""
    items = [spec] if isinstance(spec, (str, Objective)) else list(spec)
    if not items:
        raise NasError("at least one objective is needed, e.g. val_accuracy:max")
    objectives = [parse_objective(s) for s in items]
    names = [o.metric for o in objectives]
    if len(set(names)) != len(names):
        raise NasError(f"objective metrics must be distinct; got {names}")
    return objectives
