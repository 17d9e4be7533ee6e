"""``nas export``: a searched model in deployable formats, with its architecture, metrics and a model card.

By default the chosen trial's model is the one it saved at its best epoch (``<run>/trials/<id>/best.keras``,
written by ``nas.trials.artifacts.BestModelSaver``); ``retrain`` rebuilds the configuration through its space and
trains it on train+validation instead. Every format written is reloaded and its predictions on a validation
batch compared with the model's before the export is reported as done.

    <out>/model.keras         Keras 3 (``keras.models.load_model``, no custom objects), from any backend
    <out>/saved_model/        TensorFlow SavedModel (``model.export``; TF Serving, ``tf.saved_model.load``)
    <out>/model.onnx          ONNX, converted from the SavedModel with tf2onnx (optional extra ``nas[onnx]``)
    <out>/model.tflite        TensorFlow Lite (from the SavedModel)

Backends: a trial's ``best.keras`` holds plain weights, so it loads under any Keras backend. ``keras`` exports
under the run's backend; ``savedmodel``, ``tflite`` and ``onnx`` are TensorFlow formats, made by loading the model
under TensorFlow (which must be installed) whatever backend trained it. (Keras' own ONNX exporter needs tf2onnx
for the tensorflow and jax backends too; one route, verified by the same comparison, serves every backend.)
    <out>/architecture.json   hyperparameter values, space name and version, task, data spec, objective
    <out>/metrics.json        the trial's metrics, the verification's differences, retraining history
    <out>/summary.txt         the Keras model summary
    <out>/README.md           the model card
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nas.errors import NasError, RunError
from nas.plugins.objective import Objective
from nas.plugins.registry import stored_space
from nas.runtime import backends
from nas.runtime.quiet import quiet_environment
from nas.storage.layout import BEST_INFO, BEST_MODEL, BEST_WEIGHTS, trial_dir
from nas.storage.records import RunSpec, TrialRecord, TrialStatus
from nas.storage.results import format_config, format_value
from nas.storage.store import ExperimentStore, choose_trial, write_json
from nas.trials.artifacts import load_best
from nas.trials.worker import trial_seed

FORMATS = ("keras", "savedmodel", "onnx", "tflite")
DEFAULT_FORMATS = ("keras", "savedmodel")
TOLERANCE = 1e-4
VERIFY_BATCH = 64
ONNX_OPSET = 17
FILES = {"keras": "model.keras", "savedmodel": "saved_model", "onnx": "model.onnx", "tflite": "model.tflite"}
#: packages each optional format needs, and how to install them
NEEDS = {"onnx": (("tf2onnx", "onnxruntime"), 'pip install "nas[onnx]"  (or: pip install tf2onnx onnxruntime)')}
#: formats made through TensorFlow, whatever backend trained the model
TENSORFLOW_FORMATS = ("savedmodel", "onnx", "tflite")


class ExportError(NasError):
    """An export cannot be made, or a written format does not reproduce the model's predictions."""


@dataclass
class ExportOptions:
    name: str
    storage: str | None = None
    trial: str | None = None
    formats: Sequence[str] = DEFAULT_FORMATS
    out: str | None = None
    retrain: bool = False
    epochs: int | None = None


@dataclass
class ExportResult:
    directory: Path
    trial_id: str
    files: dict[str, Path]
    differences: dict[str, float]
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


