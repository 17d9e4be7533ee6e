"""The typed records of a run directory (nas.storage.records): what they store is what earlier versions stored,
and a file that is not a record is reported by name."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from nas.errors import RunError
from nas.plugins.objective import Objective
from nas.storage.records import STATUSES, DataSpec, RunSpec, TrialRecord, TrialStatus, ended

DATA = Path(__file__).resolve().parents[1] / "data" / "runs_af59df6"


def test_a_status_is_stored_and_compared_as_the_string_earlier_versions_wrote() -> None:
    assert STATUSES == ("completed", "failed", "running", "pending")  # the order `nas status` counts them in
    record = {"trial_id": "0", "status": TrialStatus.COMPLETED}
    text = json.dumps(record)
    assert text == '{"trial_id": "0", "status": "completed"}'
    read = json.loads(text)  # a record read back (or written by an earlier version) holds a plain string
    assert read["status"] == TrialStatus.COMPLETED and TrialStatus(read["status"]) is TrialStatus.COMPLETED
    assert f"{TrialStatus.FAILED}" == str(TrialStatus.FAILED) == "failed"
    assert {s: 0 for s in STATUSES}[TrialStatus.RUNNING] == 0


def test_ended_means_the_trial_never_runs_again() -> None:
    assert [ended({"status": s}) for s in STATUSES] == [True, True, False, False]
    assert [s.ended for s in TrialStatus] == [True, True, False, False]
    assert [TrialRecord("0", s).ended for s in TrialStatus] == [True, True, False, False]
    assert not ended({})


@pytest.mark.parametrize("path", sorted(DATA.glob("*/spec.json")), ids=lambda p: p.parent.name)
def test_an_earlier_versions_spec_reads_and_writes_back_byte_for_byte(path: Path) -> None:
    written = json.loads(path.read_text())
    spec = RunSpec.from_json(written, source=path)
    assert spec.to_json() == written and list(spec.to_json()) == list(written)
    assert spec.trials == written["trials"] == written["options"]["trials"]
    assert "trials" not in spec.options  # held once; written twice, as every version wrote it
    spec.trials = 7
    assert spec.to_json()["trials"] == spec.to_json()["options"]["trials"] == 7
    assert spec.objective == Objective("val_accuracy", "max") and spec.task.input_shape == (8, 8)
    assert spec.data == DataSpec("digits", None, None, {"source": "digits", "train": 1438, "val": 359,
                                                        "input_shape": [8, 8], "classes": 10})


def test_the_first_versions_spec_reads_with_what_its_missing_keys_meant() -> None:
    """The first spec (2026-11-22) had no backend, options, sessions or resources: not resumable, TensorFlow."""
    first = {"name": "old", "space": "mlp", "space_version": "1", "strategy": "random", "strategy_options": {},
             "space_options": {}, "data": {"spec": "digits", "target": None, "window": None},
             "task": {"kind": "classification", "input_shape": [64], "num_classes": 10},
             "objectives": [{"metric": "val_accuracy", "mode": "max"}], "trials": 3, "epochs": 2, "seed": None,
             "created": 1.0, "versions": {}, "command": "nas search", "some_future_key": [1, 2]}
    spec = RunSpec.from_json(first)
    assert (spec.backend, spec.options, spec.sessions, spec.resumed) == ("tensorflow", None, [], [])
    assert spec.extra == {"some_future_key": [1, 2]} and spec.to_json()["some_future_key"] == [1, 2]
    with pytest.raises(RunError, match="has no 'options' entry; this run cannot be resumed"):
        spec.search_options()


@pytest.mark.parametrize("bad, says", [
    ([1], "is not a run spec (a JSON object expected, found list)"),
    ({"name": "x"}, "has no 'space', 'strategy', 'task', 'data', 'objectives', 'trials', 'epochs' entries"),
    ({"options": [1]}, "'options' is [1]; a JSON object was expected"),
    ({"objectives": "val_accuracy"}, "'objectives' is 'val_accuracy'; a JSON list was expected"),
    ({"trials": "many"}, "is not a run spec nas can read (ValueError"),
    ({"task": {"kind": "poetry", "input_shape": [1]}}, "task 'poetry' is not valid"),
])
def test_a_spec_that_is_not_one_is_named_with_its_bad_entry(bad, says: str) -> None:
    good = json.loads((DATA / "finished" / "spec.json").read_text())
    with pytest.raises(RunError, match="^runs/x/spec.json") as e:
        RunSpec.from_json(bad if isinstance(bad, list) or "name" in bad else {**good, **bad}, "runs/x/spec.json")
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("path", sorted(DATA.glob("*/trials/*.json")), ids=lambda p: f"{p.parents[1].name}-{p.stem}")
def test_an_earlier_versions_trial_record_reads_and_writes_back_exactly(path: Path) -> None:
    written = json.loads(path.read_text())
    record = TrialRecord.from_json(written, source=path)
    assert record.to_json() == written and list(record.to_json()) == list(written)
    assert record.trial_id == path.stem and record.history and record.metrics["best_epoch"] >= 1
    assert record.status in (TrialStatus.COMPLETED, TrialStatus.RUNNING)


def test_a_new_trial_record_writes_what_the_driver_always_wrote() -> None:
    record = TrialRecord("3", config={"units": 32}, ray_trial_id="abc")
    assert record.to_json() == {"trial_id": "3", "status": "pending", "config": {"units": 32}, "metrics": {},
                                "error": None, "ray_trial_id": "abc", "node": None, "started": None,
                                "finished": None, "history": []}
    record = dataclasses.replace(record, status=TrialStatus.COMPLETED, workers=2, extra={"note": "kept"})
    assert json.loads(json.dumps(record.to_json())) == {**record.to_json(), "status": "completed"}
    assert TrialRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize("bad, says", [
    ({"trial_id": "0", "status": "banana", "config": 7},
     "'status' is 'banana'; one of completed, failed, running, pending was expected"),
    ({"trial_id": "0", "status": "completed", "config": 7}, "'config' is 7; a JSON object of hyperparameter values"),
    ({"trial_id": "0", "status": "completed", "history": [1]}, "'history' is [1]; a list of per-epoch objects"),
    ({"status": "completed"}, "'trial_id' is None; a trial id (a string) was expected"),
    ("text", "is not a trial record (a JSON object expected, found str)"),
])
def test_a_trial_record_that_is_not_one_is_named_with_its_bad_entry(bad, says: str) -> None:
    with pytest.raises(RunError, match="^runs/x/trials/0.json") as e:
        TrialRecord.from_json(bad, "runs/x/trials/0.json")
    assert says in str(e.value)
