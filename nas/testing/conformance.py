"""Conformance checks every search space and strategy must pass (built-in or third-party).

Plugin authors call them from their own tests::

    from nas.testing.conformance import check_strategy, check_space
    def test_my_strategy(): check_strategy("my_pkg.mod:MyStrategy")

``tests/test_conformance.py`` runs them over every registered plugin.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Callable

import keras_tuner as kt
import numpy as np

from nas import params as P
from nas.registry import create_space, create_strategy

# -- a small conditional space and a deterministic objective for strategy checks ------------------------------


def toy_space() -> kt.HyperParameters:
    """Every hyperparameter type, log ranges and a two-level conditional."""
    hp = kt.HyperParameters()
    hp.Int("depth", 1, 3)
    for i in range(3):
        with hp.conditional_scope("depth", list(range(i + 1, 4))):
            hp.Int(f"width_{i}", 8, 64, step=8)
    hp.Choice("kind", ["a", "b", "c"])
    with hp.conditional_scope("kind", ["b"]):
        hp.Float("b_strength", 0.1, 10.0, sampling="log")
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Float("dropout", 0.0, 0.5)
    hp.Boolean("bn")
    hp.Int("batch", 16, 128, step=2, sampling="log")
    hp.Fixed("fixed", 7)
    return hp


def toy_metric(values: dict[str, Any]) -> float:
    """A deterministic, non-trivial score in [0, 1] of a configuration."""
    s = 0.3 * (values["depth"] / 3) + 0.2 * (1 - abs(math.log10(values["lr"]) + 2.5) / 2.5)
    s += 0.1 * (values["kind"] == "b") + 0.1 * (1 - values["dropout"])
    h = int(hashlib.sha256(P.canonical(values).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return float(min(1.0, max(0.0, s + 0.2 * h)))


def _run(strategy: Any, n: int, fail_every: int = 0, metric: Callable = toy_metric) -> list[dict[str, Any]]:
    proposals = []
    for i in range(n):
        p = strategy.ask()
        if p is None:
            break
        proposals.append(p.values)
        failed = fail_every and (i % fail_every == fail_every - 1)
        strategy.tell(p.trial_id, None if failed else {"val_accuracy": metric(p.values)})
    return proposals


def check_strategy(name: str, n: int = 24, space: kt.HyperParameters | None = None, **options: Any) -> None:
    """The strategy contract: valid proposals, seeded reproducibility, exact resume, failures tolerated."""
    space = space or toy_space()

    def make(seed: int = 0) -> Any:
        return create_strategy(name, space=space, objective="val_accuracy:max", seed=seed, **options)

    # valid points of the space (conditionals respected), failures tolerated
    a = make()
    proposals_a = _run(a, n, fail_every=5)
    assert proposals_a, f"{name}: proposed nothing"
    for v in proposals_a:
        P.validate(space, v)

    # seeded runs are identical
    proposals_b = _run(make(), n, fail_every=5)
    assert proposals_a == proposals_b, f"{name}: two runs with the same seed proposed differently"

    # get_state / set_state mid-run continues exactly, through JSON, with trials still pending
    ref = make()
    _run(ref, n // 2, fail_every=5)
    pending = ref.ask()
    state = json.loads(json.dumps(ref.get_state()))
    resumed = make(seed=12345)  # the state, not the constructor's seed, must decide what comes next
    resumed.set_state(state)
    if pending is not None:
        for s in (ref, resumed):
            s.tell(pending.trial_id, {"val_accuracy": toy_metric(pending.values)})
    rest_ref = _run(ref, n - n // 2 - 1)
    rest_resumed = _run(resumed, n - n // 2 - 1)
    assert rest_ref == rest_resumed, f"{name}: proposals after set_state differ from an uninterrupted run"

    # all failures do not break it
    c = make(seed=3)
    for _ in range(6):
        p = c.ask()
        if p is None:
            break
        c.tell(p.trial_id, None)
    p = c.ask()
    if p is not None:
        P.validate(space, p.values)

    # several pending at once (asynchronous completion, as on Ray), told out of order
    d = make(seed=4)
    batch = [d.ask() for _ in range(4)]
    batch = [p for p in batch if p is not None]
    for p in reversed(batch):
        d.tell(p.trial_id, {"val_accuracy": toy_metric(p.values)})
    p = d.ask()
    if p is not None:
        P.validate(space, p.values)


def check_space(name: str, configurations: int = 10, seed: int = 0, task: Any = None, data: Any = None) -> None:
    """The space contract: the whole space is declared up front, and seeded random configurations all build,
    compile and train one batch on matching data."""
    import keras

    from nas.data import load_data
    from nas.registry import SPACES, load

    data = data or load_data("digits")
    task = task or load(SPACES, name).example_task(data)
    space = create_space(name, task=task)
    data = space.prepare_data(data)

    hp = space.hyperparameters()
    assert hp.space, f"{name}: declares no hyperparameters"
    again = space.hyperparameters()
    assert [p.name for p in again.space] == [p.name for p in hp.space], f"{name}: declare() is not deterministic"

    rng = np.random.default_rng(seed)
    xb, yb = data.x_train[:16], data.y_train[:16]
    for i in range(configurations):
        values = P.sample_values(hp, rng) if i else P.default_values(hp)
        h = P.to_hp(hp, values)
        model = space.build(h)
        assert model.optimizer is not None, f"{name}: build() returned an uncompiled model for {values}"
        loss = model.train_on_batch(xb, yb, return_dict=True)
        assert loss, f"{name}: training one batch returned nothing for {values}"
        # building never adds parameters beyond the declared space
        assert {p.name for p in h.space} == {p.name for p in hp.space}, f"{name}: build() declared new parameters"
        keras.backend.clear_session(free_memory=False)
