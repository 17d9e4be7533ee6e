"""nas.driver.searcher, the driver's side of Ray Tune: the records a trial's events write (TrialRecorder) and
the guard that stops a search after too many failures in a row or a storage it cannot write (FailureGuard).

Ray Tune calls these with its ``Trial`` objects; here a trial is the three attributes they read (id, config,
error file), so each event's effect on the run directory is checked exactly. The same callbacks under a real
Ray run in every search test (tests/driver/test_resume.py, tests/test_cli_search.py)."""

from __future__ import annotations

import json
import types
from pathlib import Path

from nas.driver.searcher import FailureGuard, TrialRecorder
from nas.plugins.objective import Objective
from nas.storage.layout import BEST_MODEL, BEST_WEIGHTS, CHECKPOINT, trial_dir
from nas.storage.records import TrialStatus
from nas.storage.store import ExperimentStore
from nas.trials.worker import TRIAL_KEY

ACC = Objective("val_accuracy", "max")


def _trial(tid: str, error: str = "") -> types.SimpleNamespace:
    return types.SimpleNamespace(trial_id=f"ray{tid}", config={TRIAL_KEY: tid, "units": 16}, error_file=error)


def _epoch(acc: float, epoch: int) -> dict:
    return {"val_accuracy": acc, "epoch": epoch, "node": "n1", "pid": 7, "device": "cpu", "worker_rss_mb": 900.0,
            "train_time_s": float(epoch), "training_iteration": epoch}


