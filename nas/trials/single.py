"""A single-process trial: build one configuration, train it, report every epoch to Ray Tune.

``train_trial`` is the Ray Tune function trainable of every search without ``--distributed horovod`` (that one
is ``nas.trials.horovod.train_trial_horovod``). What both kinds share lives in ``nas.trials.worker``.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from nas.options import TrialSetup
from nas.plugins import params as P
from nas.plugins.space import SearchSpace
from nas.runtime import backends
from nas.storage.layout import EXECUTIONS, trial_dir
from nas.trials.artifacts import BackgroundWriter, BestModelSaver
from nas.trials.measure import LATENCY, latency
from nas.trials.tensorboard import TrialLogger
from nas.trials.worker import (
    TrialFailed,
    TrialInfeasible,
    check_finite,
    checkpoint_arrays,
    configure_framework,
    distribution_scope,
    epoch_batches,
    epoch_fields,
    epoch_order,
    fit_arguments,
    load_checkpoint,
    rss_mb,
    seed_epoch,
    space_and_data,
    split_config,
    trial_seed,
    write_checkpoint,
)


def train_trial(config: dict[str, Any], data: Any = None, setup: TrialSetup | None = None) -> None:
    """Ray Tune function trainable: one configuration, ``setup.epochs`` epochs, a report per epoch."""
    from ray import tune

    assert setup is not None and data is not None
    configure_framework(setup)
    import keras

    trial_id, values = split_config(config)
    fit_started = time.time()
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(trial_seed(setup.seed, trial_id))
    space, hp_space, prepared = space_and_data(setup, data)
    hp = P.to_hp(hp_space, values)
    out_dir = trial_dir(setup.run_dir, trial_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    with distribution_scope(setup):  # --distributed mirrored: the model (and fit, through it) use the strategy
        model = space.build(hp)
        resumed = load_checkpoint(out_dir, model)
    n_params = int(model.count_params())
    if setup.max_params and n_params > setup.max_params:
        raise TrialInfeasible(f"infeasible: {n_params:,} parameters > --max-params {int(setup.max_params):,}")
    speed = latency(model, prepared.x_val[:1]) if setup.measure_latency else {}
    if setup.max_latency_ms and speed[LATENCY] > setup.max_latency_ms:
        raise TrialInfeasible(f"infeasible: latency {speed[LATENCY]:.4g} ms > --max-latency-ms "
                              f"{setup.max_latency_ms:g}")
    # --executions-per-trial N: N - 1 more models of this configuration trained first (each from its own seed),
    # their epochs averaged into what this one reports (KerasTuner's executions_per_trial)
    earlier = _earlier_executions(space, hp, prepared, setup, trial_id, out_dir) if setup.executions_per_trial > 1 \
        else []
    backends.reset_peak_memory(setup.backend)
    started = time.perf_counter()
    initial_epoch = int(resumed["epoch"]) if resumed else 0
    if resumed:
        started -= float(resumed["metrics"].get("train_time_s", 0.0))  # training time accumulates across resumes
    writer = BackgroundWriter()  # checkpoints and best weights are written while the next epoch trains
    saver = BestModelSaver(out_dir, setup.objective, writer)  # best-epoch model, for `nas export`
    tb = TrialLogger(setup.run_dir, trial_id, values)  # <run>/tensorboard/<id>/: HParams + per-epoch scalars

    seed = trial_seed(setup.seed, trial_id)
    x, y = prepared.x_train, prepared.y_train
    n_weights = len(model.weights)
    user, user_callbacks, sample_weight, batch_size = _user_fit(setup)
    # One fit call over every epoch when the space keeps nas's own fit (or a hypermodel KerasTuner's default one),
    # in batches whose order depends only on (trial seed, epoch), with the global seeds set from them as each epoch
    # begins: what decides an epoch is then its number and the checkpointed state (weights, optimizer, the layers'
    # random state), so a resumed trial trains the epochs an uninterrupted one would. A space with its own fit (a
    # KerasTuner hypermodel's, which may be a custom training loop) is called once, as KerasTuner calls it, with
    # the arrays in one seeded order for every epoch (the same on resume) and its return value reported when it
    # reports no epoch itself. --distributed mirrored, whose strategy splits array batches across devices itself,
    # gets one fit call per epoch on a reordered copy of the arrays, the next made while this one trains; so do
    # per-example weights with nas's fit (they must be reordered with their examples).
    own_fit = type(space).fit is not SearchSpace.fit and getattr(space, "own_fit", True)
    one_fit = not own_fit and setup.distributed != "mirrored" and sample_weight is None
    single_call = own_fit and setup.distributed != "mirrored"
    reported: list[int] = []  # the epochs Report has reported

    class Report(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if one_fit or single_call:
                seed_epoch(seed, epoch)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            reported.append(epoch)
            metrics = _epoch_logs(logs, epoch, space, self.model, prepared)  # a non-finite one ends fit
            if earlier:
                metrics = mean_over_executions(metrics, earlier, epoch)
            metrics.update(speed)
            metrics.update(backends.device_info(setup.backend))
            metrics.update(epoch_fields(epoch + 1, n_params, started, fit_started, initial_epoch, rss_mb(),
                                        os.environ.get("CUDA_VISIBLE_DEVICES", "")))
            if setup.distributed == "mirrored":
                metrics["replicas"] = int(self.model.distribute_strategy.num_replicas_in_sync)
            snapshot = checkpoint_arrays(self.model, epoch + 1, metrics)
            writer.submit("checkpoint", lambda: write_checkpoint(out_dir, snapshot))
            saver.update([snapshot[f"w{i}"] for i in range(n_weights)], metrics)
            tb.log(epoch + 1, metrics)
            tune.report(metrics)

    validation = (prepared.x_val, prepared.y_val)
    try:
        if resumed:  # the driver may have died before recording the checkpointed epoch: report it again
            tune.report(dict(resumed["metrics"], resumed_from_epoch=initial_epoch))
        if one_fit:
            if initial_epoch < setup.epochs:
                batches, steps = epoch_batches(x, y, seed, batch_size or space.batch_size(hp), initial_epoch,
                                               setup.epochs, setup.backend)
                space.fit(hp, model, batches, validation_data=validation, epochs=setup.epochs,
                          initial_epoch=initial_epoch, steps_per_epoch=steps, shuffle=False,
                          callbacks=[Report(), *user_callbacks], **{"verbose": 0, **user})
        elif single_call:
            if initial_epoch < setup.epochs:
                _fit_once(space, hp, model, x, y, validation, seed, initial_epoch, setup, Report(), user_callbacks,
                          sample_weight, batch_size, user, reported)
        else:
            if batch_size is not None:
                user["batch_size"] = batch_size
            _fit_epoch_by_epoch(space, hp, model, x, y, validation, seed, initial_epoch, setup.epochs, Report(),
                                user_callbacks, sample_weight, user)
    except SystemExit:  # Ray Tune ended the trial (a scheduler stopped it early): it completed, keep its model
        _finish(writer, saver, model)
        raise
    else:
        _finish(writer, saver, model)
    finally:
        writer.close()
        tb.close()
    del model


def _earlier_executions(space: Any, hp: Any, prepared: Any, setup: TrialSetup, trial_id: str,
                        out_dir: Any) -> list[list[dict[str, float]]]:
    """Executions 1 .. N-1 of a trial (``--executions-per-trial N``), each a fresh model of the same configuration
    from its own seed, trained as a space's own ``fit`` is (``_fit_once``: one call over every epoch) with the
    user's fit arguments (a fresh copy of their callbacks) and nothing of nas's (no report, checkpoint or saved
    model): their per-epoch metrics, which the trial's own execution (the one every trial makes, from the
    trial's seed) averages into its reports. Each finished one is kept in the trial's ``executions.json``, so a
    resumed trial trains only those it had not finished; they are seeded, so retraining one gives the same
    figures."""
    import keras

    path = out_dir / EXECUTIONS
    try:
        done = json.loads(path.read_text())["executions"]
    except (OSError, ValueError, KeyError, TypeError):
        done = []
    done = done[: setup.executions_per_trial - 1]
    base = trial_seed(setup.seed, trial_id)
    validation = (prepared.x_val, prepared.y_val)
    while len(done) < setup.executions_per_trial - 1:
        seed = (base + 104_729 * (len(done) + 1)) % (2**31 - 1)
        keras.utils.set_random_seed(seed)
        model = space.build(hp)
        history: list[dict[str, float]] = []

        class Record(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                history.append(_epoch_logs(logs, epoch, space, self.model, prepared))

        user, callbacks, sample_weight, batch_size = _user_fit(setup)
        _fit_once(space, hp, model, prepared.x_train, prepared.y_train, validation, seed, 0, setup, Record(),
                  callbacks, sample_weight, batch_size, user, history)  # history: what Record reported
        done.append(history)
        del model
        path.write_text(json.dumps({"executions": done}))
    return done


def _user_fit(setup: TrialSetup) -> tuple[dict[str, Any], list[Any], Any, int | None]:
    """The user's fit arguments for one training (a fresh copy: callbacks keep state), with what nas hands on
    itself taken out: (the rest, their callbacks, ``sample_weight``, ``batch_size``)."""
    user = fit_arguments(setup)  # nas.search(..., callbacks=[...], class_weight=...): every trial's fit gets them
    return user, list(user.pop("callbacks", None) or []), user.pop("sample_weight", None), user.pop("batch_size", None)


def _epoch_logs(logs: dict[str, Any] | None, epoch: int, space: Any, model: Any, prepared: Any) -> dict[str, float]:
    """An epoch's metrics as a trial records them: Keras' logs as floats (a non-finite one fails the trial) and
    the space's own per-epoch metrics."""
    metrics = {k: float(v) for k, v in (logs or {}).items()}
    check_finite(metrics, epoch + 1)
    metrics.update({k: float(v) for k, v in space.trial_metrics(model, prepared).items()})
    return metrics


