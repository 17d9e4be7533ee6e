"""Every registered space and strategy passes the same conformance suite."""

from __future__ import annotations

import pytest

from nas.registry import SPACES, STRATEGIES, available
from nas.testing.conformance import check_space, check_strategy


@pytest.mark.parametrize("name", sorted(available(STRATEGIES)))
def test_strategy_conformance(name: str) -> None:
    check_strategy(name)


@pytest.mark.parametrize("name", sorted(available(SPACES)))
def test_space_conformance(name: str) -> None:
    check_space(name, configurations=10)
