"""What a trial leaves in its artifacts directory (``<run>/trials/<id>/``) for later use, and how it writes it
without holding up training.

- ``resume.npz``: the last epoch's checkpoint (``nas.trials.worker``), rewritten every epoch;
- ``best.npz`` + ``best.json``: the weights of the best epoch so far by the primary objective (the epoch the
  trial record's ``metrics`` describe), and which epoch that is, with its metrics;
- ``best.keras``: that model in Keras' self-contained format, written once when the trial ends, so ``nas
  export`` needs no retraining.

Every epoch's files are written by a background thread from a host-memory snapshot of the variables taken at
the epoch's end, so the next epoch trains while they are written (saving a ``.keras`` archive of a 1M-parameter
model takes ~0.1 s, about an eighth of an epoch on an H100). A trial's end waits for its writes.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from nas.plugins.objective import Objective
from nas.storage.layout import BEST_INFO, BEST_MODEL, BEST_WEIGHTS


def write_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An .npz replaced atomically: a kill at any moment leaves the previous file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_weights(path: Path) -> list[np.ndarray]:
    """The weights a ``best.npz`` holds (``w0``, ``w1``, ... in ``model.get_weights()`` order)."""
    with np.load(path) as f:
        return [f[f"w{i}"] for i in range(len(f.files))]


def load_best(out_dir: Path, build: Callable[[], Any]) -> tuple[Any, Path] | None:
    """A trial's model at its best epoch and the file it came from: ``best.keras``, else (a trial cut short before
    its end wrote it) ``build()`` given ``best.npz``'s weights; None when the trial saved neither."""
    if (out_dir / BEST_MODEL).is_file():
        import keras

        return keras.models.load_model(out_dir / BEST_MODEL), out_dir / BEST_MODEL
    if (out_dir / BEST_WEIGHTS).is_file():
        model = build()
        model.set_weights(read_weights(out_dir / BEST_WEIGHTS))
        return model, out_dir / BEST_WEIGHTS
    return None


class BackgroundWriter:
    """One thread writing a trial's files in order. A newer write of the same file replaces one still waiting
    (only the latest checkpoint matters); ``flush`` waits for the queue and raises the first error, so a write
    that failed (a full disk) fails the trial at its end instead of being lost."""

    def __init__(self) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.pending: dict[str, Callable[[], None]] = {}
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="nas-writer", daemon=True)
        self.thread.start()

    def submit(self, key: str, write: Callable[[], None]) -> None:
        self.raise_error()
        with self.lock:
            waiting = key in self.pending
            self.pending[key] = write
        if not waiting:
            self.queue.put(key)

    def _run(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            with self.lock:
                write = self.pending.pop(key, None)
            try:
                if write is not None and self.error is None:
                    write()
            except BaseException as e:  # noqa: BLE001 - raised in the trial's thread by flush / submit
                self.error = e
            finally:
                self.queue.task_done()

    def raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def flush(self) -> None:
        self.queue.join()
        self.raise_error()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=60)


class BestModelSaver:
    """Keeps the weights of the best epoch so far (ties go to the later epoch, and every epoch counts until one
    has a usable objective value: the choice ``nas.storage.results.best_epoch`` makes) and writes ``best.keras`` from
    them when the trial ends. A resumed trial starts from the best its earlier sessions saved."""

    def __init__(self, out_dir: str | Path, objective: Objective, writer: BackgroundWriter | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.objective = objective
        self.writer = writer
        self.best: float | None = None
        self.weights: list[np.ndarray] | None = None  # None: the best (if any) is on disk, from an earlier session
        self.found = False
        info = self.out_dir / BEST_INFO
        if info.is_file():  # its weights: best.npz (or, from runs before it existed, best.keras itself)
            try:
                self.best = objective.score(json.loads(info.read_text()).get("metrics"))
                self.found = True
            except (OSError, ValueError):
                self.best = None

    def update(self, weights: list[np.ndarray], metrics: Mapping[str, Any]) -> bool:
        """Called once per epoch with that epoch's weights (a host copy) and metrics; whether it is the best."""
        score = self.objective.score(metrics)
        if score is None and self.best is not None:
            return False
        if score is not None and self.best is not None and score < self.best:
            return False
        if score is not None:
            self.best = score
        self.weights, self.found = weights, True
        info = {"epoch": metrics.get("epoch"), "objective": self.objective.to_json(),
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        arrays = {f"w{i}": w for i, w in enumerate(weights)}

        def write() -> None:  # weights first: a best.json always describes the best.npz beside it
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_arrays(self.out_dir / BEST_WEIGHTS, arrays)
            (self.out_dir / BEST_INFO).write_text(json.dumps(info, indent=1))

        if self.writer is not None:
            self.writer.submit("best", write)
        else:
            write()
        return True

    def finish(self, model: Any) -> None:
        """Write ``best.keras``: ``model`` (the trial's, done training) with the best epoch's weights."""
        if not self.found:
            return
        weights = self.weights
        if weights is None:  # the best epoch was an earlier session's
            if not (self.out_dir / BEST_WEIGHTS).is_file():
                return  # its best.keras is already written
            weights = read_weights(self.out_dir / BEST_WEIGHTS)
        model.set_weights(weights)
        tmp = self.out_dir / f".best.{os.getpid()}.tmp.keras"  # atomic: a reader never sees half a file
        model.save(tmp)
        os.replace(tmp, self.out_dir / BEST_MODEL)
