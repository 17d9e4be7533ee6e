"""Reused workers: memory stays bounded (workers past a resident-memory limit are replaced), and a trial Tune
drops when a worker cannot be reused runs again instead of being lost."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from nas.driver.searcher import StrategySearcher, WorkerRecycler
from nas.errors import NasError
from nas.options import SearchOptions
from nas.runtime.cluster import trial_resources
from nas.trials.worker import GENERATION_KEY


def test_recycler_starts_one_new_generation_per_worker_over_the_limit() -> None:
    said: list[str] = []
    r = WorkerRecycler(1000, said.append)
    r.observe({GENERATION_KEY: 0}, 11, 900.0)
    assert r.generation == 0 and not said
    r.observe({GENERATION_KEY: 0}, 11, 1001.0)
    assert r.generation == 1 and "worker 11 reached 1,001 MB" in said[-1]
    # the other old worker passing the limit too does not skip a generation: it is already on its way out
    r.observe({GENERATION_KEY: 0}, 12, 1200.0)
    assert r.generation == 1
    r.observe({GENERATION_KEY: 1}, 13, 1100.0)
    assert r.generation == 2 and [e["pid"] for e in r.recycled] == [11, 13]


def test_recycler_auto_limit_and_off() -> None:
    said: list[str] = []
    auto = WorkerRecycler("auto", said.append)
    auto.observe({}, 1, 800.0)  # the first report fixes the limit at 1.5x a fresh worker's
    assert auto.limit_mb == 1200 and auto.generation == 0 and not said  # a search that never recycles is quiet
    auto.observe({}, 1, 1250.0)
    assert auto.generation == 1 and "limit 1,200 MB; auto: 1.5x a fresh worker's 800 MB" in said[0]
    off = WorkerRecycler("off")
    off.observe({}, 1, 1e9)
    assert off.generation == 0 and off.limit_mb is None


def test_each_generation_requests_different_resources() -> None:
    """Tune reuses a cached worker only for a trial requesting exactly its resources."""
    from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

    gen = [resource_dict_to_pg_factory(trial_resources(1, 1.0, 0.0, "none", generation=g)) for g in range(3)]
    assert len(set(gen)) == 3
    assert trial_resources(1, 1.0, 0.0, "none") == {"cpu": 1.0, "gpu": 0.0, "memory": 0}
    hvd = [trial_resources(2, 1.0, 0.0, "horovod", generation=g) for g in range(2)]
    assert hvd[0] != hvd[1] and hvd[0].bundles[1:] == hvd[1].bundles[1:]


@pytest.mark.parametrize("bad", ["-5", "lots", "0"])
def test_bad_limit_is_one_clear_line(bad: str) -> None:
    with pytest.raises(NasError, match=f"--max-worker-rss-mb '{bad}' is not valid"):
        SearchOptions(max_worker_rss_mb=bad).check()


@pytest.mark.ray
def test_workers_over_the_limit_are_replaced(cli, kept_ray, capsys, monkeypatch) -> None:
    """A limit every worker passes at once: each trial runs in a fresh worker, and all complete. The CLI's entry
    point in this process, on a kept local Ray (``kept_ray``): what is replaced is the Ray workers, not the
    driver."""
    code, out, err = cli.inprocess("search", "--trials", "3", "--epochs", "1", "--max-concurrent", "1",
                                   "--max-worker-rss-mb", "1", "--name", "recycled", capsys=capsys,
                                   monkeypatch=monkeypatch)
    assert code == 0, out + err
    assert "next trials start in fresh workers" in out + err
    trials = cli.status("recycled")["trials"]
    assert [t["status"] for t in trials] == ["completed"] * 3
    records = [json.loads((cli.storage / "recycled" / "trials" / f"{t['trial_id']}.json").read_text())
               for t in trials]
    assert len({r["pid"] for r in records}) == 3, "a worker over the limit was reused"


@pytest.mark.ray
def test_workers_under_the_limit_are_reused(small_run) -> None:
    """The default (auto) limit leaves a short search's workers reused: TensorFlow is imported once per worker."""
    cli, name, _ = small_run
    records = [json.loads(p.read_text()) for p in (cli.storage / name / "trials").glob("*.json")]
    assert len(records) == 3 and len({r["pid"] for r in records}) <= 2  # 3 trials, 2 at a time


def _searcher(budget: int) -> StrategySearcher:
    import nas
    from nas.options import Budget
    from nas.plugins.data import load_data
    from nas.plugins.registry import create_space
    from nas.plugins.task import make_task

    hp = create_space("mlp", task=make_task(load_data("digits"), "classification")).hyperparameters()
    return StrategySearcher(nas.create_strategy("random", space=hp, objective="val_accuracy:max", seed=0),
                            budget=Budget(budget))


def test_searcher_limits_concurrency_counts_the_budget_and_requeues() -> None:
    from ray.tune.search import Searcher

    s = _searcher(budget=3)
    assert s.set_max_concurrency(2) is True  # so Tune's ConcurrencyLimiter leaves the counting to us
    a, b = s.suggest("ray-a"), s.suggest("ray-b")
    assert s.suggest("ray-c") is None  # two running
    # Tune dropped ray-a without a word: it runs again first, same id and configuration, in a free slot
    assert s.requeue("ray-a") == a["__nas_trial__"]
    again = s.suggest("ray-c")
    assert again == a and s.requeue("ray-unknown") is None
    s.on_trial_complete("ray-b", {"val_accuracy": 0.5})
    c = s.suggest("ray-d")
    assert c["__nas_trial__"] not in (a["__nas_trial__"], b["__nas_trial__"])
    s.on_trial_complete("ray-c", {"val_accuracy": 0.4})
    assert s.suggest("ray-e") is None  # budget spent, but ray-d may still need a re-run
    s.on_trial_complete("ray-d", {"val_accuracy": 0.3})
    assert s.suggest("ray-f") == Searcher.FINISHED
    assert len(s.strategy.history) == 3


def test_a_trial_ray_keeps_dropping_ends_failed_not_in_a_loop() -> None:
    from types import SimpleNamespace

    from ray.tune.search import Searcher

    from nas.driver.searcher import LostTrials

    s = _searcher(budget=1)
    s.set_max_concurrency(1)
    lost, said = LostTrials(s, announce=None), []
    lost.announce = said.append
    config, runs = s.suggest("r0"), 0
    while config not in (None, Searcher.FINISHED):
        assert config["__nas_trial__"] == "0"  # always the same trial, run again
        runs += 1
        lost.on_step_end(runs, [SimpleNamespace(trial_id=f"r{runs - 1}", status="ERROR", error_file=None,
                                                error_msg="Trainable runner reuse requires reset_config()")])
        config = s.suggest(f"r{runs}")
    assert config == Searcher.FINISHED and runs == LostTrials.MAX_RUNS
    assert len(said) == 1 and "reset_config" in said[0]  # said once
    assert [h.metrics for h in s.strategy.history] == [None]  # the strategy was told it failed


def test_the_workers_warm_up_hook_names_a_function_that_imports_the_framework() -> None:
    """Ray imports ``WARM_UP_HOOK`` in every worker of a search as it starts: a wrong name would fail each one."""
    from nas.runtime.cluster import WARM_UP_HOOK

    module, _, name = WARM_UP_HOOK.rpartition(".")
    getattr(importlib.import_module(module), name)()
    assert "keras" in sys.modules