def test_a_trials_events_write_its_record_and_tell_the_printer(tmp_path: Path) -> None:
    store = ExperimentStore(tmp_path / "run")
    seen: list[tuple[str, str]] = []
    recorder = TrialRecorder(store, ACC, lambda kind, rec: seen.append((str(kind), rec.trial_id)), max_epochs=3)
    t = _trial("0")
    recorder.on_trial_start(0, [], t)
    assert store.trial("0").status is TrialStatus.RUNNING and store.trial("0").started
    for epoch, acc in [(1, 0.5), (2, 0.8)]:
        recorder.on_trial_result(0, [], t, _epoch(acc, epoch))
    recorder.on_trial_complete(0, [], t)
    rec = store.trial("0")
    assert (rec.status, rec.config, rec.node, rec.device, rec.pid) == (TrialStatus.COMPLETED, {"units": 16}, "n1",
                                                                        "cpu", 7)
    assert [h["epoch"] for h in rec.history] == [1.0, 2.0] and rec.metrics["best_epoch"] == 2
    assert rec.stopped_early  # 2 of 3 epochs: a scheduler stopped it
    assert seen == [("started", "0"), ("epoch", "0"), ("epoch", "0"), ("completed", "0")]
    on_disk = json.loads((store.trials_dir / "0.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["ray_trial_id"] == "ray0"


def test_a_failed_trial_keeps_the_last_line_of_its_traceback(tmp_path: Path) -> None:
    store = ExperimentStore(tmp_path / "run")
    guard = FailureGuard(limit=2)
    recorder = TrialRecorder(store, ACC, lambda kind, rec: None, guard=guard)
    error = tmp_path / "error.txt"
    error.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: loss became nan\n")
    for tid in ("0", "1"):
        recorder.on_trial_start(0, [], _trial(tid))
        recorder.on_trial_error(0, [], _trial(tid, str(error)))
    assert store.trial("1").error == "ValueError: loss became nan"
    assert guard.tripped and guard.stop_all()
    assert guard.reason == "2 trials failed in a row; last error: ValueError: loss became nan"


def test_the_guard_counts_failures_in_a_row_only() -> None:
    guard = FailureGuard(limit=2)
    guard.record(True, "a")
    guard.record(False)
    guard.record(True, "b")
    assert not guard.tripped
    guard.record(True, "c")
    assert guard.tripped and guard.reason.endswith("last error: c")
    assert not FailureGuard(limit=0).tripped  # 0: never stops


def test_storage_that_cannot_be_written_stops_the_search_not_ray(tmp_path: Path) -> None:
    """A record that cannot be written (full or read-only storage; here its path is taken by a directory, which
    fails as root too): the guard says which file and stops everything, instead of raising into Tune's loop."""
    store = ExperimentStore(tmp_path / "run")
    guard = FailureGuard(limit=5)
    recorder = TrialRecorder(store, ACC, lambda kind, rec: None, guard=guard)
    recorder.on_trial_start(0, [], _trial("0"))
    (store.trials_dir / "0.json").unlink()
    (store.trials_dir / "0.json").mkdir()
    recorder.on_trial_result(0, [], _trial("0"), _epoch(0.5, 1))
    assert guard.storage.startswith("cannot write") and "0.json" in guard.storage and guard.stop_all()
    assert not guard.reason  # not counted as a failed trial


def test_a_completed_trial_drops_its_checkpoint_unless_kept(tmp_path: Path) -> None:
    for keep in (False, True):
        store = ExperimentStore(tmp_path / f"run-{keep}")
        recorder = TrialRecorder(store, ACC, lambda kind, rec: None, keep_checkpoints=keep)
        d = trial_dir(store.root, "0")
        d.mkdir(parents=True)
        for name in (CHECKPOINT, BEST_MODEL, BEST_WEIGHTS):
            (d / name).write_bytes(b"x")
        recorder.on_trial_start(0, [], _trial("0"))
        recorder.on_trial_result(0, [], _trial("0"), _epoch(0.5, 1))
        recorder.on_trial_complete(0, [], _trial("0"))
        assert sorted(p.name for p in d.iterdir()) == sorted(
            [CHECKPOINT, BEST_MODEL, BEST_WEIGHTS] if keep else [BEST_MODEL])


# -- --deterministic: the same search whatever order trials end in ---------------------------------------------
def _drive(strategy_name: str, k: int, order_seed: int, deterministic: bool, trials: int = 14,
           stop_after: int | None = None, state: dict | None = None) -> tuple[dict, list, dict]:
    """A stand-in for Ray Tune's loop around ``StrategySearcher`` (the searcher itself is the real one): asks for
    trials while it proposes, then ends one of the running trials, picked by ``order_seed`` (the machine's
    timing), with a score that is a function of its configuration. Returns the proposals by trial id, the
    order the strategy was told in, and the searcher's state (after ``stop_after`` endings: a killed driver)."""
    import random

    import keras_tuner as kt
    from ray.tune.search import Searcher

    from nas.driver.engine import deterministic_lag
    from nas.driver.searcher import StrategySearcher
    from nas.options import Budget
    from nas.plugins.registry import create_strategy

    hp = kt.HyperParameters()
    hp.Int("units", 8, 256, step=8)
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Choice("act", ["relu", "tanh", "elu"])
    strategy = create_strategy(strategy_name, space=hp, objective=[Objective("val_accuracy", "max")], seed=3)
    budget = Budget(trials)
    searcher = StrategySearcher(strategy, budget=budget, deterministic=deterministic_lag(k) if deterministic else None)
    searcher.set_max_concurrency(k)
    if state is not None:
        searcher.set_state(state)
    rng, running, proposals, ended, n = random.Random(order_seed), [], {}, 0, 0
    while True:
        while True:
            config = searcher.suggest(f"tune{order_seed}-{n}")
            if config is None or config == Searcher.FINISHED:
                break
            running.append((f"tune{order_seed}-{n}", config))
            proposals[config[TRIAL_KEY]] = {k2: v for k2, v in config.items() if k2 != TRIAL_KEY}
            n += 1
        if config == Searcher.FINISHED and not running:
            break
        assert running, "the searcher waits for a trial, but none is running: a stall"
        tune_id, config = running.pop(rng.randrange(len(running)))
        score = 1 - abs(config["units"] - 100) / 256 - abs(config["lr"] - 0.01) + 0.1 * (config["act"] == "elu")
        result = {"val_accuracy": score, "epoch": 1}
        searcher.on_trial_result(tune_id, result)
        searcher.on_trial_complete(tune_id, result)
        ended += 1
        if stop_after is not None and ended == stop_after:
            return proposals, [o.trial_id for o in strategy.history], json.loads(json.dumps(searcher.get_state()))
    return proposals, [o.trial_id for o in strategy.history], searcher.get_state()


def test_deterministic_proposals_do_not_depend_on_the_order_trials_end_in() -> None:
    """With --deterministic, three runs whose trials end in three different orders make the same 24 proposals
    and tell the strategy in trial order, at 2 and 3 trials at once, for strategies that learn from what they
    are told; without it the same runs differ (what the mode is for)."""
    for strategy in ("evolution", "gp"):
        for k in (2, 3):
            runs = [_drive(strategy, k, seed, deterministic=True, trials=24) for seed in (0, 1, 2)]
            assert runs[0][0] == runs[1][0] == runs[2][0], (strategy, k)
            assert all(told == [str(i) for i in range(24)] for _, told, _ in runs), (strategy, k)
            assert len({str(sorted(v.items())) for v in runs[0][0].values()}) == 24
    free = [_drive("gp", 3, seed, deterministic=False, trials=24)[0] for seed in (0, 1, 2)]
    assert not free[0] == free[1] == free[2]


def test_a_deterministic_search_stopped_midway_continues_the_same_sequence() -> None:
    """A driver killed after 6 trials ended (some finished but not told yet: their turn had not come), resumed
    from its searcher state with the trials it left running lost, makes the proposals of an uninterrupted run."""
    whole, _, _ = _drive("evolution", 3, 5, deterministic=True)
    before, _, state = _drive("evolution", 3, 7, deterministic=True, stop_after=6)
    assert state["untold"], "some finished trials wait for their turn"
    lost = [nas_id for nas_id in state["ray_to_nas"].values()]
    state["replay"] = [[t, state["strategy"]["pending"][t], []] for t in lost] + state["replay"]
    state["ray_to_nas"], state["history"] = {}, {}
    after, told, _ = _drive("evolution", 3, 9, deterministic=True, state=state)
    assert {**before, **after} == whole and told == [str(i) for i in range(14)]
