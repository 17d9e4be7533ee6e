"""What runs inside a Ray worker, shared by every kind of trial (single-process ``nas.trials.single`` and data-parallel
``nas.trials.horovod``): the trial's seed and files, epoch checkpoints, the per-epoch report fields, finiteness
checks, framework configuration, and the space and data a worker keeps between trials.

Workers are reused across trials (``reuse_actors=True``), so the framework is configured once per worker process
and the space object and its prepared data are cached per worker.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.runtime import backends
from nas.storage.layout import CHECKPOINT
from nas.trials.artifacts import write_arrays

if TYPE_CHECKING:
    from nas.options import TrialSetup

TRIAL_KEY = "__nas_trial__"
GENERATION_KEY = "__nas_worker_generation__"  # which generation of workers may run the trial (WorkerRecycler)

_worker: dict[str, Any] = {}  # per-process cache: framework configured, spaces, prepared data


class TrialFailed(RuntimeError):
    """A trial that cannot produce a usable result (NaN loss, bad configuration)."""


class TrialInfeasible(TrialFailed):
    """A configuration that breaks a constraint (--max-params, --max-latency-ms); rejected before training."""


def fit_arguments(setup: Any) -> dict[str, Any]:
    """The user's ``Model.fit`` arguments (``nas.search(..., callbacks=[...])``; ``TrialSetup.fit_arguments``), a
    copy of their own for this trial: a callback keeps state (``EarlyStopping``'s best value and patience)."""
    if not setup.fit_arguments:
        return {}
    import cloudpickle

    try:
        with open(setup.fit_arguments, "rb") as f:
            return dict(cloudpickle.load(f))
    except FileNotFoundError:
        raise TrialFailed(f"the run's fit arguments {setup.fit_arguments} are missing: a worker must see the run "
                          f"directory (shared storage on a cluster)") from None


def split_config(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The nas trial id and the hyperparameter values in a Ray trial config."""
    values = {k: v for k, v in config.items() if not k.startswith("__")}
    return str(config.get(TRIAL_KEY, "")), values


def random_states(model: Any) -> list[Any]:
    """The model's random-number state beside its weights: the state of every layer's seed generator (dropout,
    noise), which ``get_weights`` leaves out. Restored with the weights, a resumed trial draws the same dropout
    masks an uninterrupted one would."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.non_trainable_variables if id(v) not in weights]


def checkpoint_arrays(model: Any, epoch: int, metrics: dict[str, Any]) -> dict[str, np.ndarray]:
    """A host copy of everything a checkpoint holds after ``epoch``: weights, optimizer variables, the layers'
    random state, and what epoch it is with its metrics. Cheap; writing it is ``write_checkpoint``."""
    weights = model.get_weights()
    arrays = {f"w{i}": np.asarray(v) for i, v in enumerate(weights)}
    opt_vars = list(getattr(getattr(model, "optimizer", None), "variables", []) or [])  # none: an uncompiled model
    arrays.update({f"o{i}": np.asarray(v.numpy()) for i, v in enumerate(opt_vars)})
    states = random_states(model)
    arrays.update({f"s{i}": np.asarray(v.numpy()) for i, v in enumerate(states)})
    meta = {"epoch": int(epoch), "metrics": metrics, "n_weights": len(weights), "n_opt": len(opt_vars),
            "n_states": len(states)}
    arrays["meta"] = np.frombuffer(json.dumps(meta, default=str).encode(), dtype=np.uint8)
    return arrays


def write_checkpoint(out_dir: Path, arrays: dict[str, np.ndarray]) -> None:
    """``resume.npz``, replaced atomically: a kill at any moment leaves the previous checkpoint or the new one."""
    write_arrays(out_dir / CHECKPOINT, arrays)


def save_checkpoint(out_dir: Path, model: Any, epoch: int, metrics: dict[str, Any]) -> None:
    """The model's checkpoint after ``epoch``, written now."""
    write_checkpoint(out_dir, checkpoint_arrays(model, epoch, metrics))


def load_checkpoint(out_dir: Path, model: Any) -> dict[str, Any] | None:
    """Restore ``model`` (weights, optimizer state, the layers' random state) from the trial's last checkpoint;
    None when there is none or it cannot be used (then the trial starts from epoch 0 and the file is left as
    it is)."""
    path = out_dir / CHECKPOINT
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            meta = json.loads(bytes(f["meta"]).decode())
            weights = [f[f"w{i}"] for i in range(meta["n_weights"])]
            opt = [f[f"o{i}"] for i in range(meta["n_opt"])]
            states = [f[f"s{i}"] for i in range(meta.get("n_states", 0))]
        model.set_weights(weights)
        if opt:
            model.optimizer.build(model.trainable_variables)
            for var, value in zip(model.optimizer.variables, opt):
                var.assign(value)
        for var, value in zip(random_states(model), states):
            var.assign(value)
        return meta
    except Exception as e:  # a corrupted or incompatible file: train from scratch, keep the file for inspection
        print(f"nas: checkpoint {path} is unusable ({type(e).__name__}: {e}); trial restarts from epoch 0")
        return None


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order a trial sees its ``n`` training examples in at ``epoch``: a function of the trial's seed and
    the epoch alone, so an epoch trained after a resume is the epoch an uninterrupted trial trains."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_batches(x: Any, y: Any, seed: int, batch_size: int, first: int, last: int,
                  backend: str) -> tuple[Any, int]:
    """Epochs ``first`` .. ``last - 1`` of ``(x, y)`` as one stream of batches, each epoch's examples in
    ``epoch_order(seed, epoch)``, and the number of batches per epoch. Given to one ``fit`` call with that as
    ``steps_per_epoch``, Keras keeps one iterator across the epochs, so epoch k trains on the k-th block: the
    epochs an epoch-by-epoch (or resumed) trial would train, with no state to keep in step with Keras.

    Why not Keras' own arrays: its shuffle draws from random state carried across epochs, which no checkpoint
    holds; and one ``fit`` call per epoch pays Keras' per-call set-up (training and validation pipelines) every
    epoch, which on a small model costs about as much as the epoch (measured: 5 mlp trials x 5 epochs on digits,
    1 thread, 0.2 s per call). On TensorFlow the stream is a ``tf.data`` pipeline gathering batches from the
    arrays (a Python generator there would run Python per batch inside ``tf.data``); elsewhere a generator."""
    steps = math.ceil(len(x) / batch_size)
    orders = np.stack([epoch_order(seed, e, len(x)) for e in range(first, last)])  # first < last
    if backend == "tensorflow":
        import tensorflow as tf

        index = tf.data.Dataset.from_tensor_slices(orders).flat_map(
            lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
        # the arrays enter once, as one repeated element (not captured in the graph: no 2-GB limit)
        arrays = tf.data.Dataset.from_tensors((x, y)).repeat()
        stream = tf.data.Dataset.zip((index, arrays)).map(
            lambda i, xy: (tf.gather(xy[0], i), tf.gather(xy[1], i))).prefetch(tf.data.AUTOTUNE)
        return stream, steps

    def generate() -> Any:
        for order in orders:
            for i in range(steps):
                idx = order[i * batch_size:(i + 1) * batch_size]
                yield x[idx], y[idx]

    return generate(), steps


def trial_seed(seed: int | None, trial_id: str) -> int:
    base = 0 if seed is None else int(seed)
    return (base * 1_000_003 + int(trial_id or 0) * 7919 + 17) % (2**31 - 1)


def epoch_seed(seed: int, epoch: int) -> int:
    """The global seed (Python, numpy, the framework, Keras) set before ``epoch`` of a trial seeded ``seed``."""
    return (seed * 1_000_003 + epoch * 7919 + 101) % (2**31 - 1)


def seed_epoch(seed: int, epoch: int) -> None:
    """Set the global seeds an epoch starts from, ``epoch_seed(seed, epoch)``: Python's, numpy's, Keras' (its
    global ``SeedGenerator``, re-created from the seed) and torch's on torch, as ``keras.utils.set_random_seed``
    does, except TensorFlow's: ``tf.random.set_seed`` also clears TensorFlow's kernel cache, so every epoch
    re-created its kernels (measured: 0.1 s per epoch of a small mlp, 8 trials x 5 epochs in 27.7 s instead of
    23.9 s). TensorFlow's seed is set once per trial, before its model is built. Keras' layers draw from
    stateless ops fed by their own ``SeedGenerator`` state, which the checkpoint holds, so they resume exactly;
    only TensorFlow's stateful ``tf.random`` ops called inside a user's layer keep an unseeded position."""
    import random

    import keras

    value = epoch_seed(seed, epoch)
    try:  # Keras' own global seed state: no public API sets it without also reseeding TensorFlow
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
    except ImportError:  # a Keras without these internals: the public call, TensorFlow's seed included
        keras.utils.set_random_seed(value)
        return
    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, value)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(value)
    np.random.seed(value)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(value)


def rss_mb() -> float:
    """This process's resident memory (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def node_id() -> str:
    """The Ray node this process runs on (host names repeat when several Ray nodes share a machine)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:
        return ""


def check_finite(metrics: dict[str, float], epoch: int) -> None:
    """A NaN or infinite loss fails the trial, saying which loss and at which epoch."""
    bad = [k for k, v in metrics.items() if "loss" in k and not math.isfinite(v)]
    if bad:
        raise TrialFailed(f"{bad[0]} became {metrics[bad[0]]} at epoch {epoch}")


def epoch_fields(epoch: int, params: int, started: float, fit_started: float, resumed_from_epoch: int,
                 rss_mb: float, gpu_ids: str) -> dict[str, Any]:
    """What every epoch report carries beside the model's metrics (single-process and Horovod trials alike)."""
    return {
        "epoch": epoch,
        "params": params,
        "train_time_s": round(time.perf_counter() - started, 4),  # ``started``: a perf_counter reading
        "node": os.uname().nodename,
        "node_id": node_id(),
        "pid": os.getpid(),
        "fit_started": fit_started,
        "resumed_from_epoch": resumed_from_epoch,
        "worker_rss_mb": round(rss_mb, 1),
        "gpu_ids": gpu_ids,
    }


def configure_framework(setup: TrialSetup) -> None:
    """The trial's framework (``setup.backend``) on the trial's CPUs and share of a GPU; once per worker."""
    if _worker.get("configured") == setup.backend:
        return
    backends.configure(setup.backend, setup.cpus_per_trial, setup.gpus_per_trial)
    _worker["configured"] = setup.backend


def space_and_data(setup: TrialSetup, data: Any) -> tuple[Any, Any, Any]:
    """The space object, its hyperparameters and its prepared data; cached while a worker runs the same search."""
    from nas.plugins.registry import create_space

    key = (setup.space, repr(setup.space_options), repr(setup.task), id(data))
    cached = _worker.get("space")
    if cached and cached[0] == key:
        return cached[1], cached[2], cached[3]
    space = create_space(setup.space, task=setup.task, **dict(setup.space_options))
    hp_space = space.hyperparameters()
    prepared = space.prepare_data(data)
    _worker["space"] = (key, space, hp_space, prepared)
    return space, hp_space, prepared


def distribution_scope(setup: TrialSetup) -> Any:
    """``--distributed mirrored``: a MirroredStrategy scope over this trial's GPUs (the CPU when it has none);
    Keras 3 ``model.fit`` on one host works under it. Otherwise a no-op context."""
    if setup.distributed != "mirrored":
        return contextlib.nullcontext()
    import tensorflow as tf

    return tf.distribute.MirroredStrategy().scope()
