"""Policy-gradient search after Zoph & Le, "Neural Architecture Search with Reinforcement Learning" (ICLR 2017).

A controller emits one decision per active hyperparameter in declaration order, each a softmax over that
parameter's choices: ``params.candidates(param, bins)`` (all values of small discrete parameters; numeric ranges
discretised into ``bins`` values, log-spaced for log-scaled ones). Inactive conditional parameters are skipped,
and so are parameters with a single choice (Fixed). Two controllers (option ``policy``):

* ``"lstm"`` — Zoph & Le's autoregressive controller: an LSTM whose input at each step is the embedding of the
  previous decision (a learned start vector first) and whose output feeds a per-parameter softmax head. The
  cell has Keras' ``LSTMCell`` equations (gates i, f, c, o; sigmoid / tanh). Sampling and the REINFORCE gradient
  (backpropagation through time, written out in ``_lstm_loss_and_grads``) are numpy: microseconds per decision,
  no framework in the driver, and the same on a machine that has only jax or torch. Sampling draws from
  ``self.rng`` so seeded runs are identical.
* ``"categorical"`` — one independent softmax (logits vector) per parameter, the policy NAS-Bench-101's authors
  found better than the LSTM. Its gradient is closed-form (d log p_a / d logits = onehot(a) - p).

``sample(rng)`` draws a configuration from the current policy without proposing it (no trial id, nothing
pending, the strategy's own RNG untouched): what weight-sharing NAS trains its shared weights on (ENAS, Pham et
al. 2018), one sampled child per minibatch, while ``ask``/``tell`` train the controller.

Two update rules (option ``update``):

* ``"ppo"`` (the default) — sample reuse, model-based planning and model-predictive proposals around the same
  controller. On the benchmark's 15 tables (``benchmarks/strategies.py``, 30 seeds) its mean normalised regret
  at 25 / 50 / 100 / 200 trials is 0.1334 / 0.0895 / 0.0721 / 0.0651, against ``gp``'s 0.1249 / 0.0881 / 0.0727 /
  0.0670, Optuna TPE's 0.1529 / 0.1117 / 0.0856 / 0.0746 and REINFORCE's 0.1852 / 0.1404 / 0.1012 / 0.0790
  (32.8 ms per proposal at 300 trials). The 25-trial gap to ``gp`` is within the seeds' spread: on seeds 30-59
  (``--first-seed 30``, the code unchanged) rl is 0.1339 / 0.0946 / 0.0762 at 25 / 50 / 100 trials against
  ``gp``'s 0.1358 / 0.0928 / 0.0779, and on seeds 30-89 0.1389 / 0.0953 at 25 / 50 against 0.1367 / 0.0930
  (one standard error: 0.005-0.007 at 25). Its parts:

  - Space-filling start: the first ``n_startup_trials`` proposals pick, at every active decision, the choice
    used least so far among proposed configurations (ties broken at random), so each parameter's values are
    covered evenly before the policy has any evidence. Shorter starts were not better: 5 and 7 gave 0.1437 and
    0.1406 at 25 trials (seeds 0-29).
  - Reuse of real samples (Schulman et al., "Proximal Policy Optimization Algorithms", 2017; the controller of
    NASNet, Zoph et al. 2018, was trained with PPO): after every ``batch`` told trials, ``epochs`` Adam steps
    of the clipped-ratio objective over all finished trials (the last 300 at most), advantage = the trial's
    quantile reward minus their mean, divided by their standard deviation, ratio = p_new(episode) / p(episode)
    under the policy as it was when the update began; a ratio outside ``[1 - clip, 1 + clip]`` in the
    advantage's direction contributes no gradient, and one above 3 on a negative advantage counts as 3 (dual
    clip).
  - Model-based (Dyna-style, Sutton 1990, "Integrated architectures for learning, planning, and reacting")
    updates between real trials: a Gaussian process (the ``gp`` strategy's model: Matern-5/2, one length scale
    per parameter, rank-transformed scores, kernel refitted on the same schedule) is fitted to the finished
    trials (the last 300 at most), and ``planning_steps`` times ``imagined`` episodes are sampled from the
    policy, scored by the model's expected improvement over the best trial (0 for a configuration already
    proposed), and the policy takes one REINFORCE step on them (advantage = standardised expected improvement).
    The policy so moves toward what the evidence says before the next real trial, and every real trial
    corrects the model. Without it (``planning_steps=0``, 22 ms per proposal) the same 30 seeds give 0.1350 /
    0.0976 / 0.0805 / 0.0750: level at 25 trials, 9-15 % worse from 50 on.
  - Model-predictive proposals (the "random shooting" planner of model-based RL: sample candidate actions,
    score them with the learned model, take the best; e.g. Nagabandi et al., "Neural network dynamics for
    model-based deep reinforcement learning with model-free fine-tuning", 2018): a real
    proposal is the best of ``select`` episodes drawn from the (entropy-floored) policy under the same model's
    expected improvement, not one draw. The policy still decides what is considered, and learns from what is
    tried; the model only ranks its samples. Without it (``select=0``) PPO + Dyna was 0.141 / 0.115 / 0.100 /
    0.077 on 5 seeds (seeds 0-4), 13-39 % behind ``gp``'s 0.101 / 0.072 / 0.062 from 50 trials on: one
    draw from a still-broad policy spends real trials on what the model already rates poorly.
  - Exploration: an entropy bonus of weight ``entropy_weight`` (default 0.2 here, 0.01 under REINFORCE: the
    advantages are standardised, and with 0.01 the policy's entropy fell to ~10 % of its maximum within 25
    trials), an entropy floor (each decision of a real proposal's candidates is drawn from the policy mixed
    with the uniform distribution just enough that its entropy is at least ``entropy_floor`` times
    log(choices); 0.3: on 5 seeds 0.130 / 0.087 / 0.073 / 0.063 against 0.136 / 0.109 / 0.076 / 0.066 with
    0.1), and duplicates avoided (a candidate already proposed has no expected improvement; without a usable
    model, up to 100 policy samples, then a uniformly random unseen one).
* ``"reinforce"`` — Zoph & Le's rule, described below, unchanged (``--strategy-option update=reinforce``; the
  default before 2026-12-06, and what a run stored with it resumes with); also what a weight-sharing supernet
  phase's controller uses (``unique=False``, children drawn with repeats; Pham et al. 2018 trained it with
  REINFORCE): thousands of noisy, repeated children are no data for a per-trial model.

REINFORCE: reward = the quantile of the trial's objective among all finished trials so far (normalised to
[0, 1], direction-aware through ``self.score``; a failed trial gets 0), advantage = reward - an exponential
moving average baseline of previous rewards, plus an entropy bonus, optimised with Adam (numpy). It learns from
trials as they finish (asynchronous completion is the normal case): each told trial's decisions are recovered
from its values and buffered with its advantage; every ``batch`` told trials the log-probabilities of the
buffered decisions are recomputed under the current policy and one Adam step is taken.

Its state (weights, Adam moments and step, baseline, buffer, the model's fitted kernel parameters; the RNG and
pending proposals are the base's) round-trips exactly through JSON (float32/float64 values as Python floats).
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import keras_tuner as kt
import numpy as np

from nas.errors import PluginError
from nas.plugins import params as P
from nas.plugins.objective import Objective
from nas.plugins.strategy import Observation, Strategy

_POLICIES = ("categorical", "lstm")
_UPDATES = ("ppo", "reinforce")
#: samples tried before accepting a configuration already proposed (update="reinforce")
_RETRIES = 20
#: policy samples tried before a uniformly random unseen configuration (update="ppo")
_PPO_RETRIES = 100
#: update="ppo" learns from (and fits its model on) at most this many most recent trials, so a controller told
#: thousands of children (a weight-sharing supernet phase) costs the same per update as one at this many trials
_WINDOW = 300
_NEG = -1e9


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max()
    e = np.exp(z)
    return e / e.sum()


def _draw(p: np.ndarray, u: float) -> int:
    """Inverse-CDF draw of an index from probabilities ``p`` with the uniform number ``u``."""
    c = np.cumsum(p)
    return int(min(np.searchsorted(c, u * c[-1], side="right"), len(p) - 1))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _entropy(p: np.ndarray) -> float:
    q = p[p > 0]
    return float(-(q * np.log(q)).sum())


def _floored(p: np.ndarray, floor: float) -> np.ndarray:
    """``p`` mixed with the uniform distribution, with the smallest weight (to 1e-3, by bisection) that makes its
    entropy at least ``floor * log(len(p))``; ``p`` itself when it is already there. The entropy is concave
    along the segment from ``p`` to uniform and largest at uniform, so it grows with the weight."""
    return _floored_rows(p[None, :], floor)[0]


def _floored_rows(p: np.ndarray, floor: float) -> np.ndarray:
    """``_floored`` of each row of ``p`` [n, k], the bisection vectorised over rows."""
    n, k = p.shape
    if floor <= 0 or k < 2:
        return p
    target = floor * math.log(k)

    def entropy(q: np.ndarray) -> np.ndarray:
        return -(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)).sum(axis=1)

    need = entropy(p) < target
    if not need.any():
        return p
    u = np.full(k, 1.0 / k)
    lo, hi = np.zeros(n), np.ones(n)
    for _ in range(10):
        mid = 0.5 * (lo + hi)
        ok = entropy((1 - mid[:, None]) * p + mid[:, None] * u) >= target
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid)
    w = np.where(need, hi, 0.0)[:, None]
    return (1 - w) * p + w * u


def _lstm_logp(weights: list[np.ndarray], actions: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """Each episode's log-probability (summed over the decisions it took) under the LSTM controller; the forward
    pass of ``_lstm_loss_and_grads``."""
    x0, emb, wk, wr, b, wo, bo = (w.astype(np.float64) for w in weights)
    actions = np.asarray(actions, np.int64)
    n, steps = actions.shape
    units = wr.shape[0]
    h = np.zeros((n, units))
    c = np.zeros((n, units))
    x = np.tile(x0[None, :], (n, 1))
    out = np.zeros(n)
    rows = np.arange(n)
    for t in range(steps):
        a_t = actions[:, t]
        m = (a_t >= 0).astype(np.float64)[:, None]
        a = np.maximum(a_t, 0)
        z = x @ wk + h @ wr + b
        zi, zf, zc, zo = np.split(z, 4, axis=1)
        c2 = _sigmoid(zf) * c + _sigmoid(zi) * np.tanh(zc)
        h2 = _sigmoid(zo) * np.tanh(c2)
        logits = h2 @ wo[t] + bo[t] + pad[t]
        logits = logits - logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        out += m[:, 0] * logp[rows, a]
        h = m * h2 + (1 - m) * h
        c = m * c2 + (1 - m) * c
        x = m * emb[t][a] + (1 - m) * x
    return out


# -- the LSTM controller's REINFORCE gradient, in numpy ----------------------------------------------------------
def _lstm_loss_and_grads(weights: list[np.ndarray], actions: np.ndarray, adv: np.ndarray, pad: np.ndarray,
                         entropy_weight: float) -> tuple[float, list[np.ndarray]]:
    """The REINFORCE loss of a batch of episodes under the LSTM controller and its gradient in every weight.

    loss = -mean_i(adv_i * sum_t log p(a_it)) - entropy_weight * mean_i(sum_t H_t), summed over the steps each
    episode took (``actions[i, t] = -1``: parameter t was inactive; the LSTM state and input carry over it).

    Backpropagation through time written by hand: the controller is a few dozen steps of a small LSTM, and a
    framework for its gradient would tie the strategy to one (TensorFlow's GradientTape made a jax or torch
    driver import TensorFlow, and a GPU node without TensorFlow could not run it at all). Computed in float64;
    ``tests/test_rl_numpy_lstm.py`` checks it against finite differences and against the TensorFlow version it
    replaces.
    """
    x0, emb, wk, wr, b, wo, bo = (w.astype(np.float64) for w in weights)
    actions = np.asarray(actions, np.int64)
    adv = np.asarray(adv, np.float64)
    n, steps = actions.shape
    units = wr.shape[0]
    h = np.zeros((n, units))
    c = np.zeros((n, units))
    x = np.tile(x0[None, :], (n, 1))
    tape = []
    loss = 0.0
    for t in range(steps):
        a_t = actions[:, t]
        m = (a_t >= 0).astype(np.float64)[:, None]
        a = np.maximum(a_t, 0)
        z = x @ wk + h @ wr + b
        zi, zf, zc, zo = np.split(z, 4, axis=1)
        si, sf, so, tc = _sigmoid(zi), _sigmoid(zf), _sigmoid(zo), np.tanh(zc)
        c2 = sf * c + si * tc
        tc2 = np.tanh(c2)
        h2 = so * tc2
        logits = h2 @ wo[t] + bo[t] + pad[t]
        logits = logits - logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        p = np.exp(logp)
        plogp = np.where(p > 0, p * logp, 0.0)
        ent = -plogp.sum(axis=1)
        lp = logp[np.arange(n), a]
        loss += float(-(adv * m[:, 0] * lp).mean() - entropy_weight * (m[:, 0] * ent).mean())
        tape.append((x, h, c, a, m, si, sf, so, tc, c2, tc2, h2, p, logp, ent))
        h = m * h2 + (1 - m) * h
        c = m * c2 + (1 - m) * c
        x = m * emb[t][a] + (1 - m) * x

    grads = [np.zeros_like(w) for w in (x0, emb, wk, wr, b, wo, bo)]
    g_x0, g_emb, g_wk, g_wr, g_b, g_wo, g_bo = grads
    dh = np.zeros((n, units))  # d loss / d (h, c, x) after the step being undone
    dc = np.zeros((n, units))
    dx = np.zeros((n, units))
    rows = np.arange(n)
    for t in reversed(range(steps)):
        x, h, c, a, m, si, sf, so, tc, c2, tc2, h2, p, logp, ent = tape[t]
        # the step's input: the previous decision's embedding where the step was taken, else carried over
        np.add.at(g_emb[t], a, m * dx)
        dx_carry = (1 - m) * dx
        # d loss / d logits: -adv/n * (onehot(a) - p) from log p(a), beta/n * p (log p + H) from -beta H
        onehot = np.zeros_like(p)
        onehot[rows, a] = 1.0
        dlogits = (-adv[:, None] / n) * (onehot - p) + (entropy_weight / n) * np.where(
            p > 0, p * (logp + ent[:, None]), 0.0)
        dlogits *= m
        g_wo[t] += h2.T @ dlogits
        g_bo[t] += dlogits.sum(axis=0)
        dh2 = m * dh + dlogits @ wo[t].T
        dc2 = m * dc + dh2 * so * (1 - tc2 * tc2)
        dzo = dh2 * tc2 * so * (1 - so)
        dzi = dc2 * tc * si * (1 - si)
        dzf = dc2 * c * sf * (1 - sf)
        dzc = dc2 * si * (1 - tc * tc)
        dz = np.concatenate([dzi, dzf, dzc, dzo], axis=1)
        g_wk += x.T @ dz
        g_wr += h.T @ dz
        g_b += dz.sum(axis=0)
        dh = (1 - m) * dh + dz @ wr.T
        dc = (1 - m) * dc + dc2 * sf
        dx = dx_carry + dz @ wk.T
    g_x0 += dx.sum(axis=0)
    return loss, [g.astype(w.dtype) for g, w in zip(grads, weights)]


class _Adam:
    """Adam (Kingma & Ba) over a list of numpy arrays; its moments are part of the strategy state."""

    def __init__(self, shapes: list[tuple[int, ...]], lr: float, dtype: Any, b1: float = 0.9, b2: float = 0.999):
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, 1e-8
        self.m = [np.zeros(s, dtype) for s in shapes]
        self.v = [np.zeros(s, dtype) for s in shapes]
        self.t = 0

    def step(self, weights: list[np.ndarray], grads: list[np.ndarray]) -> None:
        self.t += 1
        a = self.lr * math.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
        for w, g, m, v in zip(weights, grads, self.m, self.v):
            g = g.astype(w.dtype)
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            w -= (a * m / (np.sqrt(v) + self.eps)).astype(w.dtype)


class ReinforceSearch(Strategy):
    """REINFORCE controller (Zoph & Le 2017): per-parameter categorical policy (default) or an LSTM."""

    name = "rl"

    def __init__(
        self,
        space: kt.HyperParameters,
        objective: str | Objective | list = "val_accuracy:max",
        seed: int | None = None,
        *,
        policy: str = "categorical",
        bins: int = 10,
        units: int = 32,
        learning_rate: float = 0.1,
        entropy_weight: float | None = None,
        baseline_decay: float = 0.9,
        batch: int = 1,
        unique: bool = True,
        update: str | None = None,
        epochs: int = 4,
        clip: float = 0.2,
        imagined: int = 64,
        planning_steps: int = 10,
        n_startup_trials: int = 10,
        entropy_floor: float = 0.3,
        select: int = 256,
    ) -> None:
        super().__init__(space, objective, seed)
        if policy not in _POLICIES:
            raise PluginError(f"rl option policy={policy!r} is not valid; use one of {', '.join(_POLICIES)}")
        if update is not None and update not in _UPDATES:
            raise PluginError(f"rl option update={update!r} is not valid; use one of {', '.join(_UPDATES)}")
        if update is None:  # PPO + Dyna + model-predictive proposals: better across the benchmark's tables
            update = "ppo"
        if entropy_weight is None:  # standardised advantages under PPO need a larger bonus to keep it exploring
            entropy_weight = 0.2 if update == "ppo" else 0.01
        for opt, v, lo in (("bins", bins, 2), ("units", units, 1), ("batch", batch, 1), ("epochs", epochs, 1),
                           ("imagined", imagined, 0), ("planning_steps", planning_steps, 0),
                           ("n_startup_trials", n_startup_trials, 0), ("select", select, 0)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise PluginError(f"rl option {opt}={v!r} is not valid; give an integer >= {lo}")
        if not (isinstance(clip, (int, float)) and not isinstance(clip, bool) and 0 < clip < 1):
            raise PluginError(f"rl option clip={clip!r} is not valid; give 0 < clip < 1")
        if not (isinstance(entropy_floor, (int, float)) and not isinstance(entropy_floor, bool)
                and 0 <= entropy_floor < 1):
            raise PluginError(f"rl option entropy_floor={entropy_floor!r} is not valid; give 0 <= floor < 1")
        if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
            raise PluginError(f"rl option learning_rate={learning_rate!r} is not valid; give a number > 0")
        if entropy_weight is not None and not (isinstance(entropy_weight, (int, float)) and entropy_weight >= 0):
            raise PluginError(f"rl option entropy_weight={entropy_weight!r} is not valid; give a number >= 0")
        if not (isinstance(baseline_decay, (int, float)) and 0 <= baseline_decay < 1):
            raise PluginError(f"rl option baseline_decay={baseline_decay!r} is not valid; give 0 <= d < 1")
        self.policy = policy
        self.bins = bins
        self.units = units
        self.learning_rate = float(learning_rate)
        self.entropy_weight = float(entropy_weight)
        self.baseline_decay = float(baseline_decay)
        self.batch = batch
        self.unique = bool(unique)
        self.update = update
        self.epochs = epochs
        self.clip = float(clip)
        self.imagined = imagined
        self.planning_steps = planning_steps
        self.n_startup_trials = n_startup_trials
        self.entropy_floor = float(entropy_floor)
        self.select = select
        self._model: Any = None  # the surrogate (update="ppo"), made on first use

        # decisions: parameters with more than one choice, in declaration order
        self.choices: dict[str, list[Any]] = {}
        self.step_of: dict[str, int] = {}
        for p in space.space:
            cands = P.candidates(p, bins)
            self.choices[p.name] = cands
            if len(cands) > 1:
                self.step_of[p.name] = len(self.step_of)
        self.T = max(1, len(self.step_of))
        sizes = [1] * self.T
        for name, t in self.step_of.items():
            sizes[t] = len(self.choices[name])
        self.sizes = sizes
        self.kmax = max(sizes)
        self.pad = np.zeros((self.T, self.kmax), np.float32)
        for t, k in enumerate(sizes):
            self.pad[t, k:] = _NEG

        self.weights = self._init_weights()
        self.adam = _Adam([w.shape for w in self.weights], self.learning_rate, self.weights[0].dtype)
        self.baseline: float | None = None
        self.buffer: list[tuple[list[int], float]] = []  # (actions per step, -1 = not taken; advantage)
        self._scores: list[list[float]] = []  # each finished trial's scores (one per objective): quantile reward

    # -- policy -----------------------------------------------------------------------------------------------
    def _init_weights(self) -> list[np.ndarray]:
        if self.policy == "categorical":
            return [np.zeros((self.T, self.kmax), np.float64)]
        u, T, K = self.units, self.T, self.kmax

        def init(*shape: int) -> np.ndarray:  # Zoph & Le: uniform in [-0.08, 0.08]; drawn from the seeded RNG
            return self.rng.uniform(-0.08, 0.08, size=shape).astype(np.float32)

        return [init(u), init(T, K, u), init(u, 4 * u), init(u, 4 * u), init(4 * u), init(T, u, K), init(T, K)]

    def sample(self, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """A configuration drawn from the current policy with ``rng`` (default: the strategy's own), without
        proposing it: no trial id, nothing pending, nothing to tell."""
        return {k: P.to_python(v) for k, v in self._sample(rng).items()}

    def _decisions(self, values: dict[str, Any]) -> Iterator[tuple[str, list[Any], int]]:
        """The decisions of one episode in declaration order, as (name, choices, step): a parameter made inactive
        by what ``values`` holds so far is skipped and a single-choice one is set in ``values`` at once; the
        caller sets each yielded name in ``values`` before asking for the next."""
        for p in self.space.space:
            if not P.is_active(p, values):
                continue
            cands = self.choices[p.name]
            t = self.step_of.get(p.name)
            if t is None:
                values[p.name] = cands[0]
                continue
            yield p.name, cands, t

    def _sample(self, rng: np.random.Generator | None = None, floor: float = 0.0) -> dict[str, Any]:
        """A configuration drawn from the policy (each decision's softmax raised to the entropy ``floor``)."""
        rng = self.rng if rng is None else rng
        values: dict[str, Any] = {}
        if self.policy == "lstm":
            x0, emb, wk, wr, b, wo, bo = (w.astype(np.float64) for w in self.weights)
            h = np.zeros(self.units)
            c = np.zeros(self.units)
            x = x0
        for name, cands, t in self._decisions(values):
            k = self.sizes[t]
            if self.policy == "categorical":
                logits = self.weights[0][t, :k]
            else:
                z = x @ wk + h @ wr + b
                zi, zf, zc, zo = np.split(z, 4)
                c = _sigmoid(zf) * c + _sigmoid(zi) * np.tanh(zc)
                h = _sigmoid(zo) * np.tanh(c)
                logits = (h @ wo[t] + bo[t])[:k]
            a = _draw(_floored(_softmax(logits), floor), float(rng.random()))
            values[name] = cands[a]
            if self.policy == "lstm":
                x = emb[t, a]
        return values

    def _sample_batch(self, n: int, rng: np.random.Generator,
                      floor: float = 0.0) -> tuple[list[dict[str, Any]], np.ndarray]:
        """``n`` episodes drawn from the policy at once (the imagined episodes, the candidates of a proposal):
        their configurations and actions [n, T] (-1: not taken). The same distribution as ``_sample(rng,
        floor)``, vectorised over episodes."""
        values: list[dict[str, Any]] = [{} for _ in range(n)]
        acts = np.full((n, self.T), -1, np.int64)
        lstm = self.policy == "lstm"
        if lstm:
            x0, emb, wk, wr, b, wo, bo = (w.astype(np.float64) for w in self.weights)
            h = np.zeros((n, self.units))
            c = np.zeros((n, self.units))
            x = np.tile(x0[None, :], (n, 1))
        u = rng.random((n, self.T))
        for p in self.space.space:
            cands = self.choices[p.name]
            t = self.step_of.get(p.name)
            if getattr(p, "conditions", None):
                on = np.array([P.is_active(p, v) for v in values], bool)
            else:
                on = np.ones(n, bool)
            if t is None:
                for i in np.flatnonzero(on):
                    values[i][p.name] = cands[0]
                continue
            k = self.sizes[t]
            if lstm:
                z = x @ wk + h @ wr + b
                zi, zf, zc, zo = np.split(z, 4, axis=1)
                c2 = _sigmoid(zf) * c + _sigmoid(zi) * np.tanh(zc)
                h2 = _sigmoid(zo) * np.tanh(c2)
                logits = (h2 @ wo[t] + bo[t])[:, :k]
                pr = np.exp(logits - logits.max(axis=1, keepdims=True))
                pr = _floored_rows(pr / pr.sum(axis=1, keepdims=True), floor)
                cdf = np.cumsum(pr, axis=1)
                a = (cdf < (u[:, t] * cdf[:, -1])[:, None]).sum(axis=1)
            else:
                cdf = np.cumsum(_floored(_softmax(self.weights[0][t, :k]), floor))
                a = np.searchsorted(cdf, u[:, t] * cdf[-1], side="right")
            a = np.minimum(a, k - 1)
            acts[on, t] = a[on]
            for i in np.flatnonzero(on):
                values[i][p.name] = cands[int(a[i])]
            if lstm:
                m = on[:, None].astype(np.float64)
                h = m * h2 + (1 - m) * h
                c = m * c2 + (1 - m) * c
                x = m * emb[t][a] + (1 - m) * x
        return values, acts

    def probabilities(self, values: Mapping[str, Any] | None = None) -> dict[str, list[float]]:
        """The policy's softmax per decision (for a categorical policy; for the LSTM, along ``values``)."""
        out: dict[str, list[float]] = {}
        if self.policy == "categorical":
            for name, t in self.step_of.items():
                out[name] = _softmax(self.weights[0][t, : self.sizes[t]]).tolist()
            return out
        x0, emb, wk, wr, b, wo, bo = (w.astype(np.float64) for w in self.weights)
        h, c, x = np.zeros(self.units), np.zeros(self.units), x0
        values = dict(values or P.default_values(self.space))
        for p in P.active_params(self.space, values):
            t = self.step_of.get(p.name)
            if t is None:
                continue
            z = x @ wk + h @ wr + b
            zi, zf, zc, zo = np.split(z, 4)
            c = _sigmoid(zf) * c + _sigmoid(zi) * np.tanh(zc)
            h = _sigmoid(zo) * np.tanh(c)
            out[p.name] = _softmax((h @ wo[t] + bo[t])[: self.sizes[t]]).tolist()
            x = emb[t, self._index(p.name, values[p.name])]
        return out

    def _index(self, name: str, value: Any) -> int:
        cands = self.choices[name]
        try:
            return cands.index(value)
        except ValueError:  # a value from outside the controller's grid (e.g. told by hand): nearest choice
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return int(np.argmin([abs(float(v) - float(value)) for v in cands]))
            return 0

    def _actions(self, values: Mapping[str, Any]) -> list[int]:
        acts = [-1] * self.T
        for p in P.active_params(self.space, values):
            t = self.step_of.get(p.name)
            if t is not None and p.name in values:
                acts[t] = self._index(p.name, values[p.name])
        return acts

    def _grads(self, actions: np.ndarray, adv: np.ndarray) -> list[np.ndarray]:
        if self.policy == "lstm":
            return _lstm_loss_and_grads(self.weights, actions, adv, self.pad, self.entropy_weight)[1]
        theta = self.weights[0]
        g = np.zeros_like(theta)
        n = len(actions)
        adv = np.asarray(adv, np.float64)
        for t in range(self.T):
            k = self.sizes[t]
            p = _softmax(theta[t, :k])
            logp = np.log(np.maximum(p, 1e-300))
            ent = -(p * logp).sum()
            taken = actions[:, t] >= 0
            # d(-A log p_a)/d logits = -A (onehot(a) - p), summed over the episodes that took the decision
            g[t, :k] -= (np.bincount(actions[taken, t], weights=adv[taken], minlength=k) - p * adv[taken].sum()) / n
            # d(-beta H)/d logits = beta p (log p + H), counted once per episode that took the decision
            g[t, :k] += self.entropy_weight * p * (logp + ent) * taken.sum() / n
        return [g]

    def _logp(self, actions: np.ndarray) -> np.ndarray:
        """Each episode's log-probability under the current policy (decisions not taken count 0)."""
        if self.policy == "lstm":
            return _lstm_logp(self.weights, actions, self.pad)
        logits = self.weights[0] + self.pad
        logz = logits.max(axis=1) + np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1))
        lp = logits - logz[:, None]  # [T, K]
        taken = actions >= 0
        return (np.where(taken, lp[np.arange(self.T)[None, :], np.maximum(actions, 0)], 0.0)).sum(axis=1)

    # -- ask / tell -------------------------------------------------------------------------------------------
    def _ask(self) -> dict[str, Any] | None:
        if self.update == "ppo":
            return self._ask_ppo()
        values = self._sample()
        if self.unique:
            seen = self.seen()
            for _ in range(_RETRIES):
                if P.canonical(values) not in seen:
                    break
                values = self._sample()
        return values

    def _ask_ppo(self) -> dict[str, Any]:
        proposed = [o.values for o in self.history] + list(self.pending.values())
        if len(proposed) < self.n_startup_trials:
            return self._space_filling(proposed)
        if not self.unique:
            return self._sample(floor=self.entropy_floor)
        seen = self.seen()
        if self.select:
            chosen = self._select()
            if chosen is not None:
                return chosen
        for _ in range(_PPO_RETRIES):
            values = self._sample(floor=self.entropy_floor)
            if P.canonical(values) not in seen:
                return values
        for _ in range(_PPO_RETRIES):  # the policy keeps to configurations already tried: a random unseen one
            values = P.sample_values(self.space, self.rng)
            if P.canonical(values) not in seen:
                return values
        return values

    def _space_filling(self, proposed: list[Mapping[str, Any]]) -> dict[str, Any]:
        """Each active decision takes a choice used least among ``proposed`` (ties at random)."""
        counts = [np.zeros(k) for k in self.sizes]
        for v in proposed:
            for t, a in enumerate(self._actions(v)):
                if a >= 0:
                    counts[t][a] += 1
        values: dict[str, Any] = {}
        for name, cands, t in self._decisions(values):
            least = np.flatnonzero(counts[t] == counts[t].min())
            values[name] = cands[int(least[int(self.rng.integers(len(least)))])]
        return values

    # -- the PPO + Dyna update ----------------------------------------------------------------------------------
    def _real_rewards(self) -> tuple[np.ndarray, np.ndarray]:
        """Actions [trials, T] of every finished trial and its reward: the mean over objectives of its quantile
        among the finished trials (a failed trial: 0)."""
        from scipy.stats import rankdata

        recent = self.history[-_WINDOW:]
        acts = np.array([self._actions(o.values) for o in recent], np.int64)
        scores = [[ob.score(o.metrics) for ob in self.objectives] for o in recent]
        ok = np.array([all(s is not None for s in row) for row in scores])
        r = np.zeros(len(scores))
        if ok.any():
            s = np.array([row for row, good in zip(scores, ok) if good], np.float64)
            q = np.column_stack([(rankdata(s[:, k]) - 0.5) / len(s) for k in range(s.shape[1])])
            r[ok] = q.mean(axis=1)
        return acts, r

    def _ppo_update(self) -> None:
        acts, r = self._real_rewards()
        sd = r.std()
        if len(r) >= 2 and sd > 0:
            adv = (r - r.mean()) / sd
            old = self._logp(acts)
            for _ in range(self.epochs):
                ratio = np.exp(self._logp(acts) - old)
                clipped = ((adv > 0) & (ratio > 1 + self.clip)) | ((adv < 0) & (ratio < 1 - self.clip))
                # dual clip: a ratio far above 1 on a negative advantage weighs at most 3 (its gradient)
                w = np.where(clipped, 0.0, adv * np.minimum(ratio, 3.0))
                self.adam.step(self.weights, self._grads(acts, w))
        if self.planning_steps and self.imagined:
            self._plan()

    def _surrogate(self) -> Any:
        if self._model is None:
            from strategies.gp import GaussianProcessSearch

            self._model = GaussianProcessSearch(self.space, self.objectives, self.seed)
        m = self._model
        m.history, m.pending, m.rng = self.history[-_WINDOW:], {}, self.rng
        return m

    def _fitted(self) -> tuple[Any, Any, float, set] | None:
        """The surrogate fitted to the finished trials (the last ``_WINDOW``): (gp strategy, its fitted GP, the
        best transformed score, keys of the configurations proposed so far); None before it has two usable
        trials. The kernel is refitted on ``gp``'s schedule only, so fitting it again at the same number of
        trials (a proposal after an update, or after a resume) conditions the same GP on the same data."""
        from strategies.gp import _key

        m = self._surrogate()
        if not m.columns or len(m.history) < 2:
            return None
        data = m._targets()
        if data is None:
            return None
        rows, y = data
        gp = m._fit(m.encode(rows), y)
        seen = {_key(o.values) for o in self.history} | {_key(v) for v in self.pending.values()}
        return m, gp, float(y.max()), seen

    @staticmethod
    def _ei(fitted: tuple[Any, Any, float, set], eps: list[dict[str, Any]]) -> np.ndarray:
        """Expected improvement of episodes ``eps`` over the best trial under the surrogate; 0 for one already
        proposed."""
        from scipy.stats import norm

        from strategies.gp import _key

        m, gp, best, seen = fitted
        mu, sdv = gp.predict(m.encode(eps))
        z = (mu - best) / sdv
        ei = sdv * (z * norm.cdf(z) + norm.pdf(z))
        ei[[_key({k: P.to_python(v) for k, v in e.items()}) in seen for e in eps]] = 0.0
        return ei

    def _plan(self) -> None:
        """Dyna: imagined episodes from the policy, scored by the surrogate's expected improvement."""
        fitted = self._fitted()
        if fitted is None:
            return
        for _ in range(self.planning_steps):
            eps, acts = self._sample_batch(self.imagined, self.rng)
            ei = self._ei(fitted, eps)
            s = ei.std()
            if s <= 0:
                continue
            self.adam.step(self.weights, self._grads(acts, (ei - ei.mean()) / s))

    def _select(self) -> dict[str, Any] | None:
        """Model-predictive choice of the next real trial: ``select`` episodes drawn from the (entropy-floored)
        policy, the one the surrogate expects to improve most on the best trial; None when the surrogate has no
        data yet or every episode was proposed before."""
        fitted = self._fitted()
        if fitted is None:
            return None
        eps, _ = self._sample_batch(self.select, self.rng, self.entropy_floor)
        ei = self._ei(fitted, eps)
        i = int(np.argmax(ei))
        if ei[i] <= 0:
            return None
        return {k: P.to_python(v) for k, v in eps[i].items()}

    def _reward(self, scores: list[float] | None) -> float:
        """The trial's quantile among finished trials; with several objectives, the mean of its quantile on
        each (a stated, scale-free scalarisation)."""
        if scores is None:
            return 0.0
        if not self._scores:
            return 0.5
        s = np.asarray(self._scores, dtype=np.float64).reshape(len(self._scores), -1)
        n = len(s)
        q = [((s[:, k] < v).sum() + 0.5 * (s[:, k] == v).sum() + 0.5) / (n + 1) for k, v in enumerate(scores)]
        return float(np.mean(q))

    def _tell(self, observation: Observation) -> None:
        if self.update == "ppo":
            if len(self.history) % self.batch == 0:
                self._ppo_update()
            return
        scores = [o.score(observation.metrics) for o in self.objectives]
        usable = None if any(v is None for v in scores) else [float(v) for v in scores]
        r = self._reward(usable)
        if usable is not None:
            self._scores.append(usable)
        if self.baseline is None:
            self.baseline = r
        adv = r - self.baseline
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * r
        self.buffer.append((self._actions(observation.values), adv))
        if len(self.buffer) >= self.batch:
            actions = np.array([a for a, _ in self.buffer], np.int64)
            adv_arr = np.array([a for _, a in self.buffer], np.float64)
            self.adam.step(self.weights, self._grads(actions, adv_arr))
            self.buffer = []

    # -- state ------------------------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {
            "options": {
                "policy": self.policy, "bins": self.bins, "units": self.units, "learning_rate": self.learning_rate,
                "entropy_weight": self.entropy_weight, "baseline_decay": self.baseline_decay,
                "batch": self.batch, "unique": self.unique, "update": self.update, "epochs": self.epochs,
                "clip": self.clip, "imagined": self.imagined, "planning_steps": self.planning_steps,
                "n_startup_trials": self.n_startup_trials, "entropy_floor": self.entropy_floor,
                "select": self.select,
            },
            "model": None if self._model is None else {"theta": self._model.theta,
                                                       "fitted_at": self._model.fitted_at},
            "weights": [w.tolist() for w in self.weights],
            "adam": {"m": [m.tolist() for m in self.adam.m], "v": [v.tolist() for v in self.adam.v],
                     "t": self.adam.t},
            "baseline": self.baseline,
            "buffer": [[a, adv] for a, adv in self.buffer],
            "scores": list(self._scores),
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        o = state["options"]
        if o["policy"] != self.policy or o["bins"] != self.bins or o["units"] != self.units:
            raise PluginError(
                f"rl state was saved with policy={o['policy']}, bins={o['bins']}, units={o['units']}; "
                f"this strategy has policy={self.policy}, bins={self.bins}, units={self.units}"
            )
        self.learning_rate = float(o["learning_rate"])
        self.entropy_weight = float(o["entropy_weight"])
        self.baseline_decay = float(o["baseline_decay"])
        self.batch = int(o["batch"])
        self.unique = bool(o["unique"])
        # a state saved before update rules existed is REINFORCE's
        self.update = str(o.get("update", "reinforce"))
        self.epochs = int(o.get("epochs", self.epochs))
        self.clip = float(o.get("clip", self.clip))
        self.imagined = int(o.get("imagined", self.imagined))
        self.planning_steps = int(o.get("planning_steps", self.planning_steps))
        self.n_startup_trials = int(o.get("n_startup_trials", self.n_startup_trials))
        self.entropy_floor = float(o.get("entropy_floor", self.entropy_floor))
        # a state saved before proposals were selected by the model drew them from the policy alone
        self.select = int(o.get("select", 0))
        self._model = None
        model = state.get("model")
        if model is not None:
            m = self._surrogate()
            m.theta = None if model["theta"] is None else [float(t) for t in model["theta"]]
            m.fitted_at = int(model["fitted_at"])
        dtype = self.weights[0].dtype
        self.weights = [np.array(w, dtype) for w in state["weights"]]
        self.adam = _Adam([w.shape for w in self.weights], self.learning_rate, dtype)
        self.adam.m = [np.array(m, dtype) for m in state["adam"]["m"]]
        self.adam.v = [np.array(v, dtype) for v in state["adam"]["v"]]
        self.adam.t = int(state["adam"]["t"])
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        self.buffer = [([int(x) for x in a], float(adv)) for a, adv in state["buffer"]]
        self._scores = [[float(v) for v in (s if isinstance(s, list) else [s])] for s in state["scores"]]