def parse_formats(text: str | Sequence[str]) -> list[str]:
    """``"keras,onnx"`` -> ``["keras", "onnx"]``, checked, duplicates dropped, order kept."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for f in (s.strip().lower() for s in items):
        if not f:
            continue
        if f not in FORMATS:
            raise ExportError(f"format {f!r} is not valid; accepted: {', '.join(FORMATS)} (comma-separated)")
        if f not in out:
            out.append(f)
    if not out:
        raise ExportError(f"no format given; accepted: {', '.join(FORMATS)} (comma-separated)")
    return out


def export_backend(formats: Sequence[str], run_backend: str) -> str:
    """The Keras backend this export runs under: TensorFlow for TensorFlow formats, else the run's own (or the
    one this process already runs Keras with: a ``.keras`` file loads under any)."""
    import sys

    tf_formats = [f for f in formats if f in TENSORFLOW_FORMATS]
    if not tf_formats:
        keras = sys.modules.get("keras")
        return keras.backend.backend() if keras is not None else run_backend
    if importlib.util.find_spec("tensorflow") is None:
        raise ExportError(f"--format {','.join(tf_formats)} needs TensorFlow, which is not installed here "
                          f"(pip install tensorflow-cpu); --format keras works with any backend")
    return "tensorflow"


def check_packages(formats: Sequence[str]) -> None:
    """Fail before any work when an optional format's packages are missing."""
    for f in formats:
        pkgs, how = NEEDS.get(f, ((), ""))
        missing = [p for p in pkgs if importlib.util.find_spec(p) is None]
        if missing:
            raise ExportError(f"--format {f} needs {', '.join(missing)}, which is not installed: {how}")


# -- choosing the trial ---------------------------------------------------------------------------------------
# -- building or loading the model ----------------------------------------------------------------------------
def _data(spec: RunSpec, space: Any) -> Any:
    """The data the search used, prepared by the space as the trials saw it."""
    return space.prepare_data(spec.data.load(spec.seed))


def _retrain(spec: RunSpec, space: Any, prepared: Any, trial: TrialRecord, epochs: int,
             log: Callable[[str], None]) -> tuple[Any, list[dict[str, float]]]:
    import keras

    from nas.plugins import params as P

    keras.utils.set_random_seed(trial_seed(spec.seed, str(trial.trial_id)))
    hp = P.to_hp(space.hyperparameters(), trial.config)
    model = space.build(hp)
    x = np.concatenate([prepared.x_train, prepared.x_val])
    y = np.concatenate([prepared.y_train, prepared.y_val])
    history: list[dict[str, float]] = []
    started = time.perf_counter()

    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            m = {k: float(v) for k, v in (logs or {}).items()}
            history.append({"epoch": epoch + 1, **m})
            log(f"  epoch {epoch + 1}/{epochs}: {format_config(m)}  {time.perf_counter() - started:.1f}s")

    log(f"retraining trial {trial.trial_id} on train+validation ({len(x)} examples) for {epochs} epochs")
    space.fit(hp, model, x, y, epochs=int(epochs), callbacks=[Progress()], verbose=0, shuffle=True)
    return model, history


# -- writing and checking each format -------------------------------------------------------------------------
def _outputs(value: Any) -> list[np.ndarray]:
    """A model's output(s) as a flat list of arrays, in a stable order."""
    if isinstance(value, Mapping):
        return [np.asarray(value[k]) for k in sorted(value)]
    if isinstance(value, (list, tuple)):
        return [np.asarray(v) for v in value]
    return [np.asarray(value)]


def max_abs_difference(expected: list[np.ndarray], got: list[np.ndarray]) -> float:
    if len(expected) != len(got):
        return float("inf")
    worst = 0.0
    for e, g in zip(expected, got):
        g = np.asarray(g, dtype="float64")
        if g.size != e.size:
            return float("inf")
        worst = max(worst, float(np.max(np.abs(g.reshape(e.shape) - e.astype("float64")))) if e.size else 0.0)
    return worst


def _write_keras(model: Any, path: Path, batch: np.ndarray) -> list[np.ndarray]:
    import keras

    model.save(path)
    return _outputs(keras.models.load_model(path)(batch, training=False))


def _write_savedmodel(model: Any, path: Path, batch: np.ndarray) -> list[np.ndarray]:
    import tensorflow as tf

    model.export(str(path), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(path))  # keep a reference: its variables die with it
    return _outputs(loaded.serve(tf.constant(batch)))


