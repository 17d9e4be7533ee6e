"""The run directory: everything a search leaves on disk, and reading it back.

``layout`` names every path of a run directory (a new file of the run goes there first); ``records`` its typed
records (``RunSpec`` for ``spec.json``, ``TrialRecord`` for ``trials/<id>.json``, ``TrialStatus``), each reading
what every earlier version wrote and naming a file that is not one; ``store`` the storage of runs and each run's
spec, trial records and strategy state (atomic JSON); ``lock`` the one driver per run; ``results`` best epochs,
rankings and Pareto fronts computed from the records. No Ray, no framework. Imports only ``nas.errors`` and
``nas.plugins``.
"""
