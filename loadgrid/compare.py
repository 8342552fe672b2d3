"""Compare two sets of stored runs point by point: two output folders, or two variants of one folder.

    orchestrate.py compare OLD NEW                  every grid point run in both, matched by variant and point
    orchestrate.py compare OUT:cpu OUT:gpu          two variants of one folder, matched by point
    orchestrate.py compare OLD:cpu NEW:cpu --fail-if-slower 10

A is the baseline, B the candidate. Runs are matched by grid point, named as the runs are: `cpu/2_50_10`
(replicas, users, spawn rate), `cpu/2_r30` (open loop at 30 req/s), `cpu/2_cap_r30` (a capacity probe),
`target/2_4` and `target/r30` in target mode; the repeats of a point (`_r2`, `_r3`...) are one point. Each side
of a point is the mean of its valid repeats with a 95% confidence interval (Student t, df = n - 1), n per side.

With `--fail-if-slower PCT`, B is *worse* on a point when its mean throughput is lower than A's by more than PCT
percent, or its mean p95 latency higher by more than PCT percent, AND that change is beyond the noise: Welch's
t-test at 95% (two-sided, Welch-Satterthwaite degrees of freedom) on the valid repeats, when both sides have at
least two. A change beyond PCT within the noise is "not significant", not worse. With a single valid run on a
side the noise cannot be judged: the tolerance alone decides, labelled "single run: noise not judged". B is
also worse where it has no valid repeat and A has one. After the table, per stack size on both sides, the capacity
as the report and the answer state it (`sizing`: open loop when measured, else closed loop, lower confidence) under
A's latency target. Exit status: 0 no point worse (always 0 without the
option), 1 some point worse, 2 bad input (missing folder, unknown variant, no common grid point).
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from . import analysis, store
from .analysis import Estimate, fmt_ms, fmt_pct, fmt_rps
from .errors import UserError
from .plan import format_number
from .store import RunRecord

_VARIANT = re.compile(r"[A-Za-z0-9_-]+")
SINGLE = "single run: noise not judged"


@dataclass(frozen=True)
class Side:
    spec: str
    folder: Path
    variant: str | None
    records: tuple[RunRecord, ...]

    @property
    def label(self) -> str:
        return f"{self.folder}" + (f" ({self.variant})" if self.variant else "")


def parse_spec(spec: str) -> tuple[Path, str | None]:
    """`FOLDER` or `FOLDER:VARIANT` (an existing folder wins, so a folder name with a colon still works)."""
    if Path(spec).is_dir():
        return Path(spec), None
    folder, sep, variant = spec.rpartition(":")
    if sep and folder and _VARIANT.fullmatch(variant):
        if not Path(folder).is_dir():
            raise UserError(f"{folder}: no such output folder; pass a folder written by a grid run, "
                            f"or FOLDER:VARIANT such as reports:cpu")
        return Path(folder), variant
    raise UserError(f"{spec}: no such output folder; pass a folder written by a grid run, "
                    f"or FOLDER:VARIANT such as reports:cpu")


def load_side(spec: str) -> Side:
    folder, variant = parse_spec(spec)
    try:
        records = store.load_all(folder)
    except UserError as exc:  # an unreadable record is bad input here, like a missing folder
        raise UserError(str(exc), exit_code=2) from None
    if variant is not None:
        have = sorted({r.variant for r in records})
        records = [r for r in records if r.variant == variant]
        if not records:
            raise UserError(f"{spec}: no runs of variant {variant!r} in {folder} "
                            f"(it has: {', '.join(have) or 'no runs'})")
    elif not records:
        raise UserError(f"{spec}: no run records in {folder}; run the grid first")
    return Side(spec, folder, variant, tuple(records))


# --- noise: Welch's t-test ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Welch:
    """Welch's unequal-variance t-test of B's mean against A's (two-sided, 95%).

    t = (mean_B - mean_A) / sqrt(s_A^2/n_A + s_B^2/n_B); Welch-Satterthwaite
    df = (s_A^2/n_A + s_B^2/n_B)^2 / ((s_A^2/n_A)^2/(n_A-1) + (s_B^2/n_B)^2/(n_B-1)); the change is
    significant when |t| > t(0.975, floor(df)) (rounding df down is the conservative side). With no spread on
    either side (both standard deviations 0) any difference is significant and none is not (df is None).
    """

    diff: float  # mean_B - mean_A
    se: float
    t: float
    df: float | None
    critical: float | None

    @property
    def significant(self) -> bool:
        if self.critical is None:
            return self.diff != 0
        return abs(self.t) > self.critical

    def text(self) -> str:
        if self.df is None:
            return "no spread on either side"
        return f"Welch t {self.t:+.2f}, df {self.df:.1f}, needs |t| > {self.critical:.2f}"


def welch(a: list[float], b: list[float]) -> Welch | None:
    """Welch's t-test of `b` against `a`; None unless both have at least two values."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(b) - statistics.fmean(a)
    se = math.sqrt(va + vb)
    if se == 0:
        return Welch(diff, 0.0, 0.0 if diff == 0 else math.copysign(math.inf, diff), None, None)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return Welch(diff, se, diff / se, df, analysis.t95(max(1, math.floor(df))))


