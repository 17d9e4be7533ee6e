"""What runs inside a Ray worker: build one configuration, train it, report every epoch.

Workers are reused across trials (``reuse_actors=True``), so TensorFlow is imported and configured once per
worker process, and the space object and its prepared data are cached per worker.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from nas import params as P
from nas.artifacts import BestModelSaver
from nas.objective import Objective

TRIAL_KEY = "__nas_trial__"
GENERATION_KEY = "__nas_worker_generation__"  # which generation of workers may run the trial (WorkerRecycler)

_worker: dict[str, Any] = {}  # per-process cache: TF configured, spaces, prepared data


CHECKPOINT = "resume.npz"


class TrialFailed(RuntimeError):
    """A trial that cannot produce a usable result (NaN loss, bad configuration)."""


class TrialInfeasible(TrialFailed):
    """A configuration that breaks a constraint (--max-params, --max-latency-ms); rejected before training."""


def split_config(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The nas trial id and the hyperparameter values in a Ray trial config."""
    values = {k: v for k, v in config.items() if not k.startswith("__")}
    return str(config.get(TRIAL_KEY, "")), values


def artifact_dir(run_dir: str | Path, trial_id: str) -> Path:
    """Where a trial writes its files (weights, logs): ``<run>/trials/<id>/``, beside its record ``<id>.json``."""
    return Path(run_dir) / "trials" / str(trial_id)


def save_checkpoint(out_dir: Path, model: Any, epoch: int, metrics: dict[str, Any]) -> None:
    """The model's and optimizer's variables after ``epoch``, in one file replaced atomically: a kill at any
    moment leaves either the previous or the new checkpoint, never half of one."""
    import json

    import numpy as np

    arrays = {f"w{i}": np.asarray(v) for i, v in enumerate(model.get_weights())}
    opt_vars = list(getattr(model.optimizer, "variables", []) or [])
    arrays.update({f"o{i}": np.asarray(v.numpy()) for i, v in enumerate(opt_vars)})
    meta = {"epoch": int(epoch), "metrics": metrics, "n_weights": len(model.get_weights()), "n_opt": len(opt_vars)}
    arrays["meta"] = np.frombuffer(json.dumps(meta, default=str).encode(), dtype=np.uint8)
    tmp = out_dir / f".{CHECKPOINT}.{os.getpid()}.tmp.npz"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_dir / CHECKPOINT)


def load_checkpoint(out_dir: Path, model: Any) -> dict[str, Any] | None:
    """Restore ``model`` (weights and optimizer state) from the trial's last checkpoint; None when there is
    none or it cannot be used (then the trial starts from epoch 0 and the file is left as it is)."""
    import json

    import numpy as np

    path = out_dir / CHECKPOINT
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            meta = json.loads(bytes(f["meta"]).decode())
            weights = [f[f"w{i}"] for i in range(meta["n_weights"])]
            opt = [f[f"o{i}"] for i in range(meta["n_opt"])]
        model.set_weights(weights)
        if opt:
            model.optimizer.build(model.trainable_variables)
            for var, value in zip(model.optimizer.variables, opt):
                var.assign(value)
        return meta
    except Exception as e:  # a corrupted or incompatible file: train from scratch, keep the file for inspection
        print(f"nas: checkpoint {path} is unusable ({type(e).__name__}: {e}); trial restarts from epoch 0")
        return None


def trial_seed(seed: int | None, trial_id: str) -> int:
    base = 0 if seed is None else int(seed)
    return (base * 1_000_003 + int(trial_id or 0) * 7919 + 17) % (2**31 - 1)


