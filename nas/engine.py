"""Running a search on Ray: everything between the CLI's arguments and the trial runner."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from nas import params as P
from nas.errors import NasError, ResourceError, RunError
from nas.objective import Objective, parse_objectives
from nas.store import ExperimentStore, check_name, default_storage, generate_name

PACKAGES = ("nas", "tensorflow", "tensorflow-cpu", "keras", "keras-tuner", "ray", "optuna", "numpy", "scikit-learn")


SCHEDULERS = ("none", "asha", "hyperband", "median")


@dataclass
class SearchOptions:
    space: str = "mlp"
    strategy: str = "random"
    data: str = "digits"
    target: str | None = None
    window: int | None = None
    task: str | None = None
    normal_class: int | None = None
    objectives: list[str] = field(default_factory=list)
    trials: int = 10
    epochs: int = 5
    seed: int | None = 0
    name: str | None = None
    storage: str | None = None
    address: str | None = None
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    strategy_options: dict[str, Any] = field(default_factory=dict)
    space_options: dict[str, Any] = field(default_factory=dict)
    num_cpus: int | None = None  # local Ray only: CPUs it may use (default: all)
    num_gpus: int | None = None  # local Ray only: logical GPUs it advertises
    scheduler: str = "none"  # early stopping: asha | hyperband | median | none
    min_epochs: int = 1  # grace period before a scheduler may stop a trial
    max_params: int | None = None  # constraint: reject larger models before training
    max_latency_ms: float | None = None  # constraint: reject slower models before training
    max_failures: int = 0  # retries of a trial whose worker died, from its last checkpoint
    max_consecutive_failures: int = 5  # stop the search after this many failed trials in a row (0: never)
    workers_per_trial: int = 1  # data-parallel ranks per trial (--distributed horovod)
    distributed: str = "none"  # none | horovod | mirrored
    scale_lr: bool = False  # horovod: multiply the learning rate by the number of ranks
    max_worker_rss_mb: float | str = "auto"  # replace reused workers above this RSS ("auto": 1.5x fresh; "off")
    verbose: bool = False

    def check(self) -> None:
        if not isinstance(self.trials, int) or self.trials < 1:
            raise NasError(f"--trials {self.trials!r} is not valid; give an integer >= 1")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise NasError(f"--epochs {self.epochs!r} is not valid; give an integer >= 1")
        if self.scheduler not in SCHEDULERS:
            raise NasError(f"--scheduler {self.scheduler!r} is not valid; accepted: {', '.join(SCHEDULERS)}")
        if not isinstance(self.min_epochs, int) or not 1 <= self.min_epochs <= self.epochs:
            raise NasError(f"--min-epochs {self.min_epochs!r} is not valid; give an integer from 1 to --epochs "
                           f"({self.epochs})")
        if self.max_params is not None and self.max_params < 1:
            raise NasError(f"--max-params {self.max_params!r} is not valid; give an integer >= 1")
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            raise NasError(f"--max-latency-ms {self.max_latency_ms!r} is not valid; give a number > 0")
        if self.max_failures < 0 or self.max_consecutive_failures < 0:
            raise NasError("--max-failures and --max-consecutive-failures must be >= 0")
        if self.max_worker_rss_mb not in ("auto", "off"):
            try:
                ok = float(self.max_worker_rss_mb) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise NasError(f"--max-worker-rss-mb {self.max_worker_rss_mb!r} is not valid; give a number of MB "
                               f"> 0, 'auto' (1.5x a fresh worker's) or 'off'")
            self.max_worker_rss_mb = float(self.max_worker_rss_mb)
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise NasError(f"--max-concurrent {self.max_concurrent!r} is not valid; give an integer >= 1")
        if not self.cpus_per_trial > 0:
            raise NasError(f"--cpus-per-trial {self.cpus_per_trial!r} is not valid; give a number > 0")
        from nas.distributed import MODES

        if self.distributed not in MODES:
            raise NasError(f"--distributed {self.distributed!r} is not valid; accepted: {', '.join(MODES)}")
        if not isinstance(self.workers_per_trial, int) or self.workers_per_trial < 1:
            raise NasError(f"--workers-per-trial {self.workers_per_trial!r} is not valid; give an integer >= 1")
        if self.workers_per_trial > 1 and self.distributed != "horovod":
            raise NasError(f"--workers-per-trial {self.workers_per_trial} needs --distributed horovod "
                           f"(--distributed mirrored uses the GPUs of one worker: raise --gpus-per-trial instead)")
        if self.gpus_per_trial < 0 or (self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial)):
            raise NasError(
                f"--gpus-per-trial {self.gpus_per_trial!r} is not valid; give 0, a fraction below 1, or a whole number"
            )


@dataclass
class SearchResult:
    name: str
    directory: Path
    best: dict[str, Any] | None
    trials: list[dict[str, Any]]
    objective: Objective
    wall_s: float
    interrupted: bool = False
    stopped: str | None = None  # why the search stopped early (too many consecutive failures)


# -- quiet by default ---------------------------------------------------------------------------------------
# Always set for the trial workers (a user's own setting wins). Tune gives a reused worker's previous trial
# thread 2 s to end before the next trial; a Keras fit stopped by a scheduler can take longer to unwind, and the
# next trial then fails to start (ray-project/ray#29268).
WORKER_ENV = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "120"}

QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",  # also removes the oneDNN banner; results stay deterministic
    "ABSL_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "RAY_DEDUP_LOGS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONWARNINGS": "ignore",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}


def quiet_environment(verbose: bool) -> dict[str, str]:
    # Resume does not use Ray Tune's own experiment snapshots (it re-runs trials completed within the last
    # snapshot period, ../shared/STACK.md): our run store is written after every event and is what resumes.
    always = ("RAY_USAGE_STATS_ENABLED",)
    env = dict(QUIET_ENV) if not verbose else {k: QUIET_ENV[k] for k in always}
    for k, v in env.items():
        if k in always:
            os.environ[k] = v
        else:  # a user's own setting wins
            os.environ.setdefault(k, v)
    for k, v in WORKER_ENV.items():
        os.environ.setdefault(k, v)
    env = {k: os.environ[k] for k in [*env, *WORKER_ENV]}
    if not verbose:
        warnings.filterwarnings("ignore")
        # Ray Tune logs each failed trial's traceback at ERROR; the recorder already reports it in one line
        for name in ("ray", "ray.tune", "ray.train", "ray.data", "tensorflow", "absl", "optuna"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    return env


@contextlib.contextmanager
def _quiet_raylet_errors(verbose: bool) -> Iterator[None]:
    """Ray's driver prints the cluster's error channel ("(raylet) A worker died ...", e.g. when Tune stops the
    actor of a failed trial) to stdout even with ``log_to_driver=False``; hide it unless --verbose."""
    from ray._private import worker as ray_worker

    original = getattr(ray_worker, "print_to_stdstream", None)
    if verbose or original is None:
        yield
        return

    def printer(data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        if data.get("pid") != "raylet":
            original(data, *args, **kwargs)

    ray_worker.print_to_stdstream = printer
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = original


@contextlib.contextmanager
def ray_runtime(address: str | None, verbose: bool, num_cpus: int | None = None,
                num_gpus: int | None = None, env: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Connect to ``address`` or start a local Ray bound to 127.0.0.1 (dashboard on localhost only);
    shut down on exit only what this call started."""
    import ray

    runtime_env = {"env_vars": dict(env or {})}
    kwargs: dict[str, Any] = dict(
        log_to_driver=verbose,
        logging_level=logging.INFO if verbose else logging.ERROR,
        runtime_env=runtime_env,
        ignore_reinit_error=True,
    )
    if address:
        try:
            info = ray.init(address=address, **kwargs)
        except Exception as e:  # ConnectionError, TimeoutError, ValueError for a malformed address
            raise ResourceError(f"cannot connect to the Ray cluster at --address {address!r}: {e}") from None
    else:
        with _loopback_only():
            info = ray.init(
                address="local",  # always our own instance: a bare ray.init() joins any cluster `ray start` left
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=False,
                dashboard_host="127.0.0.1",
                _node_ip_address="127.0.0.1",
                **kwargs,
            )
    with _quiet_raylet_errors(verbose):  # until Ray is down: its listener thread may print while it stops
        try:
            yield {"address": getattr(info, "address_info", {}).get("address", address), "local": not address}
        finally:
            ray.shutdown()


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Start the local Ray with every server on 127.0.0.1. On Linux Ray turns ``_node_ip_address="127.0.0.1"``
    into the host's network address and listens on all interfaces; its single-machine mode (the one it uses on
    macOS and Windows) keeps them on the loopback address. Set while Ray starts its processes (they inherit it),
    then put back, so that a later ``--address`` in this process joins clusters as usual."""
    from ray._private import ray_constants

    key = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    before_env, before_const = os.environ.get(key), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[key], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_const
        if before_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before_env


def check_resources(cpus: float, gpus: float, concurrent: int | None, workers: int = 1) -> int:
    """Fail at once for a request no node can ever satisfy; return how many trials can run at once.
    ``workers`` > 1: a trial is that many ranks of ``cpus``/``gpus`` each (plus a small driver bundle), which
    may spread over nodes: each rank must fit some node, and the cluster must hold all of them at once."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if not nodes:
        raise ResourceError("the Ray cluster has no live nodes")
    if workers > 1:
        return _check_ranks(nodes, cpus, gpus, concurrent, workers)
    fits = _slots(nodes, cpus, gpus)
    if not fits:
        max_cpu, max_gpu = _largest(nodes)
        raise ResourceError(
            f"no node can ever run a trial asking --cpus-per-trial {cpus:g} --gpus-per-trial {gpus:g}: "
            f"the largest node has {max_cpu:g} CPUs and {max_gpu:g} GPUs ({len(nodes)} node(s)); "
            f"ask for at most that, or add nodes with more"
        )
    slots = int(sum(fits))
    return max(1, min(concurrent, slots) if concurrent else slots)


