"""Helpers over a KerasTuner search space (``keras_tuner.HyperParameters``) shared by every strategy.

A space is the ordered list ``hp.space`` of hyperparameters (Int, Float, Choice, Boolean, Fixed). Conditional
parameters carry ``conditions`` on earlier parameters, so walking the list in declaration order and skipping
inactive ones yields exactly the valid points. Strategies never need KerasTuner's oracles: they call these.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

from nas.errors import NasError

if TYPE_CHECKING:  # annotations only: strategies and the engine use these helpers without importing Keras
    import keras_tuner as kt

Values = dict[str, Any]


def is_active(param: Any, values: Mapping[str, Any]) -> bool:
    """Whether ``param``'s conditions hold for the (partial) ``values`` chosen so far."""
    conditions = getattr(param, "conditions", None)
    if not conditions:  # the common case, and strategies call this for thousands of candidates per proposal
        return True
    values = dict(values)
    return all(c.is_active(values) for c in conditions)


def active_params(space: kt.HyperParameters, values: Mapping[str, Any]) -> list[Any]:
    """The parameters active for a complete assignment ``values``, in declaration order."""
    out, chosen = [], {}
    for p in space.space:
        if is_active(p, chosen):
            out.append(p)
            if p.name in values:
                chosen[p.name] = values[p.name]
    return out


def kind(param: Any) -> str:
    return type(param).__name__.lower()  # int | float | choice | boolean | fixed


def _stepped(param: Any) -> bool:
    return getattr(param, "step", None) is not None


def n_values(param: Any) -> int | None:
    """Number of distinct values, or None for a continuous range."""
    k = kind(param)
    if k == "choice":
        return len(param.values)
    if k == "boolean":
        return 2
    if k == "fixed":
        return 1
    if _stepped(param):
        return int(param._get_n_values())
    if k == "int":  # log-sampled Int without a step: every integer in range
        return int(param.max_value - param.min_value + 1)
    return None


def _cast(param: Any, v: float) -> Any:
    if kind(param) == "int":
        return int(min(max(round(v), param.min_value), param.max_value))
    return float(min(max(v, param.min_value), param.max_value))


def candidates(param: Any, points: int = 5) -> list[Any]:
    """A finite, ordered list of values for ``param``.

    Discrete parameters give all their values when there are at most ``points`` of them; larger or continuous
    ranges are discretised into ``points`` values spread evenly (in log space for log-sampled ranges).
    """
    k = kind(param)
    if k == "choice":
        return list(param.values)
    if k == "boolean":
        return [False, True]
    if k == "fixed":
        return [param.value]
    n = n_values(param)
    if n is not None and n <= points and _stepped(param):
        return [_cast(param, param._get_value_by_index(i)) for i in range(n)]
    if n is not None and n <= points:
        return list(range(int(param.min_value), int(param.max_value) + 1))
    if points < 2:
        return [param.default if param.default is not None else param.min_value]
    lo, hi = float(param.min_value), float(param.max_value)
    if _stepped(param):  # evenly spaced indices of the stepped grid
        idx = np.unique(np.round(np.linspace(0, n - 1, points)).astype(int))
        vals = [_cast(param, param._get_value_by_index(int(i))) for i in idx]
    elif param.sampling in ("log", "reverse_log") and lo > 0:
        vals = [_cast(param, v) for v in np.geomspace(lo, hi, points)]
    else:
        vals = [_cast(param, v) for v in np.linspace(lo, hi, points)]
    out: list[Any] = []
    for v in vals:
        if v not in out:
            out.append(v)
    return out


def sample(param: Any, rng: np.random.Generator) -> Any:
    """One value of ``param`` drawn with its own sampling (uniform, or log-uniform for log ranges)."""
    k = kind(param)
    if k == "choice":
        return param.values[int(rng.integers(len(param.values)))]
    if k == "boolean":
        return bool(rng.integers(2))
    if k == "fixed":
        return param.value
    if _stepped(param):
        return _cast(param, param._get_value_by_index(int(rng.integers(param._get_n_values()))))
    lo, hi = float(param.min_value), float(param.max_value)
    if param.sampling in ("log", "reverse_log") and lo > 0:
        v = math.exp(rng.uniform(math.log(lo), math.log(hi + (1 if k == "int" else 0) - 1e-9)))
        v = math.floor(v) if k == "int" else v
    elif k == "int":
        v = float(rng.integers(int(lo), int(hi) + 1))
    else:
        v = rng.uniform(lo, hi)
    return _cast(param, v)


def default_values(space: kt.HyperParameters) -> Values:
    """The space's default point (each active parameter at its default)."""
    values: Values = {}
    for p in space.space:
        if is_active(p, values):
            values[p.name] = p.default if kind(p) != "fixed" else p.value
    return values


def smallest_values(space: kt.HyperParameters) -> Values:
    """The space's "smallest" point: every active range at its minimum, every numeric choice at its least value
    (others at their first), every boolean False: where the fewest parameters usually are."""
    values: Values = {}
    for p in space.space:
        if not is_active(p, values):
            continue
        options = candidates(p, points=2)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in options)
        values[p.name] = min(options) if numeric else options[0]
    return values


def sample_values(space: kt.HyperParameters, rng: np.random.Generator) -> Values:
    """A random valid point: active parameters only, each sampled in declaration order."""
    values: Values = {}
    for p in space.space:
        if is_active(p, values):
            values[p.name] = sample(p, rng)
    return values


