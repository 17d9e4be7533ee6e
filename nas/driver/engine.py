"""Running a search: prepare it (data, space, strategy, objective: everything that can fail before Ray), then
hand it to Ray Tune, for a new run (``run_search``) or a stored one (``resume_search``).

The rooms around it: ``nas.options`` (what was asked), ``nas.runtime.cluster`` (the Ray it runs on),
``nas.driver.searcher`` (strategy <-> Tune, trial records), ``nas.trials.single`` / ``nas.trials.horovod`` (the
trials themselves), ``nas.storage.store`` (the run directory).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from nas.driver import warmstart
from nas.driver.inputs import kept, label
from nas.errors import STORAGE_ERRNOS, NasError, RunError, StorageError
from nas.estimation import SHARED
from nas.estimation.phase import shared_weights
from nas.options import RESUME_MAY_CHANGE, Budget, SearchOptions, SearchResult, TrialSetup
from nas.plugins import params as P
from nas.plugins.data import Dataset, check_spec, load_data, loads_keras
from nas.plugins.objective import Objective, parse_objectives
from nas.plugins.registry import (
    SPACES,
    STRATEGIES,
    check_class_source,
    check_options,
    check_ref,
    create_space,
    create_strategy,
    source_tasks,
    space_class,
    versioned_options,
)
from nas.plugins.task import is_classification, make_task
from nas.runtime import backends
from nas.runtime.cluster import (
    EarlyRay,
    check_reachable,
    check_resources,
    cleanup_local_ray,
    local_node,
    package_versions,
    record_local_ray,
    trial_resources,
    tune_parameters,
)
from nas.runtime.quiet import quiet_environment
from nas.storage.layout import RAY
from nas.storage.lock import FILES as LOCK_FILES
from nas.storage.lock import owning
from nas.storage.records import DataSpec, RunSpec, TrialStatus
from nas.storage.results import rank
from nas.storage.store import ExperimentStore, check_name, generate_name, open_storage
from nas.trials.horovod import require_horovod, train_trial_horovod

Printer = Callable[[str, dict[str, Any]], None]
PrinterFactory = Callable[[Objective, Budget], Printer]


class Prepared(NamedTuple):
    """A search prepared before Ray: everything built from its options and data (``prepare``)."""

    task: Any  # nas.plugins.task.Task
    space: Any  # nas.plugins.space.SearchSpace
    objectives: list[Objective]
    strategy: Any  # nas.plugins.strategy.Strategy


@dataclass
class Search:
    """One driver's search, new or resumed: what every step after the preparation is handed (instead of each
    step passing the same ten values down)."""

    opts: SearchOptions
    store: ExperimentStore
    data: Dataset
    prepared: Prepared
    ray: EarlyRay
    printer_factory: PrinterFactory | None
    announce: Callable[[str], None]

    def shared_weights(self, spec: RunSpec) -> Any:
        """The supernet phase (``--estimation shared-weights``), run or finished; returns phase 2's strategy."""
        return shared_weights(self, spec)


def check(opts: SearchOptions) -> None:
    """What can fail in milliseconds, without Keras or data: the options, the plugins' names, the cluster's
    address (or the local machine's size). Runs before Ray starts, so most bad input never starts it."""
    opts.check()  # the one check of the options, before anything is loaded
    opts.backend = backends.check(opts.backend)
    backends.select(opts.backend)  # a no-op when the caller selected it before importing Keras (the CLI does)
    if opts.distributed == "horovod":  # one line saying how to install it
        require_horovod()
    check_ref(SPACES, opts.space)
    check_ref(STRATEGIES, opts.strategy)
    for group, ref, options in ((SPACES, opts.space, opts.space_options),
                                (STRATEGIES, opts.strategy, opts.strategy_options)):
        check_class_source(group, ref)  # from the plugins' source: no import of Keras yet
        check_options(group, ref, options)
    if opts.objectives:
        parse_objectives(opts.objectives)
    if opts.data:
        check_spec(opts.data, opts.target, opts.window)
    if opts.address:  # an address nothing answers at is one line now, not after Keras's import
        check_reachable(opts.address, opts.connect_timeout)
    else:  # a request this machine cannot meet, likewise (checked again once Ray is up)
        check_resources(opts.cpus_per_trial, opts.gpus_per_trial, opts.max_concurrent, opts.ranks,
                        nodes=local_node(opts.num_cpus, opts.num_gpus, opts.gpus_per_trial))


