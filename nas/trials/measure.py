"""Cheap measurements of a built model: size and inference latency, taken before training.

Latency does not depend on the weights' values, so it is measured once, right after the model is built: it
is then known for every epoch report, and a `--max-latency-ms` constraint rejects a model before any training.
It goes through ``model.predict_on_batch``, the backend's compiled inference step (a ``tf.function`` under
tensorflow, ``jax.jit`` under jax, eager under torch), so it is what a caller of the model would see.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from nas.plugins.objective import LATENCY, LATENCY_BATCH

WARMUP, REPEATS = 3, 15


def latency(model: Any, x: np.ndarray) -> dict[str, float]:
    """Median inference time per sample, in milliseconds, on the device the backend runs the model on."""

    def median_ms(batch: np.ndarray, repeats: int) -> float:
        for _ in range(WARMUP):
            model.predict_on_batch(batch)  # returns numpy: the device-to-host copy counts, as for a caller
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict_on_batch(batch)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000.0 / len(batch)

    big = np.resize(x, (256, *x.shape[1:])).astype(x.dtype)
    return {LATENCY: round(median_ms(x[:1], REPEATS), 5), LATENCY_BATCH: round(median_ms(big, 5), 6)}