def _write_onnx(saved_model: Path, path: Path, batch: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    # tf2onnx's from_keras fails on Keras 3 models; converting the exported SavedModel's serving function works
    # (onnxruntime then matches Keras to ~1e-7).
    loaded = tf.saved_model.load(str(saved_model))
    _, inputs = loaded.signatures["serving_default"].structured_input_signature
    spec = [tf.TensorSpec(s.shape, s.dtype, name=n) for n, s in inputs.items()]
    tf2onnx.convert.from_function(tf.function(lambda *a: loaded.serve(*a)), input_signature=spec,
                                  opset=ONNX_OPSET, output_path=str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})


def _write_tflite(saved_model: Path, path: Path, batch: np.ndarray) -> list[np.ndarray]:
    import tensorflow as tf

    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert())
    interpreter = tf.lite.Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], batch.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], batch)
    interpreter.invoke()
    return [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]


#: what an export writes besides the model files (its marker: architecture.json names the run and trial)
SIDE_FILES = ("architecture.json", "metrics.json", "README.md", "summary.txt")


def check_out(out: Path) -> None:
    """``--out`` must be a new or empty directory, or an earlier export (which the new one replaces): an export
    never deletes or overwrites a user's own files (``ExportError`` before anything is loaded or written)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {str(out)!r} is a file; give a directory (new or empty; created if absent)")
    if not out.is_dir():
        return
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    if not entries or _is_export(out):
        return
    shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
    raise ExportError(f"--out {str(out)!r} already holds files that are not a nas export ({shown}); nothing was "
                      f"written: give a new or empty directory")


def _is_export(out: Path) -> bool:
    """``out`` holds only what an earlier export wrote, architecture.json naming its run and trial."""
    try:
        marker = json.loads((out / "architecture.json").read_text())
    except (OSError, ValueError):
        return False
    ours = {*FILES.values(), *SIDE_FILES}
    return isinstance(marker, dict) and {"run", "trial_id"} <= set(marker) and \
        all(p.name in ours for p in out.iterdir())


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# -- side files -----------------------------------------------------------------------------------------------
SUMMARY_WIDTH = 120


def _summary(model: Any) -> str:
    """``model.summary()`` at full width. Keras renders it with rich, whose console is 80 columns wide when
    it is not a terminal (cutting off "Param #" whatever ``line_length`` says) unless ``COLUMNS`` says more."""
    lines: list[str] = []
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(SUMMARY_WIDTH)
    try:
        model.summary(print_fn=lambda s, **kw: lines.append(s), line_length=SUMMARY_WIDTH)
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before
    return "\n".join(lines) + "\n"


def _model_card(spec: RunSpec, trial: TrialRecord, objectives: Sequence[Objective],
                architecture: Mapping[str, Any], metrics: Mapping[str, Any], files: Mapping[str, Path],
                differences: Mapping[str, float], retrain: Mapping[str, Any] | None, n_completed: int) -> str:
    obj = objectives[0]
    d, task = spec.data.to_json(), spec.task
    tid = trial.trial_id
    m = trial.metrics
    if len(objectives) > 1:
        how = (f"chosen with `--trial {tid}` from the non-dominated trials of a search on "
               f"{', '.join(str(o) for o in objectives)}")
    else:
        how = (f"trial {tid}, the best of {n_completed} completed trials by `{obj}`" if not architecture["chosen_by"]
               else f"trial {tid}, chosen with `--trial {tid}` ({n_completed} completed trials; objective `{obj}`)")
    weights = (f"retrained from scratch on train+validation for {retrain['epochs']} epochs (seeded)" if retrain else
               f"the weights trial {tid} saved at its best epoch ({m.get('best_epoch')} of {m.get('epochs')})")
    rows = "\n".join(f"| {k} | {format_value(v)} |" for k, v in m.items() if isinstance(v, (int, float)))
    hps = "\n".join(f"| {k} | {format_value(v)} |" for k, v in trial.config.items())
    fmt_rows = "\n".join(f"| {f} | `{files[f].name}` | {differences[f]:.3g} |" for f in files)
    shape = ", ".join(str(int(v)) for v in task.input_shape)
    load = (f"```python\nimport keras\nmodel = keras.models.load_model(\"model.keras\")\n"
            f"predictions = model.predict(x)  # x: float32, shape (N, {shape})\n```\n") if "keras" in files else (
            f"```python\nimport tensorflow as tf\nmodel = tf.saved_model.load(\"saved_model\")\n"
            f"predictions = model.serve(x)  # x: float32, shape (N, {shape})\n```\n")
    return f"""# {spec.name} — trial {tid}

