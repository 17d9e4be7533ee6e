"""Every registered space and strategy passes the same conformance suite: one named test per plugin and property
(``test_strategy[rl-resumes_exactly]``), so a failure names the property."""

from __future__ import annotations

import pytest

from nas.plugins.registry import SPACES, STRATEGIES, available
from nas.testing.conformance import (
    SPACE_PROPERTIES,
    STRATEGY_PROPERTIES,
    check_space,
    check_space_property,
    check_strategy_property,
    strategy_conformance,
)


@pytest.mark.parametrize("prop", list(STRATEGY_PROPERTIES))
@pytest.mark.parametrize("name", sorted(available(STRATEGIES)))
def test_strategy(name: str, prop: str) -> None:
    check_strategy_property(prop, name)


@pytest.mark.parametrize("prop", [pytest.param(p, marks=pytest.mark.slow) if p == "builds_and_trains" else p
                                  for p in SPACE_PROPERTIES])  # builds and trains 10 models per space
@pytest.mark.parametrize("name", sorted(available(SPACES)))
def test_space(name: str, prop: str) -> None:
    check_space_property(prop, name, configurations=10)


# what a plugin author writes: one line, one test per property
test_rl_lstm_policy = strategy_conformance("rl", policy="lstm")


def test_every_failing_property_is_named(tmp_path) -> None:
    """A broken plugin is told every property it fails, not only the first."""
    plugin = tmp_path / "broken_space.py"
    plugin.write_text(
        "import keras\n"
        "from nas.plugins.space import SearchSpace\n"
        "class Empty(SearchSpace):\n"
        "    versions = ('2',)\n"
        "    def declare(self, hp):\n"
        "        pass\n"
        "    def build_model(self, hp):\n"
        "        return keras.Sequential([keras.layers.Dense(1)])\n"
    )
    with pytest.raises(AssertionError) as e:
        check_space(f"{plugin}:Empty", configurations=1)
    text = str(e.value)
    assert "4 of 4 properties fail" in text
    assert "'declares_whole_space': declares no hyperparameters" in text and "'builds_and_trains'" in text
    assert "'reports_default_objective'" in text
    assert "'builds_every_version': its version '1' is not among its versions ('2',)" in text
