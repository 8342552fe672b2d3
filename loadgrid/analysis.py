"""What the stored runs say: pure functions over `list[RunRecord]`, no I/O, no HTML.

Only *usable* runs feed the figures and conclusions: completed, judged valid, with at least one request.
Invalid, failed and interrupted runs are kept in the run table with their reasons, and nowhere else.

Definitions used by the report (and stated on the page):

- curve of (variant, replicas): one point per user count; when several spawn rates were run at one
  (variant, replicas, users), the usable run with the highest throughput stands for that user count;
- scaling: at each replica count, the peak throughput (highest req/s over all users and spawn rates);
  scaling efficiency = peak(N) / (N / N0 x peak(N0)), N0 the smallest replica count run (normally 1);
- speedup: for each grid point (replicas, users, spawn rate) with a usable run in both variants,
  throughput other/base, and the latency ratios other/base (below 1: the other variant is faster);
- capacity of (variant, replicas): `sizing.stack_capacities`, the one figure used everywhere: open loop when
  measured, else the closed-loop grid point with the highest throughput whose p95 is under the target
  (`capacities` below, labelled lower confidence);
- saturation of (variant, replicas): on its curve, the smallest user count after which throughput never
  again rose by `SATURATION_GAIN` (5%) or more; none when throughput was still rising at the largest count;
- repeats: a grid point (variant, replicas, users, spawn rate) run several times is one point everywhere
  above, the mean of its usable repeats; `point_stats` gives the mean with a 95% confidence interval
  (Student t, df = n - 1) of throughput, p50 and p95, and flags a wide spread: a coefficient of variation
  (standard deviation / mean of the repeats) above `SPREAD_CV` (10%) in throughput, p50 or p95, where a
  latency spread under `LATENCY_RESOLUTION_MS` (2 ms, about Locust's resolution) is not counted.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from . import bottleneck
from .plan import format_number
from .store import RunRecord

SATURATION_GAIN = 0.05
VARIANT_ORDER = ("cpu", "gpu")
SPREAD_CV = 0.10
LATENCY_RESOLUTION_MS = 2.0

# Two-sided 95% Student t quantiles t(0.975, df) for df = 1..30.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
       2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
       2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t95(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (from the table; 1.96 + 2.4/df above 30)."""
    if df < 1:
        raise ValueError("a confidence interval needs at least two samples (df >= 1)")
    return T95[df - 1] if df <= len(T95) else 1.96 + 2.4 / df


@dataclass(frozen=True)
class Point:
    """One usable run as a point on a curve, or the mean of a grid point's usable repeats."""

    run_id: str  # the run, or the first usable repeat
    variant: str
    models: int
    users: int
    spawn_rate: float
    rps: float
    p50: float | None
    p95: float | None
    run_ids: tuple[str, ...] = ()  # every usable repeat behind the figures (empty: just run_id)

    @property
    def where(self) -> str:
        return f"{self.users} users, spawn {format_number(self.spawn_rate)}/s"

    @property
    def ids(self) -> tuple[str, ...]:
        return self.run_ids or (self.run_id,)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def ref(self) -> str:
        """How a sentence names it: the run id, and how many more repeats its mean covers."""
        if self.n == 1:
            return self.run_id
        return f"{self.run_id} + {self.n - 1} repeat{'s' if self.n > 2 else ''}"


@dataclass(frozen=True)
class Estimate:
    """Mean of the usable repeats with a 95% confidence interval (None bounds with one repeat)."""

    mean: float
    low: float | None
    high: float | None
    sd: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.high is None else self.high - self.mean

    @property
    def cv(self) -> float | None:
        return None if self.sd is None or not self.mean else self.sd / abs(self.mean)


