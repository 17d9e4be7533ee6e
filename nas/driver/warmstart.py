"""A search that starts from what is known: earlier runs' trials (``--warm-start RUN``) and configurations a user
gives (``--enqueue configs.json``).

- Warm start: the completed trials of earlier runs are told to the new search's strategy before its first
  proposal, as prior observations (``Strategy.observe``, the public contract every strategy passes the
  conformance property ``learns_from_prior_observations`` of): they are not trials of the new run, are not
  trained again, do not count against ``--trials`` and are not proposed again. An earlier run's configuration is
  translated to the new space: a hyperparameter the new space adds takes its default; a value outside the new
  space's range, or of a hyperparameter the new space lacks, skips that trial (counted and said in one line).
  The earlier runs' objectives must be the new search's (same metrics, same directions, same order), or the
  search is refused in one line: a score of another metric would mislead the strategy. The strategy's state
  (``strategy.json``) holds the priors, so a resumed run keeps them without reading the earlier runs again.
- Enqueued configurations: trials of the run, proposed first and in order (``Strategy.enqueue``, as Optuna's
  ``enqueue_trial``), then the strategy continues, told their results like any trial's (KerasTuner users' "start
  from my current best model"). A hyperparameter a configuration leaves out takes its default; one the space
  lacks, or a value outside its range, is one line before any trial.

Written here, not taken from a library: Optuna's ``add_trial``/``enqueue_trial`` are what ``bayes`` uses inside
(strategies/bayes.py); the other strategies are ours, and the translation between two runs' spaces is nas's.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping

from nas.errors import NasError, RunError
from nas.plugins import params as P
from nas.plugins.objective import Objective
from nas.storage.records import TrialStatus
from nas.storage.store import ExperimentStore


def open_runs(refs: list[str], storage: str | os.PathLike | None) -> list[ExperimentStore]:
    """The runs ``--warm-start`` names (a run of the search's storage, or a run directory's path), each with a
    readable spec and readable trial records; else one ``RunError`` naming the run or file."""
    stores = []
    for ref in refs:
        path = Path(ref).expanduser()
        if os.sep in ref or ref.startswith("~") or ref in (".", ".."):  # a path to a run directory
            store = ExperimentStore(path)
            if not store.spec_path.is_file():
                raise RunError(f"--warm-start {ref!r} is not a run: {store.spec_path} does not exist; give a run's "
                               f"name in the storage or a run directory's path")
        else:
            try:
                store = ExperimentStore.open(ref, storage)
            except RunError as e:
                raise RunError(f"--warm-start {ref!r}: {e}") from None
        store.spec()  # readable, or RunError naming spec.json
        store.trials()  # every record readable, or RunError naming it
        stores.append(store)
    return stores


def read_configurations(given: Any) -> list[dict[str, Any]]:
    """``--enqueue``: a JSON file's path holding a list of {name: value} objects, or such a list."""
    if given is None:
        return []
    if isinstance(given, (str, os.PathLike)):
        path = Path(given).expanduser()
        try:
            given = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise NasError(f"--enqueue {str(path)!r} cannot be read ({getattr(e, 'strerror', None) or e}); give a "
                           f"JSON file holding a list of {{name: value}} configurations") from None
        except ValueError as e:
            raise NasError(f"--enqueue {str(path)!r} is not valid JSON ({e}); give a JSON list of {{name: value}} "
                           f"configurations") from None
        where = f"--enqueue {str(path)!r}"
    else:
        where = "enqueue="
    if isinstance(given, Mapping):
        given = [given]  # one configuration
    if not isinstance(given, (list, tuple)) or not all(isinstance(c, Mapping) for c in given):
        raise NasError(f"{where} holds {json.dumps(given, default=str)[:120]}; give a list of {{name: value}} "
                       f"configurations")
    for i, c in enumerate(given):
        bad = [k for k in c if not isinstance(k, str)]
        if bad:
            raise NasError(f"{where} configuration {i} has a key {bad[0]!r} that is no hyperparameter name")
    return [dict(c) for c in given]


def translate(space: Any, values: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """``values`` as a point of ``space`` (a ``keras_tuner.HyperParameters``): active hyperparameters they leave
    out take their defaults, inactive ones are dropped; (None, why) when they name a hyperparameter the space
    lacks or hold a value outside its range."""
    names = {p.name for p in space.space}
    unknown = sorted(set(values) - names)
    if unknown:
        return None, f"hyperparameter {unknown[0]!r} is not in the space (it has {', '.join(sorted(names))})"
    point = P.complete(space, {k: P.to_python(v) for k, v in values.items()})
    try:
        P.validate(space, point)
    except NasError as e:
        return None, str(e)
    return point, None


def enqueue(strategy: Any, configurations: list[dict[str, Any]]) -> None:
    """Queue ``configurations`` on ``strategy`` (proposed first, in order); one bad one is one line."""
    for i, c in enumerate(configurations):
        point, why = translate(strategy.space, c)
        if point is None:
            raise NasError(f"--enqueue configuration {i} ({json.dumps(c, default=str)[:120]}) is not a point of the "
                           f"space: {why}")
        strategy.enqueue(point)


def check_objectives(stores: list[ExperimentStore], objectives: list[Objective]) -> None:
    """Each earlier run searched for the same objectives, or one line."""
    want = [str(o) for o in objectives]
    for store in stores:
        theirs = [str(o) for o in store.spec().objectives]
        if theirs != want:
            raise RunError(f"--warm-start {store.name!r} searched for {', '.join(theirs)}; this search's objective is "
                           f"{', '.join(want)}: warm-start from a run with the same objectives (or give --objective "
                           f"{' --objective '.join(theirs)})")


def warm_start(strategy: Any, stores: list[ExperimentStore], objectives: list[Objective],
               announce: Callable[[str], None]) -> int:
    """Tell ``strategy`` every completed trial of ``stores`` (in run order, then trial order) that is a point of
    its space; say in one line how many were told and why any were skipped. Returns how many were told."""
    check_objectives(stores, objectives)
    told, skipped = 0, Counter()
    for store in stores:
        for rec in store.trials():
            if rec.status != TrialStatus.COMPLETED:
                continue
            point, why = translate(strategy.space, rec.config)
            if point is None:
                skipped[why] += 1
                continue
            strategy.observe(point, rec.metrics)
            told += 1
    runs = ", ".join(s.name for s in stores)
    line = f"warm start: {told} completed trial{'s' * (told != 1)} of {runs} told to the strategy"
    if skipped:
        n = sum(skipped.values())
        why, count = skipped.most_common(1)[0]
        more = f"; {len(skipped) - 1} other reason{'s' * (len(skipped) > 2)}" if len(skipped) > 1 else ""
        line += f", {n} skipped as no point of this space ({count}: {why}{more})"
    announce(line)
    return told
