"""check_resources (nas.runtime.cluster): a request no node can ever satisfy fails at once with one line; what
fits says how many trials run at once. Asked of a real local Ray (2 CPUs, loopback), started by ray_session."""

from __future__ import annotations

import pytest

from nas.errors import ResourceError
from nas.runtime.cluster import check_resources, ray_session, trial_resources

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def two_cpus():
    with ray_session(None, verbose=False, num_cpus=2, num_gpus=0) as info:
        assert info["local"]
        yield info


def test_trials_at_once_is_what_the_cluster_holds_capped_by_max_concurrent(two_cpus) -> None:
    assert check_resources(1.0, 0.0, None) == 2
    assert check_resources(0.5, 0.0, None) == 4
    assert check_resources(0.5, 0.0, 3) == 3
    assert check_resources(2.0, 0.0, 8) == 1


@pytest.mark.parametrize("cpus, gpus, workers, says", [
    (4.0, 0.0, 1, "no node can ever run a trial asking --cpus-per-trial 4 --gpus-per-trial 0: the largest node "
                  "has 2 CPUs and 0 GPUs (1 node(s))"),
    (0.0, 1.0, 1, "--gpus-per-trial 1: the largest node has 2 CPUs and 0 GPUs"),
    (1.0, 0.0, 2, "can never run a trial asking --workers-per-trial 2 x (--cpus-per-trial 1 --gpus-per-trial 0) "
                  "plus"),
])
def test_a_request_that_can_never_fit_fails_at_once_naming_it(two_cpus, cpus, gpus, workers, says) -> None:
    with pytest.raises(ResourceError) as e:
        check_resources(cpus, gpus, None, workers)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_horovod_trial_reserves_its_driver_and_one_bundle_per_rank() -> None:
    assert trial_resources(1, 1.0, 0.0, "none") == {"cpu": 1.0, "gpu": 0.0, "memory": 0}
    pg = trial_resources(2, 0.5, 0.0, "horovod", generation=3)
    assert pg.bundles[1:] == [{"CPU": 0.5}, {"CPU": 0.5}] and pg.bundles[0]["memory"] == 3