def complete(space: kt.HyperParameters, values: Mapping[str, Any], rng: np.random.Generator | None = None) -> Values:
    """Keep the active subset of ``values``; fill active parameters that are missing (random or default)."""
    out: Values = {}
    for p in space.space:
        if not is_active(p, out):
            continue
        if p.name in values:
            out[p.name] = values[p.name]
        elif rng is not None:
            out[p.name] = sample(p, rng)
        else:
            out[p.name] = p.default if kind(p) != "fixed" else p.value
    return out


def contains(param: Any, value: Any) -> bool:
    """Whether ``value`` is a legal value of ``param``."""
    k = kind(param)
    if k == "choice":
        return value in list(param.values)
    if k == "boolean":
        return isinstance(value, (bool, np.bool_))
    if k == "fixed":
        return value == param.value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    if k == "int" and float(value) != int(value):
        return False
    tol = 1e-9 * max(1.0, abs(float(param.max_value)))
    if not float(param.min_value) - tol <= float(value) <= float(param.max_value) + tol:
        return False
    return not _stepped(param) or _on_grid(param, float(value))


def _on_grid(param: Any, value: float) -> bool:
    """Whether ``value`` is one of a stepped range's values: ``min + i * step``, or ``min * step ** i`` for a log
    range (KerasTuner's grid; ``Int(3, 20, step=4)`` holds 3, 7, 11, 15, 19)."""
    lo, step = float(param.min_value), float(param.step)
    if param.sampling in ("log", "reverse_log") and lo > 0 and step > 1:
        if value <= 0:
            return False
        i = math.log(value / lo) / math.log(step)
    else:
        i = (value - lo) / step
    return abs(i - round(i)) <= 1e-6 and 0 <= round(i) < n_values(param)


def validate(space: kt.HyperParameters, values: Mapping[str, Any]) -> None:
    """Raise ``NasError`` unless ``values`` is exactly a valid point: every active parameter set to a legal
    value and no inactive or unknown parameter present."""
    names = {p.name for p in space.space}
    unknown = set(values) - names
    if unknown:
        raise NasError(f"unknown hyperparameters {sorted(unknown)}; the space has {sorted(names)}")
    active = active_params(space, values)
    for p in active:
        if p.name not in values:
            raise NasError(f"active hyperparameter {p.name!r} has no value")
        if not contains(p, values[p.name]):
            raise NasError(f"value {values[p.name]!r} is not valid for hyperparameter {p.name!r} ({describe(p)})")
    inactive = set(values) - {p.name for p in active}
    if inactive:
        raise NasError(f"hyperparameters {sorted(inactive)} are set but inactive for this configuration")


def to_hp(space: kt.HyperParameters, values: Mapping[str, Any]) -> kt.HyperParameters:
    """A copy of ``space`` holding ``values``: what a space's ``build(hp)`` receives."""
    hp = space.copy()
    hp.values = {k: to_python(v) for k, v in complete(space, values).items()}
    return hp


def to_python(v: Any) -> Any:
    """numpy scalars to plain Python, so values survive JSON and compare equal after a round trip."""
    if isinstance(v, np.generic):
        return v.item()
    return v


def canonical(values: Mapping[str, Any]) -> str:
    """A stable text key for a configuration (dedupe, grid bookkeeping)."""
    return json.dumps({k: to_python(v) for k, v in values.items()}, sort_keys=True, default=str)


def describe(param: Any) -> str:
    """A short human description: ``Int[1..4]``, ``Float[1e-4..0.1, log]``, ``Choice(relu, tanh)``."""
    k = kind(param)
    if k == "choice":
        return "Choice(" + ", ".join(map(str, param.values)) + ")"
    if k == "boolean":
        return "Boolean"
    if k == "fixed":
        return f"Fixed({param.value})"
    extra = []
    if getattr(param, "step", None) not in (None, 1) or (k == "float" and param.step is not None):
        extra.append(f"step {param.step}")
    if param.sampling != "linear":
        extra.append(param.sampling)
    tail = (", " + ", ".join(extra)) if extra else ""
    return f"{k.capitalize()}[{param.min_value}..{param.max_value}{tail}]"


def space_summary(space: kt.HyperParameters) -> list[dict[str, Any]]:
    """JSON description of every parameter (name, type, range, conditions): stored in a search's spec."""
    rows = []
    for p in space.space:
        rows.append({
            "name": p.name,
            "type": kind(p),
            "range": describe(p),
            "conditions": [c.get_config() for c in getattr(p, "conditions", []) or []],
        })
    return rows


def grid(space: kt.HyperParameters, points: int = 5) -> Iterator[Values]:
    """Every valid combination, in declaration order; an inactive conditional parameter adds no combinations."""
    params = list(space.space)

    def walk(i: int, values: Values) -> Iterator[Values]:
        if i == len(params):
            yield dict(values)
            return
        p = params[i]
        if not is_active(p, values):
            yield from walk(i + 1, values)
            return
        for v in candidates(p, points):
            values[p.name] = v
            yield from walk(i + 1, values)
            del values[p.name]

    return walk(0, {})


def grid_size(space: kt.HyperParameters, points: int = 5) -> int:
    """Number of points ``grid`` yields, counted without enumerating them."""
    params = list(space.space)

    def count(i: int, values: Values) -> int:
        if i == len(params):
            return 1
        p = params[i]
        if not is_active(p, values):
            return count(i + 1, values)
        # Children of p only depend on p's value when some later parameter is conditioned on it.
        dependents = any(
            any(c.name == p.name for c in getattr(q, "conditions", []) or []) for q in params[i + 1:]
        )
        cands = candidates(p, points)
        if not dependents:
            values[p.name] = cands[0]
            n = len(cands) * count(i + 1, values)
            del values[p.name]
            return n
        total = 0
        for v in cands:
            values[p.name] = v
            total += count(i + 1, values)
            del values[p.name]
        return total

    return count(0, {})