A `{spec.space}` model (space version {architecture['space_version']}) found by `nas` with strategy
`{spec.strategy}`, trained with the Keras backend `{architecture['backend']}`, for the task `{task.kind}` on `{d['spec']}` (input shape
{tuple(task.input_shape)}{f", {task.num_classes} classes" if task.num_classes else ''}).

## What was searched

Space `{spec.space}`: {len(spec.hyperparameters)} hyperparameters
({', '.join(h['name'] + ' ' + h['range'] for h in spec.hyperparameters)}).
Budget: {spec.trials} trials x {spec.epochs} epochs, seed {spec.seed}; {n_completed} trials completed.
Data: {d.get('train')} training and {d.get('val')} validation examples.

## How this model was chosen

{how}. Weights: {weights}.

## Hyperparameters

| name | value |
|---|---|
{hps}

## Metrics (trial {tid} at its best epoch; `val_*` on the validation set)

| metric | value |
|---|---|
{rows}
{f"{chr(10)}After retraining, the last epoch's training metrics: {format_config(retrain['history'][-1])}.{chr(10)}" if retrain and retrain['history'] else ''}
## Files

| format | file | max abs difference vs the Keras model on {VERIFY_BATCH} validation inputs |
|---|---|---|
{fmt_rows}

Also: `architecture.json` (hyperparameters, space, task, data, objective), `metrics.json`, `summary.txt`.

## Load it

