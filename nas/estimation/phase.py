"""The supernet phase of a search with ``--estimation shared-weights``, as the driver runs it.

``shared_weights`` is called by the engine for a new run and for ``nas resume`` alike, after everything that can
fail before Ray (data, space, strategy, objective) has been checked. It

1. checks what weight sharing needs (a space with a supernet, a controller fast enough for thousands of
   children, an objective shared weights can estimate) — one line each;
2. unless the phase already finished (a resumed run), starts Ray and ONE actor with a trial's resources
   (``--cpus-per-trial``, ``--gpus-per-trial``) holding the supernet and the controller
   (``nas.estimation.trainer``), which continues from ``<run>/supernet/resume.npz`` when there is one; it trains
   one supernet epoch per call, and the driver prints a line per epoch and writes ``<run>/supernet/state.json``
   (what ``nas status`` shows);
3. returns phase 2's strategy: the top-k architectures by shared-weight score, proposed in order (the ``given``
   strategy), which the engine runs as ordinary trials on Ray Tune (GPUs, schedulers, resume, export apply).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

from nas.errors import NasError, RunError
from nas.estimation.settings import SHARED_METRICS, SLOW_CONTROLLERS, SupernetSettings, controller_options
from nas.estimation.status import write_state
from nas.estimation.supernet import require
from nas.options import SearchOptions, TrialSetup
from nas.plugins.objective import Objective
from nas.plugins.registry import STRATEGIES, create_strategy, load
from nas.runtime.cluster import EarlyRay, check_resources, record_local_ray
from nas.storage.layout import CONTROLLER, supernet_dir
from nas.storage.records import RunSpec
from nas.storage.results import format_value
from nas.storage.store import ExperimentStore, write_json

#: phase 2's strategy: the top-k configurations, in order (strategies/given.py)
GIVEN = "strategies.given:GivenConfigurations"


class Phase(Protocol):
    """What the supernet phase is handed: the driver's search context (``nas.driver.engine.Search``, a layer
    above, so it is described here rather than imported)."""

    opts: SearchOptions
    store: ExperimentStore
    data: Any
    ray: EarlyRay
    announce: Callable[[str], None]

    @property
    def prepared(self) -> Any:  # task, space, objectives, strategy
        ...


def check(opts: SearchOptions, space: Any, objectives: list[Objective]) -> tuple[SupernetSettings, dict[str, Any]]:
    """Everything weight sharing needs, before Ray: the settings and the controller's options."""
    settings = SupernetSettings.of(opts.supernet_epochs, opts.top_k, opts.supernet_options)
    require(space, opts.space)
    name = load(STRATEGIES, opts.strategy).name
    if name in SLOW_CONTROLLERS:
        raise NasError(f"--strategy {opts.strategy} cannot be the controller of --estimation shared-weights: it refits "
                       f"a model on every child it is told, and a supernet phase tells it thousands; use rl (ENAS's "
                       f"controller), evolution or random")
    if len(objectives) != 1 or objectives[0].metric not in SHARED_METRICS:
        raise NasError(f"--objective {', '.join(map(str, objectives))} cannot be estimated with shared weights; "
                       f"accepted: one of {', '.join(SHARED_METRICS)}")
    if opts.distributed != "none":
        raise NasError(f"--distributed {opts.distributed} does not apply to the supernet phase of --estimation "
                       f"shared-weights; leave it out")
    return settings, controller_options(name, opts.strategy_options, settings)


def epoch_line(rec: dict[str, Any], metric: str, describe: Callable[[dict[str, Any]], str]) -> str:
    """``[supernet 3/10] loss=0.4123 reward_ma=0.6120 best val_accuracy=0.9250 (epoch 3) c3 s5+0 ... 2.1s``:
    the epoch's shared-weight training loss, the moving average of the sampled children's shared-weight accuracy
    (the controller's reward), and the best sampled architecture so far with its shared-weight score on the whole
    validation set. A warm-up epoch (shared weights only, uniform children) says so instead."""
    best = rec.get("best")
    if rec.get("warmup"):
        best_text = "warm-up: children drawn uniformly, the controller waits"
    elif best:
        best_text = f"best {metric}={format_value(best['metrics'].get(metric))} (epoch {best['epoch']}) " \
                    f"{describe(best['values'])}"
    else:
        best_text = "no best yet"
    reward = rec.get("reward_ma")
    return (f"[supernet {rec['epoch']}/{rec['epochs']}] loss={format_value(rec['loss'])} "
            f"reward_ma={format_value(reward) if reward is not None else '-'}  {best_text}  "
            f"{rec['children']} children {float(rec['time_s']):.1f}s")