@dataclass(frozen=True)
class PointStats:
    """A grid point over its repeats: every run, the usable ones, and their mean and spread."""

    name: str  # the point's id: `<variant>/<point>`, the id of its first repeat
    variant: str
    models: int
    users: int
    spawn_rate: float
    run_ids: tuple[str, ...]  # every repeat, usable or not, in repeat order
    usable_ids: tuple[str, ...]
    rps: Estimate | None
    p50: Estimate | None
    p95: Estimate | None
    wide: tuple[str, ...] = ()  # the measures whose spread is too wide: "req/s", "p50", "p95"
    arrival_rate: float = 0.0  # open-loop runs (a fixed arrival rate): not on the users curves

    @property
    def n(self) -> int:
        return len(self.usable_ids)

    @property
    def flagged(self) -> bool:
        return bool(self.wide)

    @property
    def spread_note(self) -> str:
        if self.wide:
            parts = []
            for label, est in (("req/s", self.rps), ("p50", self.p50), ("p95", self.p95)):
                if label in self.wide and est is not None and est.cv is not None:
                    parts.append(f"{label} CV {fmt_pct(est.cv)}")
            return "wide spread: " + ", ".join(parts)
        if len(self.run_ids) > 1 and self.n < 2:
            return f"{self.n} usable of {len(self.run_ids)} repeats: no interval"
        return ""


@dataclass(frozen=True)
class Scaling:
    variant: str
    replicas: int
    peak: Point
    base_replicas: int
    base_rps: float

    @property
    def ratio(self) -> float:
        """Peak throughput relative to the baseline replica count's peak."""
        return self.peak.rps / self.base_rps

    @property
    def efficiency(self) -> float:
        """RPS(N) / (N/N0 x RPS(N0)): 1.0 is perfect linear scaling."""
        return self.ratio / (self.replicas / self.base_replicas)


@dataclass(frozen=True)
class Speedup:
    """One grid point run in both variants: `other` relative to `base`."""

    models: int
    users: int
    spawn_rate: float
    base: Point
    other: Point

    @property
    def throughput_ratio(self) -> float:
        return self.other.rps / self.base.rps

    @property
    def p50_ratio(self) -> float | None:
        return ratio(self.other.p50, self.base.p50)

    @property
    def p95_ratio(self) -> float | None:
        return ratio(self.other.p95, self.base.p95)

    @property
    def where(self) -> str:
        return f"{replicas_text(self.models)}, {self.users} users, spawn {format_number(self.spawn_rate)}/s"


@dataclass(frozen=True)
class Capacity:
    variant: str
    replicas: int
    target_ms: float
    best: Point | None  # highest throughput with p95 under target; None when no run met it
    lowest_p95: Point | None  # the closest any run came, for the sentence when none met it


@dataclass(frozen=True)
class Saturation:
    variant: str
    replicas: int
    curve: tuple[Point, ...]
    at: Point | None  # None: still rising at the largest user count, or fewer than two points

    @property
    def last(self) -> Point:
        return self.curve[-1]


@dataclass(frozen=True)
class Conclusion:
    text: str
    run_ids: tuple[str, ...] = field(default_factory=tuple)
    kind: str = "finding"  # "finding", "note" (coverage, missing data), "warning" (wide spread over repeats)
    see: str = ""  # the report section that tabulates every run behind it: speedup, scaling, capacity


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def replicas_text(n: int) -> str:
    return f"{n} replica" if n == 1 else f"{n} replicas"


def _short(value: float) -> str:
    """3 significant figures at most, no trailing '.0': 412.3 -> '412', 37.64 -> '37.6', 40.0 -> '40'."""
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def fmt_rps(value: float) -> str:
    return _short(value)


def fmt_ms(value: float | None) -> str:
    return "–" if value is None else _short(value)


def fmt_pct(fraction: float, signed: bool = False) -> str:
    return f"{fraction * 100:+.0f}%" if signed else f"{fraction * 100:.0f}%"


def usable(record: RunRecord) -> bool:
    return (record.status == "completed" and record.validity.valid and record.load is not None
            and record.load.requests > 0)


