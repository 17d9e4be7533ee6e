"""The rl strategy's LSTM controller computes its REINFORCE gradient in numpy: equal to finite differences, equal
to the TensorFlow GradientTape version it replaced (kept here as the reference), the same proposals over a run,
and no framework imported by a driver that uses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras_tuner as kt
import numpy as np
import pytest

import nas
from nas.testing.conformance import toy_metric, toy_space
from strategies.rl import _lstm_loss_and_grads

ROOT = Path(__file__).resolve().parents[2]


def _tf_loss_and_grads(weights, actions, adv, pad, entropy_weight):
    """strategies/rl.py's TensorFlow version before it became numpy (commit 58034a4), verbatim in its maths."""
    import tensorflow as tf

    weights = [tf.constant(w) for w in weights]
    actions = tf.constant(actions, tf.int32)
    adv = tf.constant(adv, tf.float32)
    pad = tf.constant(pad)
    x0, emb, wk, wr, b, wo, bo = weights
    with tf.GradientTape() as tape:
        tape.watch(weights)
        n = tf.shape(actions)[0]
        units = tf.shape(wr)[0]
        h = tf.zeros([n, units])
        c = tf.zeros([n, units])
        x = tf.tile(x0[None, :], [n, 1])
        logp_sum = tf.zeros([n])
        ent_sum = tf.zeros([n])
        for t in range(actions.shape[1]):
            a_t = actions[:, t]
            m = tf.cast(a_t >= 0, tf.float32)
            z = tf.matmul(x, wk) + tf.matmul(h, wr) + b
            zi, zf, zc, zo = tf.split(z, 4, axis=1)
            c2 = tf.sigmoid(zf) * c + tf.sigmoid(zi) * tf.tanh(zc)
            h2 = tf.sigmoid(zo) * tf.tanh(c2)
            logits = tf.matmul(h2, wo[t]) + bo[t] + pad[t]
            logp = tf.nn.log_softmax(logits)
            a = tf.maximum(a_t, 0)
            lp = tf.gather(logp, a, batch_dims=1)
            p = tf.exp(logp)
            ent = -tf.reduce_sum(tf.where(p > 0, p * logp, 0.0), axis=1)
            logp_sum += m * lp
            ent_sum += m * ent
            mc = m[:, None]
            h = mc * h2 + (1 - mc) * h
            c = mc * c2 + (1 - mc) * c
            x = mc * tf.gather(emb[t], a) + (1 - mc) * x
        loss = -tf.reduce_mean(adv * logp_sum) - entropy_weight * tf.reduce_mean(ent_sum)
    return float(loss), [g.numpy() for g in tape.gradient(loss, weights)]


def _problem(seed: int = 0, units: int = 5, dtype=np.float32):
    """An LSTM controller's weights over the toy space (conditional parameters: some steps not taken), with a
    batch of its own sampled episodes and advantages."""
    s = nas.create_strategy("rl", space=toy_space(), seed=seed, policy="lstm", units=units, bins=4)
    rng = np.random.default_rng(seed)
    s.weights = [rng.normal(0, 0.5, w.shape).astype(dtype) for w in s.weights]  # away from the small init
    actions = np.array([s._actions(s.sample(rng)) for _ in range(6)], np.int64)
    assert (actions < 0).any() and (actions >= 0).any()  # inactive steps carry the state over
    adv = rng.normal(0, 1, len(actions))
    return s, actions, adv


def test_numpy_gradient_equals_finite_differences() -> None:
    s, actions, adv = _problem(units=3, dtype=np.float64)
    weights = [w.astype(np.float64) for w in s.weights]
    loss, grads = _lstm_loss_and_grads(weights, actions, adv, s.pad, 0.05)
    rng = np.random.default_rng(1)
    eps = 1e-6
    for k, w in enumerate(weights):
        for _ in range(6):  # a few coordinates of every weight, including padded head entries
            idx = tuple(int(rng.integers(d)) for d in w.shape)
            plus = [v.copy() for v in weights]
            minus = [v.copy() for v in weights]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            fd = (_lstm_loss_and_grads(plus, actions, adv, s.pad, 0.05)[0]
                  - _lstm_loss_and_grads(minus, actions, adv, s.pad, 0.05)[0]) / (2 * eps)
            assert grads[k][idx] == pytest.approx(fd, rel=1e-5, abs=1e-8), (k, idx)