# --- one grid point on both sides --------------------------------------------------------------------------

@dataclass(frozen=True)
class Group:
    """One side of a grid point: every repeat run there, and the mean of the valid ones."""

    runs: tuple[RunRecord, ...]  # every repeat, in repeat order
    valid: tuple[RunRecord, ...]
    rps: Estimate | None
    p50: Estimate | None
    p95: Estimate | None

    @property
    def n(self) -> int:
        return len(self.valid)

    def values(self, attr: str) -> list[float]:
        pts = [analysis.point(r) for r in self.valid]
        return [v for v in (getattr(p, attr) for p in pts) if v is not None]


def _group(runs: list[RunRecord], need_rps: bool) -> Group:
    runs = sorted(runs, key=lambda r: (r.repeat, r.id))
    valid = tuple(r for r in runs if analysis.usable(r) and (not need_rps or r.load.rps > 0))
    pts = [analysis.point(r) for r in valid]
    return Group(tuple(runs), valid, analysis.estimate([p.rps for p in pts]),
                 analysis.estimate([p.p50 for p in pts if p.p50 is not None]),
                 analysis.estimate([p.p95 for p in pts if p.p95 is not None]))


@dataclass(frozen=True)
class Measure:
    """One judged figure of a compared point: throughput (higher is better) or p95 (lower is better)."""

    label: str  # "throughput", "p95"
    change: float  # B's mean against A's, as a fraction
    beyond_tolerance: bool  # in the worse direction by more than the tolerance (False without one)
    welch: Welch | None  # None: a side has a single valid run

    @property
    def worse(self) -> bool:
        return self.beyond_tolerance and (self.welch is None or self.welch.significant)

    @property
    def text(self) -> str:
        return f"{self.label} {fmt_pct(self.change, signed=True)}"


@dataclass(frozen=True)
class Row:
    name: str
    a: Group
    b: Group
    measures: tuple[Measure, ...]
    worse: bool
    note: str

    @property
    def compared(self) -> bool:
        return self.a.n > 0 and self.b.n > 0

    def change(self, attr: str) -> float | None:
        """B's mean against A's as a fraction (+0.1: B's value is 10% higher); None when not comparable."""
        if not self.compared:
            return None
        ea, eb = getattr(self.a, attr), getattr(self.b, attr)
        r = analysis.ratio(eb.mean if eb else None, ea.mean if ea else None)
        return None if r is None else r - 1


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    fail_pct: float | None
    rows: tuple[Row, ...]

    @property
    def worse(self) -> list[Row]:
        return [r for r in self.rows if r.worse]

    @property
    def exit_code(self) -> int:
        return 1 if self.worse else 0


def point_key(record: RunRecord, by_variant: bool) -> str:
    """The grid point as the runs are named, shared by its repeats: `cpu/2_50_10`, `target/r30`, `cpu/2_cap_r30`
    (without the `<variant>/` when two variants of one folder are compared)."""
    name = analysis.point_name(record)
    return name if by_variant else name.split("/", 1)[-1]


def run_status(record: RunRecord) -> str:
    """Why a run has no usable measurement, as the end of a sentence: 'failed (...)', 'is invalid (...)'."""
    if record.status != "completed":
        verb = "failed" if record.status == "failed" else f"was {record.status}"
        return f"{verb} ({record.error or '; '.join(record.validity.reasons) or 'no measurement'})"
    if record.validity.valid and record.load is not None and record.load.requests > 0:
        return "measured no throughput"
    return "is invalid (" + ("; ".join(record.validity.reasons) or "no request completed") + ")"


def _why_none(side: str, group: Group) -> str:
    if len(group.runs) == 1:
        return f"{side}'s run {run_status(group.runs[0])}"
    return (f"none of {side}'s {len(group.runs)} repeats is valid: "
            + "; ".join(f"{r.id} {run_status(r)}" for r in group.runs))


