"""Progress output: plain lines when not on a terminal, a live area (rich) on one, always stopped."""

from __future__ import annotations

import io
import pickle

from nas.options import Budget
from nas.plugins.objective import Objective
from nas.storage.records import TrialRecord
from nas.views.progress import LinePrinter, LivePrinter, Progress, format_duration

OBJ = Objective("val_accuracy", "max")


def _rec(tid: str, acc: float | None, epochs: int = 2, status: str = "running") -> TrialRecord:
    hist = [{"val_accuracy": acc, "epoch": e + 1} for e in range(epochs)] if acc is not None else []
    return TrialRecord.from_json({
        "trial_id": tid, "status": status, "config": {"units": 32, "act": "relu"}, "history": hist, "started": 0.0,
        "metrics": {"val_accuracy": acc, "epochs": epochs, "params": 1234, "train_time_s": 1.5} if acc else {},
        "error": None if acc is not None else "ValueError: boom"})


def _event(p, kind: str, rec: TrialRecord) -> None:
    """As in a search: the searcher counts a finished trial in the budget before the printer hears of it."""
    if kind in ("completed", "failed"):
        p.budget.finished += 1
    p(kind, rec)


def test_line_printer_prints_one_line_per_finished_trial() -> None:
    out = io.StringIO()
    p = LinePrinter(OBJ, Budget(3), stream=out)
    _event(p, "started", _rec("0", 0.5))
    _event(p, "epoch", _rec("0", 0.5))
    _event(p, "completed", _rec("0", 0.5))
    _event(p, "completed", _rec("1", 0.9))
    _event(p, "failed", _rec("2", None))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("[1/3] trial 0: val_accuracy=0.5  best 0.5 (trial 0)")
    assert "best 0.9 (trial 1)" in lines[1] and "params=1,234" in lines[1] and "units=32 act=relu" in lines[1]
    assert lines[2] == "[3/3] trial 2 failed: ValueError: boom"


def test_live_printer_shows_state_prints_lines_and_stops() -> None:
    from rich.console import Console

    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=160)
    p = LivePrinter(OBJ, Budget(4), epochs=2, console=con)
    try:
        _event(p, "started", _rec("0", None))
        _event(p, "epoch", _rec("1", 0.7, epochs=1))
        text = _plain(p.render(), con)
        assert "2 running" in text and "2 to go (of 4)" in text, text
        assert "building" in text and "1/2" in text  # trial 0 has no epoch yet, trial 1 is at epoch 1 of 2
        assert p.eta() is not None
        _event(p, "completed", _rec("1", 0.9))
        _event(p, "failed", _rec("0", None))
        text = _plain(p.render(), con)
        assert "1 done" in text and "1 failed" in text and "best val_accuracy=0.9" in text and "units=32" in text
    finally:
        p.close()
    assert not p.live.is_started
    out = buf.getvalue()
    assert "[1/4] trial 1: val_accuracy=0.9" in out and "[2/4] trial 0 failed" in out
    # Ray Tune pickles its callbacks: a live printer travels as a plain line printer, never a terminal
    copy = pickle.loads(pickle.dumps(p))
    assert type(copy) is LinePrinter and copy.total == 4


def _plain(renderable, con) -> str:
    from rich.console import Console

    c = Console(file=io.StringIO(), width=160, color_system=None)
    with c.capture() as cap:
        c.print(renderable)
    return cap.get()


def test_progress_picks_plain_lines_off_a_terminal_and_closes() -> None:
    with Progress(epochs=2, live=False) as progress:
        printer = progress.factory(OBJ, Budget(2))
        assert type(printer) is LinePrinter
    with Progress(epochs=2) as progress:  # pytest captures stdout: not a terminal
        assert type(progress.factory(OBJ, Budget(2))) is LinePrinter


def test_format_duration() -> None:
    assert format_duration(5) == "5s" and format_duration(65) == "1m05s" and format_duration(3725) == "1h02m05s"
    assert format_duration(None) == "-"


def test_best_so_far_counts_earlier_sessions_trials() -> None:
    """A resumed search: the engine hands the printer the trials earlier sessions recorded ("earlier")."""
    out = io.StringIO()
    p = LinePrinter(OBJ, Budget(3, finished=1), stream=out)
    p("earlier", _rec("0", 0.83, status="completed"))
    p("earlier", _rec("1", None, status="running"))  # continues in this session: not a result yet
    _event(p, "completed", _rec("1", 0.09))
    assert out.getvalue().splitlines() == [
        "[2/3] trial 1: val_accuracy=0.09  best 0.83 (trial 0)  epochs=2 params=1,234 1.5s  units=32 act=relu"]
