"""TensorBoard logs with the HParams plugin: ``tensorboard --logdir <run>/tensorboard``.

- In each trial (``TrialLogger``, called from the trial runner's per-epoch report): the trial's hyperparameters
  (the HParams plugin's session start) and every per-epoch metric as a scalar, in ``<run>/tensorboard/<trial_id>/``.
- Once per run, by the driver (``write_hparams_config``): the experiment's configuration, with every
  hyperparameter's domain and the metrics, in ``<run>/tensorboard/``; the HParams table and
  parallel-coordinates view then list all hyperparameters, including those a trial did not use.

Logging never fails a trial or a search: errors are swallowed (a trial's result matters more than its log).

Written with the ``tensorboard`` package's own protobufs and event-file writer, without TensorFlow: the same
files TensorFlow's ``tf.summary`` writes (scalars as tensor summaries of the scalar plugin, HParams plugin
data), from a jax or torch worker as well, and without importing TensorFlow into one.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from nas.storage.layout import tensorboard_dir
from nas.storage.records import TrialRecord

SKIP = {"epoch", "pid", "fit_started", "node", "gpu_ids"}


def _hp_value(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)):
        return v
    try:  # numpy scalars
        return v.item()
    except AttributeError:
        return str(v)


class _Events:
    """An event file in ``directory`` (the writer PyTorch's and TensorBoard's own summary APIs use)."""

    def __init__(self, directory: Path) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.writer = EventFileWriter(str(directory))

    def add(self, summary: Any, step: int = 0) -> None:
        from tensorboard.compat.proto import event_pb2

        self.writer.add_event(event_pb2.Event(summary=summary, step=int(step), wall_time=time.time()))

    def close(self) -> None:
        self.writer.close()  # flushes


class TrialLogger:
    """Per-trial writer: hyperparameters once, then ``log(epoch, metrics)`` every epoch."""

    def __init__(self, run_dir: str | Path, trial_id: str, values: Mapping[str, Any]) -> None:
        self.dir = tensorboard_dir(run_dir, trial_id)
        self.trial_id = str(trial_id)
        self.values = {k: _hp_value(v) for k, v in values.items()}
        self.events: _Events | None = None
        self.broken = False

    def _open(self) -> None:
        from tensorboard.plugins.hparams import summary_v2

        self.events = _Events(self.dir)
        self.events.add(summary_v2.hparams_pb(self.values, trial_id=self.trial_id))

    def log(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        if self.broken:
            return
        try:
            from tensorboard.plugins.scalar.summary_v2 import scalar_pb

            if self.events is None:
                self._open()
            for k, v in metrics.items():
                if k in SKIP or isinstance(v, (str, bool)) or v is None:
                    continue
                f = float(v)
                if math.isfinite(f):
                    self.events.add(scalar_pb(k, f), step=epoch)
            self.events.writer.flush()
        except Exception:  # noqa: BLE001 - logging must never fail a trial
            self.broken = True

    def close(self) -> None:
        if self.events is not None:
            try:
                self.events.close()
            except Exception:  # noqa: BLE001
                pass


def _domain(param: Any) -> Any:
    import keras_tuner as kt
    from tensorboard.plugins.hparams import summary_v2 as hp

    if isinstance(param, kt.engine.hyperparameters.Boolean):
        return hp.Discrete([False, True])
    if isinstance(param, kt.engine.hyperparameters.Fixed):
        return hp.Discrete([_hp_value(param.value)])
    if isinstance(param, kt.engine.hyperparameters.Choice):
        return hp.Discrete([_hp_value(v) for v in param.values])
    if isinstance(param, kt.engine.hyperparameters.Int):
        return hp.IntInterval(int(param.min_value), int(param.max_value))
    if isinstance(param, kt.engine.hyperparameters.Float):
        return hp.RealInterval(float(param.min_value), float(param.max_value))
    return None


def write_hparams_config(run_dir: str | Path, space: Any, metrics: Iterable[str],
                         objectives: Sequence[str] = ()) -> Path | None:
    """The experiment summary: every hyperparameter of ``space`` (a ``keras_tuner.HyperParameters``) with its
    domain, and ``metrics`` (objectives first). Returns the directory, or None when it could not be written."""
    try:
        from tensorboard.plugins.hparams import summary_v2 as hp

        hparams = []
        for p in space.space:
            dom = _domain(p)
            hparams.append(hp.HParam(p.name, dom) if dom is not None else hp.HParam(p.name))
        names = list(dict.fromkeys([*objectives, *metrics]))
        ms = [hp.Metric(m, display_name=m + (" (objective)" if m in objectives else "")) for m in names]
        root = tensorboard_dir(run_dir)
        events = _Events(root)
        events.add(hp.hparams_config_pb(hparams=hparams, metrics=ms))
        events.close()
        return root
    except Exception:  # noqa: BLE001 - a missing log must never fail a search
        return None


def run_metrics(trials: Iterable[TrialRecord]) -> list[str]:
    """The metric names the trials reported per epoch (what TensorBoard got as scalars)."""
    names: dict[str, None] = {}
    for t in trials:
        for h in t.history:
            for k, v in h.items():
                if k not in SKIP and isinstance(v, (int, float)) and not isinstance(v, bool):
                    names[k] = None
    return list(names)
