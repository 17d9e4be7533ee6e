"""The driver: prepares a search (everything that can fail before Ray), then runs or resumes it on Ray Tune.

``engine`` prepares, runs and resumes; ``searcher`` turns a strategy into a Tune searcher (the budget, trial
records, lost trials, worker recycling); ``inputs`` makes what the Python API gives in memory (arrays, plugin
objects) files of the run. The weight-sharing phase is ``nas.estimation``.
"""