def point(record: RunRecord) -> Point:
    assert record.load is not None
    lat = record.load.latency_ms
    return Point(record.id, record.variant, record.models, record.users, record.spawn_rate, record.load.rps,
                 lat.get("p50"), lat.get("p95"))


def arrival_rate(record: RunRecord) -> float:
    """The open-loop arrival rate of a run (req/s), 0 for closed-loop users."""
    return float(record.arrival_rate or 0.0)


def grid_key(record: RunRecord) -> tuple:
    """What makes runs repeats of one grid point: variant, replicas, users, spawn rate (and open-loop rate)."""
    return (record.variant, record.models, arrival_rate(record), bool(record.capacity_probe),
            record.users, record.spawn_rate)


def point_name(record: RunRecord) -> str:
    """`<variant>/<point>`: the run's id without its `_r<k>` repeat suffix."""
    suffix = f"_r{record.repeat}"
    return record.id[:-len(suffix)] if record.repeat > 1 and record.id.endswith(suffix) else record.id


def estimate(values: list[float]) -> Estimate | None:
    """Mean and 95% CI (Student t) of a few values; no interval from a single value."""
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Estimate(mean, None, None, None)
    sd = statistics.stdev(values)
    half = t95(len(values) - 1) * sd / math.sqrt(len(values))
    return Estimate(mean, mean - half, mean + half, sd)


def _wide(est: Estimate | None, floor: float = 0.0) -> bool:
    return est is not None and est.cv is not None and est.cv > SPREAD_CV and est.sd > floor


