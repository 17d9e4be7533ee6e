"""The strategy contract (nas.create_strategy / ask / tell / get_state / set_state) on the built-in baselines."""

from __future__ import annotations

import json

import keras_tuner as kt
import pytest

import nas
from nas.errors import NasError, PluginError
from nas.plugins import params as P
from nas.testing.conformance import toy_space


def small_conditional_space() -> kt.HyperParameters:
    hp = kt.HyperParameters()
    hp.Int("layers", 1, 2)
    with hp.conditional_scope("layers", [2]):
        hp.Choice("second", ["a", "b", "c"])
    hp.Boolean("bn")
    hp.Float("lr", 1e-3, 1e-1, sampling="log")
    return hp


def test_grid_enumerates_only_valid_combinations_and_exhausts_exactly() -> None:
    hp = small_conditional_space()
    s = nas.create_strategy("grid", space=hp, objective="val_accuracy:max", seed=0, points=2)
    # layers=1: bn x lr = 2*2; layers=2: second x bn x lr = 3*2*2 -> 16, not 2*3*2*2 = 24
    assert s.size == 16
    seen = []
    while (p := s.ask()) is not None:
        P.validate(hp, p.values)
        seen.append(P.canonical(p.values))
        s.tell(p.trial_id, {"val_accuracy": 0.5})
    assert len(seen) == 16 == len(set(seen))
    assert s.ask() is None
    assert sorted({json.loads(k)["lr"] for k in seen}) == [0.001, 0.1]  # continuous range: stated points


def test_grid_size_matches_enumeration_on_a_larger_space() -> None:
    hp = toy_space()
    for points in (1, 2, 3):
        assert P.grid_size(hp, points) == sum(1 for _ in P.grid(hp, points))


def test_ask_tell_state_round_trip_and_failures() -> None:
    hp = toy_space()
    s = nas.create_strategy("random", space=hp, objective="val_accuracy:max", seed=7)
    p1, p2 = s.ask(), s.ask()
    assert p1.trial_id != p2.trial_id and p1.values != p2.values
    s.tell(p1.trial_id, {"val_accuracy": 0.9})
    s.tell(p2.trial_id, None)  # a failed trial
    state = json.loads(json.dumps(s.get_state()))
    s2 = nas.create_strategy("random", space=hp, objective="val_accuracy:max", seed=999)
    s2.set_state(state)
    assert [s.ask().values for _ in range(5)] == [s2.ask().values for _ in range(5)]
    with pytest.raises(NasError, match="not pending"):
        s.tell("does-not-exist", {"val_accuracy": 1.0})
    grid = nas.create_strategy("grid", space=hp, seed=0)
    with pytest.raises(NasError, match="belongs to strategy 'random'"):
        grid.set_state(state)


def test_seeded_proposals_reproducible_and_seed_matters() -> None:
    hp = toy_space()
    run = lambda seed: [nas.create_strategy("random", space=hp, seed=seed).ask().values for _ in range(1)]  # noqa: E731
    a = nas.create_strategy("random", space=hp, seed=1)
    b = nas.create_strategy("random", space=hp, seed=1)
    c = nas.create_strategy("random", space=hp, seed=2)
    va = [a.ask().values for _ in range(10)]
    assert va == [b.ask().values for _ in range(10)]
    assert va != [c.ask().values for _ in range(10)]
    assert run(3) == run(3)


def test_create_strategy_errors() -> None:
    hp = toy_space()
    with pytest.raises(PluginError, match="unknown strategy 'nope'; registered: .*grid.*random"):
        nas.create_strategy("nope", space=hp)
    with pytest.raises(PluginError, match="has no option colour; accepted: points"):
        nas.create_strategy("grid", space=hp, colour=1)
    with pytest.raises(NasError, match="points=0 is not valid"):
        nas.create_strategy("grid", space=hp, points=0)
    s = nas.create_strategy("strategies.random_search:RandomSearch", space=hp, objective="val_loss", seed=0)
    assert s.objective.mode == "min"


def test_objective_parsing() -> None:
    assert str(nas.parse_objective("val_accuracy")) == "val_accuracy:max"
    assert str(nas.parse_objective("val_loss")) == "val_loss:min"
    assert str(nas.parse_objective("latency_ms:min")) == "latency_ms:min"
    with pytest.raises(NasError, match="mode 'best' is not valid"):
        nas.parse_objective("val_accuracy:best")
