"""Gaussian-process Bayesian optimisation for small budgets (tens to a few hundred trials).

Written here rather than taken from a library, and why: Optuna's ``GPSampler`` needs PyTorch (not a dependency
of nas); KerasTuner's ``BayesianOptimizationOracle`` takes seconds per proposal and treats a categorical as an
ordinal; scikit-learn's ``GaussianProcessRegressor`` has no kernel whose length scale is shared by the one-hot
columns of one categorical parameter (an overlap kernel): with one length scale per one-hot column the model
trailed TPE on the architecture tables (NAS-Bench-201) of benchmarks/strategies.py, with one per parameter it
leads. The model is ~60 lines of numpy/scipy (scipy comes with scikit-learn); the rest is encoding and the
acquisition search.

* Encoding: every non-fixed parameter becomes columns in [0, 1]: Int/Float scaled linearly (or in log space for
  log sampling), ordered numeric Choice and Boolean by rank, unordered Choice one-hot (at 1/sqrt(2), so two
  different values are at distance 1 like the two ends of a numeric range). An inactive conditional parameter
  is encoded as -0.5 (one-hot: all zeros), so configurations of different shapes are apart.
* Target: the primary objective's score (larger is better) through a rank-based normal-score transform (a
  Gaussian copula): robust to losses spanning orders of magnitude and to outliers; a failed trial ranks below
  every finished one. Several objectives: a random ParEGO (augmented Chebyshev) scalarisation of the
  objectives' ranks, drawn per proposal.
* Model: a zero-mean GP with a Matern-5/2 kernel, ONE length scale per parameter (shared by a categorical's
  one-hot columns), a signal variance and a white-noise variance (trials are noisy), fitted by maximum a
  posteriori marginal likelihood (a wide log-normal prior on the length scales) with L-BFGS-B, warm-started
  from the last fit. The fit is redone while the history grows by ``refit`` (a fraction) or 25 trials; in
  between the kernel is kept and only conditioned on the new data (one Cholesky).
* Acquisition: expected improvement of the noise-free function over the best transformed score, maximised over
  ``candidates`` random configurations plus every one-parameter neighbour of the five best observed ones,
  then a greedy one-parameter local search from the two best candidates (as SMAC does). Configurations already
  proposed are excluded. Pending (asynchronous) trials enter as "kriging believer" points at the model's mean.
* The first ``n_startup_trials`` proposals are random.

State: the options and the fitted kernel parameters (floats, exact through JSON); the model is a pure function
of the history, those parameters and the RNG, so ``set_state`` needs nothing else.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import keras_tuner as kt
import numpy as np
from scipy.linalg import cho_solve, solve_triangular

from nas.errors import PluginError
from nas.plugins import params as P
from nas.plugins.objective import Objective
from nas.plugins.strategy import PRIOR, Strategy

#: a discrete parameter with at most this many values has all of them as neighbours; larger ones get a few
#: nearby values (in the encoded scale) and one random value
_ENUMERATE = 16
_INACTIVE = -0.5
_MISSING = object()
#: one-hot level: two different values are then at distance 1, as the two ends of a numeric range
_ONEHOT = math.sqrt(0.5)


class _Column:
    """How one parameter is encoded: ``kind`` is "num" (one column) or "onehot" (len(values) columns)."""

    def __init__(self, param: Any) -> None:
        self.param = param
        self.name = param.name
        k = P.kind(param)
        self.values: list[Any] | None = None
        self.log = False
        if k == "boolean":
            self.kind, self.values, self.width = "rank", [False, True], 1
        elif k == "choice":
            vals = list(param.values)
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
            if numeric and getattr(param, "ordered", False):
                self.kind, self.values, self.width = "rank", vals, 1
            else:
                self.kind, self.values, self.width = "onehot", vals, len(vals)
        else:
            self.kind, self.width = "num", 1
            self.lo, self.hi = float(param.min_value), float(param.max_value)
            self.log = param.sampling in ("log", "reverse_log") and self.lo > 0
            n = P.n_values(param)
            if n is not None and n <= _ENUMERATE:
                self.values = P.candidates(param, points=n)

        self.position: dict[Any, Any] = {}  # value -> one-hot position, or -> rank code
        if self.kind == "onehot":
            self.position = {v: i for i, v in enumerate(self.values)}
        elif self.kind == "rank":
            self.position = {v: (i / (len(self.values) - 1) if len(self.values) > 1 else 0.0)
                             for i, v in enumerate(self.values)}

    def code(self, value: Any) -> float:
        """The [0, 1] value of a "rank" or "num" column."""
        if self.kind == "rank":
            u = self.position.get(value)
            if u is None:
                n = len(self.values)
                u = self._index(value) / (n - 1) if n > 1 else 0.0
            return u
        return self.unit(float(value))

    def _index(self, value: Any) -> int:
        try:
            return self.values.index(value)
        except ValueError:
            return int(np.argmin([abs(float(v) - float(value)) for v in self.values]))

    def unit(self, v: float) -> float:
        if self.hi == self.lo:
            return 0.0
        if self.log:
            return (math.log(v) - math.log(self.lo)) / (math.log(self.hi) - math.log(self.lo))
        return (v - self.lo) / (self.hi - self.lo)

    def from_unit(self, u: float) -> Any:
        u = min(max(u, 0.0), 1.0)
        v = math.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo))) if self.log else \
            self.lo + u * (self.hi - self.lo)
        p = self.param
        if getattr(p, "step", None) is not None:  # snap to the stepped grid (KerasTuner: log steps are ratios)
            n = int(p._get_n_values())
            if p.sampling == "log" and p.step > 1:
                i = round(math.log(v / self.lo) / math.log(p.step))
            else:
                i = round((v - self.lo) / p.step)
            return P._cast(p, p._get_value_by_index(int(min(max(i, 0), n - 1))))
        return P._cast(p, v)

    def neighbours(self, value: Any, rng: np.random.Generator) -> list[Any]:
        """Values one move away from ``value``."""
        if self.values is not None and len(self.values) <= _ENUMERATE:
            return [v for v in self.values if v != value]
        if self.values is not None:  # a long ordered choice: adjacent ranks and one random value
            i = self._index(value)
            idx = {j for j in (i - 2, i - 1, i + 1, i + 2) if 0 <= j < len(self.values)}
            idx.add(int(rng.integers(len(self.values))))
            return [self.values[j] for j in sorted(idx) if j != i]
        u = self.unit(float(value))
        out = []
        for sd in (0.02, 0.05, 0.1, 0.2):
            v = self.from_unit(u + sd * float(rng.standard_normal()))
            if v != value and v not in out:
                out.append(v)
        return out


class GaussianProcessSearch(Strategy):
    """Gaussian-process BO: Matern kernel (a length scale per parameter), expected improvement, local search."""

    name = "gp"

    def __init__(
        self,
        space: kt.HyperParameters,
        objective: str | Objective | list = "val_accuracy:max",
        seed: int | None = None,
        *,
        n_startup_trials: int = 10,
        candidates: int = 64,
        refit: float = 0.2,
        xi: float = 0.0,
    ) -> None:
        super().__init__(space, objective, seed)
        if not isinstance(n_startup_trials, int) or isinstance(n_startup_trials, bool) or n_startup_trials < 1:
            raise PluginError(f"gp option n_startup_trials={n_startup_trials!r} is not valid; give an int >= 1")
        if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1:
            raise PluginError(f"gp option candidates={candidates!r} is not valid; give an int >= 1")
        if not (isinstance(refit, (int, float)) and 0 <= refit <= 1):
            raise PluginError(f"gp option refit={refit!r} is not valid; give 0 <= refit <= 1")
        if not (isinstance(xi, (int, float)) and xi >= 0):
            raise PluginError(f"gp option xi={xi!r} is not valid; give a number >= 0")
        self.n_startup_trials = n_startup_trials
        self.n_candidates = candidates
        self.refit = float(refit)
        self.xi = float(xi)
        self.columns = [_Column(p) for p in space.space if P.n_values(p) != 1]
        self.offsets = np.cumsum([0] + [c.width for c in self.columns])
        self.dim = int(self.offsets[-1])
        self.parents = {c.name for p in space.space for c in getattr(p, "conditions", None) or []}
        self.groups = np.repeat(np.arange(len(self.columns)), [c.width for c in self.columns])
        self.theta: list[float] | None = None  # last fit: log length scales, log signal and noise variances
        self.fitted_at = 0  # history length at the last hyperparameter fit

    # -- encoding ---------------------------------------------------------------------------------------------
    def encode(self, rows: list[Mapping[str, Any]]) -> np.ndarray:
        """[len(rows), dim] encoded configurations (column by column: a Python loop per value is the cost)."""
        X = np.zeros((len(rows), self.dim))
        for c, at in zip(self.columns, self.offsets):
            at = int(at)
            if c.kind == "onehot":
                for i, r in enumerate(rows):
                    j = c.position.get(r.get(c.name, _MISSING))
                    if j is not None:
                        X[i, at + j] = _ONEHOT
            else:
                X[:, at] = [c.code(r[c.name]) if c.name in r else _INACTIVE for r in rows]
        return X

    # -- targets ----------------------------------------------------------------------------------------------
    def _targets(self) -> tuple[list[dict[str, Any]], np.ndarray] | None:
        """Configurations told so far and their transformed scores (larger is better); None if < 2 usable."""
        from scipy.stats import norm, rankdata

        rows = [o.values for o in self.history]
        scores = np.array([[(-math.inf if s is None else s) for s in
                            (ob.score(o.metrics) for ob in self.objectives)] for o in self.history], float)
        ok = np.isfinite(scores).all(axis=1)
        if ok.sum() < 2:
            return None
        scores[~ok] = -math.inf
        n = len(rows)
        if scores.shape[1] == 1:
            s = scores[:, 0]
        else:  # ParEGO: augmented Chebyshev of the objectives' quantiles, random weights each proposal
            u = np.column_stack([rankdata(scores[:, k]) / n for k in range(scores.shape[1])])
            w = self.rng.dirichlet(np.ones(scores.shape[1]))
            g = (w * (1 - u)).max(axis=1) + 0.05 * (w * (1 - u)).sum(axis=1)
            s = np.where(ok, -g, -math.inf)
        # normal scores of the ranks, within each source: an earlier run's trials told as priors (``observe``,
        # --warm-start) are ranked among themselves, the search's own trials among themselves, so priors from
        # another data set (another scale: cifar100's accuracies below cifar10's) say which configurations are
        # better, not that every new one beats them all (the rank-based transfer of Feurer et al., "Practical
        # transfer learning for Bayesian optimization", 2018). Without priors: one group, the plain transform.
        y = np.empty(n)
        prior = np.array([o.trial_id.startswith(PRIOR) for o in self.history])
        for group in (prior, ~prior):
            if group.any():
                y[group] = norm.ppf((rankdata(s[group]) - 0.5) / group.sum())
        return rows, y

    # -- model ------------------------------------------------------------------------------------------------
    def _fit(self, X: np.ndarray, y: np.ndarray) -> "_GP":
        gp = _GP(self.groups, self.theta)
        n = len(self.history)
        if self.theta is None or n >= self.fitted_at * (1 + self.refit) or n - self.fitted_at >= 25:
            gp.fit(X, y)
            self.theta = [float(t) for t in gp.theta]
            self.fitted_at = n
        gp.condition(X, y)
        return gp

    # -- ask --------------------------------------------------------------------------------------------------
    def _random(self, seen: set[tuple]) -> dict[str, Any]:
        values = P.sample_values(self.space, self.rng)
        for _ in range(100):
            if _key(values) not in seen:
                break
            values = P.sample_values(self.space, self.rng)
        return values

    def _neighbours(self, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every configuration one parameter away (conditional children of a changed parent re-completed)."""
        out = []
        for c in self.columns:
            if c.name not in values:
                continue
            for v in c.neighbours(values[c.name], self.rng):
                child = dict(values)
                child[c.name] = v
                out.append(P.complete(self.space, child, self.rng) if c.name in self.parents else child)
        return out

    def _ask(self) -> dict[str, Any] | None:
        seen = {_key(o.values) for o in self.history} | {_key(v) for v in self.pending.values()}
        data = self._targets() if len(self.history) >= self.n_startup_trials and self.columns else None
        if data is None:
            return self._random(seen)
        from scipy.stats import norm

        rows, y = data
        X = self.encode(rows)
        gp = self._fit(X, y)
        if self.pending:  # kriging believer: pending points at the model's mean shrink its variance there
            Xp = self.encode(list(self.pending.values()))
            gp.condition(np.vstack([X, Xp]), np.concatenate([y, gp.predict(Xp)[0]]))
        best = float(y.max())

        def acq(cands: list[dict[str, Any]]) -> np.ndarray:
            mu, sd = gp.predict(self.encode(cands))
            z = (mu - best - self.xi) / sd
            return sd * (z * norm.cdf(z) + norm.pdf(z))

        pool: dict[tuple, dict[str, Any]] = {}

        def add(cands: list[dict[str, Any]]) -> None:
            for v in cands:
                k = _key(v)
                if k not in seen and k not in pool:
                    pool[k] = v

        add([P.sample_values(self.space, self.rng) for _ in range(self.n_candidates)])
        for i in np.argsort(-y, kind="stable")[:5]:
            add(self._neighbours(rows[int(i)]))
        if not pool:
            return self._random(seen)
        keys = list(pool)
        vals = acq([pool[k] for k in keys])
        # greedy local search on the acquisition from the best few candidates
        order = np.argsort(-vals, kind="stable")[:2]
        best_v, best_val = pool[keys[int(order[0])]], float(vals[order[0]])
        for i in order:
            cur, cur_val = pool[keys[int(i)]], float(vals[int(i)])
            for _ in range(10):
                nb = [v for v in self._neighbours(cur) if _key(v) not in seen]
                if not nb:
                    break
                a = acq(nb)
                j = int(np.argmax(a))
                if a[j] <= cur_val:
                    break
                cur, cur_val = nb[j], float(a[j])
            if cur_val > best_val:
                best_v, best_val = cur, cur_val
        return best_v

    # -- state ------------------------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {
            "options": {"n_startup_trials": self.n_startup_trials, "candidates": self.n_candidates,
                        "refit": self.refit, "xi": self.xi},
            "theta": self.theta,
            "fitted_at": self.fitted_at,
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        o = state["options"]
        self.n_startup_trials = int(o["n_startup_trials"])
        self.n_candidates = int(o["candidates"])
        self.refit = float(o["refit"])
        self.xi = float(o["xi"])
        self.theta = None if state["theta"] is None else [float(t) for t in state["theta"]]
        self.fitted_at = int(state["fitted_at"])


