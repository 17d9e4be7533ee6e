"""ExperimentStore (nas.storage.store): a run directory's spec and trial records on disk, and what a reader does
with a file that is not one: report it by name and leave it as it is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nas.errors import RunError
from nas.plugins.objective import Objective
from nas.storage.records import TrialRecord, TrialStatus
from nas.storage.store import ExperimentStore, choose_trial

DATA = Path(__file__).resolve().parents[1] / "data" / "runs_af59df6"


@pytest.fixture
def store(tmp_path: Path) -> ExperimentStore:
    shutil.copytree(DATA / "finished", tmp_path / "runs" / "finished")
    return ExperimentStore.open("finished", tmp_path / "runs")


def test_records_round_trip_through_the_files(store: ExperimentStore) -> None:
    before = store.trial("0")
    rec = TrialRecord("2", TrialStatus.RUNNING, config={"units_0": 8}, history=[{"epoch": 1.0, "val_accuracy": 0.5}])
    store.write_trial(rec)
    assert rec.updated is not None  # when the driver last wrote it
    assert store.trial("2") == rec and [t.trial_id for t in store.trials()] == ["0", "1", "2"]
    assert store.trial("0") == before
    spec = store.spec()
    spec.trials = 5
    store.start_session(spec)
    again = store.spec()
    assert again.trials == 5 and json.loads(store.spec_path.read_text())["options"]["trials"] == 5
    assert again.sessions[-1]["ended"] is None
    store.end_session(again)
    assert store.spec().sessions[-1]["ended"] is not None


def test_a_missing_trial_names_the_trials_there(store: ExperimentStore) -> None:
    with pytest.raises(RunError, match=r"run 'finished' has no trial '9'; trials: 0, 1$"):
        store.trial("9")


def test_a_corrupt_trial_record_is_reported_by_name_and_left_as_it_is(store: ExperimentStore) -> None:
    path = store.trials_dir / "1.json"
    path.write_text('{"trial_id": "1", "status": "banana", "config": 7}')
    with pytest.raises(RunError, match=r"trials/1.json: 'status' is 'banana'; one of completed, failed"):
        store.trials()
    path.write_text("{not json")
    with pytest.raises(RunError, match=r"trials/1.json is corrupted .*; nothing was changed"):
        store.trial("1")
    assert path.read_text() == "{not json"


def test_resume_and_status_refuse_a_corrupt_record_before_anything_starts(store: ExperimentStore, cli, capsys,
                                                                         monkeypatch) -> None:
    """`nas resume` of a run with a nonsense record: one line naming the file, exit 2, no file of the run
    changed (it used to rewrite the record as completed); `nas status` says the same."""
    shutil.copytree(store.root, cli.storage / "bad")
    run = cli.storage / "bad"
    (run / "trials" / "0.json").write_text('{"trial_id":"0","status":"banana","config":7}')
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, out, err = cli.inprocess("resume", "bad", "--trials", "3", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and err.count("\n") == 1 and "trials/0.json: 'status' is 'banana'" in err, err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    code, out, err = cli.inprocess("status", "bad", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and "trials/0.json: 'status' is 'banana'" in err, err


def test_a_bad_value_in_a_stored_spec_is_the_files_not_a_flags(store: ExperimentStore, cli, capsys,
                                                               monkeypatch) -> None:
    """A spec.json whose options hold a value no search accepts: `nas resume` names the file and the value (it
    used to say `--epochs 'five' is not valid`, as if the user had typed it), exit 2, nothing changed."""
    shutil.copytree(store.root, cli.storage / "bad")
    spec_path = cli.storage / "bad" / "spec.json"
    spec = json.loads(spec_path.read_text())
    spec["options"]["epochs"] = "five"
    spec_path.write_text(json.dumps(spec))
    before = {p: p.read_bytes() for p in spec_path.parent.rglob("*") if p.is_file()}
    code, out, err = cli.inprocess("resume", "bad", "--trials", "3", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{spec_path}: its 'options' hold a value this version refuses (--epochs 'five' is not valid" in err, err
    assert {p: p.read_bytes() for p in spec_path.parent.rglob("*") if p.is_file()} == before


def test_choose_trial_is_the_best_or_the_one_asked_for(store: ExperimentStore) -> None:
    objectives = [Objective("val_accuracy", "max")]
    assert choose_trial(store, objectives, None).trial_id == "0"  # 0.928 against trial 1's
    assert choose_trial(store, objectives, "1").trial_id == "1"
    store.write_trial(TrialRecord("2", TrialStatus.FAILED, error="boom"))
    with pytest.raises(RunError, match="trial '2' of run 'finished' is failed, not completed"):
        choose_trial(store, objectives, 2)
    assert choose_trial(store, objectives, 2, completed=False).status is TrialStatus.FAILED
    two = objectives + [Objective("params", "min")]
    lines: list[str] = []
    with pytest.raises(RunError, match=r"several objectives and \d non-dominated trials .*choose one with --trial ID"):
        choose_trial(store, two, None, log=lines.append)
    assert lines[0] == "run 'finished' has 2 objectives; its non-dominated trials are:"


@pytest.mark.parametrize("name", ["nl\n", "", "-dash", ".hidden", "a/b", "x" * 129])
def test_a_run_name_outside_the_accepted_characters_is_one_line(name: str) -> None:
    from nas.storage.store import check_name

    with pytest.raises(RunError, match=r"is not valid; use letters, digits, '\.', '_' and '-'"):
        check_name(name)
    assert check_name("run-1.a_b") == "run-1.a_b"
