"""Searches that start from what is known (nas.driver.warmstart): ``--warm-start RUN`` and ``--enqueue FILE``,
through the CLI's entry point in this process, on one local Ray for the module (``kept_ray``). What every
strategy does with prior observations and a queue is the conformance suite's (nas.testing.conformance)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import copy_run

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("kept_ray")]


def _history(run: Path) -> list[dict]:
    return json.loads((run / "strategy.json").read_text())["history"]


def _configs(run: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text())["config"] for p in (run / "trials").glob("*.json")}


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_search_warm_started_from_an_earlier_run_and_resumed(small_run, cli, capsys, monkeypatch) -> None:
    """The earlier run's completed trials are told to the strategy before its first proposal, as priors: not
    trials of the new run, not trained again, not counted in --trials, not proposed again; a trial whose
    configuration is no point of the new space is skipped and said; a resume keeps the priors."""
    shared, name, _ = small_run
    copy_run(shared, name, cli, "earlier")
    trials = cli.storage / "earlier" / "trials"
    done = {k: v for k, v in _configs(cli.storage / "earlier").items()}
    first = json.loads((trials / "0.json").read_text())
    # two more completed records, neither a point of mlp's space: a value out of its range, a parameter it lacks
    for tid, change in (("90", {"num_layers": 99}), ("91", {"kernel_size": 3})):
        rec = {**first, "trial_id": tid, "config": {**first["config"], **change}}
        (trials / f"{tid}.json").write_text(json.dumps(rec))
    code, out, err = cli.inprocess("search", "--trials", "2", "--epochs", "1", "--max-concurrent", "1", "--name",
                                   "warm", "--warm-start", "earlier", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, out + err
    told = len(done)
    line = next(ln for ln in (out + err).splitlines() if ln.startswith("warm start:"))
    assert line.startswith(f"warm start: {told} completed trials of earlier told to the strategy, 2 skipped as no "
                           f"point of this space (1: "), line
    run = cli.storage / "warm"
    priors = [h for h in _history(run) if h["trial_id"].startswith("prior-")]
    assert [h["trial_id"] for h in priors] == [f"prior-{i}" for i in range(told)]
    assert sorted(json.dumps(h["values"], sort_keys=True) for h in priors) == \
        sorted(json.dumps(c, sort_keys=True) for c in done.values())
    assert all(h["metrics"]["val_accuracy"] > 0 for h in priors)  # told with their metrics
    own = _configs(run)
    assert sorted(own) == ["0", "1"]  # the new run's own trials only, within its budget
    known = {json.dumps(c, sort_keys=True) for c in done.values()}
    assert not known & {json.dumps(c, sort_keys=True) for c in own.values()}  # no prior is trained again
    assert json.loads((run / "spec.json").read_text())["options"]["warm_start"] == ["earlier"]
    # a resume reads the priors from the strategy's state, not from the earlier run (which may be gone by then)
    (trials.parent / "spec.json").unlink()
    code, out, err = cli.inprocess("resume", "warm", "--trials", "3", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, out + err
    assert [h["trial_id"] for h in _history(run) if h["trial_id"].startswith("prior-")] == \
        [h["trial_id"] for h in priors]
    third = _configs(run)["2"]
    assert json.dumps(third, sort_keys=True) not in known


def test_warm_start_refusals_are_one_line_before_ray(small_run, cli, capsys, monkeypatch) -> None:
    """A run that is not there, or one searched for other objectives: one line naming it, exit 2, no Ray."""
    import nas.driver.engine as engine

    monkeypatch.setattr(engine, "_early_ray", lambda *a, **k: pytest.fail("Ray was started"))
    shared, name, _ = small_run
    copy_run(shared, name, cli, "earlier")
    code, _, err = cli.inprocess("search", "--warm-start", "nothere", "--name", "w1", capsys=capsys,
                                 monkeypatch=monkeypatch)
    assert code == 2 and _one_line(err).startswith("nas: error: --warm-start 'nothere': no run named 'nothere' in ")
    assert "runs there: earlier" in err
    path = str(cli.storage / "earlier")  # a run directory's path serves as well as a name
    code, _, err = cli.inprocess("search", "--warm-start", path, "--objective", "val_loss:min", "--name", "w2",
                                 capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2
    assert _one_line(err) == ("nas: error: --warm-start 'earlier' searched for val_accuracy:max; this search's "
                              "objective is val_loss:min: warm-start from a run with the same objectives (or give "
                              "--objective val_accuracy:max)")
    code, _, err = cli.inprocess("search", "--warm-start", str(cli.cwd), "--name", "w3", capsys=capsys,
                                 monkeypatch=monkeypatch)
    assert code == 2 and _one_line(err) == (f"nas: error: --warm-start {str(cli.cwd)!r} is not a run: "
                                            f"{cli.cwd / 'spec.json'} does not exist; give a run's name in the "
                                            f"storage or a run directory's path")
    assert not any((cli.storage / n).exists() for n in ("w1", "w2", "w3"))


def test_enqueued_configurations_are_the_first_trials(cli, capsys, monkeypatch) -> None:
    """--enqueue: its configurations are trials 0, 1, ... in order (a left-out hyperparameter at its default),
    then the strategy's own; a bad configuration or too many is one line and leaves no run."""
    queue = [{"num_layers": 1, "units_0": 256, "learning_rate": 0.01}, {"num_layers": 3, "activation": "tanh"}]
    (cli.cwd / "q.json").write_text(json.dumps(queue))
    code, out, err = cli.inprocess("search", "--strategy", "random", "--trials", "3", "--epochs", "1",
                                   "--max-concurrent", "1", "--name", "q", "--enqueue", "q.json", capsys=capsys,
                                   monkeypatch=monkeypatch)
    assert code == 0, out + err
    configs = _configs(cli.storage / "q")
    assert {k: v for k, v in configs["0"].items() if k in queue[0]} == queue[0]
    assert configs["0"]["activation"] == "relu" and configs["0"]["batch_size"] == 32  # mlp's defaults
    assert configs["1"]["num_layers"] == 3 and configs["1"]["activation"] == "tanh"
    assert configs["1"]["units_2"] == 128  # a conditional hyperparameter it activates, at its default
    assert configs["2"] not in (configs["0"], configs["1"])
    told = [h["trial_id"] for h in _history(cli.storage / "q")]
    assert sorted(told) == ["0", "1", "2"]  # the enqueued trials were told like any
    (cli.cwd / "bad.json").write_text(json.dumps([{"units": 64}]))
    code, _, err = cli.inprocess("search", "--trials", "2", "--name", "bad", "--enqueue", "bad.json", capsys=capsys,
                                 monkeypatch=monkeypatch)
    assert code == 2
    assert _one_line(err).startswith("nas: error: --enqueue configuration 0 ({\"units\": 64}) is not a point of the "
                                     "space: hyperparameter 'units' is not in the space (it has activation, ")
    assert not (cli.storage / "bad" / "spec.json").exists()
    code, _, err = cli.inprocess("search", "--trials", "1", "--name", "many", "--enqueue", "q.json", capsys=capsys,
                                 monkeypatch=monkeypatch)
    assert code == 2 and _one_line(err) == ("nas: error: --enqueue holds 2 configurations, more than --trials 1; "
                                            "raise --trials or enqueue fewer")