def _judge(name: str, a: Group, b: Group, fail_pct: float | None) -> Row:
    if a.n == 0:
        return Row(name, a, b, (), False, f"not compared: {_why_none('A', a)}")
    if b.n == 0:
        worse = fail_pct is not None
        return Row(name, a, b, (), worse, f"{'WORSE: ' if worse else ''}{_why_none('B', b)}")
    tol = None if fail_pct is None else fail_pct / 100
    measures = [Measure("throughput", b.rps.mean / a.rps.mean - 1,
                        tol is not None and b.rps.mean < a.rps.mean * (1 - tol),
                        welch(a.values("rps"), b.values("rps")))]
    if a.p95 and a.p95.mean and b.p95:
        measures.append(Measure("p95", b.p95.mean / a.p95.mean - 1,
                                tol is not None and b.p95.mean > a.p95.mean * (1 + tol),
                                welch(a.values("p95"), b.values("p95"))))
    worse = [m for m in measures if m.worse]
    within_noise = [m for m in measures if m.beyond_tolerance and not m.worse]
    dropped = [f"{side} {g.n} of {len(g.runs)} repeats valid" for side, g in (("A", a), ("B", b))
               if g.n < len(g.runs)]
    if tol is None:
        note = ""
    elif worse:
        how = SINGLE if any(m.welch is None for m in worse) else "beyond the noise"
        note = "WORSE: " + ", ".join(m.text for m in worse) + f" ({how})"
    elif within_noise:
        note = "not significant: " + ", ".join(m.text for m in within_noise) + " (within the noise)"
    else:
        note = "ok"
    if dropped:
        note = (note + "; " if note else "") + ", ".join(dropped)
    return Row(name, a, b, tuple(measures), bool(worse), note)


def compare(a: Side, b: Side, fail_pct: float | None = None) -> Comparison:
    if (a.variant is None) != (b.variant is None):
        raise UserError("compare: give a variant on both sides (reports:cpu other:cpu) or on neither "
                        "(two whole folders)")
    by_variant = a.variant is None
    a_runs: dict[str, list[RunRecord]] = {}
    b_runs: dict[str, list[RunRecord]] = {}
    for runs, side in ((a_runs, a), (b_runs, b)):
        for r in side.records:
            runs.setdefault(point_key(r, by_variant), []).append(r)
    order = {key: i for i, key in enumerate(s.name if by_variant else s.name.split("/", 1)[-1]
                                            for s in analysis.point_stats(list(a.records)))}
    common = sorted(set(a_runs) & set(b_runs), key=lambda k: (order.get(k, len(order)), k))
    if not common:
        raise UserError(f"compare: no common grid point between A {a.label} and B {b.label} "
                        f"(matched by {'variant and ' if by_variant else ''}grid point, as the runs are named)")
    rows = [_judge(key, _group(a_runs[key], need_rps=True), _group(b_runs[key], need_rps=False), fail_pct)
            for key in common]
    if not any(r.compared or r.worse for r in rows):
        raise UserError(f"compare: none of the {len(rows)} common grid points has a valid run on both sides")
    return Comparison(a, b, fail_pct, tuple(rows))


# --- the table ---------------------------------------------------------------------------------------------

def _change(value: float | None) -> str:
    return "–" if value is None else fmt_pct(value, signed=True)


def _est(est: Estimate | None, fmt) -> str:
    if est is None:
        return "–"
    return fmt(est.mean) if est.half_width is None else f"{fmt(est.mean)} ±{fmt(est.half_width)}"


