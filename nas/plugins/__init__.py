"""Plugins: what a search is made of, and how plugins are found.

The contracts a plugin implements (``space.SearchSpace``, ``strategy.Strategy``), what every strategy shares
(``params``: active hyperparameters, sampling, grids), the objective (``objective``: ``METRIC:max|min``), the task
a data set poses (``task``), the data sets themselves (``data``: loading and checking), and ``registry`` (plugins
by entry point, ``module:Class`` or ``file.py:Class``). A new search space goes in ``search_spaces/``, a new
strategy in ``strategies/``; a new kind of plugin contract goes here. Imports only ``nas.errors``.
"""
