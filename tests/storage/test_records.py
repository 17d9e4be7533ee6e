"""The typed records of a run directory (nas.storage.records): what they store is what earlier versions stored."""

from __future__ import annotations

import json

from nas.storage.records import STATUSES, TrialStatus, ended


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
    assert not ended({})