def _slots(nodes: list[dict[str, Any]], cpus: float, gpus: float) -> list[int]:
    """How many trials of this size each node that can hold one fits."""
    out = []
    for n in nodes:
        res = n.get("Resources", {})
        if res.get("CPU", 0) >= cpus and res.get("GPU", 0) >= gpus:
            out.append(int(min(res.get("CPU", 0) // cpus, res.get("GPU", 0) // gpus if gpus else 1 << 30)))
    return out


def _largest(nodes: list[dict[str, Any]]) -> tuple[float, float]:
    return (max(n.get("Resources", {}).get("CPU", 0) for n in nodes),
            max(n.get("Resources", {}).get("GPU", 0) for n in nodes))


def _check_ranks(nodes: list[dict[str, Any]], cpus: float, gpus: float, concurrent: int | None,
                 workers: int) -> int:
    from nas.distributed import DRIVER_CPUS

    slots = _slots(nodes, cpus, gpus)
    total_cpu = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
    need = f"--workers-per-trial {workers} x (--cpus-per-trial {cpus:g} --gpus-per-trial {gpus:g})"
    if not slots or sum(slots) < workers or total_cpu < workers * cpus + DRIVER_CPUS:
        max_cpu, max_gpu = _largest(nodes)
        raise ResourceError(
            f"the Ray cluster can never run a trial asking {need} plus {DRIVER_CPUS:g} CPU for its driver: it has "
            f"{total_cpu:g} CPUs in {len(nodes)} node(s), the largest with {max_cpu:g} CPUs and {max_gpu:g} GPUs; "
            f"ask for less, or add nodes"
        )
    by_cpu = int((total_cpu) // (workers * cpus + DRIVER_CPUS))
    fit = max(1, min(int(sum(slots)) // workers, by_cpu))
    return max(1, min(concurrent, fit) if concurrent else fit)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def prepare(opts: SearchOptions) -> tuple[Any, Any, Any, list[Objective], Any]:
    """Load data, build the space and strategy, check the objective: everything that can fail before Ray."""
    from nas.data import load_data, make_task
    from nas.registry import SPACES, create_space, create_strategy, load

    opts.check()
    space_cls = load(SPACES, opts.space)  # an unknown space fails before any data is loaded
    data = load_data(opts.data, target=opts.target, window=opts.window, seed=opts.seed or 0)
    kind = opts.task or _default_task(space_cls, data)
    task = make_task(data, kind, normal_class=opts.normal_class)
    space = create_space(opts.space, task=task, **opts.space_options)
    hp = space.hyperparameters()
    objectives = parse_objectives(opts.objectives or [space.default_objective()])
    check_objectives(space, data, objectives)
    strategy = create_strategy(opts.strategy, space=hp, objective=objectives, seed=opts.seed, **opts.strategy_options)
    return data, task, space, objectives, strategy


#: what every trial reports besides the model's own metrics
TRIAL_METRICS = ("params", "latency_ms", "latency_ms_b256", "train_time_s", "epochs", "best_epoch")


def reported_metrics(space: Any, data: Any) -> set[str] | None:
    """The metric names trials of ``space`` report: the compiled model's (and their ``val_`` forms), the
    space's own per-epoch metrics and the runner's. Found by training the default model on one small batch."""
    import keras

    from nas.data import Dataset

    hp = space.hyperparameters()
    prepared = space.prepare_data(data)
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


def check_objectives(space: Any, data: Any, objectives: list[Objective]) -> None:
    """An objective naming a metric no trial reports fails before any trial, listing the ones that exist."""
    known = reported_metrics(space, data)
    if known is None:
        return
    for o in objectives:
        if o.metric not in known:
            raise NasError(f"--objective {o.metric!r} is not a metric trials of space {space.name!r} report; "
                           f"known: {', '.join(sorted(known))}")


def plugin_ref(ref: str) -> str:
    """``file.py:Class`` with an absolute path: Ray Tune runs each trial in its own working directory."""
    target, sep, attr = ref.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return ref


def _default_task(space_cls: Any, data: Any) -> str:
    from nas.data import is_classification

    kinds = list(space_cls.tasks)
    if not is_classification(data) and "regression" in kinds:
        return "regression"
    return kinds[0]


Printer = Callable[[str, dict[str, Any]], None]
PrinterFactory = Callable[[Objective, int], Printer]

#: options a resumed search may change; any other option given must equal the stored one
RESUME_MAY_CHANGE = ("trials", "max_concurrent", "cpus_per_trial", "gpus_per_trial", "address", "num_cpus",
                     "num_gpus", "verbose", "max_failures", "max_consecutive_failures", "max_worker_rss_mb",
                     "storage", "name")


def run_search(opts: SearchOptions, printer_factory: PrinterFactory | None = None,
               announce: Callable[[str], None] | None = None) -> SearchResult:
    """Run a whole search and return its trials; the store holds everything written along the way."""
    announce = announce or (lambda s: None)
    env = quiet_environment(opts.verbose)
    storage = Path(opts.storage).expanduser() if opts.storage else default_storage()
    name = check_name(opts.name) if opts.name else generate_name(opts.space, opts.strategy)
    store = ExperimentStore(storage / name)
    if store.exists() or (store.root.exists() and any(store.root.iterdir())):
        raise RunError(f"a run named {name!r} already exists in {storage}; choose another --name, "
                       f"or continue it with `nas resume {name}`")

    data, task, space, objectives, strategy = prepare(opts)
    if opts.distributed == "horovod":  # before Ray starts: one line saying how to install it
        from nas.distributed import require_horovod

        require_horovod()
    opts.space, opts.strategy = plugin_ref(opts.space), plugin_ref(opts.strategy)
    spec = {
        "name": name,
        "space": opts.space,
        "space_version": getattr(space, "version", "1"),
        "strategy": opts.strategy,
        "strategy_options": opts.strategy_options,
        "space_options": opts.space_options,
        "data": {"spec": opts.data, "target": opts.target, "window": opts.window, **data.describe()},
        "task": task.to_json(),
        "objectives": [o.to_json() for o in objectives],
        "trials": opts.trials,
        "epochs": opts.epochs,
        "seed": opts.seed,
        "resources": {"cpus_per_trial": opts.cpus_per_trial, "gpus_per_trial": opts.gpus_per_trial,
                      "max_concurrent": opts.max_concurrent, "address": opts.address,
                      "workers_per_trial": opts.workers_per_trial, "distributed": opts.distributed},
        "hyperparameters": P.space_summary(space.hyperparameters()),
        "options": {k: v for k, v in asdict(opts).items() if k not in ("name", "storage", "verbose")},
        "created": time.time(),
        "versions": package_versions(),
        "command": " ".join(sys.argv),
    }
    printer = printer_factory(objectives[0], opts.trials) if printer_factory else None
    return _tune(opts, store, spec, data, strategy, objectives, env, printer, announce, replay=[], done=0)


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
    store = ExperimentStore.open(name, storage)
    spec = store.spec()
    if "options" not in spec:
        raise RunError(f"{store.spec_path} has no 'options' entry; this run cannot be resumed")
    opts = SearchOptions(**spec["options"])
    for key, value in (changes or {}).items():
        if key in RESUME_MAY_CHANGE:
            setattr(opts, key, value)
        elif value != getattr(opts, key):
            flag = "--" + key.replace("_", "-")
            raise RunError(f"run {name!r} was searched with {flag} {getattr(opts, key)!r}; resuming with {flag} "
                           f"{value!r} contradicts it (start a new run with another --name instead)")
    opts.name, opts.storage = store.name, str(store.root.parent)
    env = quiet_environment(opts.verbose)
    cleanup_local_ray(store)

    data, task, space, objectives, strategy = prepare(opts)
    if opts.distributed == "horovod":
        from nas.distributed import require_horovod

        require_horovod()
    state = store.strategy_state()
    if state is None:
        raise RunError(f"{store.strategy_path} is missing: the strategy's state cannot be restored")
    try:
        strategy.set_state(state)
    except (KeyError, TypeError, ValueError, NasError) as e:
        raise RunError(f"{store.strategy_path} cannot be used to resume ({type(e).__name__}: {e}); "
                       f"nothing was changed") from None
    records = {t["trial_id"]: t for t in store.trials()}
    replay = []
    for trial_id, values in list(strategy.pending.items()):
        rec = records.get(trial_id)
        if rec and rec["status"] == "completed":  # finished, but the driver died before telling the strategy
            strategy.tell(trial_id, rec["metrics"])
        elif rec and rec["status"] == "failed":
            strategy.tell(trial_id, None)
        else:  # was running or about to: run it again, from its last epoch checkpoint
            replay.append((trial_id, values, list(rec["history"]) if rec else []))
    done = sum(r["status"] in ("completed", "failed") for r in records.values() if r["trial_id"] not in
               {t for t, _, _ in replay})
    if opts.trials < done:
        raise RunError(f"--trials {opts.trials} is below the {done} trials this run has already finished")
    spec["trials"] = opts.trials
    spec["options"]["trials"] = opts.trials
    spec.setdefault("resumed", []).append(time.time())
    store.write_strategy_state(strategy.get_state())
    printer = printer_factory(objectives[0], opts.trials) if printer_factory else None
    if printer is not None and hasattr(printer, "done"):
        printer.done = done  # count on from the trials earlier sessions finished
    if opts.trials == done:
        announce(f"run {store.name} already has its {done} trials; raise --trials to run more")
        return _result(store, objectives[0], 0.0, interrupted=False)
    announce(f"resuming run {store.name}: {done} of {opts.trials} trials done, {len(replay)} to continue")
    return _tune(opts, store, spec, data, strategy, objectives, env, printer, announce, replay=replay, done=done)


def _result(store: ExperimentStore, objective: Objective, wall: float, interrupted: bool,
            stopped: str | None = None) -> SearchResult:
    from nas.results import rank

    trials = store.trials()
    ranked = rank(trials, objective)
    return SearchResult(store.name, store.root, ranked[0] if ranked else None, trials, objective, wall,
                        interrupted=interrupted, stopped=stopped)


# -- local Ray processes left behind by a killed driver -------------------------------------------------------
def _record_local_ray(store: ExperimentStore) -> None:
    try:
        import ray._private.worker as w

        session_dir = w._global_node.get_session_dir_path()
    except Exception:
        return
    from nas.store import write_json

    write_json(store.root / "ray" / "local.json", {"driver_pid": os.getpid(), "session_dir": session_dir})


def cleanup_local_ray(store: ExperimentStore) -> list[int]:
    """Kill what a SIGKILL-ed driver's local Ray left behind (its agents ignore SIGTERM: ../shared/STACK.md).
    Only processes of that run's own Ray session, and only when its driver is gone."""
    import signal

    from nas.store import read_json

    path = store.root / "ray" / "local.json"
    if not path.is_file():
        return []
    try:
        info = read_json(path)
        session = Path(info["session_dir"]).name
        os.kill(int(info["driver_pid"]), 0)
        return []  # the driver still runs: leave its Ray alone
    except (ProcessLookupError, PermissionError):
        pass
    except Exception:
        return []
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        if session and _uses_session(proc, session):
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
            except OSError:
                pass
    return killed


def _uses_session(proc: Path, session: str) -> bool:
    """Whether a process belongs to a Ray session: named in its command line, or holding its log files open
    (the agents rename their command line to ``ray::DashboardAgent``)."""
    try:
        if session in (proc / "cmdline").read_bytes().decode(errors="replace"):
            return True
        for fd in (proc / "fd").iterdir():
            try:
                if session in os.readlink(fd):
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False


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


def _tune(opts: SearchOptions, store: ExperimentStore, spec: dict[str, Any], data: Any, strategy: Any,
          objectives: list[Objective], env: dict[str, str], printer: Printer | None,
          announce: Callable[[str], None], replay: list, done: int) -> SearchResult:
    from ray import tune

    from nas.distributed import trial_resources
    from nas.searcher import FailureGuard, LostTrials, StrategySearcher, TrialRecorder, WorkerRecycler
    from nas.trial import GENERATION_KEY, train_trial

    setup = {
        "space": opts.space,
        "space_options": opts.space_options,
        "task": spec["task"],
        "epochs": opts.epochs,
        "seed": opts.seed,
        "cpus_per_trial": opts.cpus_per_trial,
        "gpus_per_trial": opts.gpus_per_trial,
        "workers_per_trial": opts.workers_per_trial,
        "distributed": opts.distributed,
        "scale_lr": opts.scale_lr,
        "run_dir": str(store.root.resolve()),
        "max_params": opts.max_params,
        "max_latency_ms": opts.max_latency_ms,
        "objective": objectives[0].to_json(),  # trials save their model at their best epoch by it
    }
    started = time.time()
    guard = FailureGuard(opts.max_consecutive_failures)
    with ray_runtime(opts.address, opts.verbose, opts.num_cpus, opts.num_gpus, env):
        workers = opts.workers_per_trial if opts.distributed == "horovod" else 1
        concurrent = check_resources(opts.cpus_per_trial, opts.gpus_per_trial, opts.max_concurrent, workers)
        store.write_spec(spec)  # only now: a request Ray can never run leaves no half-made run behind
        if not opts.address:
            _record_local_ray(store)
        if not replay and not done:
            announce(f"run {store.name} -> {store.root}")
        recycler = WorkerRecycler(opts.max_worker_rss_mb, announce)
        searcher = StrategySearcher(strategy, on_state=store.write_strategy_state, replay=replay, recycler=recycler,
                                    budget=opts.trials - done - len(replay))
        recorder = TrialRecorder(store, objectives[0], printer or (lambda kind, rec: None), guard=guard,
                                 max_epochs=opts.epochs, recycler=recycler)
        cpus, gpus, mode = opts.cpus_per_trial, opts.gpus_per_trial, opts.distributed

        def resources(config: dict[str, Any]) -> Any:  # a pure function of the config: Tune may call a copy
            return trial_resources(workers, cpus, gpus, mode, generation=config.get(GENERATION_KEY, 0))

        trainable = tune.with_resources(tune.with_parameters(train_trial, data=data, setup=setup), resources)
        sessions = store.root / "ray"
        session = f"session-{len(list(sessions.glob('session-*'))) if sessions.is_dir() else 0}"
        tuner = tune.Tuner(
            trainable,
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
        finally:  # TensorBoard's HParams experiment: every hyperparameter's domain and the metrics reported
            from nas.tensorboard import run_metrics, write_hparams_config

            write_hparams_config(store.root, strategy.space, run_metrics(store.trials()),
                                 [o.metric for o in objectives])
    finished = sum(t["status"] in ("completed", "failed") for t in store.trials())
    interrupted = finished < opts.trials and not searcher.exhausted and not guard.tripped
    if interrupted:  # Ctrl-C: trials still running will continue from their last epoch checkpoint
        for rec in store.trials():
            if rec["status"] == "running":
                rec["status"] = "pending"
                store.write_trial(rec)
    return _result(store, objectives[0], time.time() - started, interrupted, stopped=guard.reason)
