"""The grid's progress on the console: run k of n, elapsed, ETA; a live status line only on a terminal."""

from __future__ import annotations

import sys
import time

from .plan import Plan, RunSpec


class Progress:
    """Run k of n, elapsed, and an ETA: the load time left plus the overhead per run seen so far."""

    def __init__(self, plan: Plan, live: bool | None = None):
        self.total = len(plan.runs)
        self.remaining_load_s = plan.load_time_s
        self.load_done_s = 0
        self.started = time.monotonic()
        self.done = 0
        # On a terminal a status line ticks during each run; in a pipe or CI log only whole lines are printed.
        self.live = sys.stdout.isatty() if live is None else live

    def tick(self, spec: RunSpec, seconds: float) -> None:
        if self.live:
            elapsed = time.monotonic() - self.started
            sys.stdout.write(f"\r  {spec.id}: {min(seconds, spec.run_time_s):.0f}/{spec.run_time_s}s of this run, "
                             f"run {self.done + 1}/{self.total}, elapsed {_clock(elapsed)}\033[K")
            sys.stdout.flush()

    def clear(self) -> None:
        if self.live:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()

    def begin(self, spec: RunSpec) -> str:
        elapsed = time.monotonic() - self.started
        overhead = (elapsed - self.load_done_s) / self.done if self.done else 0.0
        eta = self.remaining_load_s + max(overhead, 0.0) * (self.total - self.done)
        return f"run {self.done + 1}/{self.total} {spec.id} (elapsed {_clock(elapsed)}, ETA {_clock(eta)})"

    def end(self, spec: RunSpec) -> str:
        self.done += 1
        self.remaining_load_s -= spec.run_time_s
        self.load_done_s += spec.run_time_s
        return f"run {self.done}/{self.total} {spec.id}"

    def extend(self, runs: int, seconds: float) -> None:
        """Runs planned on the way (capacity-search probes); negative to give back the ones not needed."""
        self.total += runs
        self.remaining_load_s += seconds


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"