@pytest.mark.parametrize("entropy_weight", [0.0, 0.01])
def test_numpy_gradient_equals_the_tensorflow_one_it_replaces(entropy_weight: float) -> None:
    s, actions, adv = _problem(units=8)
    loss, grads = _lstm_loss_and_grads(s.weights, actions, adv, s.pad, entropy_weight)
    tf_loss, tf_grads = _tf_loss_and_grads(s.weights, actions, adv, s.pad, entropy_weight)
    assert loss == pytest.approx(tf_loss, rel=1e-5)
    for g, t in zip(grads, tf_grads):
        assert g.dtype == np.float32 and g.shape == t.shape
        np.testing.assert_allclose(g, t, rtol=2e-4, atol=2e-6)


class _TFReinforce:
    """The rl strategy with its gradient from the TensorFlow reference."""

    @staticmethod
    def make(seed: int, **opts):
        s = nas.create_strategy("rl", space=toy_space(), seed=seed, policy="lstm", **opts)
        s._grads = lambda actions, adv: _tf_loss_and_grads(s.weights, actions, adv, s.pad, s.entropy_weight)[1]
        return s


def test_a_seeded_lstm_search_proposes_what_the_tensorflow_version_proposed() -> None:
    def drive(s):
        out = []
        for _ in range(30):
            p = s.ask()
            out.append(p.values)
            s.tell(p.trial_id, {"val_accuracy": toy_metric(p.values)})
        return out

    opts = dict(batch=2, learning_rate=0.05, update="reinforce")
    ours = nas.create_strategy("rl", space=toy_space(), seed=7, policy="lstm", **opts)
    ref = _TFReinforce.make(7, **opts)
    assert drive(ours) == drive(ref)
    for a, b in zip(ours.weights, ref.weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_sample_draws_from_the_policy_without_proposing() -> None:
    s = nas.create_strategy("rl", space=toy_space(), seed=0, policy="lstm")
    state = json.dumps(s.get_state())
    rng = np.random.default_rng(5)
    drawn = [s.sample(rng) for _ in range(5)]
    assert json.dumps(s.get_state()) == state  # no id, nothing pending, the strategy's RNG untouched
    again = [s.sample(np.random.default_rng(5)) for _ in range(1)]
    assert again[0] == drawn[0]
    hp = toy_space()
    from nas.plugins import params as P

    for v in drawn:
        P.validate(hp, v)
    # the policy it samples from is the one ask() uses: a strongly preferred choice shows in both
    space = kt.HyperParameters()
    space.Choice("op", ["a", "b", "c"])
    r = nas.create_strategy("rl", space=space, seed=0, policy="lstm")
    r.weights[-1][0, :3] = [0.0, 8.0, 0.0]  # the head's bias for the only decision
    assert all(r.sample(rng)["op"] == "b" for _ in range(20))


@pytest.mark.slow
def test_the_lstm_policy_imports_no_tensorflow_into_a_jax_driver() -> None:
    code = (
        "import sys\n"
        "import nas\n"
        "from nas.testing.conformance import toy_space, toy_metric\n"
        "s = nas.create_strategy('rl', space=toy_space(), seed=0, policy='lstm', batch=2)\n"
        "for _ in range(6):\n"
        "    p = s.ask(); s.tell(p.trial_id, {'val_accuracy': toy_metric(p.values)})\n"
        "assert s.adam.t >= 3\n"
        "print('tensorflow' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, KERAS_BACKEND="jax"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "False", proc.stdout
