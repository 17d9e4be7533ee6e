"""What a user sees while a search runs.

The engine calls a printer ``printer(kind, rec)`` from Ray Tune's driver loop with ``kind`` one of
``started | epoch | completed | failed`` and the trial's record (see ``nas.driver.searcher.TrialRecorder``), and, before
a resumed search starts, ``earlier`` for each trial earlier sessions recorded (the best so far counts them).

- ``LinePrinter``: one line per finished trial; what CI logs, redirected output and the tests see.
- ``LivePrinter``: the same lines, printed above a live area (rich) showing trials done / running / failed /
  remaining, the best objective so far with its configuration, elapsed time and ETA, and each running trial's
  current epoch. Used only when stdout is a terminal.

``Progress`` picks one, hands the engine its factory and always stops the live display (also on errors and
Ctrl-C) so the terminal is restored.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

from nas.options import Budget
from nas.plugins.objective import Objective
from nas.storage.records import TrialRecord, TrialStatus
from nas.storage.results import format_config, format_value


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(max(0.0, seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def device_text(rec: TrialRecord) -> str:
    """`` on NVIDIA H100 (peak 1,234 MB)`` for a trial that trained on a GPU; nothing on a CPU."""
    device = rec.device
    if not device or device in ("cpu", "unknown"):
        return ""
    peak = rec.metrics.get("gpu_mem_peak_mb")
    return f" on {device}" + (f" (peak {peak:,.0f} MB)" if isinstance(peak, (int, float)) else "")


class LinePrinter:
    """One line per finished trial with its objective and the best so far.

    ``budget`` is the search's ``Budget``: the searcher counts a finished trial before the printer hears of it,
    so ``[finished/total]`` numbers the lines, on from the trials earlier sessions finished.
    """

    def __init__(self, objective: Objective, budget: Budget, stream: Any = None) -> None:
        self.objective = objective
        self.budget = budget
        self.stream = stream  # None: sys.stdout at the time of printing
        self.best: tuple[float, str, dict[str, Any]] | None = None
        self.failed = 0  # in this session, for the live area
        self.started = time.time()

    @property
    def total(self) -> int:
        return self.budget.total

    @property
    def done(self) -> int:
        return self.budget.finished

    def _consider(self, rec: TrialRecord) -> float | None:
        """A completed trial's objective, kept as the best so far when it is."""
        v = self.objective.value(rec.metrics)
        if v is not None and (self.best is None or self.objective.better(v, self.best[0])):
            self.best = (v, rec.trial_id, dict(rec.config))
        return v

    def line(self, kind: str, rec: TrialRecord) -> str | None:
        """A finished trial's line (None for other events)."""
        if kind == "earlier" and rec.status == TrialStatus.COMPLETED:
            self._consider(rec)
        if kind not in (TrialStatus.COMPLETED, TrialStatus.FAILED):
            return None
        m = self.objective.metric
        if kind == TrialStatus.FAILED:
            self.failed += 1
            return f"[{self.done}/{self.total}] trial {rec.trial_id} failed: {rec.error}"
        metrics = rec.metrics
        v = self._consider(rec)
        best = f"best {format_value(self.best[0])} (trial {self.best[1]})" if self.best else "no best yet"
        return (
            f"[{self.done}/{self.total}] trial {rec.trial_id}: {m}={format_value(v)}  {best}  "
            f"epochs={metrics.get('epochs')} params={int(metrics.get('params', 0)):,} "
            f"{float(metrics.get('train_time_s') or 0):.1f}s{device_text(rec)}  {format_config(rec.config)}"
        )

    def __call__(self, kind: str, rec: TrialRecord) -> None:
        line = self.line(kind, rec)
        if line is not None:
            print(line, file=self.stream or sys.stdout, flush=True)

    def close(self) -> None:
        """Nothing to release: lines are printed as they come (the live printer stops its display here)."""

    def __getstate__(self) -> dict[str, Any]:
        # Ray Tune pickles its callbacks (ours hold the printer) into the experiment state: never a terminal
        return {**self.__dict__, "stream": None}


