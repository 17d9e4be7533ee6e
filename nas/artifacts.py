"""What a trial leaves in its artifacts directory (``<run>/trials/<id>/``) for later use.

``best.keras`` is the model at the trial's best epoch by the primary objective (the epoch its record's
``metrics`` describe), saved as Keras' self-contained format so ``nas export`` needs no retraining;
``best.json`` says which epoch it is and with which metrics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from nas.objective import Objective

BEST_MODEL = "best.keras"
BEST_INFO = "best.json"


class BestModelSaver:
    """Saves the model whenever the objective is at least as good as at any earlier epoch.

    Ties go to the later epoch and, until some epoch has a usable objective value, every epoch is saved:
    the same choice ``nas.results.best_epoch`` makes, so the saved model is the one the trial's record describes.
    """

    def __init__(self, out_dir: str | Path, objective: Objective) -> None:
        self.out_dir = Path(out_dir)
        self.objective = objective
        self.best: float | None = None
        info = self.out_dir / BEST_INFO
        if info.is_file():  # a resumed trial: an earlier session's best stays the best until beaten
            try:
                self.best = objective.score(json.loads(info.read_text()).get("metrics"))
            except (OSError, ValueError):
                self.best = None

    def update(self, model: Any, metrics: Mapping[str, Any]) -> bool:
        """Called once per epoch with that epoch's metrics; returns whether the model was saved."""
        score = self.objective.score(metrics)
        if score is None and self.best is not None:
            return False
        if score is not None and self.best is not None and score < self.best:
            return False
        if score is not None:
            self.best = score
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.out_dir / f".best.{os.getpid()}.tmp.keras"  # atomic: a reader never sees half a file
        model.save(tmp)
        os.replace(tmp, self.out_dir / BEST_MODEL)
        info = {"epoch": metrics.get("epoch"), "objective": self.objective.to_json(),
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        (self.out_dir / BEST_INFO).write_text(json.dumps(info, indent=1))
        return True