def shared_weights(search: Phase, spec: RunSpec) -> Any:
    """Run (or finish) the supernet phase on the search's Ray (``search.ray``, started in the background with the
    trials' environment); return phase 2's strategy over the top-k architectures."""
    opts, store, announce, space, objectives = (search.opts, search.store, search.announce, search.prepared.space,
                                                search.prepared.objectives)
    settings, ctrl_options = check(opts, space, objectives)
    spec.supernet = {**settings.to_json(), "controller": opts.strategy, "controller_options": ctrl_options}
    from nas.estimation.supernet import summary
    from nas.estimation.trainer import read_phase_state

    describe = lambda values: summary(space, values)  # noqa: E731
    metric = objectives[0].metric
    done = read_phase_state(store.root)
    if done is None or done.get("ranking") is None:
        result = _run_phase(search, spec, settings, ctrl_options, describe)
    else:
        announce(f"supernet phase of run {store.name} already done ({done['epoch']} epochs); training its top "
                 f"{settings.top_k} from scratch")
        result = {"ranking": done["ranking"], "state": {k: v for k, v in done.items() if k != "controller"},
                  "controller": done["controller"]}
    ranking = result["ranking"]
    top = ranking[: settings.top_k]
    write_json(supernet_dir(store.root) / CONTROLLER, result["controller"])
    write_state(store.root, {**result["state"], "epochs": settings.epochs, "top_k": settings.top_k,
                             "phase": "trials", "ranking": ranking, "metric": metric, "updated": time.time()})
    for i, r in enumerate(top, 1):
        announce(f"top {i}/{len(top)} by shared-weight {metric}={format_value(r['metrics'].get(metric))}: "
                 f"{r['summary']}")
    hp = space.hyperparameters()
    strategy = create_strategy(GIVEN, space=hp, objective=objectives, seed=opts.seed,
                               configurations=[r["values"] for r in top])
    if store.strategy_state() is None:  # a run killed between the phases resumes phase 2 from this state
        store.write_strategy_state(strategy.get_state())
    return strategy


def _run_phase(search: Phase, spec: RunSpec, settings: SupernetSettings, ctrl_options: dict[str, Any],
               describe: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    import ray

    from nas.estimation.trainer import SupernetTrainer

    opts, store, announce, objectives = search.opts, search.store, search.announce, search.prepared.objectives
    metric = objectives[0].metric
    setup = TrialSetup.of(opts, search.prepared.task, objectives, store.root.resolve())
    search.ray.wait()
    check_resources(opts.cpus_per_trial, opts.gpus_per_trial, 1)
    store.write_spec(spec)  # from now on `nas resume` can continue the run
    if not opts.address:
        record_local_ray(store)
    actor_cls = ray.remote(SupernetTrainer).options(num_cpus=opts.cpus_per_trial, num_gpus=opts.gpus_per_trial,
                                                    max_restarts=0)
    trainer = actor_cls.remote(setup, search.data, settings, opts.strategy, ctrl_options,
                               [o.to_json() for o in objectives])
    try:
        state = _get(trainer.restore.remote())
        start = int(state["epoch"])
        history = list(state["history"])
        write_state(store.root, {"phase": "supernet", "epoch": start, "epochs": settings.epochs,
                                 "top_k": settings.top_k, "metric": metric, "reward_ma": state["reward_ma"],
                                 "best": state["best"], "history": history, "updated": time.time()})
        announce(f"supernet phase of run {store.name} ({store.root}): {settings.epochs} epochs on one worker ({opts.cpus_per_trial:g} CPUs, "
                 f"{opts.gpus_per_trial:g} GPUs), controller {opts.strategy}, then the top {settings.top_k} "
                 f"trained from scratch x {opts.epochs} epochs"
                 + (f"; continuing after epoch {start}" if start else ""))
        for epoch in range(start, settings.epochs):
            rec = _get(trainer.train_epoch.remote(epoch))
            announce(epoch_line(rec, metric, describe))
            history.append({k: v for k, v in rec.items() if k not in ("best", "epochs")})
            write_state(store.root, {"phase": "supernet", "epoch": rec["epoch"], "epochs": settings.epochs,
                                     "top_k": settings.top_k, "metric": metric, "reward_ma": rec["reward_ma"],
                                     "best": rec["best"], "history": history, "updated": time.time()})
        return _get(trainer.rank.remote())
    except KeyboardInterrupt:
        announce(f"interrupted in the supernet phase; its last epoch is saved: continue with "
                 f"`nas resume {store.name}`")
        raise
    finally:
        ray.kill(trainer)


def _get(ref: Any) -> Any:
    """``ray.get``, with a failure in the worker as one line."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        text = str(e).strip().splitlines()
        last = next((ln.strip() for ln in reversed(text) if ln.strip() and not ln.startswith(" ")), type(e).__name__)
        raise RunError(f"the supernet phase failed: {last[:400]}; after fixing the cause, continue it with "
                       f"`nas resume`") from None


__all__ = ["GIVEN", "check", "epoch_line", "shared_weights"]
