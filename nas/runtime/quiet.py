"""Quiet by default: the environment a search runs its processes with, and TensorFlow's import banner kept out
of the user's terminal. ``--verbose`` (``quiet_environment(True)``) turns both off.

TensorFlow's banner. On a CPU with AVX-512 (VNNI, BF16) TensorFlow 2.21 turns oneDNN on and, while it is being
imported, writes ``WARNING: All log messages before absl::InitializeLog() is called are written to STDERR`` and
``I0000 ... port.cc:153] oneDNN custom operations are on ...`` (twice: two of its libraries log it), and
``cpu_feature_guard.cc`` lines, straight to file descriptor 2. They are written before absl's logging is
initialised, so ``TF_CPP_MIN_LOG_LEVEL`` and ``ABSL_MIN_LOG_LEVEL`` do not apply to them (measured). A machine
without AVX-512 prints none of it unless ``TF_ENABLE_ONEDNN_OPTS=1``. oneDNN itself stays on: a cnn trial on
digits takes 0.80x the CPU time with its kernels.

How it is hidden, whatever TensorFlow logs next: ``hide_tensorflow_banner`` puts a finder on ``sys.meta_path``
that wraps the first import of ``tensorflow`` in this process (from ``import keras``, ``keras_tuner``,
``tf2onnx`` or ``tensorflow`` itself). For as long as that import runs, file descriptor 2 is a pipe read by a
small filter process (``_FILTER``) that writes every line to the real stderr except absl/glog-style INFO and
WARNING records (``I1202 00:38:31.812 2114 port.cc:153] ...``, their continuation lines, absl's "before
InitializeLog" notice). ERROR and FATAL records, Python's own warnings and tracebacks, and anything else reach
the user. The filter is a separate process, not a thread, so that what TensorFlow writes just before it crashes
the interpreter (a segfault, an abort in a native library) is still forwarded: the pipe's write end closes with
the crashed process and the filter writes out what it holds. No library offers this (absl's and TensorFlow's
own switches are what fails here), hence the code.

Every process nas starts for a search does it: the driver (``import nas``), and each Ray worker (it imports
nas before its warm-up hook imports Keras); ``NAS_VERBOSE=1`` in the environment (set by ``--verbose``, and so
inherited by the workers) leaves TensorFlow's lines alone.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import warnings
from typing import Any, Iterator

from nas.runtime.imports import WrappedLoader, find_spec_after

# -- the environment -------------------------------------------------------------------------------------------
# Always set for the trial workers (a user's own setting wins). Tune gives a reused worker's previous trial
# thread 2 s to end before the next trial; a Keras fit stopped by a scheduler can take longer to unwind, and the
# next trial then fails to start (ray-project/ray#29268).
WORKER_ENV = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "120"}

#: set by ``--verbose`` (and inherited by every worker): TensorFlow's import banner is not filtered
VERBOSE_ENV = "NAS_VERBOSE"

# TF_CPP_MIN_LOG_LEVEL hides TensorFlow's C++ log lines once absl's logging is initialised; what it writes
# before that is filtered out by ``hide_tensorflow_banner``.
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
    """Set this process's environment for a quiet (or a ``verbose``) search and return what every worker must
    get too. Resume does not use Ray Tune's own experiment snapshots: after a SIGKILL of the driver,
    Tuner.restore re-runs trials that completed within the last snapshot period (>= 10 s by default). Our run
    store is written after every event and is what resumes."""
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
    if verbose:
        os.environ[VERBOSE_ENV] = env[VERBOSE_ENV] = "1"
        show_tensorflow_banner()
    else:
        os.environ.pop(VERBOSE_ENV, None)  # an earlier verbose search of this process (the Python API)
        hide_tensorflow_banner()
        warnings.filterwarnings("ignore")
        # Ray Tune logs each failed trial's traceback at ERROR; the recorder already reports it in one line
        for name in ("ray", "ray.tune", "ray.train", "ray.data", "tensorflow", "absl", "optuna"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    return env


# -- TensorFlow's import banner --------------------------------------------------------------------------------
# The filter process: reads the pipe, writes what is kept to its stderr (the real one). A glog/absl record is
# ``<severity I|W|E|F><MMDD> <time> <thread id> <file>:<line>] <message>``, possibly followed by continuation
# lines (cpu_feature_guard's "To enable the following instructions: ..."). A continuation line of a dropped
# record is still kept when it reads like a failure.
_FILTER = r"""
import os, re, sys
record = re.compile(rb"^([IWEF])\d{4} \d+:\d+:\d+\.\d+ +\d+ [^\]\s]+:\d+\] ")
notice = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
failure = re.compile(rb"error|fatal|abort|fault|traceback|exception|check failed|core dumped|\*\*\*", re.I)
out, pending, dropping = sys.stderr.buffer, b"", False
while True:
    chunk = os.read(0, 65536)
    if chunk:
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
    else:  # every writer is gone: the last line may lack its newline
        lines = [pending] if pending else []
    for line in lines:
        m = record.match(line)
        if m:
            dropping = m.group(1) in b"IW"
        elif line.rstrip() == notice or (dropping and not failure.search(line)):
            continue
        else:
            dropping = False
        if not dropping:
            out.write(line + b"\n")
            out.flush()
    if not chunk:
        break
"""


#: where file descriptor 2 must point once a filter ends, set while another thread has muted it
#: (``nas.runtime.cluster``'s connection to a cluster mutes Ray's C++ retries): the filter, started before the
#: mute, would otherwise put back the descriptor it found and undo the mute
muted_stderr: int | None = None


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """File descriptor 2 goes through ``_FILTER`` for the duration (see the module's docstring). Without a real
    descriptor 2 (an embedding host) or a way to start the filter, nothing is filtered."""
    import subprocess  # here, not at `import nas`: only a TensorFlow import needs it
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        read, write = os.pipe()
        try:
            child = subprocess.Popen([sys.executable, "-S", "-E", "-c", _FILTER], stdin=read, stdout=subprocess.DEVNULL,
                                     stderr=real, close_fds=True)
        finally:
            os.close(read)
    except OSError:
        os.close(real)
        yield
        return
    os.dup2(write, 2)
    os.close(write)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(muted_stderr if muted_stderr is not None else real, 2)
        os.close(real)
        # The filter ends when the pipe's last write end is closed: at once, unless a process started during
        # the import (a Ray process started by another thread) inherited it; it then forwards that process's
        # stderr, filtered, until it ends, and is not waited for.
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


class _Loader(WrappedLoader):
    """The real loader of ``tensorflow``, its module executed with stderr filtered."""

    def exec_module(self, module: Any) -> None:
        with filtered_stderr():
            self.loader.exec_module(module)


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the finders after it would and hands it ``_Loader``; anything else: not ours."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        spec = find_spec_after(self, fullname, path, target)
        if spec is not None and spec.loader is not None and not isinstance(spec.loader, _Loader):
            spec.loader = _Loader(spec.loader)
        return spec


_FINDER = _TensorFlowFinder()


def hide_tensorflow_banner() -> None:
    """From now on, the first import of TensorFlow in this process has its banner filtered out (nothing when it
    is already imported). Idempotent; undone by ``show_tensorflow_banner``."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def show_tensorflow_banner() -> None:
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_FINDER)
