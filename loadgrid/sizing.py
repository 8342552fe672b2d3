"""One capacity per stack size (variant, replicas): the figure the answer, the conclusions, the capacity table
and `compare` all use, so the page never gives two capacities for one stack.

- **open loop** (preferred: arrivals do not slow down when the server does, so a slow server cannot hide its
  queue): the highest offered arrival rate at which every completed open-loop run on that stack (capacity-search
  probes and `arrival_rate_list` runs alike) passes `capacity.judge_probe`: valid, p95 from the intended send
  time (`latency_intended_ms`, when recorded) under the target, throughput at least 98% of the offered rate,
  latency not growing across the window. The same rule as the capacity search, so its figure is this one;
- else **closed loop, lower confidence**: the highest throughput of a closed-loop grid point (the mean of its
  valid repeats) whose p95 is under the target (`analysis.capacities`). Closed-loop users wait for each answer,
  so a saturated server slows its own load down and the figure can flatter it;
- interval: a 95% confidence interval (`analysis.estimate`, Student t) of the throughput over the valid repeats
  behind the figure, when there are two or more;
- at least: no load tried on that stack went over the target (or only the load generator failed above it), so
  the capacity may be higher than the figure.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import analysis, capacity
from .analysis import Estimate, fmt_ms, fmt_rps
from .plan import format_number
from .store import RunRecord

OPEN = "open loop"
CLOSED = "closed loop"
LABELS = {OPEN: "open loop", CLOSED: "closed loop, lower confidence"}


@dataclass(frozen=True)
class StackCapacity:
    variant: str
    replicas: int
    target_ms: float
    rps: float | None  # None: no load tried kept p95 under the target
    kind: str  # OPEN or CLOSED; for rps None: where the closest attempt came from ("" when nothing usable)
    run_ids: tuple[str, ...]  # the valid runs that show it (the repeats behind the figure)
    p95_ms: float | None  # p95 at the capacity (intended-time p95 for open loop); the lowest seen when rps is None
    where: str  # "offered 130 req/s" or "16 users, spawn 4/s"
    interval: Estimate | None = None  # throughput over the repeats behind the figure (bounds None with one)
    at_least: bool = False
    note: str = ""  # e.g. why open-loop runs did not give the figure

    @property
    def label(self) -> str:
        return LABELS.get(self.kind, self.kind)

    @property
    def held(self) -> bool:
        return self.rps is not None

    def ci_text(self) -> str:
        est = self.interval
        if est is None or est.low is None:
            return ""
        return f"95% CI {fmt_rps(est.low)}–{fmt_rps(est.high)} req/s over {len(self.run_ids)} repeats"

    def text(self) -> str:
        """'132 req/s (open loop, offered 132 req/s, p95 310 ms)' or 'none under 500 ms (lowest p95 ...)'."""
        if self.rps is None:
            low = "" if self.p95_ms is None else f" (lowest p95 {fmt_ms(self.p95_ms)} ms at {self.where})"
            return f"none under {fmt_ms(self.target_ms)} ms{low}"
        parts = [self.where, f"p95 {fmt_ms(self.p95_ms)} ms"]
        if self.ci_text():
            parts.append(self.ci_text())
        if self.at_least:
            parts.append("no load tried went over the target")
        return f"{'at least ' if self.at_least else ''}{fmt_rps(self.rps)} req/s ({self.label}: {', '.join(parts)})"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _open_loop(runs: list[RunRecord], variant: str, models: int, target_ms: float) -> StackCapacity | str | None:
    """The open-loop capacity of one stack, or the words saying why open-loop runs gave none (None: no such run)."""
    by_rate: dict[float, list[RunRecord]] = {}
    for r in runs:
        if analysis.arrival_rate(r) and r.status == "completed":
            by_rate.setdefault(round(analysis.arrival_rate(r), 6), []).append(r)
    if not by_rate:
        return None
    judged = {rate: [capacity.judge_probe(r, target_ms) for r in rs] for rate, rs in by_rate.items()}
    passing = [rate for rate, probes in judged.items()
               if all(p.passed for p in probes) and any(analysis.usable(r) for r in by_rate[rate])]
    if not passing:
        if not any(analysis.usable(r) for rs in by_rate.values() for r in rs):
            return "open loop: every open-loop run was invalid"
        return f"open loop: no rate tried held (lowest {format_number(min(by_rate))} req/s)"
    best = max(passing)
    ok = [r for r in by_rate[best] if analysis.usable(r)]
    probes = [p for p, r in zip(judged[best], by_rate[best], strict=True) if analysis.usable(r)]
    bounded = any(rate > best and any(not p.passed and p.kind != "generator" for p in probes_)
                  for rate, probes_ in judged.items())
    est = analysis.estimate([r.load.rps for r in ok])
    return StackCapacity(variant, models, target_ms, best, OPEN, tuple(r.id for r in ok),
                         _mean([p.p95_ms for p in probes if p.p95_ms is not None]),
                         f"offered {format_number(best)} req/s", est if len(ok) > 1 else None, not bounded)


def stack_capacities(records: list[RunRecord], target_ms: float) -> list[StackCapacity]:
    """One `StackCapacity` per (variant, replicas) with a usable run, cpu first, by replicas."""
    closed = {(c.variant, c.replicas): c for c in analysis.capacities(records, target_ms)}
    stats = {(s.variant, s.models, s.users, s.spawn_rate): s for s in analysis.point_stats(records)
             if not s.arrival_rate}
    worst_p95: dict[tuple[str, int], float] = {}
    for p in analysis.points(records):
        if p.p95 is not None:
            worst_p95[(p.variant, p.models)] = max(worst_p95.get((p.variant, p.models), 0.0), p.p95)
    keys = {(r.variant, r.models) for r in records if analysis.usable(r)}
    out = []
    for variant, models in sorted(keys, key=lambda k: (analysis._variant_rank(k[0]), k[1])):
        runs = [r for r in records if (r.variant, r.models) == (variant, models)]
        found = _open_loop(runs, variant, models, target_ms)
        if isinstance(found, StackCapacity):
            out.append(found)
            continue
        note = found or ""
        c = closed.get((variant, models))
        if c is not None and c.best is not None:
            b = c.best
            s = stats.get((variant, models, b.users, b.spawn_rate))
            est = s.rps if s is not None and s.n > 1 else None
            at_least = worst_p95.get((variant, models), 0.0) < target_ms
            out.append(StackCapacity(variant, models, target_ms, b.rps, CLOSED, b.ids, b.p95, b.where, est,
                                     at_least, note))
        elif c is not None and c.lowest_p95 is not None:
            low = c.lowest_p95
            out.append(StackCapacity(variant, models, target_ms, None, CLOSED, low.ids, low.p95, low.where,
                                     note=note))
        else:
            out.append(StackCapacity(variant, models, target_ms, None, OPEN if note else "", (), None, "",
                                     note=note))
    return out


def by_stack(records: list[RunRecord], target_ms: float) -> dict[tuple[str, int], StackCapacity]:
    return {(c.variant, c.replicas): c for c in stack_capacities(records, target_ms)}