def _rss_mb() -> float:
    """This process's resident memory (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _node_id() -> str:
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
        "node_id": _node_id(),
        "pid": os.getpid(),
        "fit_started": fit_started,
        "resumed_from_epoch": resumed_from_epoch,
        "worker_rss_mb": round(rss_mb, 1),
        "gpu_ids": gpu_ids,
    }


def _configure_tensorflow(cpus: float) -> None:
    if _worker.get("tf"):
        return
    import tensorflow as tf

    threads = max(1, int(math.floor(cpus)))
    try:  # only possible before TensorFlow runs its first op in this process
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        pass
    for gpu in tf.config.list_physical_devices("GPU"):
        try:  # take GPU memory as needed, so fractional GPUs can share a card
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass
    _worker["tf"] = True


def _space_and_data(setup: dict[str, Any], data: Any) -> tuple[Any, Any, Any]:
    from nas.registry import create_space
    from nas.space import Task

    key = (setup["space"], repr(setup.get("space_options")), repr(setup["task"]), id(data))
    cached = _worker.get("space")
    if cached and cached[0] == key:
        return cached[1], cached[2], cached[3]
    space = create_space(setup["space"], task=Task.from_json(setup["task"]), **(setup.get("space_options") or {}))
    hp_space = space.hyperparameters()
    prepared = space.prepare_data(data)
    _worker["space"] = (key, space, hp_space, prepared)
    return space, hp_space, prepared


def train_trial(config: dict[str, Any], data: Any = None, setup: dict[str, Any] | None = None) -> None:
    """Ray Tune function trainable: one configuration, ``setup["epochs"]`` epochs, a report per epoch."""
    from ray import tune

    assert setup is not None and data is not None
    if setup.get("distributed") == "horovod":  # W data-parallel ranks: nas/distributed.py
        from nas.distributed import train_trial_horovod

        return train_trial_horovod(config, data, setup)
    _configure_tensorflow(setup.get("cpus_per_trial", 1))
    import keras

    trial_id, values = split_config(config)
    fit_started = time.time()
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(trial_seed(setup.get("seed"), trial_id))
    space, hp_space, prepared = _space_and_data(setup, data)
    hp = P.to_hp(hp_space, values)
    out_dir = artifact_dir(setup["run_dir"], trial_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    from nas.distributed import mirrored_scope

    with mirrored_scope(setup):  # --distributed mirrored: the model (and fit, through it) use the strategy
        model = space.build(hp)
        resumed = load_checkpoint(out_dir, model)
    n_params = int(model.count_params())
    max_params = setup.get("max_params")
    if max_params and n_params > max_params:
        raise TrialInfeasible(f"infeasible: {n_params:,} parameters > --max-params {int(max_params):,}")
    from nas.measure import LATENCY, latency

    speed = latency(model, prepared.x_val[:1])
    max_latency = setup.get("max_latency_ms")
    if max_latency and speed[LATENCY] > max_latency:
        raise TrialInfeasible(f"infeasible: latency {speed[LATENCY]:.4g} ms > --max-latency-ms {max_latency:g}")
    started = time.perf_counter()
    epochs = int(setup["epochs"])
    initial_epoch = int(resumed["epoch"]) if resumed else 0
    if resumed:
        started -= float(resumed["metrics"].get("train_time_s", 0.0))  # training time accumulates across resumes
    saver = BestModelSaver(out_dir, Objective(**setup["objective"]))  # best-epoch model, for `nas export`
    from nas.tensorboard import TrialLogger

    tb = TrialLogger(setup["run_dir"], trial_id, values)  # <run>/tensorboard/<id>/: HParams + per-epoch scalars

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            metrics = {k: float(v) for k, v in (logs or {}).items()}
            check_finite(metrics, epoch + 1)  # the exception ends fit
            metrics.update({k: float(v) for k, v in space.trial_metrics(self.model, prepared).items()})
            metrics.update(speed)
            metrics.update(epoch_fields(epoch + 1, n_params, started, fit_started, initial_epoch, _rss_mb(),
                                        os.environ.get("CUDA_VISIBLE_DEVICES", "")))
            if setup.get("distributed") == "mirrored":
                metrics["replicas"] = int(self.model.distribute_strategy.num_replicas_in_sync)
            save_checkpoint(out_dir, self.model, epoch + 1, metrics)
            saver.update(self.model, metrics)  # before reporting: once the trial is recorded, its model is there
            tb.log(epoch + 1, metrics)
            tune.report(metrics)

    if resumed:  # the driver may have died before recording the checkpointed epoch: report it again
        tune.report(dict(resumed["metrics"], resumed_from_epoch=initial_epoch))
        if initial_epoch >= epochs:
            return

    space.fit(
        hp,
        model,
        prepared.x_train,
        prepared.y_train,
        validation_data=(prepared.x_val, prepared.y_val),
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=[Report()],
        verbose=0,
    )
    tb.close()
    del model
