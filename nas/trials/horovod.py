"""Data-parallel training of one trial on several workers: Horovod on Ray, for Keras 3 models.

Why this design: Ray Train's ``HorovodTrainer`` is disabled in Ray Train V2 (it raises at construction), and
horovod's Keras wrappers do not work with Keras 3 (the broadcast callback fails on Keras variables and
``DistributedOptimizer`` silently does not average gradients: ranks diverge). Keras 3 ``model.fit`` under
``tf.distribute.MultiWorkerMirroredStrategy`` fails too (keras-team/keras#20585). So a trial with ``--distributed horovod``
starts its W ranks with ``horovod.ray.RayExecutor`` inside the trial's placement group and trains them with our
own step: ``hvd.DistributedGradientTape`` on the model's underlying TF variables, variables broadcast from
rank 0, metrics summed across ranks with ``hvd.allreduce``.

The trial function (a Ray Tune function trainable, the "trial driver") stays the process that talks to Tune:
it runs the ranks one epoch at a time (``executor.execute(...)`` per epoch; each rank keeps its model between
calls), reports every epoch with ``tune.report`` exactly like a single-worker trial, and has rank 0 write the
same per-epoch checkpoint (``nas.trials.worker.save_checkpoint``) a single-worker trial writes, so ``nas resume``
continues a distributed trial from its last epoch.

Batches: the space's ``batch_size`` is the *global* batch. Every epoch the training set is shuffled with a
seed shared by all ranks; each global batch is split into W contiguous parts, one per rank. Each rank's loss
is its examples' summed loss divided by the global batch size and the ranks' gradients are *summed*, so one
step equals one single-process step on the whole global batch (also for an uneven last batch). With
``--scale-lr`` the learning rate is multiplied by W (for users who scale the global batch with W instead).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from nas.errors import NasError
from nas.options import TrialSetup
from nas.plugins import params as P
from nas.storage.layout import trial_dir
from nas.trials.worker import (
    check_finite,
    configure_framework,
    epoch_fields,
    epoch_order,
    load_checkpoint,
    rss_mb,
    save_checkpoint,
    space_and_data,
    split_config,
    trial_seed,
)

INSTALL_HINT = "bash launch/install-horovod.sh"


def horovod_missing() -> str | None:
    """None when ``horovod.tensorflow`` and ``horovod.ray`` import; else why not."""
    try:
        import horovod.ray  # noqa: F401
        import horovod.tensorflow  # noqa: F401
    except Exception as e:  # ImportError, or a build that does not match this TensorFlow
        return f"{type(e).__name__}: {e}"
    return None


def require_horovod() -> None:
    why = horovod_missing()
    if why:
        raise NasError(f"--distributed horovod needs Horovod built for this TensorFlow ({why}); install it with "
                       f"`{INSTALL_HINT}` (builds and caches a wheel, a few minutes)")


# -- the training loop, per rank ------------------------------------------------------------------------------
def _metric_fns(model: Any, y: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The per-example loss and the per-example metric functions of a compiled model."""
    import keras

    compiled = model.get_compile_config() or {}
    loss_fn = keras.losses.get(compiled.get("loss") or model.loss)
    metrics: dict[str, Any] = {}
    for m in compiled.get("metrics") or []:
        name = m if isinstance(m, str) else getattr(m, "name", str(m))
        if name in ("accuracy", "acc"):
            sparse = y.ndim == 1 or y.shape[-1] == 1
            metrics[name] = (keras.metrics.sparse_categorical_accuracy if sparse
                             else keras.metrics.categorical_accuracy)
        else:
            metrics[name] = keras.metrics.get(name)
    return loss_fn, metrics


