"""nas.driver.inputs: an in-memory plugin is saved with the run so that a Ray worker (or a later resume) that
cannot import the user's own modules still finds it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

USER_MODULE = '''
def build_model(hp):
    import keras
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(hp.Int("units", 1, 4))])
    model.compile(optimizer="adam", loss="mse")
    return model
'''


def test_a_wrapped_build_function_from_the_users_module_travels_by_value(tmp_path: Path, monkeypatch) -> None:
    """nas.tuners wraps a build function in a BuildFunction (nas's class): the user's function inside must be
    saved by value, not as a reference to a module the worker cannot import. Saved here (the driver's side, where
    the module imports), loaded in a fresh process that cannot import it."""
    from nas.driver.inputs import reference
    from nas.plugins.space import BuildFunction

    (tmp_path / "users_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "users_models", raising=False)
    from users_models import build_model

    try:
        saved = str(reference(BuildFunction(build_model), tmp_path / "run" / "space.pkl"))
    finally:
        sys.modules.pop("users_models", None)
    load = ("import sys, cloudpickle, keras_tuner as kt\nhm = cloudpickle.load(open(sys.argv[1], 'rb'))\n"
            "assert 'users_models' not in sys.modules\nprint(hm.build(kt.HyperParameters()).count_params())\n")
    out = subprocess.run([sys.executable, "-c", load, saved], capture_output=True, text=True, timeout=120,
                         cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "5"