_S5 = math.sqrt(5.0)


def _key(values: Mapping[str, Any]) -> tuple:
    """A hashable key of a configuration (cheaper than ``params.canonical`` for thousands of candidates)."""
    return tuple(sorted(values.items()))


class _GP:
    """A zero-mean Gaussian process with a Matern-5/2 kernel, one length scale per parameter, a signal variance
    and a white-noise variance; ``theta`` = their logs. Fitted by maximum a posteriori marginal likelihood
    (a wide log-normal prior on the length scales keeps few-point fits sane) with L-BFGS-B and the analytic
    gradient."""

    def __init__(self, groups: np.ndarray, theta: list[float] | None) -> None:
        # one length scale per parameter: ``groups`` maps each column to its parameter (a one-hot parameter's
        # columns share one, as in an overlap kernel; per-column ones need far more data)
        self.groups = groups
        self.G = np.eye(int(groups.max()) + 1)[groups]  # [columns, parameters] indicator
        dim = self.dim = self.G.shape[1]
        default = np.concatenate([np.full(dim, math.log(0.5)), [0.0, math.log(0.05)]])
        self.theta = np.array(theta, float) if theta is not None else default
        self.bounds = [(math.log(0.02), math.log(50.0))] * dim + [(math.log(0.05), math.log(20.0)),
                                                                   (math.log(1e-4), math.log(2.0))]

    def _nlml(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray, D: np.ndarray) -> tuple[float, np.ndarray]:
        d, n = self.dim, len(X)
        ls2 = np.exp(2 * theta[:d])
        s2, nz = math.exp(theta[d]), math.exp(theta[d + 1])
        Dd = D / ls2  # [n, n, parameters] scaled squared differences
        r = np.sqrt(Dd.sum(-1))
        e = np.exp(-_S5 * r)
        M = (1 + _S5 * r + 5 / 3 * r * r) * e
        K = s2 * M + (nz + 1e-8) * np.eye(n)
        try:
            L = np.linalg.cholesky(K)
        except np.linalg.LinAlgError:
            return 1e10, np.zeros_like(theta)
        a = cho_solve((L, True), y)
        prior = (theta[:d] - math.log(0.5)) / 2.0
        val = 0.5 * y @ a + np.log(np.diag(L)).sum() + 0.5 * (prior * prior).sum()
        W = np.outer(a, a) - cho_solve((L, True), np.eye(n))
        g = np.empty_like(theta)
        # dK/dlog(l_k) = s2 * 5/3 (1 + sqrt5 r) exp(-sqrt5 r) * (x_ik - x_jk)^2 / l_k^2
        g[:d] = -0.5 * np.einsum("ij,ijk->k", W * (s2 * 5 / 3 * (1 + _S5 * r) * e), Dd) + prior / 2.0
        g[d] = -0.5 * (W * (s2 * M)).sum()
        g[d + 1] = -0.5 * nz * np.trace(W)
        return float(val), g

    def fit(self, X: np.ndarray, y: np.ndarray, maxiter: int = 50) -> None:
        from scipy.optimize import minimize

        D = ((X[:, None, :] - X[None, :, :]) ** 2) @ self.G
        r = minimize(self._nlml, self.theta, args=(X, y, D), jac=True, method="L-BFGS-B", bounds=self.bounds,
                     options={"maxiter": maxiter})
        if np.all(np.isfinite(r.x)):
            self.theta = r.x

    def _k(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        A, B = A / self.ls, B / self.ls
        d2 = np.maximum((A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2 * A @ B.T, 0.0)
        r = np.sqrt(d2)
        return self.s2 * (1 + _S5 * r + 5 / 3 * d2) * np.exp(-_S5 * r)

    def condition(self, X: np.ndarray, y: np.ndarray) -> None:
        d = self.dim
        self.ls, self.s2 = np.exp(self.theta[:d])[self.groups], math.exp(self.theta[d])
        nz = math.exp(self.theta[d + 1])
        self.X = X
        K = self._k(X, X) + (nz + 1e-8) * np.eye(len(X))
        self.L = np.linalg.cholesky(K)
        self.alpha = cho_solve((self.L, True), y)

    def predict(self, Xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the noise-free function."""
        Ks = self._k(Xs, self.X)
        v = solve_triangular(self.L, Ks.T, lower=True)
        return Ks @ self.alpha, np.sqrt(np.maximum(self.s2 - (v * v).sum(0), 1e-12))
