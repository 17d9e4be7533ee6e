"""The supernet phase inside one Ray worker (a trial's resources: ``--cpus-per-trial``, ``--gpus-per-trial``).

Each supernet epoch, as ENAS (Pham et al. 2018) alternates:

(a) the shared weights: one pass over the training data in minibatches, each trained on ONE child the controller
    samples (``sample(rng)``: from its policy, without proposing; a strategy without ``sample`` draws children
    uniformly, which is random search with weight sharing, Li & Talwalkar 2019), by ``train_on_batch`` of the one
    compiled supernet;
(b) the controller: ``controller_steps`` x ``children_per_step`` children it proposes (``ask``), each evaluated
    with the shared weights on one validation minibatch and told (``tell``) its ``val_accuracy`` / ``val_loss``.

The first ``warmup_epochs`` epochs (a ``--supernet-option``) do (a) only, on children drawn uniformly from the
space: every operation's weights train alike before the controller's samples concentrate on a few.

Then the epoch's best few children are evaluated on the whole validation set (the "best sampled architecture so
far" of the progress line), and a checkpoint is written atomically to ``<run>/supernet/resume.npz``: the
supernet's weights, optimizer and random state (``nas.trials.worker``'s checkpoint), plus the controller's JSON state,
the reward's moving average, the best architecture so far and the per-epoch history. What an epoch does is a
function of that state, the seed and the epoch number (data order ``epoch_order``, global seeds ``seed_epoch``,
children and validation minibatches from ``default_rng([seed, epoch, ...])``), so a resumed phase continues
exactly as an uninterrupted one.

After the last epoch, ``candidates`` architectures sampled from the final policy (plus every epoch's best) are
ranked by shared-weight accuracy on the whole validation set: the top-k are trained from scratch next.

Minibatches all have one size (the last partial batch of an epoch is dropped, evaluation batches are padded), so
the supernet's train and predict steps are each compiled once for the whole search.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nas.estimation.settings import SupernetSettings
from nas.estimation.settings import controller_options as with_enas_defaults
from nas.options import TrialSetup
from nas.plugins import params as P
from nas.plugins.objective import Objective
from nas.storage.layout import CHECKPOINT, supernet_dir
from nas.trials.worker import (
    checkpoint_arrays,
    configure_framework,
    epoch_order,
    load_checkpoint,
    seed_epoch,
    space_and_data,
    write_checkpoint,
)

STATE_KEY = "supernet"  # the phase's own JSON state, in the same .npz as the weights (one atomic file)
#: decay of the moving average of the sampled children's shared-weight accuracy (the progress line's reward)
REWARD_DECAY = 0.9
#: seeds of the per-epoch random streams (children for training, validation minibatches, final candidates)
_TRAIN, _CONTROL, _RANK = 1, 2, 3


def read_phase_state(run_dir: str | Path) -> dict[str, Any] | None:
    """The phase's JSON state from its last checkpoint (numpy only; None when there is none or it is unreadable)."""
    path = supernet_dir(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            return json.loads(bytes(f[STATE_KEY]).decode())
    except Exception:
        return None


class SupernetTrainer:
    """One search's supernet and controller, kept in a Ray actor between the driver's calls."""

    def __init__(self, setup: TrialSetup, data: Any, settings: SupernetSettings, controller: str,
                 controller_options: Mapping[str, Any], objectives: list[dict[str, Any]]) -> None:
        configure_framework(setup)
        import keras

        from nas.plugins.registry import STRATEGIES, create_strategy, load

        self.setup = setup
        self.settings = settings
        self.seed = 0 if setup.seed is None else int(setup.seed)
        keras.backend.clear_session(free_memory=False)
        keras.utils.set_random_seed(self.seed)
        self.space, self.hp, self.data = space_and_data(setup, data)
        self.objectives = [Objective(**o) for o in objectives]
        # the stored options with ENAS's controller defaults under them again: a supernet phase stored before
        # RL_DEFAULTS named the update rule keeps REINFORCE (the others were stored with the spec)
        options = with_enas_defaults(getattr(load(STRATEGIES, controller), "name", ""), controller_options, settings)
        self.controller = create_strategy(controller, space=self.hp, objective=self.objectives, seed=setup.seed,
                                          **options)
        self.supernet = self.space.build_supernet()
        n_train, n_val = len(self.data.x_train), len(self.data.x_val)
        self.batch = max(1, min(self.space.batch_size(self.hp), n_train))
        self.steps = max(1, n_train // self.batch)
        self.eval_batch = max(1, min(self.batch, n_val))
        self.out_dir = supernet_dir(setup.run_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.state: dict[str, Any] = {"epoch": 0, "reward_ma": None, "best": None, "history": [], "ranking": None,
                                      "children": 0, "train_time_s": 0.0}

    # -- resume -----------------------------------------------------------------------------------------------
    def restore(self) -> dict[str, Any]:
        """Continue from the last checkpoint, if any: the epoch to train next and what was done."""
        meta = load_checkpoint(self.out_dir, self.supernet)
        state = read_phase_state(self.setup.run_dir) if meta is not None else None
        if state is not None:
            self.controller.set_state(state.pop("controller"))
            self.state = state
        return self.summary()

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.state.items()}

    # -- one epoch --------------------------------------------------------------------------------------------
    def _sample(self, rng: np.random.Generator) -> dict[str, Any]:
        sample = getattr(self.controller, "sample", None)
        return sample(rng) if callable(sample) else P.sample_values(self.hp, rng)

    def _predict(self, values: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
        """Class probabilities of the child ``values`` with the shared weights, in fixed-size batches."""
        b = self.eval_batch
        arch = self.space.arch_inputs(values, b)
        out = []
        for start in range(0, len(x), b):
            chunk = x[start:start + b]
            n = len(chunk)
            if n < b:  # padded: one compiled predict step for every batch
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)])
            out.append(np.asarray(self.supernet.predict_on_batch([chunk, *arch]))[:n])
        return np.concatenate(out)

    def evaluate(self, values: Mapping[str, Any], idx: np.ndarray | None = None) -> dict[str, float]:
        """A child's ``val_accuracy`` and ``val_loss`` with the shared weights, on the validation examples
        ``idx`` (default: all of them)."""
        x, y = self.data.x_val, self.data.y_val
        if idx is not None:
            x, y = x[idx], y[idx]
        probs = self._predict(values, x)
        y = np.asarray(y).astype(np.int64).reshape(-1)
        picked = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)  # Keras' epsilon in its cross-entropy
        return {"val_accuracy": float(np.mean(np.argmax(probs, axis=1) == y)),
                "val_loss": float(-np.mean(np.log(picked)))}

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Supernet epoch ``epoch`` (0-based): shared weights, then the controller; checkpointed."""
        assert epoch == self.state["epoch"], (epoch, self.state["epoch"])
        started = time.perf_counter()
        # not keras.utils.set_random_seed: TensorFlow's seed clears its kernel cache, and re-creating the kernels of
        # every branch of the supernet cost 1.7 s per epoch on digits (its 22 train steps take 0.35 s); nothing in
        # a supernet layer draws from TensorFlow's stateful random ops, and its seed is set once in __init__
        seed_epoch(self.seed, epoch)
        x, y = self.data.x_train, self.data.y_train
        order = epoch_order(self.seed, epoch, len(x))
        rng = np.random.default_rng([self.seed, epoch, _TRAIN])
        warmup = epoch < self.settings.warmup_epochs
        losses = []
        for step in range(self.steps):  # (a) the shared weights, one sampled child per minibatch
            idx = order[step * self.batch:(step + 1) * self.batch]
            child = P.sample_values(self.hp, rng) if warmup else self._sample(rng)
            logs = self.supernet.train_on_batch([x[idx], *self.space.arch_inputs(child, len(idx))], y[idx],
                                                return_dict=True)
            losses.append(float(logs["loss"]))
        if not all(math.isfinite(v) for v in losses):
            raise FloatingPointError(f"the supernet's training loss became {losses[-1]} at supernet epoch {epoch + 1}")

        rng = np.random.default_rng([self.seed, epoch, _CONTROL])
        n_val = len(self.data.x_val)
        seen: list[tuple[dict[str, Any], dict[str, float]]] = []
        reward_ma = self.state["reward_ma"]
        metric = self.objectives[0]
        for _ in range(0 if warmup else self.settings.controller_steps):  # (b) the controller, on shared weights
            for _ in range(self.settings.children_per_step):
                proposal = self.controller.ask()
                if proposal is None:
                    break
                idx = rng.choice(n_val, size=self.eval_batch, replace=False)
                metrics = self.evaluate(proposal.values, idx)
                self.controller.tell(proposal.trial_id, metrics)
                seen.append((proposal.values, metrics))
                r = metrics["val_accuracy"]
                reward_ma = r if reward_ma is None else REWARD_DECAY * reward_ma + (1 - REWARD_DECAY) * r
        best = self._epoch_best(seen, metric, epoch)
        if best is not None and (self.state["best"] is None or
                                 metric.score(best["metrics"]) >= metric.score(self.state["best"]["metrics"])):
            self.state["best"] = best
        spent = time.perf_counter() - started
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "reward_ma": reward_ma,
                  "children": len(seen), "epoch_best": best, "warmup": warmup, "time_s": round(spent, 3)}
        self.state.update(epoch=epoch + 1, reward_ma=reward_ma, children=self.state["children"] + len(seen),
                          train_time_s=round(self.state["train_time_s"] + spent, 3))
        self.state["history"].append(record)
        self._checkpoint()
        return dict(record, best=self.state["best"], epochs=self.settings.epochs)

    def _epoch_best(self, seen: list, metric: Objective, epoch: int) -> dict[str, Any] | None:
        """The epoch's best few children by minibatch score, re-evaluated on the whole validation set."""
        unique: dict[str, tuple[dict[str, Any], float]] = {}
        for values, m in seen:
            s = metric.score(m)
            key = P.canonical(values)
            if s is not None and (key not in unique or s > unique[key][1]):
                unique[key] = (values, s)
        top = sorted(unique.values(), key=lambda vs: -vs[1])[: self.settings.epoch_best]
        scored = [(values, self.evaluate(values)) for values, _ in top]
        if not scored:
            return None
        values, metrics = max(scored, key=lambda vm: metric.score(vm[1]))
        return {"values": values, "metrics": metrics, "epoch": epoch + 1}

    def _checkpoint(self) -> None:
        arrays = checkpoint_arrays(self.supernet, self.state["epoch"], {"phase": "supernet"})
        state = dict(self.state, controller=self.controller.get_state())
        arrays[STATE_KEY] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
        write_checkpoint(self.out_dir, arrays)

    # -- the end ----------------------------------------------------------------------------------------------
    def rank(self) -> dict[str, Any]:
        """Rank ``candidates`` architectures from the final policy (and every epoch's best; uniform draws when
        those are fewer than ``top_k``) by shared-weight score on the whole validation set; checkpointed with
        the ranking. Returns the ranking (best first) and the controller's final state."""
        if self.state["ranking"] is None:
            metric = self.objectives[0]
            rng = np.random.default_rng([self.seed, self.settings.epochs, _RANK])
            pool: dict[str, dict[str, Any]] = {}
            for h in self.state["history"]:
                if h.get("epoch_best"):
                    pool.setdefault(P.canonical(h["epoch_best"]["values"]), h["epoch_best"]["values"])
            tries = 0
            while len(pool) < self.settings.candidates + len(self.state["history"]) and \
                    tries < 20 * self.settings.candidates:
                values = self._sample(rng)
                pool.setdefault(P.canonical(values), values)
                tries += 1
            # a concentrated policy proposes few distinct children (~18 of 2,000 draws on digits): architectures
            # drawn uniformly, ranked the same way, fill the pool so that --top-k gets its K trials (a space with
            # fewer than K architectures: all it has)
            while len(pool) < self.settings.top_k and tries < 20 * (self.settings.candidates + self.settings.top_k):
                values = P.sample_values(self.hp, rng)
                pool.setdefault(P.canonical(values), values)
                tries += 1
            ranked = []
            for values in pool.values():
                metrics = self.evaluate(values)
                ranked.append({"values": values, "metrics": metrics, "summary": self.space.arch_summary(values)
                               if hasattr(self.space, "arch_summary") else P.canonical(values)})
            ranked.sort(key=lambda r: -(metric.score(r["metrics"]) or -math.inf))
            self.state["ranking"] = ranked
            self._checkpoint()
        return {"ranking": self.state["ranking"], "controller": self.controller.get_state(),
                "state": self.summary()}

    def evaluate_many(self, configurations: list[Mapping[str, Any]]) -> list[dict[str, float]]:
        """Shared-weight metrics of given architectures on the whole validation set (benchmarks: rank
        correlation with from-scratch accuracy)."""
        return [self.evaluate(v) for v in configurations]


