"""The typed records of a run directory, shared by every layer that reads or writes them.

``TrialStatus``: a trial record's ``status``; ``spec_objectives``: the objectives a run's spec holds.
"""

from __future__ import annotations

import enum
from typing import Any, Mapping

from nas.plugins.objective import Objective


class TrialStatus(str, enum.Enum):
    """A trial record's ``status``. A ``str``: records store and compare its value ("completed", ...), so the
    JSON of the records, and records written by earlier versions, are unchanged."""

    COMPLETED = "completed"
    FAILED = "failed"
    RUNNING = "running"  # a worker trains it (or did, when its driver was killed: pending again on resume)
    PENDING = "pending"  # proposed, not started

    __str__ = str.__str__
    __format__ = str.__format__

    @property
    def ended(self) -> bool:
        return self in ENDED


#: every status, in the order counts are shown
STATUSES = tuple(s.value for s in TrialStatus)
#: the statuses of a trial that never runs again
ENDED = (TrialStatus.COMPLETED, TrialStatus.FAILED)


def ended(record: Mapping[str, Any]) -> bool:
    """The trial of ``record`` completed or failed: it never runs again."""
    return record.get("status") in ENDED


def spec_objectives(spec: Mapping[str, Any]) -> list[Objective]:
    """The objectives of a run, from its ``spec.json`` (the first one ranks and picks the best)."""
    return [Objective(**o) for o in spec["objectives"]]
