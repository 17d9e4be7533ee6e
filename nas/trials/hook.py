"""Ray's ``worker_process_setup_hook`` for every worker of a search (``nas.runtime.cluster.WARM_UP_HOOK``).

Kept apart from the trial's modules: importing ``nas.trials.single`` imports KerasTuner and with it Keras, and
the hook must mark the process a trial worker before Keras is imported (``nas.runtime.imports``).
"""

from __future__ import annotations

import contextlib

from nas.runtime.imports import skip_optional_imports


def warm_up() -> None:
    """Run as each worker process starts: mark it a trial worker (Keras's scikit-learn and matplotlib imports
    are skipped: no trial uses them), then load what a trial runs (``nas.trials.single``) and with it Keras and
    the framework ``KERAS_BACKEND`` names, before the worker takes its first trial (on Ray 2.60 the workers a
    trial actor gets are started for it, so this moves the import rather than overlapping it with the driver's
    start: ``nas.runtime.cluster.ray_session``). Importing runs no framework op: each trial still sets its
    threads and its share of a GPU (``configure_framework``). A failure here only moves the import into the
    trial, which imports again and reports it."""
    skip_optional_imports(own_process=True)
    with contextlib.suppress(Exception):  # the trial raises it again where it can be reported
        import keras  # noqa: F401

        import nas.trials.single  # noqa: F401