def mean_over_executions(metrics: dict[str, float], earlier: list[list[dict[str, float]]],
                         epoch: int) -> dict[str, float]:
    """An epoch's metrics averaged with the same epoch of the earlier executions (an execution that stopped
    sooner, by the user's ``EarlyStopping``, counts with its last epoch); ``executions`` says how many."""
    out = dict(metrics)
    for key, value in metrics.items():
        values = [value] + [h[min(epoch, len(h) - 1)][key] for h in earlier if h and key in h[min(epoch, len(h) - 1)]]
        out[key] = float(np.mean(values))
    out["executions"] = 1 + len(earlier)
    return out


def _fit_once(space: Any, hp: Any, model: Any, x: Any, y: Any, validation: tuple[Any, Any], seed: int,
              initial_epoch: int, setup: TrialSetup, report: Any, user_callbacks: list[Any], sample_weight: Any,
              batch_size: int | None, user: dict[str, Any], reported: list[Any]) -> None:
    """A space's own ``fit`` (a KerasTuner hypermodel's), called once over every epoch as KerasTuner calls it, on
    the arrays in one seeded order (``reported``: what ``report`` has recorded, an item an epoch). Its return
    value is the trial's result when it reported no epoch itself (a custom loop that calls no callback): a number
    is the objective's value, a dict the metrics (KerasTuner's rule)."""
    order = epoch_order(seed, 0, len(x))
    kwargs = {"verbose": 0, **user}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    if sample_weight is not None:
        kwargs["sample_weight"] = np.asarray(sample_weight)[order]
    seed_epoch(seed, initial_epoch)
    result = space.fit(hp, model, x[order], y[order], validation_data=validation, epochs=setup.epochs,
                       initial_epoch=initial_epoch, shuffle=False, callbacks=[report, *user_callbacks], **kwargs)
    if reported or result is None or hasattr(result, "history"):
        return
    if isinstance(result, dict):
        logs = {str(k): float(v) for k, v in result.items()}
    else:
        try:
            logs = {setup.objective.metric: float(result)}
        except (TypeError, ValueError):
            raise TrialFailed(f"the space's fit returned {type(result).__name__}; return a number (the objective "
                              f"{setup.objective.metric}), a dict of metrics, or report epochs to its callbacks") \
                from None
    report.set_model(model)
    report.on_epoch_end(setup.epochs - 1, logs)


