"""The grid's progress on the console: run k of n, elapsed, ETA, as whole lines the caller prints; and, on a
terminal, a live display while each run's load is on.

On a terminal the display is drawn with rich: the grid's bar with its ETA, and the run in progress with its
bar and Locust's live figures (requests per second, p95 so far, failures so far, from Locust's stats
history, see `load.live_figures`). It is shown while Locust runs (`tick`) and taken away when it stops
(`clear`), so the lines printed between runs stay as they are. In a pipe or a CI log nothing but the lines is
printed (tests and log readers depend on them).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from .plan import Plan, RunSpec

if TYPE_CHECKING:
    from .load import LiveFigures

BAR_WIDTH = 32


class Progress:
    """Run k of n, elapsed, and an ETA: the load time left plus the overhead per run seen so far.

    `console`: a rich Console to draw the live display on (tests pass one writing to a StringIO). Without one,
    the display is drawn on a terminal stdout; `live=True` (without a console) is the one-line text ticker
    instead, `live=False` nothing.
    """

    def __init__(self, plan: Plan, live: bool | None = None, console: Any = None):
        self.total = len(plan.runs)
        self.remaining_load_s = plan.load_time_s
        self.load_done_s = 0
        self.started = time.monotonic()
        self.done = 0
        terminal = sys.stdout.isatty() if live is None else False
        self._display = _RichDisplay(console) if console is not None or terminal else None
        self.live = self._display is not None or bool(live)

    def tick(self, spec: RunSpec, seconds: float, live: LiveFigures | None = None) -> None:
        """About once a second while `spec` runs: `seconds` into it, and Locust's latest figures."""
        if self._display is not None:
            self._display.show(self, spec, seconds, live)
        elif self.live:
            elapsed = time.monotonic() - self.started
            sys.stdout.write(f"\r  {spec.id}: {min(seconds, spec.run_time_s):.0f}/{spec.run_time_s}s of this run, "
                             f"run {self.done + 1}/{self.total}, elapsed {_clock(elapsed)}"
                             f"{', ' + figures_text(live, ', ') if live else ''}\033[K")
            sys.stdout.flush()

    def clear(self) -> None:
        if self._display is not None:
            self._display.stop()
        elif self.live:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()

    def eta_s(self, into_run_s: float = 0.0) -> float:
        """Seconds left: the load time not yet run plus the overhead per finished run for each run left."""
        elapsed = time.monotonic() - self.started
        overhead = (elapsed - into_run_s - self.load_done_s) / self.done if self.done else 0.0
        return max(self.remaining_load_s - into_run_s, 0.0) + max(overhead, 0.0) * (self.total - self.done)

    def begin(self, spec: RunSpec) -> str:
        elapsed = time.monotonic() - self.started
        return f"run {self.done + 1}/{self.total} {spec.id} (elapsed {_clock(elapsed)}, ETA {_clock(self.eta_s())})"

    def end(self, spec: RunSpec) -> str:
        self.done += 1
        self.remaining_load_s -= spec.run_time_s
        self.load_done_s += spec.run_time_s
        return f"run {self.done}/{self.total} {spec.id}"

    def extend(self, runs: int, seconds: float) -> None:
        """Runs planned on the way (capacity-search probes); negative to give back the ones not needed."""
        self.total += runs
        self.remaining_load_s += seconds


def figures_text(live: LiveFigures | None, sep: str = "  ") -> str:
    """'48.2 req/s  p95 120 ms  0 failures'; before Locust's first figures, a word saying so."""
    if live is None:
        return "waiting for Locust's first figures"
    p95 = "-" if live.p95_ms is None else f"{live.p95_ms:.0f} ms"
    failures = f"{live.failures} failure" + ("" if live.failures == 1 else "s")
    return sep.join([f"{live.rps:.1f} req/s", f"p95 {p95}", failures])


class _RichDisplay:
    """The live display: rich's Live, started at a run's first tick and stopped when the run ends."""

    def __init__(self, console: Any = None):
        self.console = console
        self._live: Any = None

    def show(self, progress: Progress, spec: RunSpec, seconds: float, live: LiveFigures | None) -> None:
        renderable = _render(progress, spec, seconds, live)
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            if self.console is None:
                self.console = Console()
            # Refreshed by the ticks (about once a second), not by a thread of its own; transient, so the
            # display is gone when the run ends and only the printed lines remain.
            self._live = Live(renderable, console=self.console, auto_refresh=False, transient=True)
            self._live.start()
        self._live.update(renderable, refresh=True)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def _render(progress: Progress, spec: RunSpec, seconds: float, live: LiveFigures | None) -> Any:
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    into = min(max(seconds, 0.0), float(spec.run_time_s))
    elapsed = time.monotonic() - progress.started
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(width=BAR_WIDTH)
    table.add_column(no_wrap=True)
    table.add_row("grid", ProgressBar(total=max(progress.total, 1), completed=progress.done + into / spec.run_time_s,
                                      width=BAR_WIDTH),
                  f"run {progress.done + 1}/{progress.total}, elapsed {_clock(elapsed)}, "
                  f"ETA {_clock(progress.eta_s(into))}")
    table.add_row(spec.id, ProgressBar(total=spec.run_time_s, completed=into, width=BAR_WIDTH),
                  f"{into:.0f}/{spec.run_time_s}s  {figures_text(live)}")
    return table


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"