def check_warm_start(opts: SearchOptions) -> None:
    """A new search's ``--warm-start`` runs readable (and their objectives, when ``--objective`` is given) and its
    ``--enqueue`` file read into the list the run keeps, before Ray starts. Not on resume: the strategy's state
    holds what they told it, and an earlier run deleted since must not stop the resume."""
    if opts.warm_start:
        stores = warmstart.open_runs(opts.warm_start, opts.storage)
        if opts.objectives:
            warmstart.check_objectives(stores, parse_objectives(opts.objectives))
    opts.enqueue = warmstart.read_configurations(opts.enqueue) or None
    if opts.enqueue and len(opts.enqueue) > opts.trials:
        raise NasError(f"--enqueue holds {len(opts.enqueue)} configurations, more than --trials {opts.trials}; raise "
                       f"--trials or enqueue fewer")


def load(opts: SearchOptions, data: Dataset | None = None, early: bool = False) -> Dataset | None:
    """The search's data, loaded and checked (unless given in memory). ``early``: before Ray starts, so that a
    bad file or label fails at once (digits, .npz and .csv files load in a fraction of a second with numpy and
    pandas); None for Keras's data sets, whose loading imports TensorFlow: they load while Ray starts."""
    if data is not None:
        return data
    if early and loads_keras(opts.data):
        return None
    return load_data(opts.data, target=opts.target, window=opts.window, seed=opts.seed or 0)


def check_task(opts: SearchOptions, data: Dataset | None) -> None:
    """The data's labels checked for the search's task before Ray starts (a label that is no class number, a
    validation class never trained on, a ``--normal-class`` that is no label), where the data is loaded by then
    and the task is known without importing the space: ``--task``, or the space's ``tasks`` read from its
    source. ``prepare`` makes the task again (and checks whatever this could not)."""
    if data is None:
        return
    tasks = None if opts.task else source_tasks(opts.space)
    if opts.task or tasks:
        make_task(data, opts.task or _default_task(tasks, data), normal_class=opts.normal_class)


def builds_models(opts: SearchOptions) -> bool:
    """Whether preparing the search builds models to check an option (``--objective``: the metrics trials
    report; ``--max-params``: the space's smallest model). Such a search is prepared before Ray starts, so that
    a refusal starts none (seconds of Keras's import then no longer overlap Ray's start-up)."""
    return bool(opts.objectives or opts.max_params)


def prepare(opts: SearchOptions, data: Dataset, space_version: str | None = None) -> Prepared:
    """Build the task, space and strategy and check the objective (imports Keras and the framework).
    ``space_version``: a resumed run's, so that its space (here, in the strategy and in every trial, through
    ``opts.space_options``) is the one it was searched with, not a newer version of it."""
    space_cls = space_class(opts.space)
    opts.space_options = versioned_options(space_cls, opts.space_options, space_version)
    kind = opts.task or _default_task(space_cls.tasks, data)
    task = make_task(data, kind, normal_class=opts.normal_class)
    space = create_space(opts.space, task=task, **opts.space_options)
    hp = space.hyperparameters()
    objectives = parse_objectives(opts.objectives or [space.default_objective()])
    backends.keep_driver_off_gpus(opts.backend)
    if opts.objectives:  # a space's own default objective is one its trials report: no model need be trained
        check_objectives(space, data, objectives)
    if opts.max_params:
        shown = type(space).__name__ if str(opts.space).endswith(".pkl") else opts.space  # in memory: its class
        check_max_params(space, opts.max_params, shown, opts.seed or 0)
    strategy = create_strategy(opts.strategy, space=hp, objective=objectives, seed=opts.seed, **opts.strategy_options)
    return Prepared(task, space, objectives, strategy)


