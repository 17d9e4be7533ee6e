"""Conformance checks every search space and strategy must pass (built-in or third-party).

Each property is its own check, so a plugin author sees every property that fails, not only the first. One line
in a plugin's own test module certifies it, with one pytest test per property (as Optuna's sampler test cases)::

    from nas.testing.conformance import space_conformance, strategy_conformance
    test_my_strategy = strategy_conformance("my_pkg.mod:MyStrategy")   # test_my_strategy[resumes_exactly] ...
    test_my_space = space_conformance("my_pkg.mod:MySpace")

Without pytest: ``check_strategy(name)`` / ``check_space(name)`` run every property and raise one
``AssertionError`` listing each that failed. ``tests/plugins/test_conformance.py`` runs them over every registered
plugin.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Callable

import keras_tuner as kt
import numpy as np

from nas.plugins import params as P
from nas.plugins.registry import create_space, create_strategy

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


# -- strategy properties -------------------------------------------------------------------------------------
Factory = Callable[[int], Any]


def _proposes_valid_points(make: Factory, space: kt.HyperParameters, n: int) -> None:
    """Proposals are points of the space (conditional parameters respected), with some trials failing."""
    proposals = _run(make(0), n, fail_every=5)
    assert proposals, "proposed nothing"
    for v in proposals:
        P.validate(space, v)


def _same_seed_same_proposals(make: Factory, space: kt.HyperParameters, n: int) -> None:
    """Two runs with the same seed propose the same configurations."""
    assert _run(make(0), n, fail_every=5) == _run(make(0), n, fail_every=5), \
        "two runs with the same seed proposed differently"


def _resumes_exactly(make: Factory, space: kt.HyperParameters, n: int) -> None:
    """get_state -> JSON -> set_state mid-run, with a trial pending, continues as an uninterrupted run would."""
    ref = make(0)
    _run(ref, n // 2, fail_every=5)
    pending = ref.ask()
    state = json.loads(json.dumps(ref.get_state()))
    resumed = make(12345)  # the state, not the constructor's seed, must decide what comes next
    resumed.set_state(state)
    if pending is not None:
        for s in (ref, resumed):
            s.tell(pending.trial_id, {"val_accuracy": toy_metric(pending.values)})
    assert _run(ref, n - n // 2 - 1) == _run(resumed, n - n // 2 - 1), \
        "proposals after set_state differ from an uninterrupted run"


def _survives_only_failures(make: Factory, space: kt.HyperParameters, n: int) -> None:
    """After nothing but failed trials it still proposes valid points."""
    c = make(3)
    for _ in range(6):
        p = c.ask()
        if p is None:
            break
        c.tell(p.trial_id, None)
    p = c.ask()
    if p is not None:
        P.validate(space, p.values)


def _accepts_out_of_order_results(make: Factory, space: kt.HyperParameters, n: int) -> None:
    """Several trials pending at once (as on Ray), told in another order than asked."""
    d = make(4)
    batch = [p for p in (d.ask() for _ in range(4)) if p is not None]
    for p in reversed(batch):
        d.tell(p.trial_id, {"val_accuracy": toy_metric(p.values)})
    p = d.ask()
    if p is not None:
        P.validate(space, p.values)


def _distinct_points(space: kt.HyperParameters, n: int, seed: int) -> list[dict[str, Any]]:
    rng, out, keys = np.random.default_rng(seed), [], set()
    for _ in range(50 * n):
        v = P.sample_values(space, rng)
        if P.canonical(v) not in keys:
            keys.add(P.canonical(v))
            out.append(v)
        if len(out) == n:
            break
    return out


def _learns_from_prior_observations(make: Factory, space: kt.HyperParameters, n: int) -> None:
    """Told results it did not propose (``observe``, as ``--warm-start`` tells an earlier run's trials; one of
    them failed), it proposes valid points that repeat neither a prior nor each other, and its state
    round-trips after them."""
    priors = _distinct_points(space, 8, seed=7)
    s = make(0)
    for i, v in enumerate(priors):
        s.observe(v, None if i == 5 else {"val_accuracy": toy_metric(v)})
    assert s.priors == len(priors), f"{s.priors} priors counted for {len(priors)} observed"
    proposals = _run(s, n // 2, fail_every=5)
    assert proposals, "proposed nothing after prior observations"
    keys = [P.canonical(v) for v in proposals]
    for v in proposals:
        P.validate(space, v)
    known = {P.canonical(v) for v in priors}
    assert not known & set(keys), f"proposed a configuration it was told as a prior: {sorted(known & set(keys))[:1]}"
    assert len(set(keys)) == len(keys), "proposed a configuration twice after prior observations"
    resumed = make(12345)
    resumed.set_state(json.loads(json.dumps(s.get_state())))
    assert resumed.priors == len(priors), "the priors were lost by get_state -> set_state"
    assert _run(s, n - n // 2) == _run(resumed, n - n // 2), \
        "proposals after set_state differ from an uninterrupted run, with prior observations"


def _proposes_enqueued_first(make: Factory, space: kt.HyperParameters, n: int) -> None:
    """Enqueued configurations (``enqueue``, as ``--enqueue``) are proposed first, in order, and told like any
    trial; then its own proposals follow; with some still queued, its state round-trips."""
    queued = _distinct_points(space, 3, seed=11)
    s = make(0)
    for v in queued:
        s.enqueue(v)
    first = s.ask()
    assert first is not None and first.values == queued[0], f"the first proposal {first} is not the enqueued one"
    s.tell(first.trial_id, {"val_accuracy": toy_metric(first.values)})
    resumed = make(12345)
    resumed.set_state(json.loads(json.dumps(s.get_state())))
    rest = _run(s, 2 + n // 4)
    assert rest[:2] == queued[1:], "the enqueued configurations were not proposed first, in order"
    for v in rest:
        P.validate(space, v)
    assert _run(resumed, 2 + n // 4) == rest, "proposals after set_state differ from an uninterrupted run, with a queue"


STRATEGY_PROPERTIES: dict[str, Callable[[Factory, kt.HyperParameters, int], None]] = {
    "proposes_valid_points": _proposes_valid_points,
    "same_seed_same_proposals": _same_seed_same_proposals,
    "resumes_exactly": _resumes_exactly,
    "survives_only_failures": _survives_only_failures,
    "accepts_out_of_order_results": _accepts_out_of_order_results,
    "learns_from_prior_observations": _learns_from_prior_observations,
    "proposes_enqueued_first": _proposes_enqueued_first,
}


def check_strategy_property(prop: str, name: str, n: int = 24, space: kt.HyperParameters | None = None,
                            **options: Any) -> None:
    """One property of ``STRATEGY_PROPERTIES`` for the strategy ``name`` (registered, module:Class, file.py:Class)."""
    space = space or toy_space()

    def make(seed: int) -> Any:
        return create_strategy(name, space=space, objective="val_accuracy:max", seed=seed, **options)

    try:
        STRATEGY_PROPERTIES[prop](make, space, n)
    except AssertionError as e:
        raise AssertionError(f"strategy {name!r} fails {prop!r}: {e}") from None


def check_strategy(name: str, n: int = 24, space: kt.HyperParameters | None = None, **options: Any) -> None:
    """Every strategy property; one AssertionError naming each property that fails."""
    _check_all(STRATEGY_PROPERTIES, lambda prop: check_strategy_property(prop, name, n, space, **options))


# -- space properties ----------------------------------------------------------------------------------------
def _declares_whole_space(space: Any, data: Any, configurations: int, seed: int) -> None:
    """The whole space, every conditional branch included, is declared up front, the same way every time."""
    hp = space.hyperparameters()
    assert hp.space, "declares no hyperparameters"
    again = space.hyperparameters()
    assert [p.name for p in again.space] == [p.name for p in hp.space], "declare() is not deterministic"


def _builds_and_trains(space: Any, data: Any, configurations: int, seed: int) -> None:
    """The default and seeded random configurations build compiled models that train one batch, and building
    declares no parameter beyond the declared space."""
    import keras

    hp = space.hyperparameters()
    rng = np.random.default_rng(seed)
    xb, yb = data.x_train[:16], data.y_train[:16]
    for i in range(configurations):
        values = P.sample_values(hp, rng) if i else P.default_values(hp)
        h = P.to_hp(hp, values)
        model = space.build(h)
        assert getattr(model, "optimizer", None) is not None, f"build() returned an uncompiled model for {values}"
        loss = model.train_on_batch(xb, yb, return_dict=True)
        assert loss, f"training one batch returned nothing for {values}"
        assert {p.name for p in h.space} == {p.name for p in hp.space}, f"build() declared new parameters for {values}"
        keras.backend.clear_session(free_memory=False)


def _reports_default_objective(space: Any, data: Any, configurations: int, seed: int) -> None:
    """Its default objective names a metric its trials report: a search on it trusts this and trains no model
    to check it (an objective a user names is checked before any trial)."""
    from nas.driver.engine import reported_metrics

    metric = space.default_objective().split(":")[0]
    known = reported_metrics(space, data)
    assert known is not None, "no configuration of the space builds"
    assert metric in known, f"default objective {metric!r} is not reported; trials report {sorted(known)}"


def _builds_every_version(space: Any, data: Any, configurations: int, seed: int) -> None:
    """Every version it lists in ``versions`` (a run stored with one resumes and exports with it) builds its
    default configuration, which trains one batch; its ``version`` is among them, and another is refused in one
    line. A space without ``versions`` builds only its ``version``: nothing more to check."""
    import keras

    from nas.errors import PluginError

    cls = type(space)
    versions = tuple(getattr(cls, "versions", ()) or ())
    if not versions:
        return
    assert cls.version in versions, f"its version {cls.version!r} is not among its versions {versions}"
    for v in versions:
        built = cls(task=space.task, version=v)
        assert built.version == v, f"asked for version {v!r}, it says it builds {built.version!r}"
        hp = built.hyperparameters()
        model = built.build(P.to_hp(hp, P.default_values(hp)))
        assert model.train_on_batch(data.x_train[:16], data.y_train[:16], return_dict=True), f"version {v!r}"
        keras.backend.clear_session(free_memory=False)
    try:
        cls(task=space.task, version="no-such-version")
    except PluginError as e:
        assert "\n" not in str(e) and "no-such-version" in str(e), f"an unknown version is refused with {e!r}"
    else:
        raise AssertionError("version='no-such-version' was accepted")


SPACE_PROPERTIES: dict[str, Callable[[Any, Any, int, int], None]] = {
    "declares_whole_space": _declares_whole_space,
    "builds_and_trains": _builds_and_trains,
    "reports_default_objective": _reports_default_objective,
    "builds_every_version": _builds_every_version,
}


def check_space_property(prop: str, name: str, configurations: int = 10, seed: int = 0, task: Any = None,
                         data: Any = None) -> None:
    """One property of ``SPACE_PROPERTIES`` for the space ``name``, on ``data`` (default: digits)."""
    from nas.plugins.data import load_data
    from nas.plugins.registry import SPACES, load

    data = data or load_data("digits")
    task = task or load(SPACES, name).example_task(data)
    space = create_space(name, task=task)
    try:
        SPACE_PROPERTIES[prop](space, space.prepare_data(data), configurations, seed)
    except AssertionError as e:
        raise AssertionError(f"space {name!r} fails {prop!r}: {e}") from None


def check_space(name: str, configurations: int = 10, seed: int = 0, task: Any = None, data: Any = None) -> None:
    """Every space property; one AssertionError naming each property that fails."""
    _check_all(SPACE_PROPERTIES, lambda prop: check_space_property(prop, name, configurations, seed, task, data))


def _check_all(properties: dict[str, Any], check: Callable[[str], None]) -> None:
    failures = []
    for prop in properties:
        try:
            check(prop)
        except AssertionError as e:
            failures.append(str(e))
    if failures:
        raise AssertionError(f"{len(failures)} of {len(properties)} properties fail:\n" + "\n".join(failures))


# -- pytest: one named test per property ----------------------------------------------------------------------
def strategy_conformance(name: str, **options: Any) -> Callable[[str], None]:
    """A pytest test function parametrised over every strategy property: ``test_x = strategy_conformance(...)``."""
    import pytest

    @pytest.mark.parametrize("prop", list(STRATEGY_PROPERTIES))
    def test(prop: str) -> None:
        check_strategy_property(prop, name, **options)

    return test


def space_conformance(name: str, **kwargs: Any) -> Callable[[str], None]:
    """A pytest test function parametrised over every space property: ``test_x = space_conformance(...)``."""
    import pytest

    @pytest.mark.parametrize("prop", list(SPACE_PROPERTIES))
    def test(prop: str) -> None:
        check_space_property(prop, name, **kwargs)

    return test
