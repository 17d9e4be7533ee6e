"""The ENAS space and its supernet, the given strategy, and the supernet phase's trainer, without Ray: the space
conforms; the supernet with a child's architecture computes exactly that child; a child's gradient reaches only
its own operations; one compiled step serves every child; the trainer trains, ranks and resumes exactly; the same
under jax (subprocess). Bad weight-sharing options are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nas.estimation.settings import SupernetSettings
from nas.options import TrialSetup
from nas.plugins import params as P
from nas.plugins.data import load_data
from nas.plugins.objective import Objective
from nas.plugins.task import make_task
from nas.testing.conformance import strategy_conformance, toy_space
from search_spaces.enas_cnn import OPS, ENASSpace, reductions

ROOT = Path(__file__).resolve().parents[2]
ENAS = "search_spaces.enas_cnn:ENASSpace"
GIVEN = "strategies.given:GivenConfigurations"

# the space's conformance (10 configurations): tests/plugins/test_conformance.py::test_space[enas_cnn-*]
test_given_strategy = strategy_conformance(GIVEN)
test_given_strategy_with_configurations = strategy_conformance(GIVEN, configurations=[
    {"depth": 1, "width_0": 8, "kind": "a", "lr": 0.01, "dropout": 0.1, "bn": False, "batch": 32, "fixed": 7},
    {"depth": 2, "width_0": 16, "width_1": 8, "kind": "b", "b_strength": 1.0, "lr": 0.001, "dropout": 0.0,
     "bn": True, "batch": 64, "fixed": 7},
])


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def space(digits):
    return ENASSpace(make_task(digits, "classification"), layers=4, filters=8)


def _children(space, n, seed=0):
    hp = space.hyperparameters()
    rng = np.random.default_rng(seed)
    out = [P.default_values(hp)] + [P.sample_values(hp, rng) for _ in range(n - 1)]
    out.append({**out[-1], **{f"op_{i}": op for i, op in zip(range(1, 5), OPS[-4:])}})  # the parameter-free ops
    return out


def test_space_declares_ops_and_skips(space) -> None:
    hp = space.hyperparameters()
    names = [p.name for p in hp.space]
    assert names == ["op_1", "op_2", "skip_2_0", "op_3", "skip_3_0", "skip_3_1", "op_4", "skip_4_0", "skip_4_1",
                     "skip_4_2"]
    assert list(hp.space[0].values) == list(OPS)
    assert reductions(6) == {2, 4} and reductions(4) == {1, 3} and reductions(1) == set()


def test_the_supernet_computes_exactly_each_child(space, digits) -> None:
    import keras

    supernet = space.build_supernet()
    x = digits.x_val[:32]
    for values in _children(space, 4):
        child = space.child_from_supernet(supernet, P.to_hp(space.hyperparameters(), values))
        got = supernet.predict_on_batch([x, *space.arch_inputs(values, len(x))])
        np.testing.assert_allclose(got, child.predict_on_batch(x), atol=1e-5)
    keras.backend.clear_session(free_memory=False)


@pytest.mark.slow
def test_a_childs_gradient_reaches_only_its_own_operations_and_one_step_serves_all(space, digits,
                                                                                  monkeypatch) -> None:
    import tensorflow as tf

    from nas.estimation import layers

    calls = []
    original = layers.OpChoice.call
    monkeypatch.setattr(layers.OpChoice, "call", lambda self, x, ops: calls.append(1) or original(self, x, ops))
    supernet = space.build_supernet()
    children = _children(space, 5)
    values = {**children[1], "op_1": "conv5x5", "op_2": "sepconv3x3"}
    x, y = digits.x_train[:16], digits.y_train[:16]
    with tf.GradientTape() as tape:
        probs = supernet([x, *space.arch_inputs(values, len(x))], training=True)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, probs))
    variables = supernet.trainable_variables
    grads = dict(zip([v.path for v in variables], tape.gradient(loss, [v.value for v in variables])))
    for layer in (1, 2):
        for op in ("conv3x3", "conv5x5", "sepconv3x3", "sepconv5x5"):
            paths = [p for p in grads if f"/l{layer}_{op}/" in p]
            assert paths, (layer, op, list(grads))
            chosen = op == values[f"op_{layer}"]
            norms = [0.0 if grads[p] is None else float(tf.norm(grads[p])) for p in paths]
            assert all(n > 0 for n in norms) if chosen else all(n == 0 for n in norms), (layer, op, norms)
    # one real training step moves the chosen operation's weights only (Adam from zero moments) ...
    before = {v.path: np.array(v.numpy()) for v in supernet.trainable_variables}
    supernet.train_on_batch([x, *space.arch_inputs(values, len(x))], y)
    for v in supernet.trainable_variables:
        moved = not np.array_equal(before[v.path], v.numpy())
        for op in OPS:
            if f"/l1_{op}/" in v.path:
                assert moved == (op == "conv5x5"), v.path
    # ... and that compiled step serves every other child: nothing is traced again
    traced = len(calls)
    for other in children:
        supernet.train_on_batch([x, *space.arch_inputs(other, 16)], y)
    assert traced > 0 and len(calls) == traced, "a new child recompiled the train step"


def _setup(tmp_path, **kw):
    digits = load_data("digits")
    task = make_task(digits, "classification")
    setup = TrialSetup(space=ENAS, task=task, epochs=1, objective=Objective("val_accuracy", "max"), seed=3,
                       space_options={"layers": 3, "filters": 8}, run_dir=str(tmp_path), **kw)
    return digits, setup


def _trainer(tmp_path, digits, setup, epochs=2):
    from nas.estimation.trainer import SupernetTrainer

    settings = SupernetSettings(epochs=epochs, top_k=2, controller_steps=2, children_per_step=3, candidates=4,
                                epoch_best=2)
    return SupernetTrainer(setup, digits, settings, "rl", {"policy": "lstm", "unique": False, "batch": 3},
                           [{"metric": "val_accuracy", "mode": "max"}])


@pytest.mark.slow
def test_the_trainer_trains_ranks_and_resumes_exactly(tmp_path) -> None:
    import shutil

    digits, setup = _setup(tmp_path / "ref")
    ref = _trainer(tmp_path, digits, setup)
    assert ref.restore()["epoch"] == 0
    first = ref.train_epoch(0)
    assert first["children"] == 6 and np.isfinite(first["loss"]) and first["best"]["metrics"]["val_accuracy"] > 0
    assert ref.controller.adam.t == 2  # one controller update per 3 children
    # what a kill -9 after the first epoch leaves on disk
    shutil.copytree(tmp_path / "ref" / "supernet", tmp_path / "cut" / "supernet")
    ref.train_epoch(1)
    ranked = ref.rank()
    scores = [r["metrics"]["val_accuracy"] for r in ranked["ranking"]]
    assert scores == sorted(scores, reverse=True) and len(scores) >= 4

    # a new trainer (a new worker after the kill) continues from that checkpoint as if never stopped
    digits, setup_cut = _setup(tmp_path / "cut")
    resumed = _trainer(tmp_path, digits, setup_cut)
    assert resumed.restore()["epoch"] == 1
    resumed.train_epoch(1)
    again = resumed.rank()
    assert json.dumps(again["controller"]) == json.dumps(ranked["controller"])
    assert again["ranking"] == ranked["ranking"]
    assert [h["loss"] for h in resumed.state["history"]] == [h["loss"] for h in ref.state["history"]]


def test_warmup_epochs_train_uniform_children_and_leave_the_controller_alone(tmp_path) -> None:
    from nas.estimation.trainer import SupernetTrainer

    digits, setup = _setup(tmp_path)
    settings = SupernetSettings(epochs=2, top_k=2, controller_steps=2, children_per_step=3, candidates=4,
                                epoch_best=2, warmup_epochs=1)
    t = SupernetTrainer(setup, digits, settings, "rl", {"policy": "lstm", "unique": False, "batch": 3},
                        [{"metric": "val_accuracy", "mode": "max"}])
    t.restore()
    policy = json.dumps(t.controller.get_state())
    drawn = []
    t._sample = lambda rng: drawn.append(1) or SupernetTrainer._sample(t, rng)  # the controller's draws
    before = [np.array(v) for v in t.supernet.trainable_weights]
    warm = t.train_epoch(0)
    assert warm["warmup"] and warm["children"] == 0 and warm["reward_ma"] is None and warm["best"] is None
    assert not drawn and json.dumps(t.controller.get_state()) == policy  # uniform children; no controller update
    assert any(not np.array_equal(a, np.array(b)) for a, b in zip(before, t.supernet.trainable_weights))
    after = t.train_epoch(1)
    assert not after["warmup"] and after["children"] == 6 and drawn and t.controller.adam.t == 2
    assert after["best"]["metrics"]["val_accuracy"] > 0


@pytest.mark.slow
def test_the_supernet_phase_under_jax(tmp_path) -> None:
    """Under jax: the trainer runs an epoch, one compiled step serves every child, the supernet is each child,
    and the chosen op alone gets a gradient (jax.grad through lax.switch)."""
    code = f'''
import sys, time
import numpy as np
import keras, jax
assert keras.backend.backend() == "jax"
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from pathlib import Path
from test_enas import _children, _setup, _trainer
from nas.plugins import params as P
from nas.estimation import layers

calls = []
original = layers.OpChoice.call
layers.OpChoice.call = lambda self, x, ops: calls.append(1) or original(self, x, ops)
digits, setup = _setup(Path({str(tmp_path)!r}), backend="jax")
t = _trainer(Path({str(tmp_path)!r}), digits, setup, epochs=1)
t.restore()
rec = t.train_epoch(0)
assert np.isfinite(rec["loss"]) and rec["children"] == 6
space, supernet = t.space, t.supernet
x, y = digits.x_train[:t.batch], digits.y_train[:t.batch]
traced = len(calls)
children = _children(space, 3)
for v in children:
    supernet.train_on_batch([x, *space.arch_inputs(v, len(x))], y)
assert traced and len(calls) == traced, (traced, len(calls))
layers.OpChoice.call = original

values = dict(children[1], op_1="conv5x5")
child = space.child_from_supernet(supernet, P.to_hp(space.hyperparameters(), values))
xv = digits.x_val[:t.eval_batch]
np.testing.assert_allclose(supernet.predict_on_batch([xv, *space.arch_inputs(values, len(xv))]),
                           child.predict_on_batch(xv), atol=1e-5)
arch = space.arch_inputs(values, 16)
tv = [v.value for v in supernet.trainable_variables]
ntv = [v.value for v in supernet.non_trainable_variables]
def loss(tv):
    probs, _ = supernet.stateless_call(tv, ntv, [x[:16], *arch], training=True)
    return -jax.numpy.mean(jax.numpy.log(probs[jax.numpy.arange(16), y[:16]]))
grads = dict(zip([v.path for v in supernet.trainable_variables], jax.jit(jax.grad(loss))(tv)))
for op in ("conv3x3", "conv5x5", "sepconv3x3", "sepconv5x5"):
    norms = [float(jax.numpy.linalg.norm(g)) for p, g in grads.items() if f"/l1_{{op}}/" in p]
    assert norms and (all(n > 0 for n in norms) if op == "conv5x5" else all(n == 0 for n in norms)), (op, norms)
print("jax ok", rec["best"]["metrics"])
'''
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=dict(os.environ, KERAS_BACKEND="jax"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "jax ok" in proc.stdout


# -- bad input: one line, before Ray -----------------------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--estimation", "bogus"], "argument --estimation: invalid choice: 'bogus' (choose from 'standalone', "
                                "'shared-weights')"),
    (["--space", "cnn", "--estimation", "shared-weights"], "space 'cnn' declares no supernet"),
    (["--space", ENAS, "--estimation", "shared-weights", "--strategy", "gp"],
     "--strategy gp cannot be the controller of --estimation shared-weights"),
    (["--space", ENAS, "--estimation", "shared-weights", "--objective", "params:min"],
     "--objective params:min cannot be estimated with shared weights; accepted: one of val_accuracy, val_loss"),
    (["--space", ENAS, "--estimation", "shared-weights", "--supernet-option", "bogus=1"],
     "--supernet-option bogus=1 is not valid; accepted keys: controller_steps"),
    (["--space", ENAS, "--estimation", "shared-weights", "--supernet-option", "candidates=0"],
     "--supernet-option candidates=0 is not valid; give an integer >= 1"),
    (["--space", ENAS, "--estimation", "shared-weights", "--top-k", "0"], "--top-k: '0' must be >= 1"),
    (["--space", ENAS, "--estimation", "shared-weights", "--supernet-epochs", "4", "--supernet-option",
      "warmup_epochs=5"], "--supernet-option warmup_epochs=5 is not valid; give 0 to --supernet-epochs (4)"),
    (["--space", ENAS, "--space-option", "layers=0"], "enas_cnn option layers=0 is not valid"),
])
def test_bad_weight_sharing_input_is_one_line(cli, kept_ray, capsys, monkeypatch, args, needle) -> None:
    """On the kept Ray: a refusal that comes once the space is built (after the search's Ray began to start, in
    the background) then starts and stops no Ray of its own."""
    code = None
    try:
        code, _, err = cli.inprocess("search", "--name", "bad", *args, capsys=capsys, monkeypatch=monkeypatch)
    except SystemExit as e:  # argparse's own one line
        code, err = e.code, capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (cli.storage / "bad").exists()


def test_given_strategy_refuses_points_outside_the_space() -> None:
    import nas
    from nas.errors import PluginError

    with pytest.raises(PluginError, match="given configuration 0 is not a point of the space"):
        nas.create_strategy(GIVEN, space=toy_space(), configurations=[{"depth": 9}])
    s = nas.create_strategy(GIVEN, space=toy_space(), configurations=[P.default_values(toy_space())])
    assert s.ask().values == P.default_values(toy_space()) and s.ask() is None


def test_settings_defaults_and_options() -> None:
    s = SupernetSettings.of(3, 2, {"controller_steps": 4})
    assert (s.epochs, s.top_k, s.controller_steps, s.children_per_step) == (3, 2, 4, 10)
    assert s.warmup_epochs == 1 and SupernetSettings.of(30, 5, {}).warmup_epochs == 15  # half, by default
    assert SupernetSettings.of(3, 2, {"warmup_epochs": 0}).warmup_epochs == 0
    # a run stored before warm-up existed resumes without one
    assert SupernetSettings.from_json({k: v for k, v in s.to_json().items() if k != "warmup_epochs"}).warmup_epochs == 0
    assert replace(s, candidates=7).candidates == 7


def test_the_ranking_always_holds_top_k_architectures(tmp_path) -> None:
    """A policy that proposes fewer distinct children than --top-k: uniform draws fill the ranking."""
    from nas.estimation.trainer import SupernetTrainer

    digits, setup = _setup(tmp_path)
    settings = SupernetSettings(epochs=1, top_k=7, controller_steps=1, children_per_step=2, candidates=1,
                                epoch_best=1)
    t = SupernetTrainer(setup, digits, settings, "rl", {"policy": "lstm", "unique": False, "batch": 2},
                        [{"metric": "val_accuracy", "mode": "max"}])
    t.restore()
    t.train_epoch(0)
    ranking = t.rank()["ranking"]
    assert len({P.canonical(r["values"]) for r in ranking}) == len(ranking) >= 7
    scores = [r["metrics"]["val_accuracy"] for r in ranking]
    assert scores == sorted(scores, reverse=True)


def test_status_says_when_the_phase_is_in_its_warmup() -> None:
    from nas.estimation.status import status_line

    warm = {"phase": "supernet", "epoch": 2, "epochs": 6, "reward_ma": None, "best": None,
            "history": [{"epoch": 1, "warmup": True}, {"epoch": 2, "warmup": True}]}
    assert status_line(warm) == ("supernet: 2/6 epochs, running or interrupted in its warm-up (uniform children, "
                                 "the controller waits); reward_ma -")
    learning = dict(warm, epoch=4, history=[*warm["history"], {"epoch": 3, "warmup": False}])
    assert "warm-up" not in status_line(learning)
