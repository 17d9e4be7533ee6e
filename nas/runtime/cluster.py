"""The Ray runtime a search runs on: starting or joining Ray, fitting resource requests to the
cluster's nodes, package versions, and cleaning up after a driver that was killed.

Nothing here imports TensorFlow; Ray is imported only by the functions that need it.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import logging
import os
import platform
import signal
import socket
import sys
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

from nas.errors import ResourceError, RunError
from nas.storage.layout import LOCAL_RAY
from nas.storage.store import ExperimentStore, read_json, write_json

PACKAGES = ("nas", "tensorflow", "tensorflow-cpu", "keras", "keras-tuner", "ray", "optuna", "numpy", "scikit-learn")
#: run by Ray in every worker process of a search as it starts (see ``nas.trials.hook.warm_up``)
WARM_UP_HOOK = "nas.trials.hook.warm_up"
#: a Horovod trial's own bundle (its "driver"): it only coordinates the ranks and reports to Tune
DRIVER_CPUS = 0.1


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
                num_gpus: int | None = None, env: dict[str, str] | None = None,
                connect_timeout: float = 30.0, run_dir: Path | None = None) -> Iterator[dict[str, Any]]:
    """Connect to ``address`` (failing within ``connect_timeout`` seconds when it cannot) or start a local Ray
    bound to 127.0.0.1 (dashboard on localhost only); shut down on exit only what this call started.
    ``env`` reaches every worker: through Ray's runtime environment on a cluster; a local Ray's processes inherit
    it (set while it starts). Every worker runs ``WARM_UP_HOOK`` as it starts (it imports the framework). Not a
    head start on Ray 2.60 (measured 2026-12-07 through ``local_ray``, three 2-trial searches one after another):
    the idle workers Ray starts as soon as it is up carry no runtime environment, never run the hook and are not
    given the trial actors; each search's actor starts a worker of its own, which imports the framework in the
    hook before its first trial (Ray prestarts workers only for an empty runtime environment).
    ``run_dir``: every process of the local Ray carries it in its environment (``RUN_MARK``), so that what a
    killed driver leaves behind is found however early it was killed (``cleanup_local_ray``)."""
    import ray

    kwargs: dict[str, Any] = dict(
        log_to_driver=verbose,
        logging_level=logging.INFO if verbose else logging.ERROR,
        ignore_reinit_error=True,
    )
    warm = {"worker_process_setup_hook": WARM_UP_HOOK}  # every worker imports the framework as it starts
    if not address and ray.is_initialized():  # this process's own Ray (``local_ray``, or the caller's ray.init())
        with _running_ray(num_cpus, num_gpus, env or {}) as info, _quiet_raylet_errors(verbose):
            try:
                yield info
            finally:
                gc.collect()  # as below; the Ray stays up: its owner shuts it down
        return
    if address:
        info = connect(address, connect_timeout, {**kwargs, "runtime_env": {**warm, "env_vars": dict(env or {})}})
    else:
        with _loopback_only(), _environment(env or {}), _marked(run_dir):
            info = ray.init(
                address="local",  # always our own instance: a bare ray.init() joins any cluster `ray start` left
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=False,
                dashboard_host="127.0.0.1",
                _node_ip_address="127.0.0.1",
                runtime_env=warm,
                **kwargs,
            )
    with _quiet_raylet_errors(verbose):  # until Ray is down: its listener thread may print while it stops
        try:
            yield {"address": getattr(info, "address_info", {}).get("address", address), "local": not address}
        finally:
            # Ray handles that only a reference cycle keeps (Tune's trial and actor objects) are freed now, while
            # the session that owns them is up, rather than by a later collection in another session
            gc.collect()
            ray.shutdown()


#: the environment the workers of the Ray ``local_ray`` keeps up were started with (empty: none kept)
_KEPT: dict[str, str] = {}


@contextlib.contextmanager
def _running_ray(num_cpus: int | None, num_gpus: int | None, env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The Ray this process already runs, for a search that asked for a local one. Ray runs one instance per
    process (a second ``ray.init`` returns the first), so a search that needs another one is refused in one
    line rather than run on workers set up for something else. Ray Tune likewise runs on an initialised Ray."""
    import ray

    from nas.runtime.quiet import QUIET_ENV, WORKER_ENV

    if _KEPT:
        # what differs only in log levels, or in jax's single-thread flag for trials of < 2 CPUs (a trial sets
        # its threads anyway), does not make the workers unfit for a search
        ignore = {"XLA_FLAGS", *QUIET_ENV, *WORKER_ENV}
        differ = sorted(k for k in {*env, *_KEPT} if env.get(k) != _KEPT.get(k) and k not in ignore)
        if differ:
            first = ("KERAS_BACKEND", "NAS_VERBOSE", "CUDA_VISIBLE_DEVICES")  # what tells a user the most
            k = min(differ, key=lambda k: (first.index(k) if k in first else len(first), k))
            raise RunError(f"this process keeps a local Ray (nas.local_ray) whose workers have {k}="
                           f"{_KEPT.get(k, '(unset)')}; this search needs {k}={env.get(k, '(unset)')}: search "
                           f"outside the `with nas.local_ray(...)` block, or give local_ray the same backend and "
                           f"verbosity")
    have = ray.cluster_resources()
    for flag, asked, key in (("--num-cpus", num_cpus, "CPU"), ("--num-gpus", num_gpus, "GPU")):
        if asked is not None and int(have.get(key, 0)) != int(asked):
            raise RunError(f"{flag} {asked}: this process already runs a local Ray with {int(have.get(key, 0))} "
                           f"{key}s; leave {flag} out, or search in a process without one")
    yield {"address": ray.get_runtime_context().gcs_address, "local": True}