#: what every trial reports besides the model's own metrics
TRIAL_METRICS = ("params", "latency_ms", "latency_ms_b256", "train_time_s", "epochs", "best_epoch")


def reported_metrics(space: Any, prepared: Any) -> set[str] | None:
    """The metric names trials of ``space`` report: the compiled model's (and their ``val_`` forms), the
    space's own per-epoch metrics and the runner's. Found by training the default model on one small batch of
    ``prepared`` (the data as ``space.prepare_data`` made it)."""
    import keras

    hp = space.hyperparameters()
    n = min(8, len(prepared.x_train))
    rng = np.random.default_rng(0)
    # the default point first, then a few seeded random ones: a space may refuse some configurations
    for values in [P.default_values(hp)] + [P.sample_values(hp, rng) for _ in range(3)]:
        try:
            model = space.build(P.to_hp(hp, values))
            logs = model.train_on_batch(prepared.x_train[:n], prepared.y_train[:n], return_dict=True)
            break
        except Exception:
            keras.backend.clear_session(free_memory=False)
    else:
        return None  # nothing builds: trials will fail with their own errors; the names cannot be known
    names = set(logs) | {f"val_{k}" for k in logs} | set(TRIAL_METRICS)
    small = prepared.replace(x_val=prepared.x_val[:n], y_val=prepared.y_val[:n]) if isinstance(prepared, Dataset) else prepared
    try:
        names |= set(space.trial_metrics(model, small))
    except Exception:  # a space's own metrics may need the full validation set; they are optional here
        pass
    keras.backend.clear_session(free_memory=False)
    return names


def check_max_params(space: Any, max_params: int, name: str, seed: int, tries: int = 24) -> None:
    """``--max-params`` that no configuration meets is one line before any trial (every trial would be
    infeasible): the space's smallest point, its default and ``tries`` seeded random ones are built (no
    training; a fraction of a second for the built-in spaces) and the search is refused when none fits."""
    import keras

    hp = space.hyperparameters()
    rng = np.random.default_rng(seed)
    points = [P.smallest_values(hp), P.default_values(hp)] + [P.sample_values(hp, rng) for _ in range(tries)]
    smallest: tuple[int, dict[str, Any]] | None = None
    for values in points:
        try:
            n = int(space.build(P.to_hp(hp, values)).count_params())
        except Exception:  # a configuration the space refuses: its trials report that themselves
            continue
        finally:
            keras.backend.clear_session(free_memory=False)
        if n <= max_params:
            return
        if smallest is None or n < smallest[0]:
            smallest = (n, values)
    if smallest is not None:
        shown = " ".join(f"{k}={v}" for k, v in smallest[1].items())
        raise NasError(f"--max-params {max_params:,} is below every model of space {name!r}: none of the "
                       f"{len(points)} configurations tried fits, the smallest has {smallest[0]:,} parameters "
                       f"({shown}); give --max-params >= {smallest[0]:,}, or leave it out")


def check_objectives(space: Any, data: Any, objectives: list[Objective]) -> None:
    """An objective naming a metric no trial reports fails before any trial, listing the ones that exist."""
    known = reported_metrics(space, space.prepare_data(data))
    if known is None:
        return
    for o in objectives:
        if o.metric not in known:
            raise NasError(f"--objective {o.metric!r} is not a metric trials of space {space.name!r} report; "
                           f"known: {', '.join(sorted(known))}")


def _default_task(tasks: Any, data: Any) -> str:
    kinds = list(tasks)
    if not is_classification(data) and "regression" in kinds:
        return "regression"
    return kinds[0]


