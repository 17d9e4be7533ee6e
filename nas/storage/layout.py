"""Every path of a run directory, named once (no nas imports): the store, the lock, the trials' workers, the
Ray runtime, the supernet phase, exports and the API all find their files here.

    <storage>/<name>/spec.json              what was searched, how (space, strategy, data, objective, budgets,
                                            seed, package versions)
    <storage>/<name>/trials/<id>.json       one record per trial, rewritten atomically as it progresses
    <storage>/<name>/trials/<id>/           the trial's files: resume.npz (its last epoch's checkpoint), best.npz
                                            and best.json (its best epoch's weights), best.keras (its best model)
    <storage>/<name>/strategy.json          the strategy's get_state() after every tell
    <storage>/<name>/driver.lock            the lock (flock) the driver that owns the run holds (``nas.storage.lock``)
    <storage>/<name>/driver.json            that driver: pid, host, since, command, outcome
    <storage>/<name>/ray/local.json         the local Ray a driver started (its pid, Ray's session directory)
    <storage>/<name>/ray/session-<k>/       Ray Tune's experiment state, one directory per driver session
    <storage>/<name>/tensorboard/[<id>/]    HParams and per-epoch logs (``nas.trials.tensorboard``)
    <storage>/<name>/data.npz, plugins/     what the Python API gave in memory (``nas.driver.inputs``)
    <storage>/<name>/supernet/              the weight-sharing phase: resume.npz (its checkpoint), state.json,
                                            controller.json
"""

from __future__ import annotations

from pathlib import Path

SPEC = "spec.json"
STRATEGY = "strategy.json"
TRIALS = "trials"
LOCK = "driver.lock"
OWNER = "driver.json"
RAY = "ray"
LOCAL_RAY = f"{RAY}/local.json"
TENSORBOARD = "tensorboard"
DATA = "data.npz"
PLUGINS = "plugins"
FIT_ARGUMENTS = f"{PLUGINS}/fit.pkl"  # the user's Model.fit arguments (nas.search(..., callbacks=[...]))
SUPERNET = "supernet"
SUPERNET_STATE = f"{SUPERNET}/state.json"
CONTROLLER = "controller.json"  # in the supernet directory: the controller strategy's final state

# in a trial's directory
CHECKPOINT = "resume.npz"
BEST_MODEL = "best.keras"
BEST_INFO = "best.json"
BEST_WEIGHTS = "best.npz"
EXECUTIONS = "executions.json"  # --executions-per-trial N: the per-epoch metrics of the first N - 1 executions


def trial_record(run_dir: str | Path, trial_id: str) -> Path:
    """A trial's record ``<run>/trials/<id>.json``."""
    return Path(run_dir) / TRIALS / f"{trial_id}.json"


def trial_dir(run_dir: str | Path, trial_id: str) -> Path:
    """Where a trial writes its files (weights, checkpoints): ``<run>/trials/<id>/``, beside its record."""
    return Path(run_dir) / TRIALS / str(trial_id)


def tensorboard_dir(run_dir: str | Path, trial_id: str | None = None) -> Path:
    root = Path(run_dir) / TENSORBOARD
    return root / str(trial_id) if trial_id is not None else root


def supernet_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / SUPERNET