class DataParallelTrainer:
    """One rank of a data-parallel trial (``size == 1`` and ``hvd is None``: the same loop in one process,
    the single-process reference)."""

    def __init__(self, config: dict[str, Any], data: Any, setup: TrialSetup, use_horovod: bool = True) -> None:
        configure_framework(setup)
        import keras
        import tensorflow as tf

        self.tf = tf
        self.hvd = None
        self.rank, self.size = 0, 1
        if use_horovod:
            import horovod.tensorflow as hvd

            hvd.init()
            self.hvd, self.rank, self.size = hvd, hvd.rank(), hvd.size()
        self.setup = setup
        self.trial_id, values = split_config(config)
        self.seed = trial_seed(setup.seed, self.trial_id)
        keras.backend.clear_session(free_memory=False)
        keras.utils.set_random_seed(self.seed)
        self.space, hp_space, self.prepared = space_and_data(setup, data)
        hp = P.to_hp(hp_space, values)
        self.model = self.space.build(hp)
        self.batch = int(hp.get("batch_size")) if "batch_size" in hp.values else 32
        if setup.scale_lr and self.size > 1:
            lr = float(np.asarray(self.model.optimizer.learning_rate))
            self.model.optimizer.learning_rate = lr * self.size
        self.loss_fn, self.metric_fns = _metric_fns(self.model, np.asarray(self.prepared.y_train))
        self.n_params = int(self.model.count_params())
        self.out_dir = None
        self.epoch = 0
        self.resumed: dict[str, Any] | None = None
        if setup.run_dir:
            self.out_dir = trial_dir(setup.run_dir, self.trial_id)
            if self.rank == 0:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                self.resumed = load_checkpoint(self.out_dir, self.model)  # builds the optimizer when it restores
        if not self.model.optimizer.built:  # the same variables, in the same order, on every rank
            self.model.optimizer.build(self.model.trainable_variables)
        self._broadcast()
        if self.hvd is not None:
            self.resumed = self.hvd.broadcast_object(self.resumed, root_rank=0)
        self.epoch = int(self.resumed["epoch"]) if self.resumed else 0
        self._step = tf.function(self._train_step, reduce_retracing=True)
        self._eval = tf.function(self._eval_step, reduce_retracing=True)

    # -- collective pieces ----------------------------------------------------------------------------------
    def _variables(self) -> list[Any]:
        """The underlying TF variables: Keras 3 wraps them, and horovod's broadcast and gradient tape need the
        TF variables themselves (``v.value``); given those, ranks stay identical."""
        return [v.value for v in list(self.model.variables) + list(self.model.optimizer.variables)]

    def _broadcast(self) -> None:
        if self.hvd is not None:
            self.hvd.broadcast_variables(self._variables(), root_rank=0)

    def _allsum(self, values: np.ndarray) -> np.ndarray:
        if self.hvd is None:
            return values
        return np.asarray(self.hvd.allreduce(self.tf.constant(values, dtype=self.tf.float64), op=self.hvd.Sum))

    # -- steps ----------------------------------------------------------------------------------------------
    def _sums(self, y: Any, y_pred: Any) -> list[Any]:
        tf = self.tf
        out = [tf.reduce_sum(tf.cast(self.loss_fn(y, y_pred), tf.float64))]
        for fn in self.metric_fns.values():
            out.append(tf.reduce_sum(tf.cast(fn(y, y_pred), tf.float64)))
        return out

    def _train_step(self, x: Any, y: Any, global_n: Any) -> list[Any]:
        tf = self.tf
        variables = [v.value for v in self.model.trainable_variables]
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            per_example = tf.cast(self.loss_fn(y, y_pred), tf.float32)
            loss = tf.reduce_sum(per_example) / tf.cast(global_n, tf.float32)
            if self.model.losses:  # regularisation: counted once across the ranks
                loss += tf.add_n(self.model.losses) / float(self.size)
        if self.hvd is not None:
            tape = self.hvd.DistributedGradientTape(tape, op=self.hvd.Sum)
        grads = tape.gradient(loss, variables)
        self.model.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return self._sums(y, y_pred)

    def _eval_step(self, x: Any, y: Any) -> list[Any]:
        return self._sums(y, self.model(x, training=False))

    def _mine(self, lo: int, hi: int) -> tuple[int, int]:
        """This rank's contiguous part of the examples [lo, hi)."""
        n = hi - lo
        a = lo + (n * self.rank) // self.size
        return a, lo + (n * (self.rank + 1)) // self.size

    # -- one epoch ------------------------------------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        """Train one epoch on this rank's part of every global batch; return metrics summed over the ranks."""
        x, y = np.asarray(self.prepared.x_train), np.asarray(self.prepared.y_train)
        order = epoch_order(self.seed, self.epoch, len(x))
        names = ["loss", *self.metric_fns]
        sums = np.zeros(len(names))
        for lo in range(0, len(x), self.batch):
            hi = min(lo + self.batch, len(x))
            a, b = self._mine(lo, hi)
            idx = order[a:b]
            out = self._step(x[idx], y[idx], hi - lo)
            sums += np.array([float(v) for v in out])
        train = self._allsum(np.append(sums, 0.0))[:-1] / len(x)
        metrics = dict(zip(names, train.tolist()))
        xv, yv = np.asarray(self.prepared.x_val), np.asarray(self.prepared.y_val)
        a, b = self._mine(0, len(xv))
        vsums = np.zeros(len(names))
        for lo in range(a, b, 512):
            out = self._eval(xv[lo:min(lo + 512, b)], yv[lo:min(lo + 512, b)])
            vsums += np.array([float(v) for v in out])
        val = self._allsum(vsums) / max(1, len(xv))
        metrics.update({f"val_{k}": float(v) for k, v in zip(names, val)})
        if self.model.losses:
            metrics["loss"] += float(sum(float(v) for v in self.model.losses))
        self.epoch += 1
        if self.rank == 0:
            metrics.update({k: float(v) for k, v in self.space.trial_metrics(self.model, self.prepared).items()})
        return metrics

    def weights(self) -> list[np.ndarray]:
        return [np.asarray(w) for w in self.model.get_weights()]

    def weight_spread(self) -> float:
        """The largest absolute difference of any weight between this rank and rank 0 (0.0 on rank 0)."""
        mine = self.weights()
        if self.hvd is None:
            return 0.0
        ref = self.hvd.broadcast_object(mine, root_rank=0)
        return float(max((np.max(np.abs(a - b)) if a.size else 0.0) for a, b in zip(mine, ref)))

    def save(self, metrics: dict[str, Any]) -> None:
        if self.rank == 0 and self.out_dir is not None:
            save_checkpoint(self.out_dir, self.model, self.epoch, metrics)

    def info(self) -> dict[str, Any]:
        return {"rank": self.rank, "size": self.size, "epoch": self.epoch, "params": self.n_params,
                "resumed": self.resumed, "pid": os.getpid(), "rss_mb": round(rss_mb(), 1),
                "gpu_ids": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


# -- the trial driver ---------------------------------------------------------------------------------------
def train_trial_horovod(config: dict[str, Any], data: Any = None, setup: TrialSetup | None = None) -> None:
    """Ray Tune function trainable for ``--distributed horovod``: W ranks via ``horovod.ray.RayExecutor`` in
    this trial's placement group, epoch by epoch, one ``tune.report`` per epoch from this process."""
    from horovod.ray import RayExecutor
    from ray import tune

    assert setup is not None and data is not None
    workers = setup.workers_per_trial
    gpus = setup.gpus_per_trial
    fit_started = time.time()
    settings = RayExecutor.create_settings(timeout_s=120, placement_group_timeout_s=300)
    executor = RayExecutor(settings, num_workers=workers, cpus_per_worker=setup.cpus_per_trial,
                           use_gpu=gpus > 0, gpus_per_worker=gpus or None, use_current_placement_group=True)
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("TF_", "ABSL_", "GRPC_", "PYTHONWARNINGS", "NAS_VERBOSE"))}
    executor.start(executable_cls=DataParallelTrainer, executable_kwargs={"config": config, "data": data,
                                                                          "setup": setup},
                   extra_env_vars=env)
    try:
        infos = executor.execute(lambda r: r.info())
        info = infos[0]
        epochs = setup.epochs
        initial_epoch = int(info["epoch"])
        started = time.perf_counter()
        if info["resumed"]:
            started -= float(info["resumed"]["metrics"].get("train_time_s", 0.0))
            tune.report(dict(info["resumed"]["metrics"], resumed_from_epoch=initial_epoch))
            if initial_epoch >= epochs:
                return
        for epoch in range(initial_epoch, epochs):
            results = executor.execute(lambda r: r.train_epoch())
            metrics = dict(results[0])
            check_finite(metrics, epoch + 1)
            if epoch + 1 == epochs:  # the ranks must end identical: measure it
                metrics["ranks_max_weight_diff"] = max(executor.execute(lambda r: r.weight_spread()))
            rss = executor.execute(lambda r: r.info()["rss_mb"])
            metrics.update(epoch_fields(epoch + 1, info["params"], started, fit_started, initial_epoch, max(rss),
                                        "|".join(i["gpu_ids"] for i in infos)), workers=workers)
            executor.execute_single(lambda r: r.save(metrics))
            tune.report(metrics)
    finally:
        _stop(executor)


def _stop(executor: Any) -> None:
    """Kill the rank actors now (dropping the handles would leave it to Ray's garbage collection)."""
    import ray

    workers = list(getattr(getattr(executor, "adapter", None), "workers", None) or [])
    try:
        executor.shutdown()
    except Exception:
        pass
    for w in workers:
        try:
            ray.kill(w)
        except Exception:
            pass