@contextlib.contextmanager
def local_ray(num_cpus: int | None = None, num_gpus: int | None = None, backend: str | None = None,
              verbose: bool = False) -> Iterator[dict[str, Any]]:
    """Keep one local Ray up for every search of this process inside the block (a notebook, a script, a test
    session): each search then skips Ray's start (seconds; its trial actors still start workers of their own,
    see ``ray_session``). Without it each search starts, and stops, a Ray of its own.

    >>> import nas
    >>> with nas.local_ray():                                   # doctest: +SKIP
    ...     a = nas.search(space="mlp", strategy="random", trials=4)
    ...     b = nas.search(space="mlp", strategy="bayes", trials=4)

    Its workers are set up for one backend (``backend``, else ``$KERAS_BACKEND``, else tensorflow) on CPUs; a
    search inside the block that needs another backend, GPUs per trial, or other ``num_cpus`` is refused in one
    line (Ray runs one instance per process)."""
    from nas.runtime import backends
    from nas.runtime.quiet import quiet_environment

    if _KEPT:
        raise RunError("nas.local_ray is already open in this process; use the one already open")
    backend = backends.check(backend)
    backends.select(backend)
    env = {**quiet_environment(verbose), **backends.worker_env(backend, 1, 0)}
    with ray_session(None, verbose, num_cpus, num_gpus, env) as info:
        _KEPT.update(env)
        try:
            yield info
        finally:
            _KEPT.clear()


@contextlib.contextmanager
def tune_parameters(trainable: Any, **parameters: Any) -> Iterator[Any]:
    """``tune.with_parameters(trainable, **parameters)`` for the duration of one Tune run. Ray Tune puts the
    parameters in the object store and keeps their references for good: in a hook it appends to a process-wide
    list (``ray._private.worker._post_init_hooks``, run by every later ``ray.init``) and never removes
    (Ray 2.60, ``ray.tune.trainable.util.with_parameters``). In a process that runs many searches (a notebook, a
    test session) they would pile up and outlive their Ray session; here they are released when the run ends,
    while that session is still up."""
    from ray import tune
    from ray._private import worker as ray_worker

    hooks = getattr(ray_worker, "_post_init_hooks", None)
    before = list(hooks) if isinstance(hooks, list) else None
    wrapped = tune.with_parameters(trainable, **parameters)
    try:
        yield wrapped
    finally:
        if before is not None:
            for hook in [h for h in hooks if all(h is not b for b in before)]:
                hooks.remove(hook)
                registry = getattr(hook, "__self__", None)  # the bound flush of Tune's _ParameterRegistry
                for table in ("references", "to_flush"):
                    getattr(registry, table, {}).clear()


# -- joining a cluster -----------------------------------------------------------------------------------------
CAUSES = ("is its head running (`ray start --head`), is PORT its GCS port (`ray start --port`, default 6379), "
          "can this machine reach it (firewall, VPN, SSH tunnel)?")