def _fit_epoch_by_epoch(space: Any, hp: Any, model: Any, x: Any, y: Any, validation: tuple[Any, Any], seed: int,
                        initial_epoch: int, epochs: int, report: Any, user_callbacks: list[Any] | None = None,
                        sample_weight: Any = None, user: dict[str, Any] | None = None) -> None:
    """One ``space.fit`` call per epoch on the arrays in ``epoch_order(seed, epoch)`` (``sample_weight`` in the
    same order), the global seeds set from ``seed_epoch`` before each; the next epoch's reordered copy is made
    while this one trains. The user's callbacks see one training across the calls (``_AcrossFits``), and one
    that stops it (``EarlyStopping``) ends the loop: the trial completes with the epochs it trained."""
    weights = None if sample_weight is None else np.asarray(sample_weight)

    def reordered(epoch: int) -> tuple[Any, Any, Any]:
        order = epoch_order(seed, epoch, len(x))
        return x[order], y[order], None if weights is None else weights[order]

    across = _across_fits(user_callbacks or [])
    extra = {"verbose": 0, **(user or {})}
    with ThreadPoolExecutor(1, thread_name_prefix="nas-data") as ahead:
        upcoming = ahead.submit(reordered, initial_epoch)
        for epoch in range(initial_epoch, epochs):
            xe, ye, we = upcoming.result()
            if epoch + 1 < epochs:
                upcoming = ahead.submit(reordered, epoch + 1)
            seed_epoch(seed, epoch)
            if we is not None:
                extra["sample_weight"] = we
            space.fit(hp, model, xe, ye, validation_data=validation, epochs=epoch + 1, initial_epoch=epoch,
                      shuffle=False, callbacks=[report, across], **extra)
            del xe, ye, we
            if model.stop_training:  # the user's EarlyStopping (or any callback) ended training
                break
    across.finish()


