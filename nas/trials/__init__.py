"""What runs inside a Ray worker: one trial.

``hook`` what each worker runs as it starts, ``worker`` what every trial does (seeds, checkpoints, epoch reports, the data and space it is given), ``single``
a single-process trial, ``horovod`` a data-parallel one (Horovod ranks), ``artifacts`` its best-epoch model,
``measure`` its size and latency, ``tensorboard`` its HParams logs. A new kind of trial goes here.
"""