def run_search(opts: SearchOptions, printer_factory: PrinterFactory | None = None,
               announce: Callable[[str], None] | None = None, data: Dataset | None = None, space: Any = None,
               strategy: Any = None, fit: dict[str, Any] | None = None) -> SearchResult:
    """Run a whole search and return its trials; the store holds everything written along the way.
    ``data``, ``space``, ``strategy``: given in memory (the Python API), instead of ``opts``' names."""
    announce = announce or (lambda s: None)
    env = quiet_environment(opts.verbose)
    storage = open_storage(opts.storage)  # a writable directory, before anything starts
    # "" is a name (refused by check_name), not "no name"
    name = check_name(opts.name) if opts.name is not None else generate_name(label(space, opts.space),
                                                                 label(strategy, opts.strategy))
    store = ExperimentStore(storage / name)
    taken = RunError(f"a run named {name!r} already exists in {storage}; choose another --name, "
                     f"or continue it with `{store.command('resume')}`")
    if store.exists():  # a finished or interrupted run: left untouched (a running one is named by its lock below)
        raise taken
    with owning(store.root, name, announce, fresh=lambda: not store.exists()) as lock:
        if store.exists() or store.has_files(ignore=LOCK_FILES):
            raise taken
        with kept(store, opts, data, space, strategy, fit):  # in-memory inputs become files of the run
            check(opts)
            check_warm_start(opts)
            data_given = data is not None
            data = load(opts, data, early=True)  # before Ray: a bad file or label is one line at once
            check_task(opts, data)
            first = None
            if builds_models(opts):  # its checks build models: done before Ray, so a refusal starts none
                data = load(opts, data)
                first = prepare(opts, data)
            with _early_ray(opts, env, store) as ray:  # Ray starts while Keras is imported and the search prepared
                data = load(opts, data)
                search = Search(opts, store, data, first or prepare(opts, data), ray, printer_factory, announce)
                shown = {k: label(obj, getattr(opts, k)) if obj is not None else getattr(opts, k)
                         for k, obj in (("space", space), ("strategy", strategy))}  # not a .pkl path
                announce(f"searching space {shown['space']!r} with strategy {shown['strategy']!r}: {opts.trials} "
                         f"trials x {opts.epochs} epochs on {'in-memory arrays' if data_given else opts.data}")
                return lock.done(_new_run(search))


def _new_run(search: Search) -> SearchResult:
    opts, (task, space, objectives, strategy), data = search.opts, search.prepared, search.data
    spec = RunSpec(
        name=search.store.name, space=opts.space, strategy=opts.strategy, task=task,
        data=DataSpec(opts.data, opts.target, opts.window, data.describe()), objectives=list(objectives),
        trials=opts.trials, epochs=opts.epochs, space_version=getattr(space, "version", "1"), backend=opts.backend,
        strategy_options=opts.strategy_options, space_options=opts.space_options, seed=opts.seed,
        resources={"cpus_per_trial": opts.cpus_per_trial, "gpus_per_trial": opts.gpus_per_trial,
                   "max_concurrent": opts.max_concurrent, "address": opts.address,
                   "workers_per_trial": opts.workers_per_trial, "distributed": opts.distributed},
        hyperparameters=P.space_summary(space.hyperparameters()),
        options={k: v for k, v in asdict(opts).items() if k not in ("name", "storage", "verbose", "trials")},
        created=time.time(), versions=package_versions(), command=" ".join(sys.argv),
    )
    if opts.estimation == SHARED:  # weight sharing: the supernet phase, whose top-k are the trials
        strategy = search.shared_weights(spec)
    warmstart.enqueue(strategy, opts.enqueue or [])  # proposed first; a bad one is one line before anything
    if opts.warm_start:  # earlier runs' trials told first (nas.driver.warmstart)
        warmstart.warm_start(strategy, warmstart.open_runs(opts.warm_start, opts.storage), list(objectives),
                             search.announce)
    return _tune(search, spec, strategy, replay=[], budget=Budget(opts.trials))


def resume_search(name: str, storage: str | None = None, changes: dict[str, Any] | None = None,
                  printer_factory: PrinterFactory | None = None,
                  announce: Callable[[str], None] | None = None) -> SearchResult:
    """Continue a stored search exactly where it stopped.

    Completed trials are kept and never re-run; trials that were running resume from their last epoch
    checkpoint; the strategy continues from its saved state, so a seeded search proposes what an uninterrupted
    one would have. ``changes`` may raise the budget (``trials``) or change resources; changing what is
    searched (space, strategy, data, objective, epochs, seed) is refused.
    """
    announce = announce or (lambda s: None)
    store = ExperimentStore.open(name, open_storage(storage, create=False))
    with owning(store.root, store.name, announce) as lock:  # one driver per run; a killed one left no lock
        return lock.done(_reopen(store, changes, printer_factory, announce))


