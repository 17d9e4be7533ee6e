"""nas.storage.results: a trial's result is its best epoch; trials rank by the objective, ties by id."""

from __future__ import annotations

import math

from nas.plugins.objective import Objective
from nas.storage.records import TrialRecord, TrialStatus
from nas.storage.results import add_epoch, best_epoch, epoch_metrics, pareto_front, rank, sort_by_id

ACC = Objective("val_accuracy", "max")
LOSS = Objective("val_loss", "min")


def test_epoch_metrics_keep_finite_numbers_and_drop_bookkeeping() -> None:
    report = {"val_accuracy": 0.5, "loss": float("inf"), "node": "n1", "pid": 12, "done": False, "config": {},
              "flag": True, "epoch": 2, "gpu_ids": "0"}
    assert epoch_metrics(report) == {"val_accuracy": 0.5, "loss": None, "epoch": 2.0}


def test_a_resumed_trial_re_reporting_an_epoch_replaces_what_came_after() -> None:
    history: list[dict] = []
    for e, acc in [(1, 0.1), (2, 0.2), (3, 0.3)]:
        add_epoch(history, {"epoch": e, "val_accuracy": acc})
    add_epoch(history, {"epoch": 2, "val_accuracy": 0.25})  # resumed from the epoch-1 checkpoint
    assert [(h["epoch"], h["val_accuracy"]) for h in history] == [(1, 0.1), (2, 0.25)]


def test_the_best_epoch_is_the_result_and_training_time_is_the_last() -> None:
    history = [{"epoch": 1, "val_accuracy": 0.6, "val_loss": 0.9, "train_time_s": 1.0},
               {"epoch": 2, "val_accuracy": 0.8, "val_loss": 0.5, "train_time_s": 2.0},
               {"epoch": 3, "val_accuracy": 0.7, "val_loss": 0.4, "train_time_s": 3.0}]
    assert best_epoch(history, ACC) == {"val_accuracy": 0.8, "val_loss": 0.5, "train_time_s": 3.0, "best_epoch": 2,
                                        "epochs": 3}
    assert best_epoch(history, LOSS)["best_epoch"] == 3
    assert best_epoch([{"epoch": 1, "val_accuracy": None}], ACC)["best_epoch"] == 1  # nothing usable: the last
    assert best_epoch([], ACC) is None


def test_rank_and_pareto_front_use_completed_trials_only_ties_by_id() -> None:
    def t(i: str, acc: float | None, params: float, status=TrialStatus.COMPLETED) -> TrialRecord:
        return TrialRecord(i, status, metrics={"val_accuracy": acc, "params": params})

    trials = [t("10", 0.9, 50), t("2", 0.9, 100), t("3", None, 1), t("4", 0.99, 1, TrialStatus.FAILED),
              t("5", 0.5, 10), t("x", 0.1, 1000)]
    assert [r.trial_id for r in rank(trials, ACC)] == ["2", "10", "5", "x"]
    assert [r.trial_id for r in sort_by_id(trials)] == ["2", "3", "4", "5", "10", "x"]
    front = pareto_front(trials, [ACC, Objective("params", "min")])
    assert [r.trial_id for r in front] == ["5", "10"]
    assert math.isclose(ACC.value(front[1].metrics), 0.9)