def point_stats(records: list[RunRecord]) -> list[PointStats]:
    """One entry per grid point (variant, replicas, users, spawn rate), over its repeats, in grid order."""
    groups: dict[tuple, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(grid_key(r), []).append(r)
    out = []
    for key in sorted(groups, key=lambda k: (_variant_rank(k[0]), *k[1:])):
        variant, models, rate, _, users, spawn = key
        runs = sorted(groups[key], key=lambda r: (r.repeat, r.id))
        ok = [r for r in runs if usable(r)]
        pts = [point(r) for r in ok]
        rps = estimate([p.rps for p in pts])
        p50 = estimate([p.p50 for p in pts if p.p50 is not None])
        p95 = estimate([p.p95 for p in pts if p.p95 is not None])
        wide = tuple(label for label, est, floor in (("req/s", rps, 0.0), ("p50", p50, LATENCY_RESOLUTION_MS),
                                                     ("p95", p95, LATENCY_RESOLUTION_MS)) if _wide(est, floor))
        out.append(PointStats(point_name(runs[0]), variant, models, users, spawn, tuple(r.id for r in runs),
                              tuple(r.id for r in ok), rps, p50, p95, wide, rate))
    return out


def has_repeats(records: list[RunRecord]) -> bool:
    """Does any grid point have more than one run?"""
    return len({grid_key(r) for r in records}) < len(records)


def points(records: list[RunRecord]) -> list[Point]:
    """One point per grid point with a usable run: the run itself, or the mean of its usable repeats.

    Closed-loop runs only: an open-loop run (a fixed arrival rate, users = Locust processes) has no place on a
    curve over users; it stays in the run table and points.csv (and the capacity search's own page).
    """
    out = []
    for s in point_stats(records):
        if not s.usable_ids or s.arrival_rate:
            continue
        out.append(Point(s.usable_ids[0], s.variant, s.models, s.users, s.spawn_rate, s.rps.mean,
                         s.p50.mean if s.p50 else None, s.p95.mean if s.p95 else None,
                         s.usable_ids if len(s.usable_ids) > 1 else ()))
    return out


def variants(records: list[RunRecord]) -> list[str]:
    """Every variant present (usable or not), cpu first, then gpu, then any other in name order."""
    names = {r.variant for r in records}
    return [v for v in VARIANT_ORDER if v in names] + sorted(names - set(VARIANT_ORDER))


def curves(records: list[RunRecord]) -> dict[tuple[str, int], list[Point]]:
    """(variant, replicas) -> points by user count, the best spawn rate standing for each user count."""
    best: dict[tuple[str, int, int], Point] = {}
    for p in points(records):
        key = (p.variant, p.models, p.users)
        if key not in best or p.rps > best[key].rps:
            best[key] = p
    out: dict[tuple[str, int], list[Point]] = {}
    for (variant, models, _), p in sorted(best.items()):
        out.setdefault((variant, models), []).append(p)
    return out


def peaks(records: list[RunRecord]) -> dict[tuple[str, int], Point]:
    """(variant, replicas) -> the usable run with the highest throughput."""
    out: dict[tuple[str, int], Point] = {}
    for p in points(records):
        key = (p.variant, p.models)
        if key not in out or p.rps > out[key].rps:
            out[key] = p
    return out


def scaling(records: list[RunRecord]) -> dict[str, list[Scaling]]:
    """variant -> one `Scaling` per replica count, relative to the smallest replica count run."""
    by_variant: dict[str, dict[int, Point]] = {}
    for (variant, models), p in peaks(records).items():
        by_variant.setdefault(variant, {})[models] = p
    out: dict[str, list[Scaling]] = {}
    for variant, per_n in by_variant.items():
        base_n = min(per_n)
        base = per_n[base_n]
        if base.rps <= 0:
            continue
        out[variant] = [Scaling(variant, n, per_n[n], base_n, base.rps) for n in sorted(per_n)]
    return out


def speedups(records: list[RunRecord], base: str = "cpu", other: str = "gpu") -> list[Speedup]:
    """Every (replicas, users, spawn rate) with a usable run in both variants, in grid order."""
    by_key: dict[str, dict[tuple[int, int, float], Point]] = {base: {}, other: {}}
    for p in points(records):
        if p.variant in by_key:
            by_key[p.variant][(p.models, p.users, p.spawn_rate)] = p
    common = sorted(set(by_key[base]) & set(by_key[other]))
    return [Speedup(m, u, s, by_key[base][(m, u, s)], by_key[other][(m, u, s)]) for m, u, s in common
            if by_key[base][(m, u, s)].rps > 0]


def saturation_point(curve: list[Point], gain: float = SATURATION_GAIN) -> Point | None:
    """The smallest user count after which throughput never rose by `gain` or more; None if still rising."""
    for i, p in enumerate(curve[:-1]):
        if max(q.rps for q in curve[i + 1:]) < p.rps * (1 + gain):
            return p
    return None


def saturations(records: list[RunRecord], gain: float = SATURATION_GAIN) -> list[Saturation]:
    return [Saturation(variant, models, tuple(curve), saturation_point(curve, gain))
            for (variant, models), curve in curves(records).items()]


def capacities(records: list[RunRecord], target_ms: float) -> list[Capacity]:
    groups: dict[tuple[str, int], list[Point]] = {}
    for p in points(records):
        groups.setdefault((p.variant, p.models), []).append(p)
    out = []
    for (variant, models), pts in sorted(groups.items(), key=lambda kv: (_variant_rank(kv[0][0]), kv[0][1])):
        under = [p for p in pts if p.p95 is not None and p.p95 < target_ms]
        with_p95 = [p for p in pts if p.p95 is not None]
        best = max(under, key=lambda p: p.rps) if under else None
        lowest = min(with_p95, key=lambda p: p.p95) if with_p95 else None
        out.append(Capacity(variant, models, target_ms, best, lowest))
    return out


def _variant_rank(variant: str) -> tuple[int, str]:
    return (VARIANT_ORDER.index(variant), "") if variant in VARIANT_ORDER else (len(VARIANT_ORDER), variant)


# --- conclusions -------------------------------------------------------------------------------------------

def conclusions(records: list[RunRecord], target_ms: float) -> list[Conclusion]:
    """Plain sentences computed from the usable runs, each naming the runs behind it."""
    out = [_coverage(records)]
    if not points(records):
        out.append(Conclusion("No run is usable (valid and completed), so there is nothing to conclude yet; "
                              "the run table below says why each run was excluded.", (), "note"))
        return out
    out += _capacity_sentences(records, target_ms)
    out += _gpu_vs_cpu(records)
    out += _scaling_sentences(records)
    out += _saturation_sentences(records)
    out += _spread_notes(records)
    return out


def _coverage(records: list[RunRecord]) -> Conclusion:
    ok = [r for r in records if usable(r)]
    excluded = [r for r in records if not usable(r)]
    failed = [r for r in excluded if r.status != "completed"]
    invalid = [r for r in excluded if r.status == "completed"]
    text = f"{len(records)} runs: {len(ok)} valid"
    if invalid:
        text += f", {len(invalid)} invalid"
    if failed:
        text += f", {len(failed)} failed or interrupted"
    if excluded:
        text += " (excluded from the figures and conclusions: " + ", ".join(r.id for r in excluded) + ")"
    open_loop = [r for r in records if arrival_rate(r)]
    if open_loop:
        text += (f"; {len(open_loop)} open-loop run{'s' if len(open_loop) != 1 else ''} (a fixed arrival rate) "
                 f"{'are' if len(open_loop) != 1 else 'is'} on the charts against offered rate, not on the curves "
                 "over users")
    if has_repeats(records):
        grid = point_stats(records)
        most = max(len(s.run_ids) for s in grid)
        text += (f"; {len(grid)} grid points run up to {most} times each: every figure below uses the mean of a "
                 f"point's valid repeats")
    return Conclusion(text + ".", tuple(r.id for r in excluded), "note")


def _spread_notes(records: list[RunRecord]) -> list[Conclusion]:
    wide = [s for s in point_stats(records) if s.flagged]
    if not wide:
        return []
    parts = [f"{s.usable_ids[0]} ({s.spread_note.removeprefix('wide spread: ')} over {s.n} repeats)" for s in wide]
    return [Conclusion(f"{len(wide)} grid point{'s' if len(wide) != 1 else ''} vary too much between repeats to "
                       f"trust their mean (coefficient of variation above {fmt_pct(SPREAD_CV)}): " + "; ".join(parts)
                       + ". Re-run them, longer or on a quieter machine.",
                       tuple(x for s in wide for x in s.usable_ids), "warning", see="repeats")]


def _gpu_vs_cpu(records: list[RunRecord]) -> list[Conclusion]:
    usable_variants = {p.variant for p in points(records)}
    present = set(variants(records))
    if "gpu" not in usable_variants or "cpu" not in usable_variants:
        if "gpu" in present and "gpu" not in usable_variants:
            why = "the GPU runs are all invalid or failed"
        elif "cpu" in present and "cpu" not in usable_variants:
            why = "the CPU runs are all invalid or failed"
        elif "gpu" not in present:
            why = "there is no GPU data (only " + ", ".join(sorted(present)) + " was run)"
        else:
            why = "there is no CPU data"
        return [Conclusion(f"No CPU vs GPU comparison: {why}.", (), "note")]
    sp = speedups(records)
    if not sp:
        return [Conclusion("No CPU vs GPU comparison: no grid point (replicas, users, spawn rate) has a valid run "
                           "in both variants.", (), "note")]
    out = []
    tput = statistics.median(s.throughput_ratio for s in sp)
    p95s = [s for s in sp if s.p95_ratio is not None]
    p50s = [s for s in sp if s.p50_ratio is not None]
    text = f"Across {len(sp)} grid point{'s' if len(sp) != 1 else ''} run on both, GPU gives {tput:.2f}x the " \
           f"throughput of CPU (median)"
    if p50s and p95s:
        text += (f", p50 latency {_change_words(statistics.median(s.p50_ratio for s in p50s))} and p95 latency "
                 f"{_change_words(statistics.median(s.p95_ratio for s in p95s))} (medians)")
    out.append(Conclusion(text + ".", tuple(x for s in sp for x in (*s.base.ids, *s.other.ids)), see="speedup"))
    if p95s:
        best = min(p95s, key=lambda s: s.p95_ratio)
        worst = max(p95s, key=lambda s: s.p95_ratio)
        out.append(Conclusion(f"GPU {_verb(best.p95_ratio)} p95 latency by {fmt_pct(abs(1 - best.p95_ratio))} at "
                              f"{best.where} ({best.base.ref} vs {best.other.ref}): "
                              f"{fmt_ms(best.base.p95)} → {fmt_ms(best.other.p95)} ms.",
                              (*best.base.ids, *best.other.ids)))
        if worst is not best and worst.p95_ratio > 1:
            out.append(Conclusion(f"But GPU raises p95 latency by {fmt_pct(worst.p95_ratio - 1)} at {worst.where} "
                                  f"({worst.base.ref} vs {worst.other.ref}): "
                                  f"{fmt_ms(worst.base.p95)} → {fmt_ms(worst.other.p95)} ms.",
                                  (*worst.base.ids, *worst.other.ids)))
    top = max(sp, key=lambda s: s.throughput_ratio)
    out.append(Conclusion(f"The largest throughput gain from the GPU is {top.throughput_ratio:.2f}x at {top.where} "
                          f"({top.base.ref} vs {top.other.ref}): {fmt_rps(top.base.rps)} → "
                          f"{fmt_rps(top.other.rps)} req/s.", (*top.base.ids, *top.other.ids)))
    return out


def _verb(r: float) -> str:
    return "cuts" if r <= 1 else "raises"


def _change_words(r: float) -> str:
    if r <= 1:
        return f"down {fmt_pct(1 - r)}"
    return f"up {fmt_pct(r - 1)}"


def _scaling_sentences(records: list[RunRecord]) -> list[Conclusion]:
    out = []
    for variant, rows in sorted(scaling(records).items(), key=lambda kv: _variant_rank(kv[0])):
        if len(rows) < 2:
            out.append(Conclusion(f"{variant}: only {replicas_text(rows[0].replicas)} has valid runs, so there is "
                                  f"no scaling figure.", rows[0].peak.ids, "note"))
            continue
        base = rows[0]
        first = rows[1]
        parts = [f"{replicas_text(first.replicas)} give {first.ratio:.2f}x the throughput of {base.replicas} "
                 f"(scaling efficiency {fmt_pct(first.efficiency)}: {fmt_rps(first.peak.rps)} vs "
                 f"{fmt_rps(base.peak.rps)} req/s at their peaks)"]
        parts += [f"{s.replicas} give {s.ratio:.2f}x (efficiency {fmt_pct(s.efficiency)}: {fmt_rps(s.peak.rps)} req/s)"
                  for s in rows[2:]]
        text = f"{variant}: " + "; ".join(parts) + _limit_clause(records, rows) + "."
        worst = min(rows[1:], key=lambda s: s.efficiency)
        if worst.efficiency < 0.5:
            text += (f" At {replicas_text(worst.replicas)} more than half the added capacity is lost "
                     f"(efficiency {fmt_pct(worst.efficiency)}): the bottleneck is elsewhere.")
        out.append(Conclusion(text, tuple(x for s in rows for x in s.peak.ids), see="scaling"))
    return out


def _limit_clause(records: list[RunRecord], rows: list[Scaling]) -> str:
    """Where a scaling figure is not the stack's: peaks limited by the host's cores (or the gateway, or the
    generator), named with the figures, so a machine's ceiling does not read as how the stack scales."""
    by_id = {r.id: r for r in records}
    limited: dict[str, list[str]] = {}
    for row in rows:
        for run_id in row.peak.ids:
            limit = bottleneck.of(by_id[run_id]) if run_id in by_id else None
            if limit is not None and limit.kind in ("host", "gateway", "generator"):
                figure = (limit.detail or "").split(" (")[0]
                limited.setdefault(limit.kind, []).append(f"{replicas_text(row.replicas)} ({figure}, {run_id})")
                break
    text = ""
    if "host" in limited:
        text += (f", but the host's cores were the limit at {' and at '.join(limited['host'])}: this is the "
                 f"machine's ceiling, not the stack's scaling")
    for kind in ("gateway", "generator"):
        if kind in limited:
            text += f"; the {kind} was the limit at {' and at '.join(limited[kind])}"
    return text


def _saturation_sentences(records: list[RunRecord]) -> list[Conclusion]:
    out = []
    for s in sorted(saturations(records), key=lambda s: (_variant_rank(s.variant), s.replicas)):
        who = f"{s.variant} with {replicas_text(s.replicas)}"
        ids = tuple(x for p in s.curve for x in p.ids)
        if len(s.curve) < 2:
            out.append(Conclusion(f"{who}: only one user count has a valid run ({s.curve[0].ref}), so saturation "
                                  f"cannot be told.", ids, "note"))
            continue
        if s.at is None:
            prev = s.curve[-2]
            gain = s.last.rps / prev.rps - 1 if prev.rps else 0.0
            out.append(Conclusion(f"{who} did not saturate within the grid: throughput still rose by {fmt_pct(gain)} "
                                  f"from {prev.users} to {s.last.users} users ({fmt_rps(prev.rps)} → "
                                  f"{fmt_rps(s.last.rps)} req/s, {prev.ref} → {s.last.ref}); "
                                  f"try more users.", ids, see="capacity"))
            continue
        after = [p for p in s.curve if p.users > s.at.users]
        text = (f"{who} saturates at about {s.at.users} users ({fmt_rps(s.at.rps)} req/s, {s.at.ref}); "
                f"beyond that ")
        top = after[-1]
        if s.at.p95 is not None and top.p95 is not None and top.p95 > s.at.p95 * (1 + SATURATION_GAIN):
            text += (f"latency grows (p95 {fmt_ms(s.at.p95)} → {fmt_ms(top.p95)} ms at {top.users} users, "
                     f"{top.ref}), throughput does not.")
        else:
            text += f"throughput does not grow (up to {top.users} users, {top.ref})."
        out.append(Conclusion(text, ids, see="capacity"))
    return out


def _capacity_sentences(records: list[RunRecord], target_ms: float) -> list[Conclusion]:
    """The capacity per stack size, as `sizing` defines it (the one figure on the page), with its kind."""
    from . import sizing  # sizing builds on this module's points, so it is imported here, not at the top

    caps = sizing.stack_capacities(records, target_ms)
    out = []
    met = [c for c in caps if c.rps is not None]
    target = fmt_ms(target_ms)
    if met:
        top = max(met, key=lambda c: c.rps)
        out.append(Conclusion(f"The highest capacity with p95 under {target} ms: {top.variant} "
                              f"{replicas_text(top.replicas)}, {top.text()}; {', '.join(top.run_ids)}.", top.run_ids,
                              see="capacity"))
        for variant in sorted({c.variant for c in met} - {top.variant}, key=_variant_rank):
            vbest = max((c for c in met if c.variant == variant), key=lambda c: c.rps)
            out.append(Conclusion(f"For {variant} it is {replicas_text(vbest.replicas)}: {vbest.text()}; "
                                  f"{', '.join(vbest.run_ids)}.", vbest.run_ids, see="capacity"))
    for c in caps:
        if c.rps is None and (c.p95_ms is not None or c.note):
            low = (f" (lowest: {fmt_ms(c.p95_ms)} ms at {c.where.split(', spawn')[0]}, {', '.join(c.run_ids)})"
                   if c.p95_ms is not None else f" ({c.note})")
            out.append(Conclusion(f"{c.variant} with {replicas_text(c.replicas)} never kept p95 under {target} ms"
                                  f"{low}.", c.run_ids, "finding" if c.run_ids else "note"))
    return out
