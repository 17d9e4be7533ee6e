"""The Keras 3 backends a search trains with (tensorflow, jax, torch), and what each needs in a process.

The driver picks one (``--backend``, else ``$KERAS_BACKEND``, else tensorflow) before anything imports Keras,
so it never imports a framework it does not need; every trial worker gets the same ``KERAS_BACKEND`` through
Ray's runtime environment, with the settings that confine it to its share of a GPU:

- tensorflow: memory growth (a trial takes GPU memory as it needs it, never the whole card up front);
- jax: no preallocation, and ``XLA_PYTHON_CLIENT_MEM_FRACTION`` capped at 90 % of the trial's share;
- torch: ``torch.cuda.set_per_process_memory_fraction`` at 90 % of the trial's share.

A trial with no GPU sees none (``CUDA_VISIBLE_DEVICES`` empty), whatever the node has. Frameworks are imported
only inside the functions that need them.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
from typing import Any

from nas.errors import NasError

BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT = "tensorflow"
#: how to install each, said when one is asked for but missing
INSTALL = {
    "tensorflow": 'pip install tensorflow-cpu  (GPU nodes: pip install "nas[gpu]")',
    "jax": 'pip install "nas[jax]"  (GPU nodes: pip install "jax[cuda12]")',
    "torch": "pip install torch",
}
#: the share of a trial's GPU memory its framework may use (the rest: CUDA context, fragmentation)
MEMORY_SHARE = 0.9


def default() -> str:
    """``$KERAS_BACKEND`` if set (the usual Keras way), else tensorflow."""
    return os.environ.get("KERAS_BACKEND") or DEFAULT


def check(backend: str | None) -> str:
    """The backend to use: a known name whose framework is installed; else one line saying what to do."""
    name = backend or default()
    if name not in BACKENDS:
        where = "--backend" if backend else "KERAS_BACKEND"
        raise NasError(f"{where} {name!r} is not valid; accepted: {', '.join(BACKENDS)}")
    if importlib.util.find_spec(name) is None:
        raise NasError(f"--backend {name} needs {name}, which is not installed here: {INSTALL[name]}")
    return name


def select(backend: str) -> None:
    """Make ``backend`` the one Keras uses in this process. Must come before Keras is imported; a process that
    already imported Keras with another backend cannot switch (one line says so)."""
    import sys

    keras = sys.modules.get("keras")
    if keras is not None:
        current = keras.backend.backend()
        if current != backend:
            raise NasError(f"--backend {backend}: this Python process already imported Keras with backend "
                           f"{current!r}; start a new process (or set KERAS_BACKEND={backend} before importing keras)")
        return
    os.environ["KERAS_BACKEND"] = backend
    if backend == "jax":  # whatever touches a GPU in this process takes what it needs, never most of the card
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def keep_driver_off_gpus(backend: str) -> None:
    """The driver only builds a model to learn its metric names: keep it off the GPUs, which are the trials'.
    (jax would otherwise preallocate most of a GPU in the driver.) Process-local, so Ray still sees the GPUs."""
    if backend == "jax":
        import jax

        if not os.environ.get("JAX_PLATFORMS"):
            jax.config.update("jax_platforms", "cpu")
    elif backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.set_visible_devices([], "GPU")
        except (RuntimeError, ValueError):  # TF already ran an op in this process: too late, and harmless
            pass


def worker_env(backend: str, cpus: float, gpus: float) -> dict[str, str]:
    """Environment for every trial worker of a search (Ray's runtime environment), set before its framework
    starts: the backend, and what confines it to the trial's CPUs and share of a GPU."""
    env = {"KERAS_BACKEND": backend}
    if not gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU trial on a GPU node must not take GPU memory
    if backend == "jax":
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{MEMORY_SHARE * min(1.0, gpus or 1.0):.4g}"
        if not gpus:
            env["JAX_PLATFORMS"] = "cpu"
            if cpus < 2:  # XLA's CPU kernels otherwise use every core; the other cores run other trials
                # added to the user's own XLA flags, which the workers would otherwise lose
                env["XLA_FLAGS"] = " ".join([*os.environ.get("XLA_FLAGS", "").split(),
                                             "--xla_cpu_multi_thread_eigen=false"])
    elif backend == "tensorflow" and gpus:
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    return env


def configure(backend: str, cpus: float, gpus: float) -> None:
    """In a trial worker, once: threads follow the trial's CPUs; a fractional GPU's memory is capped."""
    threads = max(1, int(math.floor(cpus)))
    if backend == "tensorflow":
        import tensorflow as tf

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
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)
        if 0 < gpus < 1 and torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(MEMORY_SHARE * gpus)


def reset_peak_memory(backend: str) -> None:
    """Start a trial's GPU peak-memory count afresh (tensorflow, torch; jax keeps one peak per process)."""
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        elif backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_logical_devices("GPU"):
                tf.config.experimental.reset_memory_stats("GPU:0")
    except Exception:  # a statistic must never fail a trial
        pass


def device_info(backend: str) -> dict[str, Any]:
    """The device a trial trains on: ``device`` ("cpu" or the GPU's name) and, on a GPU, ``gpu_mem_peak_mb``
    (the framework's peak allocation: per trial for tensorflow and torch, per worker process for jax)."""
    try:
        if backend == "jax":
            import jax

            d = jax.devices()[0]
            if d.platform != "gpu":
                return {"device": "cpu"}
            stats = d.memory_stats() or {}
            return {"device": d.device_kind, "gpu_mem_peak_mb": round(stats.get("peak_bytes_in_use", 0) / 2**20, 1)}
        if backend == "torch":
            import torch

            if not torch.cuda.is_available():
                return {"device": "cpu"}
            return {"device": torch.cuda.get_device_name(0),
                    "gpu_mem_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return {"device": "cpu"}
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name") or _nvidia_name()
        peak = tf.config.experimental.get_memory_info("GPU:0").get("peak", 0)
        return {"device": name, "gpu_mem_peak_mb": round(peak / 2**20, 1)}
    except Exception:  # a statistic must never fail a trial
        return {"device": "unknown"}


def _nvidia_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=10).stdout
        return out.strip().splitlines()[0]
    except Exception:
        return "gpu"