def _reopen(store: ExperimentStore, changes: dict[str, Any] | None, printer_factory: PrinterFactory | None,
            announce: Callable[[str], None]) -> SearchResult:
    name = store.name
    spec = store.spec()
    store.trials()  # every record readable (else RunError naming it) before anything starts or is written
    if spec.options is None:
        raise RunError(f"{store.spec_path} has no 'options' entry; this run cannot be resumed")
    try:
        opts = SearchOptions(**spec.search_options())
    except TypeError as e:  # an option this version does not have
        raise RunError(f"{store.spec_path}: its 'options' cannot be read by this version ({e}); nothing was changed") \
            from None
    try:
        opts.check()  # as stored, before any change: a bad value there is the file's, not a flag's
    except NasError as e:
        raise RunError(f"{store.spec_path}: its 'options' hold a value this version refuses ({e}); nothing was "
                       f"changed") from None
    for key, value in (changes or {}).items():
        if key == "enqueue":  # a file's path, as the run was started with: the run keeps its list
            value = warmstart.read_configurations(value) or None
        if key == "max_concurrent" and opts.deterministic and value is not None and value != opts.max_concurrent:
            raise RunError(f"run {name!r} is --deterministic with --max-concurrent {opts.max_concurrent}, which "
                           f"decides its sequence of proposals; resume it without --max-concurrent (or with "
                           f"{opts.max_concurrent})")
        if key in RESUME_MAY_CHANGE:
            setattr(opts, key, value)
        elif value != getattr(opts, key):
            flag = "--" + key.replace("_", "-")
            raise RunError(f"run {name!r} was searched with {flag} {getattr(opts, key)!r}; resuming with {flag} "
                           f"{value!r} contradicts it (start a new run with another --name instead)")
    opts.name, opts.storage = store.name, str(store.root.parent)
    env = quiet_environment(opts.verbose)
    cleanup_local_ray(store)

    check(opts)
    data = load(opts, early=True)
    with _early_ray(opts, env, store) as ray:
        data = load(opts, data)
        search = Search(opts, store, data, prepare(opts, data, spec.space_version), ray, printer_factory, announce)
        strategy = search.prepared.strategy
        if opts.estimation == SHARED:  # weight sharing: finish the supernet phase first (a no-op once it is done)
            strategy = search.shared_weights(spec)
        return _resume(search, spec, strategy)


def _resume(search: Search, spec: RunSpec, strategy: Any) -> SearchResult:
    opts, store, announce, objectives = search.opts, search.store, search.announce, search.prepared.objectives
    state = store.strategy_state()
    if state is None:
        raise RunError(f"{store.strategy_path} is missing: the strategy's state cannot be restored")
    try:
        strategy.set_state(state)
    except (KeyError, TypeError, ValueError, NasError) as e:
        raise RunError(f"{store.strategy_path} cannot be used to resume ({type(e).__name__}: {e}); "
                       f"nothing was changed") from None
    records = {t.trial_id: t for t in store.trials()}
    told = {o.trial_id: o.metrics for o in strategy.history}
    for rec in records.values():  # the strategy was told, but the driver died before the record said so
        if not rec.ended and rec.trial_id in told:
            rec.status = TrialStatus.COMPLETED if told[rec.trial_id] is not None else TrialStatus.FAILED
            rec.finished = rec.updated
            store.write_trial(rec)
    replay, untold = [], {}
    for trial_id, values in list(strategy.pending.items()):
        rec = records.get(trial_id)
        if rec and rec.ended:  # done, but the driver died before telling the strategy (--deterministic: not yet)
            metrics = rec.metrics if rec.status == TrialStatus.COMPLETED else None
            if opts.deterministic:
                untold[trial_id] = metrics  # told in its turn (nas.driver.searcher.StrategySearcher)
            else:
                strategy.tell(trial_id, metrics)
        else:  # was running or about to: run it again, from its last epoch checkpoint
            replay.append((trial_id, values, list(rec.history) if rec else []))
    replayed = {t for t, _, _ in replay}
    done = sum(r.ended for r in records.values() if r.trial_id not in replayed)
    if opts.trials < done:
        raise RunError(f"--trials {opts.trials} is below the {done} trials this run has already finished")
    spec.trials = opts.trials
    spec.resumed.append(time.time())
    store.write_strategy_state(strategy.get_state())
    if opts.trials == done:
        announce(f"run {store.name} already has its {done} trials; to run more, raise the budget: "
                 f"{store.command('resume', '--trials', str(done + 10))}")
        return _result(store, objectives[0], 0.0, interrupted=False)
    announce(f"resuming run {store.name}: {done} of {opts.trials} trials done, {len(replay)} to continue")
    return _tune(search, spec, strategy, replay=replay, budget=Budget(opts.trials, finished=done), untold=untold)