class LivePrinter(LinePrinter):
    """A rich live area under the finished-trial lines; refreshed by its own thread, stopped by ``close``."""

    def __init__(self, objective: Objective, budget: Budget, epochs: int | None = None, console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live

        super().__init__(objective, budget)
        self.epochs = epochs
        self.console = console or Console()
        self.running: dict[str, dict[str, Any]] = {}
        self.first_start: float | None = None
        self.live = Live(console=self.console, refresh_per_second=2, transient=True, get_renderable=self.render)
        self.live.start()

    # -- events ---------------------------------------------------------------------------------------------
    def __call__(self, kind: str, rec: TrialRecord) -> None:
        tid = rec.trial_id
        if kind in ("started", "epoch"):
            self.first_start = self.first_start or time.time()
            self.running[tid] = {
                "epoch": len(rec.history),
                "last": (rec.history or [{}])[-1],
                "started": rec.started or time.time(),
                "config": rec.config,
                "device": device_text(rec).removeprefix(" on "),
            }
        line = self.line(kind, rec)
        if line is not None:
            self.running.pop(tid, None)
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        self.live.refresh()

    def __reduce__(self) -> Any:  # pickled (see LinePrinter.__getstate__): a copy prints plain lines
        return (LinePrinter, (self.objective, self.budget))

    def announce(self, msg: str) -> None:
        self.console.print(msg, highlight=False, markup=False, soft_wrap=True)

    def close(self) -> None:
        if self.live.is_started:
            self.live.stop()

    # -- the live area --------------------------------------------------------------------------------------
    def fraction_done(self) -> float:
        per = self.epochs or 1
        running = sum(min(r["epoch"], per) for r in self.running.values()) / per
        return min(1.0, (self.done + running) / max(1, self.total))

    def eta(self) -> float | None:
        if self.first_start is None:
            return None
        f = self.fraction_done()
        if f <= 0:
            return None
        spent = time.time() - self.first_start
        return spent * (1 - f) / f

    def render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        now = time.time()
        remaining = max(0, self.total - self.done - len(self.running))
        head = Text()
        head.append(f"trials {self.done - self.failed} done", style="green")  # failed: this session's
        head.append(f" · {len(self.running)} running", style="cyan")
        head.append(f" · {self.failed} failed", style="red" if self.failed else "dim")
        head.append(f" · {remaining} to go (of {self.total})")
        eta = self.eta()
        head.append(f"   elapsed {format_duration(now - self.started)}   ETA {format_duration(eta) if eta is not None else '-'}",
                    style="dim")
        grid = Table.grid(padding=(0, 1))
        grid.add_row(head)
        m = self.objective
        if self.best:
            best = Text(f"best {m.metric}={format_value(self.best[0])} ({m.mode}) trial {self.best[1]}: ", style="bold")
            best.append(format_config(self.best[2]), style="")
            grid.add_row(best)
        else:
            grid.add_row(Text(f"best {m.metric} ({m.mode}): no trial finished yet", style="dim"))
        if self.running:
            t = Table(box=None, padding=(0, 2), show_edge=False, header_style="dim")
            columns = [("trial", 5), ("epoch", 8), (m.metric, max(8, len(m.metric))), ("time", 7)]
            gpu = any(r["device"] for r in self.running.values())
            for name, width in columns + ([("device", 12)] if gpu else []):
                t.add_column(name, justify="right", no_wrap=True, min_width=width)
            t.add_column("config", overflow="ellipsis", no_wrap=True,
                         max_width=max(20, self.console.width - 40 - len(m.metric)))
            for tid, r in sorted(self.running.items(), key=lambda kv: (len(kv[0]), kv[0])):
                epoch = f"{r['epoch']}/{self.epochs}" if self.epochs else str(r["epoch"])
                if r["epoch"] == 0:
                    epoch = "building"
                t.add_row(tid, epoch, format_value(r["last"].get(m.metric, "-")),
                          format_duration(now - float(r["started"])), *([r["device"]] if gpu else []),
                          format_config(r["config"]))
            grid.add_row(t)
        elif self.done < self.total:
            grid.add_row(Text("waiting for the next trial to start ...", style="dim"))
        return grid


def in_notebook() -> bool:
    """Inside a Jupyter kernel, whose output is no terminal but where rich draws its live display all the same."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def interactive(stream: Any = None) -> bool:
    """A live display only on a real terminal or in a notebook (not CI, not redirected, not TERM=dumb)."""
    stream = stream or sys.stdout
    if os.environ.get("TERM") == "dumb" or os.environ.get("CI"):
        return False
    if stream is sys.stdout and in_notebook():
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Chooses the printer, hands the engine a factory for it, and always stops it::

        with Progress(epochs=5) as progress:
            run_search(opts, printer_factory=progress.factory, announce=progress.announce)
    """

    def __init__(self, epochs: int | None = None, live: bool | None = None) -> None:
        self.epochs = epochs
        self.live = interactive() if live is None else live
        self.printer: LinePrinter | None = None

    def factory(self, objective: Objective, budget: Budget) -> Callable[[str, dict[str, Any]], None]:
        self.close()
        self.printer = LivePrinter(objective, budget, self.epochs) if self.live else LinePrinter(objective, budget)
        return self.printer

    def announce(self, msg: str) -> None:
        if isinstance(self.printer, LivePrinter):
            self.printer.announce(msg)
        else:
            print(msg, flush=True)

    def close(self) -> None:
        if self.printer is not None:
            self.printer.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