def trainer_from_run(run_dir: str | Path) -> SupernetTrainer:
    """A stored run's supernet and controller as its last checkpoint left them, in this process (its backend
    must be the run's): e.g. to evaluate architectures with the run's shared weights."""
    from nas.plugins.registry import stored_space_options
    from nas.storage.store import ExperimentStore

    run_dir = Path(run_dir)
    spec = ExperimentStore(run_dir).spec()
    data = spec.data.load(spec.seed)
    objectives = spec.objectives
    setup = TrialSetup(space=spec.space, task=spec.task, epochs=spec.epochs, objective=objectives[0],
                       backend=spec.backend, space_options=stored_space_options(spec), seed=spec.seed,
                       run_dir=str(run_dir), cpus_per_trial=(spec.options or {}).get("cpus_per_trial", 1.0))
    sn = spec.supernet
    if sn is None:
        raise FileNotFoundError(f"{run_dir} was not searched with --estimation shared-weights: it has no supernet")
    settings = SupernetSettings.from_json({k: v for k, v in sn.items() if k not in ("controller", "controller_options")})
    trainer = SupernetTrainer(setup, data, settings, sn["controller"], sn["controller_options"],
                              [o.to_json() for o in objectives])
    if trainer.restore()["epoch"] == 0:
        raise FileNotFoundError(f"{supernet_dir(run_dir) / CHECKPOINT}: no supernet checkpoint to evaluate with")
    return trainer
