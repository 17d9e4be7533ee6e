"""Behaviour of the bayes, rl and evolution strategies beyond the shared conformance suite, and a benchmark smoke run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import keras_tuner as kt
import numpy as np
import pytest

import nas
from nas.errors import PluginError
from nas.plugins import params as P
from nas.testing.conformance import toy_metric, toy_space

ROOT = Path(__file__).resolve().parents[2]


def _drive(s, n, metric=toy_metric, key="val_accuracy"):
    out = []
    for _ in range(n):
        p = s.ask()
        out.append(p.values)
        s.tell(p.trial_id, {key: metric(p.values)})
    return out


# -- bayes ----------------------------------------------------------------------------------------------------
def test_bayes_maps_every_param_type_and_conditionals():
    hp = toy_space()
    hp.Int("plain_int", 1, 5)
    hp.Int("log_int", 2, 300, sampling="log")
    hp.Float("stepped", 0.0, 1.0, step=0.25)
    hp.Choice("ordered_num", [1, 2, 4, 8])
    hp.Choice("floats", [0.1, 0.5])
    s = nas.create_strategy("bayes", space=hp, objective="val_accuracy:max", seed=0, n_startup_trials=5)
    props = _drive(s, 25)
    for v in props:
        P.validate(hp, v)
    # conditionals were exercised both ways, and TPE (after the start-up trials) kept them valid
    assert {v["depth"] for v in props} >= {1, 3}
    assert any("b_strength" in v for v in props) and any("b_strength" not in v for v in props)
    assert all((v["kind"] == "b") == ("b_strength" in v) for v in props)
    assert {v["batch"] for v in props} <= {16, 32, 64, 128}  # multiplicative grid mapped to an ordinal index
    assert all(v["stepped"] in (0.0, 0.25, 0.5, 0.75, 1.0) for v in props)


def test_bayes_multi_objective_constructs_and_proposes():
    hp = toy_space()
    s = nas.create_strategy("bayes", space=hp, objective=["val_accuracy:max", "params:min"], seed=1,
                            n_startup_trials=4)
    assert s.study.directions[0].name == "MAXIMIZE" and s.study.directions[1].name == "MINIMIZE"
    for i in range(12):
        p = s.ask()
        P.validate(hp, p.values)
        s.tell(p.trial_id, None if i == 3 else {"val_accuracy": toy_metric(p.values), "params": p.values["depth"]})
    state = json.loads(json.dumps(s.get_state()))
    again = nas.create_strategy("bayes", space=hp, objective=["val_accuracy:max", "params:min"], seed=9)
    again.set_state(state)
    assert again.ask().values == s.ask().values


def test_bayes_gp_without_torch_is_a_plugin_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec  # torch made missing for this test, installed or not
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(PluginError, match="pip install torch"):
        nas.create_strategy("bayes", space=toy_space(), seed=0, sampler="gp")
    with pytest.raises(PluginError, match="sampler"):
        nas.create_strategy("bayes", space=toy_space(), seed=0, sampler="cmaes")


def test_bayes_minimises_and_finds_the_optimum_of_a_small_discrete_problem():
    hp = kt.HyperParameters()
    hp.Int("x", 0, 20)
    hp.Choice("c", ["a", "b", "c", "d"])
    s = nas.create_strategy("bayes", space=hp, objective="loss:min", seed=0)
    props = _drive(s, 40, metric=lambda v: (v["x"] - 13) ** 2 + (v["c"] != "c") * 5, key="loss")
    assert any(v == {"x": 13, "c": "c"} for v in props[:40])


# -- rl -------------------------------------------------------------------------------------------------------
def _rewarded_space():
    hp = kt.HyperParameters()
    for i in range(4):
        hp.Choice(f"op{i}", ["a", "b", "c", "d", "e"])
    return hp


def _reward(v):
    return sum(v[f"op{i}"] == "c" for i in range(4)) / 4


@pytest.mark.parametrize("policy", ["categorical", "lstm"])
def test_rl_learns_to_prefer_the_rewarded_choice(policy):
    hp = _rewarded_space()
    opts = {"policy": policy, "unique": False}
    if policy == "lstm":
        opts["learning_rate"] = 0.05
    s = nas.create_strategy("rl", space=hp, seed=0, **opts)
    props = _drive(s, 120, metric=_reward)
    late = props[-30:]
    frac = np.mean([v[f"op{i}"] == "c" for v in late for i in range(4)])
    assert frac > 0.5, f"{policy}: only {frac:.2f} of late decisions pick the rewarded choice (random: 0.2)"
    probs = s.probabilities({f"op{i}": "c" for i in range(4)})
    assert np.mean([p[2] for p in probs.values()]) > 0.4


@pytest.mark.parametrize("update", ["ppo", "reinforce"])
@pytest.mark.parametrize("policy", ["categorical", "lstm"])
def test_rl_state_round_trips_weights_exactly(policy, update):
    hp = toy_space()
    s = nas.create_strategy("rl", space=hp, seed=3, policy=policy, batch=3, update=update)
    _drive(s, 10)
    pending = s.ask()
    state = json.loads(json.dumps(s.get_state()))
    r = nas.create_strategy("rl", space=hp, seed=99, policy=policy, batch=3, update=update)
    r.set_state(state)
    for a, b in zip(s.weights, r.weights):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    for a, b in zip(s.adam.m + s.adam.v, r.adam.m + r.adam.v):
        assert np.array_equal(a, b)
    assert (s.adam.t, s.baseline, s.buffer) == (r.adam.t, r.baseline, r.buffer)
    assert r.pending == {pending.trial_id: pending.values}
    for x in (s, r):
        x.tell(pending.trial_id, {"val_accuracy": 0.7})
    assert _drive(s, 5) == _drive(r, 5)
    for a, b in zip(s.weights, r.weights):
        assert np.array_equal(a, b)


def test_rl_discretises_numeric_ranges_into_bins():
    hp = kt.HyperParameters()
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Int("units", 1, 1000)
    s = nas.create_strategy("rl", space=hp, seed=0, bins=4)
    assert s.choices["lr"] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    assert len(s.choices["units"]) == 4
    for v in _drive(s, 10, metric=lambda v: v["units"] / 1000):
        assert v["lr"] in s.choices["lr"] and v["units"] in s.choices["units"]


def test_rl_rejects_bad_options():
    with pytest.raises(PluginError, match="policy"):
        nas.create_strategy("rl", space=toy_space(), policy="transformer")
    with pytest.raises(PluginError, match="batch"):
        nas.create_strategy("rl", space=toy_space(), batch=0)


# -- evolution ------------------------------------------------------------------------------------------------
def test_evolution_random_start_then_one_parameter_mutations_and_aging():
    hp = kt.HyperParameters()
    for i in range(6):
        hp.Int(f"x{i}", 0, 9)
    s = nas.create_strategy("evolution", space=hp, seed=0, population=8, sample=3)
    score = lambda v: sum(v.values())  # noqa: E731
    told = []
    for i in range(60):
        p = s.ask()
        if i >= 8:  # a child differs from some population member in exactly one parameter
            members = [m for m, _ in s.population]
            diffs = [sum(p.values[k] != m[k] for k in m) for m in members]
            assert min(diffs) == 1
        s.tell(p.trial_id, {"val_accuracy": score(p.values)})
        told.append(p.values)
        # aging: the population is exactly the last `population` finished trials, oldest first
        assert [m for m, _ in s.population] == told[-8:]
    assert np.mean([score(v) for v in told[-10:]]) > np.mean([score(v) for v in told[:8]]) + 5


def test_evolution_failed_trials_do_not_join_the_population_and_conditionals_hold():
    hp = toy_space()
    s = nas.create_strategy("evolution", space=hp, seed=2, population=5, sample=2)
    for i in range(40):
        p = s.ask()
        P.validate(hp, p.values)
        s.tell(p.trial_id, None if i % 3 == 0 else {"val_accuracy": toy_metric(p.values)})
    assert len(s.population) == 5
    assert all(f is not None for _, f in s.population)
    assert len(s.history) == 40


def test_evolution_rejects_bad_options():
    with pytest.raises(PluginError, match="sample"):
        nas.create_strategy("evolution", space=toy_space(), population=4, sample=5)


# -- gp -------------------------------------------------------------------------------------------------------
GP = "strategies.gp:GaussianProcessSearch"  # registered as "gp" (pyproject.toml)


def test_gp_keeps_conditionals_valid_and_never_repeats():  # conformance: tests/plugins/test_conformance.py
    hp = toy_space()
    s = nas.create_strategy(GP, space=hp, seed=0, n_startup_trials=4)
    props = _drive(s, 20)
    for v in props:
        P.validate(hp, v)
    assert len({P.canonical(v) for v in props}) == len(props)  # never proposes a configuration twice


def test_gp_one_length_scale_per_parameter():
    hp = _rewarded_space()  # 4 categoricals x 5 values: 20 one-hot columns, 4 length scales
    s = nas.create_strategy(GP, space=hp, seed=0)
    _drive(s, 12, metric=_reward)
    assert s.dim == 20 and len(s.theta) == 4 + 2  # + signal and noise variances


def test_gp_finds_the_optimum_of_a_small_discrete_problem():
    hp = kt.HyperParameters()
    hp.Int("x", 0, 20)
    hp.Choice("c", ["a", "b", "c", "d"])
    s = nas.create_strategy(GP, space=hp, objective="loss:min", seed=0)
    props = _drive(s, 30, metric=lambda v: (v["x"] - 13) ** 2 + (v["c"] != "c") * 5, key="loss")
    assert {"x": 13, "c": "c"} in props


def test_gp_several_objectives_failures_and_pending():
    hp = toy_space()
    objs = ["val_accuracy:max", "params:min"]
    s = nas.create_strategy(GP, space=hp, objective=objs, seed=1, n_startup_trials=3)
    for i in range(10):
        p = s.ask()
        s.tell(p.trial_id, None if i % 4 == 1 else {"val_accuracy": toy_metric(p.values), "params": p.values["depth"]})
    batch = [s.ask() for _ in range(3)]  # several pending: kriging-believer points
    assert len({P.canonical(p.values) for p in batch}) == 3
    state = json.loads(json.dumps(s.get_state()))
    again = nas.create_strategy(GP, space=hp, objective=objs, seed=9)
    again.set_state(state)
    assert again.ask().values == s.ask().values


def test_gp_rejects_bad_options():
    with pytest.raises(PluginError, match="n_startup_trials"):
        nas.create_strategy(GP, space=toy_space(), n_startup_trials=0)


# -- the benchmark --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "strategies.py"), "--datasets", "car", "--seeds", "2",
        "--budgets", "10,25", "--ktbo-budget", "5", "--ktbo-seeds", "1", "--out", str(tmp_path), "--cost-trials", "30",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    md = (tmp_path / "strategies.md").read_text()
    for name in ("random", "grid", "bayes", "evolution", "rl", "gp", "optuna_tpe", "keras_tuner_bo"):
        assert f"| {name} |" in md
    assert "Milliseconds per proposal (ask + tell) at 30 trials" in md and "gp " in md.split("Milliseconds")[1]
    assert (tmp_path / "strategies.png").stat().st_size > 1000
    rows = list(csv.reader((tmp_path / "strategies.csv").read_text().splitlines()))
    assert rows[0][:3] == ["strategy", "dataset", "budget"] and len(rows) > 10
    for row in rows[1:]:
        assert float(row[3]) >= 0  # regret is never negative