{load}
No custom objects are needed: the model is made of built-in Keras layers (or layers `nas` registers as
serialisable Keras objects).
"""


# -- the command ----------------------------------------------------------------------------------------------
def run_export(opts: ExportOptions, log: Callable[[str], None] = print) -> ExportResult:
    """Export one trial of a run in ``opts.formats``; every format is verified, or ``ExportError`` is raised."""
    started = time.perf_counter()
    formats = parse_formats(opts.formats)
    if opts.epochs is not None and not opts.retrain:
        raise ExportError(f"--epochs {opts.epochs} applies only with --retrain")
    if opts.epochs is not None and opts.epochs < 1:
        raise ExportError(f"--epochs {opts.epochs!r} is not valid; give an integer >= 1")
    check_packages(formats)
    if opts.out:
        check_out(Path(opts.out).expanduser())
    store = ExperimentStore.open(opts.name, opts.storage)
    spec = store.spec()
    objectives = spec.objectives
    trial = choose_trial(store, objectives, opts.trial, log=log)
    tid = str(trial.trial_id)
    saved = trial_dir(store.root, tid) / BEST_MODEL
    weights = trial_dir(store.root, tid) / BEST_WEIGHTS  # a trial cut short before writing best.keras has these
    if not opts.retrain and not saved.is_file() and not weights.is_file():
        raise RunError(f"trial {tid} of run {store.name!r} saved no model ({saved} is missing; runs made before "
                       f"trials saved their best epoch have none); export it with --retrain")

    quiet_environment(verbose=False)  # before TensorFlow is imported; a user's own settings win
    run_backend = spec.backend
    backend = backends.check(export_backend(formats, run_backend))
    backends.select(backend)  # before Keras is imported (by the space)

    space = stored_space(spec)
    prepared = _data(spec, space)
    retrain: dict[str, Any] | None = None
    if opts.retrain:
        epochs = int(opts.epochs or trial.metrics.get("best_epoch") or spec.epochs)
        model, history = _retrain(spec, space, prepared, trial, epochs, log)
        retrain = {"epochs": epochs, "history": history, "seed": spec.seed}
    else:
        from nas.plugins import params as P

        model, saved = load_best(saved.parent, lambda: space.build(P.to_hp(space.hyperparameters(), trial.config)))
        log(f"loaded trial {tid}'s best-epoch model ({trial.metrics.get('best_epoch')} of "
            f"{trial.metrics.get('epochs')} epochs) from {saved}")

    out = Path(opts.out).expanduser() if opts.out else store.root / "exports" / (
        f"trial-{tid}" + ("-retrained" if opts.retrain else ""))
    out.mkdir(parents=True, exist_ok=True)  # checked before anything was loaded: check_out
    batch = np.ascontiguousarray(prepared.x_val[:VERIFY_BATCH], dtype="float32")
    expected = [e.astype("float64") for e in _outputs(model(batch, training=False))]

    files: dict[str, Path] = {}
    differences: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="nas-export-") as tmp:
        saved_model = out / FILES["savedmodel"]
        if "savedmodel" not in formats and {"onnx", "tflite"} & set(formats):
            saved_model = Path(tmp) / "saved_model"  # onnx and tflite are converted from a SavedModel
        for fmt in ("keras", "savedmodel", "onnx", "tflite"):
            needed = fmt in formats or (fmt == "savedmodel" and {"onnx", "tflite"} & set(formats))
            if not needed:
                continue
            path = saved_model if fmt == "savedmodel" else out / FILES[fmt]
            _remove(path)
            t0 = time.perf_counter()
            writer = {"keras": lambda: _write_keras(model, path, batch),
                      "savedmodel": lambda: _write_savedmodel(model, path, batch),
                      "onnx": lambda: _write_onnx(saved_model, path, batch),
                      "tflite": lambda: _write_tflite(saved_model, path, batch)}[fmt]
            try:
                got = writer()
            except ExportError:
                raise
            except Exception as e:  # a converter's failure: name the format, keep the message short
                raise ExportError(f"{fmt} export of trial {tid} failed: {type(e).__name__}: "
                                  f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
            if fmt not in formats:
                continue
            diff = max_abs_difference(expected, got)
            differences[fmt] = diff
            files[fmt] = path
            log(f"{fmt:<10} {path}  max abs difference {diff:.3g} on {len(batch)} validation inputs "
                f"({time.perf_counter() - t0:.1f}s)")
            if not diff <= TOLERANCE:
                raise ExportError(f"{fmt} export of trial {tid} does not reproduce the model: max abs difference "
                                  f"{diff:.3g} > {TOLERANCE:g} on {len(batch)} validation inputs ({path})")

    architecture = {
        "run": spec.name,
        "trial_id": tid,
        "chosen_by": "--trial" if opts.trial is not None else None,
        "hyperparameters": trial.config,
        "space": spec.space,
        "space_version": spec.space_version,
        "space_options": spec.space_options,
        "task": spec.task.to_json(),
        "data": spec.data.to_json(),
        "objective": objectives[0].to_json(),
        "objectives": [o.to_json() for o in objectives],
        "seed": spec.seed,
        "weights": "retrained on train+validation" if retrain else "best epoch of the trial",
        "input_shape": list(spec.task.input_shape),
        "params": int(model.count_params()),
        "backend": run_backend,
        "export_backend": backend,
        "versions": spec.versions,
    }
    metrics = {
        "trial_id": tid,
        "objective": objectives[0].to_json(),
        "metrics": trial.metrics,
        "best_epoch_saved": _read_json(trial_dir(store.root, tid) / BEST_INFO),
        "retrain": retrain,
        "verification": {"inputs": int(len(batch)), "tolerance": TOLERANCE, "max_abs_difference": differences},
    }
    write_json(out / "architecture.json", architecture)
    write_json(out / "metrics.json", metrics)
    (out / "summary.txt").write_text(_summary(model))
    n_completed = sum(t.status == TrialStatus.COMPLETED for t in store.trials())
    (out / "README.md").write_text(_model_card(spec, trial, objectives, architecture, trial.metrics, files,
                                               differences, retrain, n_completed))
    return ExportResult(out, tid, files, differences, time.perf_counter() - started, metrics)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