def host_port(address: str) -> tuple[str, int] | None:
    """The host and port of a GCS address ``HOST:PORT``; None for ``auto``, ``ray://`` and anything else."""
    if "://" in address:
        return None
    host, sep, port = address.rpartition(":")
    return (host.strip("[]"), int(port)) if sep and host and port.isdigit() else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reachable(host: str, port: int, timeout: float) -> OSError | None:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return None
    except OSError as e:
        return e


def check_reachable(address: str, timeout: float) -> None:
    """A plain TCP connection to the GCS port of ``address`` (``HOST:PORT``; others are left to Ray): refused or
    unreachable is one line at once (timed out: after ``timeout`` seconds). No Ray import: the driver runs it
    before anything else starts."""
    target = host_port(address)
    error = _reachable(*target, timeout) if target else None
    if error is not None:
        why = "timed out" if isinstance(error, socket.timeout) else (error.strerror or str(error))
        raise ResourceError(f"cannot reach a Ray cluster at --address {address!r} ({why}); {CAUSES}")


def connect(address: str, timeout: float, kwargs: dict[str, Any]) -> Any:
    """``ray.init(address=...)`` that fails within ``timeout`` seconds with one line naming the address.

    Ray's own connection retries for minutes (20 tries of up to 35 s each against an address where nothing
    answers) and has no single deadline, so: a plain TCP connection to the GCS port first (refused or unreachable
    fails at once), then ``ray.init`` in a thread given what is left of the deadline.

    A loopback address (``127.0.0.1:PORT``): Ray replaces it by this machine's network address before
    connecting. Right for a head listening on every interface (what ``ray start`` does on Linux); a cluster
    listening on 127.0.0.1 only is joined in Ray's single-machine mode instead (``_loopback_only``), which keeps
    the driver on 127.0.0.1. Token authentication is Ray's to decide: a given address gets no token unless
    ``RAY_AUTH_MODE=token`` (``ray start`` turns it on whenever ``~/.ray/auth_token`` exists); the error says so.

    Unless verbose, what Ray's C++ client writes to stderr while it retries is hidden: the error says it all.
    """
    import ray

    deadline = time.monotonic() + timeout
    target = host_port(address)
    loopback_only = False
    if target:
        check_reachable(address, timeout)
        if is_loopback(target[0]):
            from ray.util import get_node_ip_address

            loopback_only = _reachable(get_node_ip_address(), target[1], 2.0) is not None
    box: dict[str, Any] = {}

    def init() -> None:
        try:
            box["info"] = ray.init(address=address, **kwargs)
        except BaseException as e:  # handed to the main thread
            box["error"] = e

    if threading.current_thread() is threading.main_thread():
        # what ray.init does when it runs in the main thread (it runs in another one here): SIGTERM exits cleanly
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
    quiet = not kwargs.get("log_to_driver")
    with _loopback_only() if loopback_only else contextlib.nullcontext():
        muted = _mute_native_stderr() if quiet else None
        thread = threading.Thread(target=init, name="nas-ray-connect", daemon=True)
        thread.start()
        thread.join(max(0.1, deadline - time.monotonic()))
        if muted is not None and not thread.is_alive():
            _unmute_native_stderr(muted)
    if thread.is_alive():  # left behind, blocked in Ray's retries, muted; the process ends with the error
        raise ResourceError(f"cannot connect to the Ray cluster at --address {address!r} within {timeout:g} s "
                            f"(--connect-timeout): something answers there but not as a Ray head; {CAUSES}")
    if "error" in box:
        raise ResourceError(f"cannot connect to the Ray cluster at --address {address!r}: "
                            f"{_connect_error(box['error'])}") from None
    return box["info"]


def _mute_native_stderr() -> tuple[int, Any] | None:
    """Send what is written to file descriptor 2 to /dev/null, while Python's own ``sys.stderr`` keeps the real
    one; returns what ``_unmute_native_stderr`` needs. Ray's C++ client logs every retry of a failing connection
    there (``gcs_client.cc: Failed to get cluster ID ...``), and a thread blocked in ``ray.init`` cannot be
    stopped: it goes on logging until the process exits, after our one-line error."""
    from nas.runtime import quiet

    try:
        sys.stderr.flush()
        real = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        quiet.muted_stderr = devnull  # a TensorFlow import filtering stderr meanwhile ends muted too
        before, sys.stderr = sys.stderr, os.fdopen(os.dup(real), "w", buffering=1)
        return real, before
    except (OSError, ValueError, AttributeError):  # no real descriptor 2 (an embedding host): leave it
        return None