def _result(store: ExperimentStore, objective: Objective, wall: float, interrupted: bool,
            stopped: str | None = None) -> SearchResult:
    trials = store.trials()
    ranked = rank(trials, objective)
    return SearchResult(store.name, store.root, ranked[0] if ranked else None, trials, objective, wall,
                        interrupted=interrupted, stopped=stopped)


def make_scheduler(opts: SearchOptions, objective: Objective) -> Any:
    """Ray Tune's early-stopping schedulers, judging trials by their per-epoch reports of the objective.

    `hyperband` is Ray's asynchronous HyperBand (several ASHA brackets): it stops trials rather than pausing
    them, so it needs no pause/resume protocol from the trainable.
    """
    from ray.tune.schedulers import ASHAScheduler, AsyncHyperBandScheduler, MedianStoppingRule

    common = dict(time_attr="epoch", metric=objective.metric, mode=objective.mode)
    if opts.scheduler == "asha":
        return ASHAScheduler(max_t=opts.epochs, grace_period=opts.min_epochs, reduction_factor=3, **common)
    if opts.scheduler == "hyperband":
        return AsyncHyperBandScheduler(max_t=opts.epochs, grace_period=opts.min_epochs, reduction_factor=3,
                                       brackets=3, **common)
    if opts.scheduler == "median":
        return MedianStoppingRule(grace_period=opts.min_epochs, min_samples_required=3, **common)
    return None


def _early_ray(opts: SearchOptions, env: dict[str, str], store: ExperimentStore) -> EarlyRay:
    """Ray for this search, started in the background; its workers run the backend on their share of a GPU."""
    env = {**env, **backends.worker_env(opts.backend or backends.default(), opts.cpus_per_trial, opts.gpus_per_trial)}
    return EarlyRay(opts.address, opts.verbose, opts.num_cpus, opts.num_gpus, env, opts.connect_timeout,
                    run_dir=store.root)


def deterministic_lag(concurrent: int) -> int:
    """--deterministic's L for K trials at once: trial n is asked once trial n-L is told (the trade-off and its
    measurements: ``nas.driver.searcher.StrategySearcher``)."""
    return 2 * concurrent


