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

from nas import params as P
from nas.errors import NasError, ResourceError, RunError
from nas.objective import Objective, parse_objectives
from nas.store import ExperimentStore, check_name, default_storage, generate_name

PACKAGES = ("nas", "tensorflow", "tensorflow-cpu", "keras", "keras-tuner", "ray", "optuna", "numpy", "scikit-learn")


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
    verbose: bool = False

    def check(self) -> None:
        if not isinstance(self.trials, int) or self.trials < 1:
            raise NasError(f"--trials {self.trials!r} is not valid; give an integer >= 1")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise NasError(f"--epochs {self.epochs!r} is not valid; give an integer >= 1")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise NasError(f"--max-concurrent {self.max_concurrent!r} is not valid; give an integer >= 1")
        if not self.cpus_per_trial > 0:
            raise NasError(f"--cpus-per-trial {self.cpus_per_trial!r} is not valid; give a number > 0")
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


# -- quiet by default ---------------------------------------------------------------------------------------
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",  # also removes the oneDNN banner; results stay deterministic
    "ABSL_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "RAY_DEDUP_LOGS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONWARNINGS": "ignore",
    # Save Ray Tune's experiment state after every trial event: after a kill -9, nothing completed is re-run
    # (../shared/STACK.md: the default snapshot period re-runs trials completed in the last >= 10 s).
    "TUNE_GLOBAL_CHECKPOINT_S": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_MAX_PENDING_TRIALS_PG": "1",
}


def quiet_environment(verbose: bool) -> dict[str, str]:
    always = ("TUNE_GLOBAL_CHECKPOINT_S", "RAY_USAGE_STATS_ENABLED", "TUNE_MAX_PENDING_TRIALS_PG")
    env = dict(QUIET_ENV) if not verbose else {k: QUIET_ENV[k] for k in always}
    for k, v in env.items():
        if k in always:
            os.environ[k] = v
        else:  # a user's own setting wins
            os.environ.setdefault(k, v)
    env = {k: os.environ[k] for k in env}
    if not verbose:
        warnings.filterwarnings("ignore")
        for name in ("ray", "ray.tune", "ray.train", "ray.data", "tensorflow", "absl", "optuna"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # Tune logs every failed trial's whole Ray traceback at ERROR; the trial's record and its progress line
        # already say what went wrong (`nas status`), so only --verbose shows Tune's own report
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
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
        info = ray.init(
            address="local",  # always our own instance: a bare ray.init() joins any cluster `ray start` left here
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


def check_resources(cpus: float, gpus: float, concurrent: int | None) -> int:
    """Fail at once for a request no node can ever satisfy; return how many trials can run at once."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if not nodes:
        raise ResourceError("the Ray cluster has no live nodes")
    fits = []
    for n in nodes:
        res = n.get("Resources", {})
        if res.get("CPU", 0) >= cpus and res.get("GPU", 0) >= gpus:
            fits.append(min(res.get("CPU", 0) // cpus, res.get("GPU", 0) // gpus if gpus else 1 << 30))
    if not fits:
        max_cpu = max(n.get("Resources", {}).get("CPU", 0) for n in nodes)
        max_gpu = max(n.get("Resources", {}).get("GPU", 0) for n in nodes)
        raise ResourceError(
            f"no node can ever run a trial asking --cpus-per-trial {cpus:g} --gpus-per-trial {gpus:g}: "
            f"the largest node has {max_cpu:g} CPUs and {max_gpu:g} GPUs ({len(nodes)} node(s)); "
            f"ask for at most that, or add nodes with more"
        )
    slots = int(sum(fits))
    return max(1, min(concurrent, slots) if concurrent else slots)


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
    strategy = create_strategy(opts.strategy, space=hp, objective=objectives, seed=opts.seed, **opts.strategy_options)
    return data, task, space, objectives, strategy


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


def run_search(opts: SearchOptions, printer_factory: PrinterFactory | None = None,
               announce: Callable[[str], None] | None = None) -> SearchResult:
    """Run a whole search and return its trials; the store holds everything written along the way."""
    announce = announce or (lambda s: None)
    env = quiet_environment(opts.verbose)
    storage = Path(opts.storage).expanduser() if opts.storage else default_storage()
    name = check_name(opts.name) if opts.name else generate_name(opts.space, opts.strategy)
    store = ExperimentStore(storage / name)
    if store.exists() or (store.root.exists() and any(store.root.iterdir())):
        raise RunError(f"a run named {name!r} already exists in {storage}; choose another --name")

    data, task, space, objectives, strategy = prepare(opts)
    spec = {
        "name": name,
        "space": plugin_ref(opts.space),
        "space_version": getattr(space, "version", "1"),
        "strategy": plugin_ref(opts.strategy),
        "strategy_options": opts.strategy_options,
        "space_options": opts.space_options,
        "data": {"spec": opts.data, "target": opts.target, "window": opts.window, **data.describe()},
        "task": task.to_json(),
        "objectives": [o.to_json() for o in objectives],
        "trials": opts.trials,
        "epochs": opts.epochs,
        "seed": opts.seed,
        "resources": {"cpus_per_trial": opts.cpus_per_trial, "gpus_per_trial": opts.gpus_per_trial,
                      "max_concurrent": opts.max_concurrent, "address": opts.address},
        "hyperparameters": P.space_summary(space.hyperparameters()),
        "created": time.time(),
        "versions": package_versions(),
        "command": " ".join(sys.argv),
    }
    printer = printer_factory(objectives[0], opts.trials) if printer_factory else None
    return _tune(opts, store, spec, data, strategy, objectives, env, printer, announce)


def _tune(opts: SearchOptions, store: ExperimentStore, spec: dict[str, Any], data: Any, strategy: Any,
          objectives: list[Objective], env: dict[str, str], printer: Printer | None,
          announce: Callable[[str], None]) -> SearchResult:
    from ray import tune

    from nas.searcher import StrategySearcher, TrialRecorder
    from nas.trial import train_trial

    setup = {
        "space": plugin_ref(opts.space),
        "space_options": opts.space_options,
        "task": spec["task"],
        "epochs": opts.epochs,
        "seed": opts.seed,
        "cpus_per_trial": opts.cpus_per_trial,
        "run_dir": str(store.root.resolve()),
    }
    started = time.time()
    with ray_runtime(opts.address, opts.verbose, opts.num_cpus, opts.num_gpus, env):
        concurrent = check_resources(opts.cpus_per_trial, opts.gpus_per_trial, opts.max_concurrent)
        store.write_spec(spec)  # only now: a request Ray can never run leaves no half-made run behind
        announce(f"run {store.name} -> {store.root}")
        searcher = StrategySearcher(strategy, on_state=store.write_strategy_state)
        recorder = TrialRecorder(store, objectives[0], printer or (lambda kind, rec: None))
        trainable = tune.with_resources(
            tune.with_parameters(train_trial, data=data, setup=setup),
            {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=opts.trials,
                max_concurrent_trials=concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=store.name,
                storage_path=str(store.root.parent.resolve()),
                verbose=2 if opts.verbose else 0,
                callbacks=[recorder],
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        try:
            tuner.fit()
        finally:  # TensorBoard's HParams experiment: every hyperparameter's domain and the metrics reported
            from nas.tensorboard import run_metrics, write_hparams_config

            write_hparams_config(store.root, strategy.space, run_metrics(store.trials()),
                                 [o.metric for o in objectives])
    trials = store.trials()
    from nas.results import rank

    ranked = rank(trials, objectives[0])
    return SearchResult(store.name, store.root, ranked[0] if ranked else None, trials, objectives[0],
                        time.time() - started)
