"""Cheap measurements of a built model: size and inference latency, taken before training.

Latency does not depend on the weights' values, so it is measured once, right after the model is built: it
is then known for every epoch report, and a `--max-latency-ms` constraint rejects a model before any training.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

#: latency keys every trial reports
LATENCY = "latency_ms"  # per sample, batch 1, median of REPEATS calls after WARMUP
LATENCY_BATCH = "latency_ms_b256"  # per sample, batch 256 (throughput view)
WARMUP, REPEATS = 3, 15


def latency(model: Any, x: np.ndarray) -> dict[str, float]:
    """Median inference time per sample, in milliseconds, on the device TensorFlow runs the model on."""
    import tensorflow as tf

    call = tf.function(lambda t: model(t, training=False), reduce_retracing=True)

    def median_ms(batch: np.ndarray, repeats: int) -> float:
        t = tf.convert_to_tensor(batch)
        for _ in range(WARMUP):
            _ = np.asarray(call(t))  # materialise: include the device-to-host copy, as a caller would
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            _ = np.asarray(call(t))
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000.0 / len(batch)

    big = np.resize(x, (256, *x.shape[1:])).astype(x.dtype)
    return {LATENCY: round(median_ms(x[:1], REPEATS), 5), LATENCY_BATCH: round(median_ms(big, 5), 6)}