def _tune(search: Search, spec: RunSpec, strategy: Any, replay: list, budget: Budget,
          untold: dict[str, Any] | None = None) -> SearchResult:
    """Run the trials on Ray Tune: ``strategy`` proposes (after ``replay``, the trials a killed driver left
    running), ``budget`` counts them; ``untold``: --deterministic, trials a killed driver left finished but not
    yet told (their turn comes)."""
    from ray import tune

    from nas.driver.searcher import FailureGuard, LostTrials, StrategySearcher, TrialRecorder, WorkerRecycler
    from nas.trials.single import train_trial
    from nas.trials.tensorboard import run_metrics, write_hparams_config
    from nas.trials.worker import GENERATION_KEY

    opts, store, data, ray, announce = search.opts, search.store, search.data, search.ray, search.announce
    objectives, printer_factory = search.prepared.objectives, search.printer_factory
    setup = TrialSetup.of(opts, search.prepared.task, objectives, store.root.resolve())
    printer = printer_factory(objectives[0], budget) if printer_factory else None
    for rec in store.trials() if printer else []:  # earlier sessions' trials count for "best so far"
        printer("earlier", rec)
    started = time.time()
    guard = FailureGuard(opts.max_consecutive_failures)
    ray.wait()
    concurrent = check_resources(opts.cpus_per_trial, opts.gpus_per_trial, opts.max_concurrent, opts.ranks)
    if opts.deterministic and opts.max_concurrent is None:  # the K of its sequence, kept by the run for resume
        opts.max_concurrent = spec.options["max_concurrent"] = concurrent
        spec.resources["max_concurrent"] = concurrent
    if opts.deterministic and opts.scheduler != "none":
        announce(f"--deterministic with --scheduler {opts.scheduler}: proposals follow a fixed sequence, but which "
                 f"trials the scheduler stops early depends on when trials report, so results may differ run to run")
    store.start_session(spec)  # writes the spec only now: a request Ray can never run leaves no half-made run
    if not opts.address:
        record_local_ray(store)
    if not replay and not budget.finished:
        announce(f"run {store.name} -> {store.root}")
    recycler = WorkerRecycler(opts.max_worker_rss_mb, announce)
    searcher = StrategySearcher(strategy, on_state=lambda state: guard.write(store.write_strategy_state, state),
                                replay=replay, recycler=recycler, budget=budget,
                                deterministic=deterministic_lag(opts.max_concurrent) if opts.deterministic else None,
                                untold=untold)
    recorder = TrialRecorder(store, objectives[0], printer or (lambda kind, rec: None), guard=guard,
                             max_epochs=opts.epochs, recycler=recycler, keep_checkpoints=opts.keep_checkpoints)
    ranks, cpus, gpus, mode = opts.ranks, opts.cpus_per_trial, opts.gpus_per_trial, opts.distributed

    def resources(config: dict[str, Any]) -> Any:  # a pure function of the config: Tune may call a copy
        return trial_resources(ranks, cpus, gpus, mode, generation=config.get(GENERATION_KEY, 0))

    run = train_trial_horovod if opts.distributed == "horovod" else train_trial
    sessions = store.root / RAY
    session = f"session-{len(list(sessions.glob('session-*'))) if sessions.is_dir() else 0}"
    with tune_parameters(run, data=data, setup=setup) as trainable:
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=make_scheduler(opts, objectives[0]),
                num_samples=-1,  # the searcher counts the budget (StrategySearcher.suggest)
                max_concurrent_trials=concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=session,
                storage_path=str(sessions.resolve()),
                verbose=2 if opts.verbose else 0,
                callbacks=[recorder, LostTrials(searcher, announce, recorder)],
                stop=guard,
                failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            ),
        )
        try:
            tuner.fit()
        except OSError as e:  # Ray Tune's own experiment state (written by the driver) could not be written
            if e.errno not in STORAGE_ERRNOS:
                raise
            # Tune has already stopped its trials (tune.run cleans up before it re-raises); its failed write
            # names no file (json.dump into an open file), so the line names the folder Tune writes to
            guard.storage = guard.storage or f"cannot write {e.filename or sessions / session}: {e.strerror}"
        finally:  # TensorBoard's HParams experiment: every hyperparameter's domain and the metrics reported
            guard.write(write_hparams_config, store.root, strategy.space, run_metrics(store.trials()),
                        [o.metric for o in objectives])
            store.end_session(spec)
    if guard.storage:  # full or read-only storage: what was written before stays, and the run resumes
        raise StorageError(f"{guard.storage}; the search stopped and every record written before is intact; "
                           f"free space or fix the storage, then continue with: {store.command('resume')}")
    interrupted = not budget.spent and not searcher.exhausted and not guard.tripped
    if interrupted:  # Ctrl-C: trials still running will continue from their last epoch checkpoint
        for rec in store.trials():
            if rec.status == TrialStatus.RUNNING:
                rec.status = TrialStatus.PENDING
                store.write_trial(rec)
    return _result(store, objectives[0], time.time() - started, interrupted, stopped=guard.reason)
