"""Keras's optional imports that nas does not use are skipped (nas.runtime.imports): jax and IPython in every
process that imported nas, scikit-learn and matplotlib too in nas's own processes (the ``nas`` command, a trial
worker); what is skipped still works when used."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import ROOT

USER_PROCESS = r"""
import importlib, sys
import nas, keras, keras_tuner
assert keras.backend.backend() == "tensorflow", keras.backend.backend()
import keras.src.callbacks.orbax_checkpoint, keras.src.saving.file_editor  # optional importers, imported explicitly
skipped = [m for m in ("jax", "IPython") if m in sys.modules]
assert not skipped, f"importing keras imported {skipped}"
from keras.src.wrappers import sklearn_wrapper
assert sklearn_wrapper.sklearn is not None  # a user's process keeps Keras's scikit-learn wrappers
import tensorflow as tf
lite = importlib.import_module("tensorflow.lite.python.lite")
assert tf.lite.TFLiteConverter.experimental_from_jax
import jax  # later, as usual
assert int(lite._jit(lambda x: x * 2)(3)) == 6  # what TFLiteConverter.experimental_from_jax calls
print("ok")
"""

#: how each of nas's own processes starts, before it imports Keras
STARTS = {
    # what Ray runs as each worker of a search starts
    "trial worker": "from nas.runtime.cluster import WARM_UP_HOOK\n"
                    "module, _, name = WARM_UP_HOOK.rpartition('.')\n"
                    "getattr(importlib.import_module(module), name)()\n"
                    "assert 'keras' in sys.modules and 'keras_tuner' in sys.modules\n",
    # the `nas` command (its console script calls nas.cli.run), here on a command that imports no framework
    "nas command": "import nas.cli\n"
                   "sys.argv = ['nas', 'list']\n"
                   "assert nas.cli.run() == 0\n"
                   "import keras, keras_tuner, nas.trials.single\n",
}

OWN_PROCESS = r"""
import keras_tuner.src.tuners.bayesian, keras.src.visualization.plot_image_gallery
skipped = [m for m in ("jax", "IPython", "sklearn", "matplotlib") if m in sys.modules]
assert not skipped, f"imported {skipped}"
import keras
model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                          keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
x, y = np.random.default_rng(0).random((64, 8, 8, 1), dtype="float32"), np.arange(64) % 10
assert np.isfinite(model.fit(x, y, epochs=1, verbose=0).history["loss"][0])
from sklearn.datasets import load_digits  # a plugin's own import of what was skipped
assert len(load_digits().target) == 1797
print("ok")
"""

JAX = r"""
import sys
import nas, keras
assert keras.backend.backend() == "jax" and "jax" in sys.modules
assert float(keras.ops.sum(keras.ops.ones((2, 3)))) == 6.0
print("ok")
"""


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**{k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}, **env})


def test_a_process_that_imported_nas_imports_neither_jax_nor_ipython_with_keras() -> None:
    assert importlib.util.find_spec("jax") is not None, "the test extra installs jax: this test needs it"
    proc = _python(USER_PROCESS, KERAS_BACKEND="tensorflow")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


@pytest.mark.parametrize("process", list(STARTS))
def test_nas_own_processes_skip_scikit_learn_and_matplotlib_too_and_still_train(process: str, tmp_path) -> None:
    code = "import importlib, sys\nimport numpy as np\n" + STARTS[process] + OWN_PROCESS
    proc = _python(code, KERAS_BACKEND="tensorflow", NAS_STORAGE=str(tmp_path))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


def test_the_jax_backend_imports_jax_as_before() -> None:
    proc = _python(JAX, KERAS_BACKEND="jax")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