def render(cmp: Comparison) -> str:
    head = ["point", "n A/B", "A req/s", "B req/s", "Δ req/s", "A p50", "B p50", "Δ p50", "A p95", "B p95",
            "Δ p95", "verdict"]
    table = [head]
    for r in cmp.rows:
        a, b = r.a, r.b
        table.append([
            r.name, f"{a.n}/{b.n}",
            _est(a.rps, fmt_rps), _est(b.rps, fmt_rps), _change(r.change("rps")),
            _est(a.p50, fmt_ms), _est(b.p50, fmt_ms), _change(r.change("p50")),
            _est(a.p95, fmt_ms), _est(b.p95, fmt_ms), _change(r.change("p95")),
            r.note,
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    lines = [f"A: {cmp.a.label}, {len(cmp.a.records)} runs", f"B: {cmp.b.label}, {len(cmp.b.records)} runs",
             "each side: the mean of a point's valid repeats ± its 95% confidence interval (Student t, shown with "
             "2 or more), n valid repeats per side; latency in ms; Δ is B's mean against A's", ""]
    for i, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:-1], widths[1:], strict=True)]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  -------")
    lines += _noise_lines(cmp)
    compared = [r for r in cmp.rows if r.compared]
    summary = f"{len(cmp.rows)} common grid points, {len(compared)} with a valid run on both sides"
    if compared:
        tput = statistics.median(r.change("rps") for r in compared)
        summary += f"; median change in throughput {fmt_pct(tput, signed=True)}"
        p95 = [r.change("p95") for r in compared if r.change("p95") is not None]
        if p95:
            summary += f", in p95 {fmt_pct(statistics.median(p95), signed=True)}"
    lines += ["", summary + "."]
    if cmp.fail_pct is not None:
        tol = f"{format_number(cmp.fail_pct)}%"
        if cmp.worse:
            lines.append(f"B is worse than A beyond {tol} on {len(cmp.worse)} point(s): "
                         + ", ".join(r.name for r in cmp.worse) + ".")
        else:
            lines.append(f"B is not worse than A beyond {tol} on any common point.")
        single = [r.name for r in cmp.rows if r.compared and min(r.a.n, r.b.n) == 1]
        if single:
            lines.append(f"A single valid run on a side ({', '.join(single)}): {SINGLE}, the {tol} tolerance "
                         f"alone decides there; run repeats (repeats: 3) to judge the noise.")
        quiet = [r.name for r in cmp.rows if r.note.startswith("not significant")]
        if quiet:
            lines.append(f"Beyond {tol} but within the noise (not significant, not counted as worse): "
                         + ", ".join(quiet) + ".")
    return "\n".join(lines)


def _noise_lines(cmp: Comparison) -> list[str]:
    """Welch's figures per compared point and measure, or why the noise was not judged."""
    compared = [r for r in cmp.rows if r.compared]
    if not any(m.welch for r in compared for m in r.measures):
        return []
    out = ["", "noise: Welch's t-test of B's mean against A's over the valid repeats (two-sided, 95%; "
               "df by Welch-Satterthwaite, rounded down for the critical t)"]
    for r in compared:
        for m in r.measures:
            if m.welch is None:
                out.append(f"  {r.name} {m.label}: {SINGLE} (n {r.a.n}/{r.b.n})")
                continue
            w = m.welch
            verdict = "significant" if w.significant else "not significant"
            out.append(f"  {r.name} {m.label}: {m.text}, difference {w.diff:+.4g}, {w.text()}: {verdict}")
    return out


def capacity_lines(a: Side, b: Side, target_ms: float) -> list[str]:
    """Per stack size on both sides: the capacity as the report and the answer state it (`sizing`), with its kind."""
    from . import sizing

    by_variant = a.variant is None
    caps_a = sizing.by_stack(list(a.records), target_ms)
    caps_b = sizing.by_stack(list(b.records), target_ms)

    def key(k: tuple[str, int]) -> tuple:
        return k if by_variant else (k[1],)

    ka = {key(k): c for k, c in caps_a.items()}
    kb = {key(k): c for k, c in caps_b.items()}
    out = []
    for k in sorted(set(ka) & set(kb), key=lambda k: (analysis._variant_rank(k[0]), k[1]) if by_variant else k):
        ca, cb = ka[k], kb[k]
        who = f"{ca.variant} {analysis.replicas_text(ca.replicas)}" if by_variant else \
            analysis.replicas_text(ca.replicas)

        def words(c) -> str:
            if c.rps is None:
                return "none"
            return (f"{'at least ' if c.at_least else ''}{fmt_rps(c.rps)} req/s ({c.label}, "
                    f"{', '.join(c.run_ids)})")

        change = f", {fmt_pct(cb.rps / ca.rps - 1, signed=True)}" if ca.rps and cb.rps is not None else ""
        out.append(f"capacity {who} (p95 < {fmt_ms(target_ms)} ms): A {words(ca)} → B {words(cb)}{change}")
    return out


def run(a_spec: str, b_spec: str, fail_pct: float | None = None) -> tuple[str, int]:
    """The table text and the exit status (0 or 1); bad input raises `UserError` (exit 2)."""
    from .report import latency_target

    a, b = load_side(a_spec), load_side(b_spec)
    cmp = compare(a, b, fail_pct)
    caps = capacity_lines(a, b, latency_target(a.folder)[0])
    return render(cmp) + ("\n\n" + "\n".join(caps) if caps else ""), cmp.exit_code