def _unmute_native_stderr(muted: tuple[int, Any]) -> None:
    from nas.runtime import quiet

    real, before = muted
    sys.stderr.flush()
    os.dup2(real, 2)
    os.close(real)
    if quiet.muted_stderr is not None:
        os.close(quiet.muted_stderr)
        quiet.muted_stderr = None
    sys.stderr = before


def _connect_error(error: BaseException) -> str:
    """The most telling line of a failed ``ray.init``: the innermost cause, token authentication explained."""
    chain = [error]
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    text = " ".join(str(e) for e in chain)
    if "InvalidAuthToken" in text or "AuthenticationError" in text or "auth" in type(chain[-1]).__name__.lower():
        return ("the cluster asks for an authentication token: set RAY_AUTH_MODE=token (Ray reads the token from "
                "$RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
    last = chain[-1]
    first = (str(last).strip().splitlines() or [type(last).__name__])[0][:300]
    return f"{type(last).__name__}: {first}; {CAUSES}"


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


RUN_MARK = "NAS_RUN_DIR"


@contextlib.contextmanager
def _marked(run_dir: Path | None) -> Iterator[None]:
    """``RUN_MARK=<run directory>#<driver pid>`` in the environment while Ray starts its processes (they inherit
    it, and the workers inherit it from the raylet), then put back."""
    before = os.environ.get(RUN_MARK)
    if run_dir is not None:
        os.environ[RUN_MARK] = f"{Path(run_dir).resolve()}#{os.getpid()}"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RUN_MARK, None)
        else:
            os.environ[RUN_MARK] = before


def local_node(num_cpus: int | None, num_gpus: int | None, gpus_per_trial: float) -> list[dict[str, Any]]:
    """The one node of the local Ray a search would start, as ``ray.nodes()`` will describe it, known before it
    starts: ``--num-cpus`` or the CPUs this process may run on; ``--num-gpus``, or, not given, the GPUs a trial
    asks for (Ray detects them as it starts; the check once it is up holds them to what it found)."""
    cpus = num_cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    gpus = num_gpus if num_gpus is not None else gpus_per_trial
    return [{"Alive": True, "Resources": {"CPU": float(cpus), "GPU": float(gpus)}}]


def check_resources(cpus: float, gpus: float, concurrent: int | None, workers: int = 1,
                    nodes: list[dict[str, Any]] | None = None) -> int:
    """Fail at once for a request no node can ever satisfy; return how many trials can run at once.
    ``workers`` > 1: a trial is that many ranks of ``cpus``/``gpus`` each (plus a small driver bundle), which
    may spread over nodes: each rank must fit some node, and the cluster must hold all of them at once.
    ``nodes``: those of the running Ray (default), or ``local_node(...)`` before a local Ray starts."""
    if nodes is None:
        import ray

        nodes = ray.nodes()
    nodes = [n for n in nodes if n.get("Alive")]
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

    ``generation`` (``nas.driver.searcher.WorkerRecycler``) adds that many bytes of Ray's ``memory`` resource: nothing
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
    write_json(store.root / LOCAL_RAY, {"driver_pid": os.getpid(), "session_dir": session_dir})


def cleanup_local_ray(store: ExperimentStore) -> list[int]:
    """Kill what a SIGKILL-ed driver's local Ray left behind (``ray::DashboardAgent`` and
    ``ray::RuntimeEnvAgent`` outlive a SIGKILL-ed driver and ignore SIGTERM): processes carrying the run's mark
    (``RUN_MARK``, there however early the driver died) or using the session ``ray/local.json`` names, and only
    those whose driver is gone (the caller also holds the run's lock, ``nas.storage.lock``). Ray has no way to stop a
    dead driver's local instance, hence this."""
    prefix = f"{RUN_MARK}={store.root.resolve()}#".encode()
    session = ""
    path = store.root / LOCAL_RAY
    if path.is_file():
        try:
            info = read_json(path)
            if not _alive(int(info["driver_pid"])):
                session = Path(info["session_dir"]).name
        except Exception:
            session = ""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        if _left_by_dead_driver(proc, prefix) or (session and uses_session(proc, session)):
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
            except OSError:
                pass
    return killed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _left_by_dead_driver(proc: Path, prefix: bytes) -> bool:
    try:
        marks = [v for v in (proc / "environ").read_bytes().split(b"\0") if v.startswith(prefix)]
    except OSError:
        return False
    return bool(marks) and marks[0][len(prefix):].isdigit() and not _alive(int(marks[0][len(prefix):]))


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
