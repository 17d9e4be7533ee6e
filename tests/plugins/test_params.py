"""nas.plugins.params: the helpers every strategy uses over a KerasTuner space, on a conditional space."""

from __future__ import annotations

import json

import keras_tuner as kt
import numpy as np
import pytest

from nas.errors import NasError
from nas.plugins import params as P


def _space() -> kt.HyperParameters:
    hp = kt.HyperParameters()
    hp.Choice("kind", ["mlp", "cnn"])
    with hp.conditional_scope("kind", ["cnn"]):
        hp.Int("filters", 8, 32, step=8)
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Boolean("bn")
    hp.Fixed("epochs", 2)
    return hp


def test_sampled_points_are_valid_and_conditionals_follow_their_parent() -> None:
    hp, rng = _space(), np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        values = P.sample_values(hp, rng)
        P.validate(hp, values)
        assert ("filters" in values) == (values["kind"] == "cnn")
        seen.add(values["kind"])
    assert seen == {"mlp", "cnn"}


@pytest.mark.parametrize("values, says", [
    ({"kind": "mlp", "lr": 0.01, "bn": True, "epochs": 2, "filters": 8}, "['filters'] are set but inactive"),
    ({"kind": "cnn", "lr": 0.01, "bn": True, "epochs": 2}, "active hyperparameter 'filters' has no value"),
    ({"kind": "cnn", "filters": 40, "lr": 0.01, "bn": True, "epochs": 2}, "value 40 is not valid for hyperparameter"),
    ({"kind": "cnn", "filters": 12, "lr": 0.01, "bn": True, "epochs": 2}, "value 12 is not valid for hyperparameter"),
    ({"kind": "rnn", "lr": 0.01, "bn": True, "epochs": 2}, "value 'rnn' is not valid"),
    ({"depth": 3}, "unknown hyperparameters ['depth']"),
])
def test_validate_names_what_is_wrong(values: dict, says: str) -> None:
    with pytest.raises(NasError) as e:
        P.validate(_space(), values)
    assert says in str(e.value)


def test_grid_enumerates_exactly_grid_size_distinct_valid_points() -> None:
    hp = _space()
    points = list(P.grid(hp, points=3))
    assert len(points) == P.grid_size(hp, points=3) == len({P.canonical(v) for v in points})
    for v in points:
        P.validate(hp, v)
    # mlp: 3 lr x 2 bn; cnn: 3 of the 4 filters (8, 24, 32: evenly spaced over the step grid) x 3 lr x 2 bn
    assert len(points) == 3 * 2 + 3 * 3 * 2
    assert sorted({v["filters"] for v in points if "filters" in v}) == [8, 24, 32]


def test_to_hp_completes_a_partial_point_and_values_survive_json() -> None:
    hp = _space()
    got = P.to_hp(hp, {"kind": "cnn", "lr": np.float64(0.01)})
    assert got.values == {"kind": "cnn", "filters": 8, "lr": 0.01, "bn": False, "epochs": 2}
    assert json.loads(P.canonical(got.values)) == got.values
    assert [r["range"] for r in P.space_summary(hp)] == ["Choice(mlp, cnn)", "Int[8..32, step 8]",
                                                          "Float[0.0001..0.1, log]", "Boolean", "Fixed(2)"]


def test_a_stepped_range_holds_only_its_grid() -> None:
    """Int(3, 20, step=4) is 3, 7, 11, 15, 19 (KerasTuner's values); a log range with a step is geometric."""
    hp = kt.HyperParameters()
    hp.Int("f", 3, 20, step=4)
    hp.Int("units", 8, 256, step=2, sampling="log")
    hp.Float("rate", 0.1, 0.5, step=0.1)
    f, units, rate = hp.space
    assert [v for v in range(0, 25) if P.contains(f, v)] == [3, 7, 11, 15, 19]
    assert [v for v in range(0, 300) if P.contains(units, v)] == [8, 16, 32, 64, 128, 256]
    assert P.contains(rate, 0.3) and P.contains(rate, 0.1 + 0.2) and not P.contains(rate, 0.25)
    for p in hp.space:
        assert all(P.contains(p, v) for v in P.candidates(p, 3) + P.candidates(p, 50))
