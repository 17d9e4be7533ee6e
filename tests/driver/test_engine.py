"""nas.driver.engine before Ray: ``check`` refuses bad options in milliseconds, ``prepare`` builds the named
task, space, objectives and strategy from real data. (The whole engine, with Ray: tests/test_cli_search.py,
tests/driver/test_resume.py.)"""

from __future__ import annotations

import pytest

from nas.driver.engine import Prepared, check, check_objectives, load, prepare
from nas.errors import NasError
from nas.options import SearchOptions
from nas.plugins.objective import Objective


@pytest.mark.parametrize("options, says", [
    ({"space": "cnnn"}, "unknown space 'cnnn'"),
    ({"strategy": "annealing"}, "unknown strategy 'annealing'"),
    ({"objectives": ["val_accuracy:maximum"]}, "maximum"),
    ({"data": "no/such/file.csv"}, "no/such/file.csv"),
    ({"backend": "theano"}, "theano"),
    ({"executions_per_trial": 0}, "--executions-per-trial 0 is not valid"),
    ({"executions_per_trial": 2, "distributed": "mirrored"}, "--executions-per-trial 2 trains its models in one "
                                                              "process; it cannot be combined with --distributed"),
])
def test_check_refuses_bad_options_naming_them(options: dict, says: str) -> None:
    with pytest.raises(NasError) as e:
        check(SearchOptions(**options))
    assert says in str(e.value) and "\n" not in str(e.value)


def test_prepare_builds_what_the_search_needs_from_real_data() -> None:
    opts = SearchOptions(space="mlp", strategy="random", seed=0)
    check(opts)
    data = load(opts)
    prepared = prepare(opts, data)
    assert isinstance(prepared, Prepared)
    task, space, objectives, strategy = prepared
    assert (task.kind, task.input_shape, task.num_classes) == ("classification", (8, 8), 10)
    assert objectives == [Objective("val_accuracy", "max")]  # the space's default
    assert strategy.ask().values.keys() <= {p.name for p in space.hyperparameters().space}
    with pytest.raises(NasError, match="--objective 'val_f1' is not a metric trials of space 'mlp' report; "
                                       "known: .*val_accuracy"):
        check_objectives(space, data, [Objective("val_f1", "max")])
