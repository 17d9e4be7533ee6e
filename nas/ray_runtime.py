"""The Ray runtime a search runs on: quiet environment, starting or joining Ray, fitting resource requests to the
cluster's nodes, package versions, and cleaning up after a driver that was killed.

Nothing here imports TensorFlow; Ray is imported only by the functions that need it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import threading
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

from nas.errors import ResourceError
from nas.store import ExperimentStore, read_json, write_json

PACKAGES = ("nas", "tensorflow", "tensorflow-cpu", "keras", "keras-tuner", "ray", "optuna", "numpy", "scikit-learn")
#: a Horovod trial's own bundle (its "driver"): it only coordinates the ranks and reports to Tune
DRIVER_CPUS = 0.1


# -- quiet by default ---------------------------------------------------------------------------------------
# Always set for the trial workers (a user's own setting wins). Tune gives a reused worker's previous trial
# thread 2 s to end before the next trial; a Keras fit stopped by a scheduler can take longer to unwind, and the
# next trial then fails to start (ray-project/ray#29268).
WORKER_ENV = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "120"}

# TensorFlow's oneDNN CPU kernels stay on: a cnn trial on digits takes 0.80x the CPU time with them
# (benchmarks: farm-bench, 4 trials x 5 epochs, 3 runs each); their start-up banner is an INFO log line, which
# TF_CPP_MIN_LOG_LEVEL hides.
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "ABSL_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "RAY_DEDUP_LOGS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONWARNINGS": "ignore",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}


def quiet_environment(verbose: bool) -> dict[str, str]:
    # Resume does not use Ray Tune's own experiment snapshots: after a SIGKILL of the driver, Tuner.restore re-runs
    # trials that completed within the last snapshot period (>= 10 s by default). Our run store is written after
    # every event and is what resumes.
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
def ray_session(address: str | None, verbose: bool, num_cpus: int | None = None,
                num_gpus: int | None = None, env: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Connect to ``address`` or start a local Ray bound to 127.0.0.1 (dashboard on localhost only);
    shut down on exit only what this call started. ``env`` reaches every worker: through Ray's runtime environment
    on a cluster; a local Ray's processes inherit it (set while it starts), because Ray gives trial actors the
    idle workers it starts ahead only when the job has no runtime environment of its own: each trial then starts
    in a worker that is already running."""
    import ray

    kwargs: dict[str, Any] = dict(
        log_to_driver=verbose,
        logging_level=logging.INFO if verbose else logging.ERROR,
        ignore_reinit_error=True,
    )
    if address:
        try:
            info = ray.init(address=address, runtime_env={"env_vars": dict(env or {})}, **kwargs)
        except Exception as e:  # ConnectionError, TimeoutError, ValueError for a malformed address
            raise ResourceError(f"cannot connect to the Ray cluster at --address {address!r}: {e}") from None
    else:
        with _loopback_only(), _environment(env or {}):
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
def _environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` in this process while a local Ray starts (its processes inherit it), then put back."""
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class EarlyRay:
    """Starts (or joins) Ray in a background thread while the driver prepares the search (imports the framework,
    builds the space, checks the objective): the two take seconds each and overlap. ``wait()`` returns the session
    once it is up (or raises why it is not); ``close()`` ends it.

    A thread of its own, alive for the whole session, because Ray ties the processes it starts to the thread that
    started them (they get SIGKILL when that thread exits, PR_SET_PDEATHSIG)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.info: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=args, kwargs=kwargs, name="nas-ray", daemon=True)
        self._thread.start()

    def _run(self, *args: Any, **kwargs: Any) -> None:
        try:
            with ray_session(*args, **kwargs) as info:
                self.info = info
                self._ready.set()
                self._stop.wait()
        except BaseException as e:  # noqa: BLE001 - handed to the driver's thread by wait()
            self.error = e
        finally:
            self._ready.set()

    def wait(self) -> dict[str, Any]:
        self._ready.wait()
        if self.error is not None:
            raise self.error
        assert self.info is not None
        return self.info

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "EarlyRay":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


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


def trial_resources(workers: int, cpus: float, gpus: float, distributed: str, generation: int = 0) -> Any:
    """What Tune reserves for one trial: a dict for a single-process trial, else a placement group with the
    trial driver's bundle first and one bundle per rank (``cpus``/``gpus`` each), so Tune accounts for all of a
    trial's resources and RayExecutor places its ranks inside it.

    ``generation`` (``nas.searcher.WorkerRecycler``) adds that many bytes of Ray's ``memory`` resource: nothing
    to any scheduler, but Tune reuses a worker only for a trial requesting exactly what the worker was started
    with, so a new generation never lands on an old worker."""
    if distributed != "horovod":
        return {"cpu": cpus, "gpu": gpus, "memory": generation}
    from ray.tune import PlacementGroupFactory

    rank = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    head = {"CPU": DRIVER_CPUS, **({"memory": generation} if generation else {})}
    return PlacementGroupFactory([head] + [dict(rank) for _ in range(workers)], strategy="PACK")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


# -- local Ray processes left behind by a killed driver -------------------------------------------------------
def record_local_ray(store: ExperimentStore) -> None:
    try:
        import ray._private.worker as w

        session_dir = w._global_node.get_session_dir_path()
    except Exception:
        return
    write_json(store.root / "ray" / "local.json", {"driver_pid": os.getpid(), "session_dir": session_dir})


def cleanup_local_ray(store: ExperimentStore) -> list[int]:
    """Kill what a SIGKILL-ed driver's local Ray left behind (``ray::DashboardAgent`` and
    ``ray::RuntimeEnvAgent`` outlive a SIGKILL-ed driver and ignore SIGTERM).
    Only processes of that run's own Ray session, and only when its driver is gone."""
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
        if session and uses_session(proc, session):
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
            except OSError:
                pass
    return killed


def uses_session(proc: Path, session: str) -> bool:
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