def _across_fits(callbacks: list[Any]) -> Any:
    """The user's Keras callbacks as one callback that sees a single training across nas's per-epoch ``fit``
    calls: ``on_train_begin`` before the first, ``on_train_end`` after the last (``finish``), every other hook as
    it comes. Keras calls ``on_train_begin`` at each ``fit``, which would reset ``EarlyStopping``'s patience every
    epoch; nothing in Keras spans calls, hence this wrapper."""
    import keras

    class AcrossFits(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.begun = list(callbacks), False

        def set_model(self, model: Any) -> None:
            super().set_model(model)
            for c in self.inner:
                c.set_model(model)

        def set_params(self, params: Any) -> None:
            super().set_params(params)
            for c in self.inner:
                c.set_params(params)

        def on_train_begin(self, logs: Any = None) -> None:
            if not self.begun:
                self.begun = True
                for c in self.inner:
                    c.on_train_begin(logs)

        def on_train_end(self, logs: Any = None) -> None:
            """Held until ``finish``."""

        def finish(self, logs: Any = None) -> None:
            if self.begun:
                for c in self.inner:
                    c.on_train_end(logs)

    def forward(hook: str) -> Any:
        def call(self: Any, *args: Any, **kwargs: Any) -> None:
            for c in self.inner:
                getattr(c, hook)(*args, **kwargs)
        return call

    for hook in ("on_epoch_begin", "on_epoch_end", "on_train_batch_begin", "on_train_batch_end",
                 "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end",
                 "on_predict_begin", "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end"):
        setattr(AcrossFits, hook, forward(hook))
    return AcrossFits()


def _finish(writer: BackgroundWriter, saver: BestModelSaver, model: Any) -> None:
    """The end of a trial that completed: every epoch file written (an error writing one fails the trial), and
    ``best.keras`` from the best epoch's weights."""
    writer.flush()
    saver.finish(model)
