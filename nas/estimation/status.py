"""What ``nas status`` shows of a run's supernet phase, read from ``<run>/supernet/state.json`` (plain JSON,
written by the driver after every supernet epoch and when the phase ends). No framework is imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from nas.storage.layout import SUPERNET_STATE
from nas.storage.results import format_value
from nas.storage.store import read_json, write_json

#: ranked architectures kept in `nas status --json` (the whole ranking stays in the file)
SHOWN = 20


def write_state(run_dir: str | Path, state: Mapping[str, Any]) -> None:
    write_json(Path(run_dir) / SUPERNET_STATE, dict(state))


def supernet_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The supernet phase of a run for ``nas status --json`` (None for a run without one): ``phase``
    ("supernet" while it trains, "trials" once the top-k are handed to ordinary trials), epochs done and asked,
    the controller's reward moving average, the best sampled architecture so far, per-epoch history and the
    best-ranked architectures by shared-weight score."""
    path = Path(run_dir) / SUPERNET_STATE
    if not path.is_file():
        return None
    s = read_json(path)
    return {
        "phase": s.get("phase"),
        "epoch": s.get("epoch"),
        "epochs": s.get("epochs"),
        "top_k": s.get("top_k"),
        "metric": s.get("metric"),
        "reward_ma": s.get("reward_ma"),
        "best": s.get("best"),
        "history": [{k: v for k, v in h.items() if k != "epoch_best"} for h in s.get("history") or []],
        "ranking": (s.get("ranking") or [])[:SHOWN],
        "candidates_ranked": len(s.get("ranking") or []),
        "updated": s.get("updated"),
    }


def status_line(sn: Mapping[str, Any]) -> str:
    """One line for `nas status`: where the phase is and its best architecture."""
    metric = sn.get("metric") or "val_accuracy"
    best = sn.get("best")
    best_text = (f"; best sampled {metric}={format_value(best['metrics'].get(metric))} (shared weights, epoch "
                 f"{best['epoch']})") if best else ""
    reward = sn.get("reward_ma")
    where = (f"done, top {sn.get('top_k')} of {sn.get('candidates_ranked')} ranked architectures trained from scratch"
             if sn.get("phase") == "trials" else "running or interrupted")
    history = sn.get("history") or []
    if sn.get("phase") != "trials" and history and history[-1].get("warmup"):
        where += " in its warm-up (uniform children, the controller waits)"
    return (f"supernet: {sn.get('epoch')}/{sn.get('epochs')} epochs, {where}; reward_ma "
            f"{format_value(reward) if reward is not None else '-'}{best_text}")
