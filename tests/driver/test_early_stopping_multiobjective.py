"""Early stopping (Ray schedulers), multi-objective search, constraints, objective checks."""

from __future__ import annotations

import json

import pytest


@pytest.mark.ray
def test_asha_stops_some_trials_early(cli, monkeypatch) -> None:
    """Also run where Ray fails to reuse the worker of every stopped trial (it waits 0 s for the stopped
    trial's thread): Tune then errors the next trial silently (ray-project/ray#29268); none may be lost."""
    monkeypatch.setenv("TUNE_FUNCTION_THREAD_TIMEOUT_S", "0")
    # 4 trials x 3 epochs, 2 at a time: ASHA's rungs are epochs 1 and 3, and the third trial (seed 2: plain SGD
    # at a small learning rate) reaches epoch 1 far below the first two, which have passed it
    trials, epochs = 4, 3
    proc = cli("search", "--trials", str(trials), "--epochs", str(epochs), "--scheduler", "asha", "--min-epochs", "1",
               "--max-concurrent", "2", "--seed", "2", "--name", "asha")
    assert "reset_config" in proc.stdout and "running it again" in proc.stdout
    status = cli.status("asha")
    assert len(status["trials"]) == trials
    assert len({json.dumps(t["config"], sort_keys=True) for t in status["trials"]}) == trials
    ran = [t["metrics"]["epochs"] for t in status["trials"]]
    assert all(t["status"] == "completed" for t in status["trials"])  # a stopped trial is a completed one
    assert min(ran) < epochs and max(ran) == epochs, ran
    assert "stopped early" in cli("status", "asha").stdout
    # strategies learn from stopped trials: each was told its best epoch's metrics
    state = json.loads((cli.storage / "asha" / "strategy.json").read_text())
    assert len(state["history"]) == trials and all(h["metrics"]["val_accuracy"] > 0 for h in state["history"])


@pytest.mark.ray
def test_multi_objective_front_and_constraints(cli, kept_ray, capsys, monkeypatch) -> None:
    # the CLI's entry point in this process, on the module's one Ray (the CLI in a subprocess: the test above)
    code, out, err = cli.inprocess("search", "--strategy", "bayes", "--trials", "5", "--epochs", "1", "--objective",
                                   "val_accuracy:max", "--objective", "latency_ms:min", "--max-params", "120000",
                                   "--max-concurrent", "1", "--seed", "5", "--name", "mo", capsys=capsys,
                                   monkeypatch=monkeypatch)
    assert code == 0, out + err
    status = cli.status("mo")
    trials = status["trials"]
    feasible = [t for t in trials if t["status"] == "completed"]
    infeasible = [t for t in trials if t["status"] == "failed"]
    assert feasible and infeasible, [t["status"] for t in trials]
    # bayes end to end (evolution and rl: tests/driver/test_plugins_e2e.py): its proposals, all different, trained
    # and learned (random guessing on 10 classes gives 0.1)
    assert status["strategy"] == "bayes" and len(trials) == 5
    assert len({json.dumps(t["config"], sort_keys=True) for t in trials}) == 5
    assert max(t["metrics"]["val_accuracy"] for t in feasible) > 0.2
    for t in feasible:
        assert t["metrics"]["params"] <= 120000 and t["metrics"]["latency_ms"] > 0
        assert t["metrics"]["latency_ms_b256"] > 0
    for t in infeasible:  # rejected before training: no epoch ran
        assert "infeasible" in t["error"] and "--max-params 120,000" in t["error"]
    # the front equals a brute-force non-dominated set over the trial table
    pts = {t["trial_id"]: (t["metrics"]["val_accuracy"], -t["metrics"]["latency_ms"]) for t in feasible}
    brute = {i for i, p in pts.items()
             if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for j, q in pts.items() if j != i)}
    assert set(status["pareto_front"]) == brute
    assert status["objectives"] == [{"metric": "val_accuracy", "mode": "max"}, {"metric": "latency_ms", "mode": "min"}]
    text = cli("status", "mo").stdout
    assert "Pareto front" in text
    front_rows = [ln.split() for ln in text.splitlines() if ln.strip()[:1].isdigit()]
    assert {row[1] for row in front_rows} == brute  # the table lists exactly the front's trials


def test_unknown_objective_metric_fails_before_any_trial(cli, capsys, monkeypatch) -> None:
    code, out, err = cli.inprocess("search", "--objective", "val_acc", "--name", "x", capsys=capsys,
                                   monkeypatch=monkeypatch)
    assert code != 0 and "'val_acc' is not a metric" in err and "val_accuracy" in err
    assert not (cli.storage / "x").exists()


@pytest.mark.parametrize("args, needle", [
    (["--scheduler", "fast"], "invalid choice: 'fast'"),
    (["--epochs", "3", "--min-epochs", "4"], "--min-epochs 4 is not valid"),
    (["--max-latency-ms", "0"], "--max-latency-ms 0.0 is not valid"),
])
def test_scheduler_and_constraint_flags_are_checked(cli, capsys, monkeypatch, args, needle) -> None:
    try:
        code, out, err = cli.inprocess("search", *args, capsys=capsys, monkeypatch=monkeypatch)
    except SystemExit as e:  # argparse's own errors
        code, err = e.code, capsys.readouterr().err
    assert code != 0 and needle in err, err


@pytest.mark.parametrize("name", sorted(__import__("nas.plugins.registry",
                                                    fromlist=["available"]).available("nas.strategies")))
def test_every_strategy_takes_several_objectives(name: str) -> None:
    """bayes: a multi-direction Optuna study; evolution: Pareto tournament; rl: mean of per-objective quantile
    rewards; random and grid ignore the values. All must propose valid points and resume exactly."""
    import nas
    from nas.plugins import params as P
    from nas.testing.conformance import toy_metric, toy_space

    objectives = ["val_accuracy:max", "latency_ms:min"]
    hp = toy_space()
    s = nas.create_strategy(name, space=hp, objective=objectives, seed=1)
    assert [str(o) for o in s.objectives] == objectives
    for i in range(30):
        p = s.ask()
        if p is None:
            break
        P.validate(hp, p.values)
        s.tell(p.trial_id, None if i % 7 == 6 else
               {"val_accuracy": toy_metric(p.values), "latency_ms": float(p.values["depth"])})
    s2 = nas.create_strategy(name, space=hp, objective=objectives, seed=99)
    s2.set_state(json.loads(json.dumps(s.get_state())))
    for _ in range(3):
        a, b = s.ask(), s2.ask()
        assert (a is None and b is None) or a.values == b.values
        if a is None:
            break
        s.tell(a.trial_id, {"val_accuracy": 0.5, "latency_ms": 1.0})
        s2.tell(b.trial_id, {"val_accuracy": 0.5, "latency_ms": 1.0})
