"""Performance estimation: how a search judges an architecture.

- ``standalone`` (the default): every trial trains its configuration from scratch (``nas.trials.single``).
- ``shared-weights``: ENAS (Pham et al., "Efficient Neural Architecture Search via Parameter Sharing", ICML
  2018). One supernet holds every operation choice of the space; its shared weights are trained on children the
  controller samples (one minibatch each), and the controller (a strategy: the rl strategy's LSTM, as in ENAS)
  learns from the validation accuracy of sampled children evaluated with those weights. The top-k architectures
  by shared-weight accuracy are then trained from scratch as ordinary trials.

The rooms: ``nas.estimation.supernet`` (the contract a space implements to declare a supernet, and the Keras
layers that build one), ``nas.estimation.settings`` (the options of the supernet phase), ``nas.estimation.trainer``
(what runs inside the Ray worker: training, evaluating, checkpointing), ``nas.estimation.phase`` (the driver:
runs the supernet phase on Ray, prints its progress, hands the top-k to the engine), ``nas.estimation.status``
(what ``nas status`` reads back; no framework).
"""

from __future__ import annotations

from nas.estimation.settings import ESTIMATIONS, SHARED

__all__ = ["ESTIMATIONS", "SHARED"]  # the names every caller uses
