"""Reports rendered only from stored run records: `summary.csv`, `points.csv` and `index.html` at the output's top.

Rebuilding them needs no Docker and re-runs nothing (`orchestrate.py report OUTPUT`). `index.html` is
self-contained: charts are inline SVG drawn here, the only script (table sorting and filtering) is inline
and optional, and nothing is fetched from the network, so it opens from the file system anywhere.
The numbers come from `analysis`; this module only lays them out. Rebuilding also re-annotates each run's own
Locust report with its telemetry (`run_page`).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import analysis, bottleneck, capacity, run_page, sizing, store
from . import answer as answer_mod
from .analysis import Conclusion, Estimate, Point, PointStats, fmt_ms, fmt_pct, fmt_rps, replicas_text
from .config import TARGET_VARIANT
from .plan import format_number
from .store import RunRecord

SUMMARY_COLUMNS = ["id", "variant", "models", "users", "spawn_rate", "status", "requests", "failures", "rps",
                   "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "valid", "reasons", "report",
                   "client_bound", "generator_cpu_pct", "generator_cores", "window_s", "warmup_s", "bottleneck",
                   "bottleneck_detail", "repeat", "kind", "arrival_rate"]
# kind: closed (users x spawn rate), open (a fixed arrival rate, req/s in arrival_rate) or probe (a capacity
# search's open-loop probe). users and spawn_rate are blank for open and probe rows: there they are only how many
# Locust processes shared the rate, not an axis anyone asked for.
POINTS_COLUMNS = ["point", "variant", "models", "users", "spawn_rate", "kind", "arrival_rate", "runs", "valid_runs",
                  "rps_mean", "rps_ci_low", "rps_ci_high", "p50_ms_mean", "p50_ms_ci_low", "p50_ms_ci_high",
                  "p95_ms_mean", "p95_ms_ci_low", "p95_ms_ci_high", "rps_cv", "p50_cv", "p95_cv", "wide_spread",
                  "note", "run_ids"]
DEFAULT_LATENCY_TARGET_MS = 500.0
SESSION_FILE = "session.json"


KINDS = ("closed", "open", "probe")


def run_kind(record: RunRecord) -> str:
    """closed (users), open (a fixed arrival rate from arrival_rate_list) or probe (a capacity-search probe)."""
    if record.capacity_probe:
        return "probe"
    return "open" if analysis.arrival_rate(record) else "closed"


def sort_key(record: RunRecord) -> tuple:
    """Closed-loop runs by users and spawn rate, then open-loop runs and probes by their rate."""
    return (record.variant, record.models, KINDS.index(run_kind(record)), analysis.arrival_rate(record),
            record.users, record.spawn_rate, record.repeat)


def _closed_axis(record: RunRecord, value):
    """users / spawn rate as an axis: blank for open-loop runs, where they only count Locust processes."""
    return value if run_kind(record) == "closed" else ""


def _rate_text(record: RunRecord) -> str:
    rate = analysis.arrival_rate(record)
    return format_number(rate) if rate else ""


def summary_rows(records: list[RunRecord]) -> list[dict]:
    rows = []
    for r in sorted(records, key=sort_key):
        lat = r.load.latency_ms if r.load else {}
        gen = (r.load.generator if r.load else None) or {}
        window = (r.load.window if r.load else None) or {}
        limit = bottleneck.of(r)
        rows.append({
            "id": r.id, "variant": r.variant, "models": r.models, "users": _closed_axis(r, r.users),
            "spawn_rate": _closed_axis(r, format_number(r.spawn_rate)), "status": r.status,
            "requests": r.load.requests if r.load else 0, "failures": r.load.failures if r.load else 0,
            "rps": r.load.rps if r.load else 0.0,
            **{f"{q}_ms": lat.get(q, "") for q in ("p50", "p90", "p95", "p99", "max")},
            "valid": "yes" if r.validity.valid else "no", "reasons": "; ".join(r.validity.reasons),
            "report": f"{r.variant}/{r.files.get('html', '')}" if r.files.get("html") else "",
            "client_bound": "yes" if r.validity.client_bound else "no",
            "generator_cpu_pct": _blank(gen.get("cpu_pct_mean")), "generator_cores": _blank(gen.get("cores")),
            "window_s": _blank(window.get("duration_s") if window.get("start_at") is not None else None),
            "warmup_s": _blank(window.get("warmup_s")),
            "bottleneck": limit["kind"], "bottleneck_detail": limit["detail"],
            "repeat": r.repeat, "kind": run_kind(r), "arrival_rate": _rate_text(r),
        })
    return rows


def _blank(value) -> str | float | int:
    return "" if value is None else value


def summary_csv(records: list[RunRecord]) -> str:
    return _csv(SUMMARY_COLUMNS, summary_rows(records))


def _csv(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _r(value: float | None, digits: int = 2) -> str | float:
    return "" if value is None else round(value, digits)


def points_rows(records: list[RunRecord]) -> list[dict]:
    """One row per grid point: how many repeats were valid, mean and 95% CI of req/s, p50, p95, spread flag."""
    rows = []
    kinds = {r.id: run_kind(r) for r in records}
    for s in analysis.point_stats(records):
        kind = kinds[s.run_ids[0]]
        closed = kind == "closed"
        row = {"point": s.name, "variant": s.variant, "models": s.models, "users": s.users if closed else "",
               "spawn_rate": format_number(s.spawn_rate) if closed else "", "kind": kind,
               "arrival_rate": format_number(s.arrival_rate) if s.arrival_rate else "", "runs": len(s.run_ids),
               "valid_runs": s.n}
        for name, est in (("rps", s.rps), ("p50_ms", s.p50), ("p95_ms", s.p95)):
            row[f"{name}_mean"] = _r(est.mean if est else None)
            row[f"{name}_ci_low"] = _r(est.low if est else None)
            row[f"{name}_ci_high"] = _r(est.high if est else None)
        for name, est in (("rps", s.rps), ("p50", s.p50), ("p95", s.p95)):
            row[f"{name}_cv"] = _r(est.cv if est else None, 4)
        row.update(wide_spread="yes" if s.flagged else "no", note=s.spread_note, run_ids=" ".join(s.run_ids))
        rows.append(row)
    return rows


def points_csv(records: list[RunRecord]) -> str:
    return _csv(POINTS_COLUMNS, points_rows(records))


# --- SVG charts ----------------------------------------------------------------------------------------------

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#b07aa1", "#9c755f", "#ff9da7", "#edc948",
           "#bab0ac"]
VARIANT_COLORS = {"cpu": "#4e79a7", "gpu": "#59a14f"}
TARGET_COLOR = "#d62728"
W, H = 600, 340
ML, MR, MT, MB = 64, 136, 34, 50
PW, PH = W - ML - MR, H - MT - MB


@dataclass
class Series:
    label: str
    color: str
    points: list[tuple[float, float, str, str]]  # x, y, tooltip, run id ("" for none)
    dash: str = ""
    css: str = "series"
    bars: list[tuple[float, float, float]] = field(default_factory=list)  # x, low, high: 95% CI of a mean
    # per point, parallel to `points`: "fail" draws a cross instead of a dot (a failing run or probe)
    markers: list[str] = field(default_factory=list)
    line: bool = True  # False: markers only (runs with no measurement, pinned to the chart's edge)
    legend: bool = True


@dataclass
class Note:
    """A labelled point on a chart (the capacity): a ring at (x, y) and a short text, the full sentence on hover."""

    x: float
    y: float
    text: str
    tip: str
    color: str


def anchor(run_id: str) -> str:
    return "run-" + re.sub(r"[^A-Za-z0-9_.-]", "-", run_id)


def nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _num(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.3g}"


def line_chart(title: str, series: list[Series], x_label: str, y_label: str, x_values: list[float], y_max: float,
               hline: tuple[float, str] | None = None, empty_text: str = "no valid runs",
               y_log_min: float | None = None, notes: list[Note] = (), legend_extra: list[str] = ()) -> str:
    """An inline SVG line chart with a legend on the right: one path per series, a linked marker per point.

    x is on a log scale when it spans a factor of 8 or more; y is on a log scale from `y_log_min` when given.
    y values beyond the scale (inf: no measurement) are drawn at its edge. `notes` label points; `legend_extra`
    adds text-only legend lines (a cross marker first when the text starts with "✕").
    """
    xs = sorted(set(x_values)) or [1.0]
    log_x = xs[0] > 0 and xs[-1] / xs[0] >= 8
    tx = (lambda v: math.log(v)) if log_x else (lambda v: v)
    lo, hi = tx(xs[0]), tx(xs[-1])
    pad = (hi - lo) * 0.04 if hi > lo else 1.0
    lo, hi = lo - pad, hi + pad

    def px(v: float) -> float:
        return ML + (tx(v) - lo) / (hi - lo) * PW

    if y_log_min is not None and y_log_min > 0 and y_max > y_log_min:
        bottom = 10 ** math.floor(math.log10(y_log_min))
        top = 10 ** math.ceil(math.log10(y_max))
        y_ticks = [m * 10 ** k for k in range(round(math.log10(bottom)), round(math.log10(top)) + 1)
                   for m in (1, 2, 5) if bottom <= m * 10 ** k <= top]

        def py(v: float) -> float:
            v = min(max(v, bottom), top)
            return MT + PH - (math.log(v) - math.log(bottom)) / (math.log(top) - math.log(bottom)) * PH
    else:
        y_log_min = None
        step = nice_step(y_max if y_max > 0 else 1.0)
        top = step * max(1, math.ceil((y_max if y_max > 0 else 1.0) / step - 1e-9))
        y_ticks = [i * step for i in range(round(top / step) + 1)]

        def py(v: float) -> float:
            return MT + PH - min(v, top) / top * PH

    out = [f'<svg class="chart" role="img" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg" '
           f'aria-label="{html.escape(title)}">',
           f'<title>{html.escape(title)}</title>',
           f'<text x="{ML}" y="20" class="ctitle">{html.escape(title)}</text>']
    last_label = 1e9
    for v in y_ticks:
        y = py(v)
        out.append(f'<line x1="{ML}" x2="{ML + PW}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        if last_label - y >= 14:
            out.append(f'<text x="{ML - 6}" y="{y + 4:.1f}" class="ytick">{_num(round(v, 6))}</text>')
            last_label = y
    last_label = -1e9
    for xv in xs:
        x = px(xv)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{MT + PH}" y2="{MT + PH + 5}" class="axis"/>')
        if x - last_label >= 30:
            out.append(f'<text x="{x:.1f}" y="{MT + PH + 18}" class="xtick">{_num(xv)}</text>')
            last_label = x
    out.append(f'<rect x="{ML}" y="{MT}" width="{PW}" height="{PH}" class="frame"/>')
    out.append(f'<text x="{ML + PW / 2:.1f}" y="{H - 10}" class="xlabel">{html.escape(x_label)}'
               f'{" (log scale)" if log_x else ""}</text>')
    out.append(f'<text transform="translate(16 {MT + PH / 2:.1f}) rotate(-90)" class="ylabel">'
               f'{html.escape(y_label)}{" (log scale)" if y_log_min else ""}</text>')
    legend: list[tuple[str, str, str]] = []
    if hline is not None and hline[0] <= top and (y_log_min is None or hline[0] >= bottom):
        y = py(hline[0])
        out.append(f'<line x1="{ML}" x2="{ML + PW}" y1="{y:.1f}" y2="{y:.1f}" class="target" '
                   f'stroke="{TARGET_COLOR}" stroke-dasharray="6 4"/>')
        legend.append((hline[1], TARGET_COLOR, "6 4"))
    elif hline is not None:
        legend += [(hline[1], TARGET_COLOR, "6 4"), ("(above this scale)", "", "")]
    drawn = [s for s in series if s.points]
    for s in drawn:
        for x, low, high in s.bars:
            y1, y2, cx = py(max(low, 0.0)), py(min(high, top)), px(x)
            out.append(f'<path class="ci" d="M{cx - 4:.1f} {y1:.1f}H{cx + 4:.1f}M{cx:.1f} {y1:.1f}V{y2:.1f}'
                       f'M{cx - 4:.1f} {y2:.1f}H{cx + 4:.1f}" stroke="{s.color}" fill="none" stroke-width="1.2"/>')
    for s in drawn:
        order = sorted(range(len(s.points)), key=lambda i: s.points[i][:2])
        pts = [s.points[i] for i in order]
        marks = [s.markers[i] if i < len(s.markers) else "" for i in order]
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        if s.line:
            # several points at one x (runs that share an offered rate): the line goes through their mean
            at: dict[float, list[float]] = {}
            for x, y, _, _ in pts:
                at.setdefault(x, []).append(y)
            path = [(x, sum(ys) / len(ys)) for x, ys in at.items()]
            d = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f} {py(y):.1f}" for i, (x, y) in enumerate(path))
            out.append(f'<path class="{s.css}" d="{d}" stroke="{s.color}"{dash} fill="none" stroke-width="2"/>')
        if s.css == "series" or not s.line:
            for (x, y, tip, run_id), mark in zip(pts, marks, strict=True):
                cx, cy = px(x), py(y)
                if mark == "fail":
                    dot = (f'<path class="fail" d="M{cx - 4.5:.1f} {cy - 4.5:.1f}L{cx + 4.5:.1f} {cy + 4.5:.1f}'
                           f'M{cx - 4.5:.1f} {cy + 4.5:.1f}L{cx + 4.5:.1f} {cy - 4.5:.1f}" stroke="{s.color}" '
                           f'stroke-width="2.5" fill="none"><title>{html.escape(tip)}</title></path>')
                else:
                    dot = (f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{s.color}">'
                           f'<title>{html.escape(tip)}</title></circle>')
                out.append(f'<a href="#{anchor(run_id)}">{dot}</a>' if run_id else dot)
        if s.legend:
            legend.append((s.label, s.color, s.dash))
    for i, n in enumerate(notes):
        cx, cy = px(n.x), py(n.y)
        right = cx > ML + PW * 0.6  # near the right edge the text goes to the left of the point
        ty = max(MT + 12, cy - 10 - 14 * i)
        text_x = cx - 8 if right else cx + 8
        out.append(f'<g class="note"><title>{html.escape(n.tip)}</title>'
                   f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="7" fill="none" stroke="{n.color}" stroke-width="1.5"/>'
                   f'<text x="{text_x:.1f}" y="{ty:.1f}" class="notetext" text-anchor="{"end" if right else "start"}" '
                   f'fill="{n.color}">{html.escape(n.text)}</text></g>')
    legend += [(text, "", "") for text in legend_extra]
    if not drawn:
        out.append(f'<text x="{ML + PW / 2:.1f}" y="{MT + PH / 2:.1f}" class="empty">{html.escape(empty_text)}</text>')
    lx = ML + PW + 12
    for i, (label, color, dash) in enumerate(legend):
        y = MT + 10 + i * 18
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        if color:
            out.append(f'<line x1="{lx}" x2="{lx + 22}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="2"'
                       f'{dash_attr}/>')
        elif label.startswith("✕"):
            label = label[1:].strip()
            out.append(f'<path d="M{lx + 7} {y - 4.5}L{lx + 16} {y + 4.5}M{lx + 7} {y + 4.5}L{lx + 16} {y - 4.5}" '
                       f'stroke="#555" stroke-width="2.5" fill="none"/>')
        out.append(f'<text x="{lx + 28}" y="{y + 4}" class="legend">{html.escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _tip(p: Point) -> str:
    mean = f" (mean of {p.n} repeats)" if p.n > 1 else ""
    return (f"{p.ref}: {p.users} users, spawn {format_number(p.spawn_rate)}/s, {fmt_rps(p.rps)} req/s, "
            f"p50 {fmt_ms(p.p50)} ms, p95 {fmt_ms(p.p95)} ms{mean}")


def _ci_bar(stats: dict, p: Point, metric: str) -> tuple[float, float, float] | None:
    s = stats.get((p.variant, p.models, p.users, p.spawn_rate))
    est = getattr(s, metric) if s is not None else None
    return (p.users, est.low, est.high) if est is not None and est.low is not None else None


def _replica_colors(records: list[RunRecord]) -> dict[int, tuple[str, str]]:
    counts = sorted({r.models for r in records})
    return {n: (PALETTE[i % len(PALETTE)], "" if i < len(PALETTE) else "4 3") for i, n in enumerate(counts)}


def users_charts(records: list[RunRecord], metric: str, target_ms: float | None = None) -> list[str]:
    """One chart per variant, side by side, one line per replica count, on a shared y scale."""
    curves = analysis.curves(records)
    stats = {(s.variant, s.models, s.users, s.spawn_rate): s for s in analysis.point_stats(records)}
    colors = _replica_colors(records)
    users = [r.users for r in records if run_kind(r) == "closed"]  # probes' process counts are no axis
    names = {"rps": ("Throughput", "req/s"), "p50": ("p50 latency", "ms"), "p95": ("p95 latency", "ms")}
    title, unit = names[metric]
    per_variant: dict[str, list[Series]] = {}
    y_max, y_min = 0.0, math.inf
    for variant in analysis.variants(records):
        series = []
        for (v, models), curve in curves.items():
            if v != variant:
                continue
            pts = [(p.users, getattr(p, metric), _tip(p), p.run_id) for p in curve if getattr(p, metric) is not None]
            bars = [b for b in (_ci_bar(stats, p, metric) for p in curve) if b is not None]
            y_max = max([y_max] + [y for _, y, _, _ in pts] + [high for _, _, high in bars])
            y_min = min([y_min] + [y for _, y, _, _ in pts if y > 0])
            color, dash = colors[models]
            series.append(Series(replicas_text(models), color, pts, dash, bars=bars))
        per_variant[variant] = series
    # latency spanning a factor of 20 or more goes on a log scale, so the low end and the target stay readable
    log_min = y_min if metric != "rps" and y_min < math.inf and y_max / y_min >= 20 else None
    hline = None
    if target_ms is not None and metric == "p95":
        hline = (target_ms, f"target {fmt_ms(target_ms)} ms")
        if log_min is not None:
            y_max, log_min = max(y_max, target_ms), min(log_min, target_ms)
        elif target_ms <= 2 * y_max:  # show the target unless it would squash the curves
            y_max = max(y_max, target_ms)
    return [line_chart(f"{variant.upper()}: {title.lower()} vs users", series, "users", unit, users, y_max, hline,
                       y_log_min=log_min)
            for variant, series in per_variant.items()]


@dataclass(frozen=True)
class Offered:
    """An open-loop run or capacity probe as the offered-rate charts draw it, judged as capacity judges a probe."""

    record: RunRecord
    rate: float  # offered (the intended arrival rate), req/s
    rps: float | None  # answered per second over the window; None: no measurement
    p50: float | None
    p95: float | None
    intended: bool  # latencies from the intended send time (coordinated omission counted)
    passed: bool
    why: str

    @property
    def measured(self) -> bool:
        return self.rps is not None and self.p95 is not None


def offered_points(records: list[RunRecord], target_ms: float) -> dict[tuple[str, int], list[Offered]]:
    """(variant, replicas) -> every open-loop run and probe, valid or not, by offered rate."""
    out: dict[tuple[str, int], list[Offered]] = {}
    for r in sorted(records, key=sort_key):
        rate = analysis.arrival_rate(r)
        if not rate:
            continue
        judged = capacity.judge_probe(r, target_ms)
        load = r.load
        measured = load is not None and load.requests > 0 and r.status == "completed"
        intended = ((load.open_loop or {}).get("latency_intended_ms") if load else None) or {}
        has_intended = isinstance(intended.get("p95"), (int, float))
        p50 = intended.get("p50") if has_intended else (load.latency_ms.get("p50") if load else None)
        out.setdefault((r.variant, r.models), []).append(Offered(
            r, rate, load.rps if measured else None, p50 if measured else None,
            judged.p95_ms if measured else None, has_intended, judged.passed, judged.why))
    return out


def _offered_tip(o: Offered, target_ms: float) -> str:
    r = o.record
    head = f"{r.id} ({KIND_WORDS[run_kind(r)]}): offered {format_number(o.rate)} req/s"
    if not o.measured:
        return f"{head}; no measurement: {o.why}"
    source = "from the intended send time" if o.intended else "from the actual send"
    verdict_words = f"passes (p95 under {fmt_ms(target_ms)} ms)" if o.passed else f"FAILS: {o.why}"
    extra = f"; {o.why}" if o.passed and o.why else ""
    return (f"{head}, answered {fmt_rps(o.rps)} req/s, p50 {fmt_ms(o.p50)} ms, p95 {fmt_ms(o.p95)} ms ({source}); "
            f"{verdict_words}{extra}")


def _stack_name(variant: str, models: int) -> str:
    """A stack size in words; target mode has no replica axis (models 0): the endpoint itself."""
    return "endpoint" if variant == TARGET_VARIANT else replicas_text(models)


def capacity_notes(offered: dict[tuple[str, int], list[Offered]], stacks: list[dict],
                   colors: dict[int, tuple[str, str]]) -> dict[tuple[str, int], Note]:
    """The capacity point per stack: capacity.json's capacity_rps, else the highest passing open-loop rate."""
    out = {}
    searched = {(st.get("variant"), st.get("models")): st for st in stacks}
    for key, pts in offered.items():
        color = colors.get(key[1], (PALETTE[0], ""))[0]
        st = searched.get(key)
        if st is not None and st.get("capacity_rps") is not None:
            rate = float(st["capacity_rps"])
            at = next((o for o in pts if o.record.id == st.get("run_id") and o.measured), None)
            y = at.p95 if at else st.get("p95_ms")
            if y is None:
                continue
            tip = (f"capacity {format_number(rate)} req/s: the capacity search's result for {_stack_name(*key)} "
                   f"(capacity.json, run {st.get('run_id')}, p95 {fmt_ms(y)} ms under "
                   f"{fmt_ms(st.get('latency_target_ms') or 0)} ms, limited by {st.get('limited_by') or '?'})")
            out[key] = Note(rate, y, f"capacity {format_number(rate)} req/s", tip, color)
            continue
        passing = [o for o in pts if o.passed and o.measured]
        if passing:
            best = max(passing, key=lambda o: o.rate)
            tip = (f"{format_number(best.rate)} req/s: the highest passing open-loop rate for "
                   f"{_stack_name(*key)} ({best.record.id}; no capacity search for this stack, so capacity is at "
                   f"least this)")
            out[key] = Note(best.rate, best.p95, f"≥ {format_number(best.rate)} passed", tip, color)
    return out


IDEAL_COLOR = "#888888"


def offered_charts(records: list[RunRecord], target_ms: float, stacks: list[dict] = ()) -> list[str]:
    """Per variant: latency (p95, p50) and throughput against the offered rate, for every open-loop run and probe.

    A line per replica count; failing runs crossed (hover: why), runs with no measurement pinned to the edge;
    the latency target; the capacity labelled; on the throughput chart the answered = offered line.
    """
    offered = offered_points(records, target_ms)
    if not offered:
        return []
    colors = _replica_colors(records)
    notes = capacity_notes(offered, list(stacks), colors)
    every = [o for pts in offered.values() for o in pts]
    rates = [o.rate for o in every]
    measured = [o for o in every if o.measured]
    lat = [v for o in measured for v in (o.p50, o.p95) if v is not None]
    lat_max, lat_min = max(lat, default=0.0), min((v for v in lat if v > 0), default=math.inf)
    log_min = lat_min if lat_min < math.inf and lat_max / lat_min >= 20 else None
    if log_min is not None:
        lat_max, log_min = max(lat_max, target_ms), min(log_min, target_ms)
    elif target_ms <= 2 * lat_max or not lat:
        lat_max = max(lat_max, target_ms)
    rps_max = max([o.rps for o in measured] + rates)
    intended = {o.intended for o in measured}
    source = ("from the intended send time" if intended == {True} else "from the actual send" if intended == {False}
              else "intended send time where recorded, else actual")
    charts = []
    for variant in analysis.variants(records):
        lat_series, rps_series, var_notes = [], [], []
        for (v, models), pts in sorted(offered.items()):
            if v != variant:
                continue
            color, dash = colors[models]
            name = _stack_name(variant, models)
            done = [o for o in pts if o.measured]
            lost = [o for o in pts if not o.measured]
            tips = {o.record.id: _offered_tip(o, target_ms) for o in pts}
            marks = ["" if o.passed else "fail" for o in done]
            lat_series.append(Series(f"{name} p95", color, [(o.rate, o.p95, tips[o.record.id], o.record.id)
                                                             for o in done], dash, markers=marks))
            lat_series.append(Series(f"{name} p50", color, [(o.rate, o.p50, tips[o.record.id], o.record.id)
                                                             for o in done if o.p50 is not None], "1 3"))
            rps_series.append(Series(f"{name}", color, [(o.rate, o.rps, tips[o.record.id], o.record.id)
                                                         for o in done], dash, markers=marks))
            if lost:  # no measurement: latency off the top, nothing answered
                lat_series.append(Series(f"{name} no measurement", color, [
                    (o.rate, math.inf, tips[o.record.id], o.record.id) for o in lost], markers=["fail"] * len(lost),
                    line=False, legend=False))
                rps_series.append(Series(f"{name} no measurement", color, [
                    (o.rate, 0.0, tips[o.record.id], o.record.id) for o in lost], markers=["fail"] * len(lost),
                    line=False, legend=False))
            if (variant, models) in notes:
                var_notes.append(notes[(variant, models)])
        if not lat_series:
            continue
        lo, hi = min(rates), max(rates)
        rps_series.append(Series("y = x", IDEAL_COLOR, [(lo, lo, "", ""), (hi, hi, "", "")], "2 4",
                                 "series ideal"))
        failing = any(not o.passed for (v, _), pts in offered.items() if v == variant for o in pts)
        extra = ["✕ failing"] if failing else []
        charts.append(line_chart(f"{variant.upper()}: latency vs offered rate", lat_series, "offered req/s (open loop)",
                                 f"ms, {source}", rates, lat_max, (target_ms, f"target {fmt_ms(target_ms)} ms"),
                                 y_log_min=log_min, notes=var_notes, legend_extra=extra,
                                 empty_text="no measured open-loop run"))
        charts.append(line_chart(f"{variant.upper()}: throughput vs offered rate", rps_series,
                                 "offered req/s (open loop)", "answered req/s (window)", rates, rps_max,
                                 legend_extra=extra, empty_text="no measured open-loop run"))
    return charts


def offered_section(records: list[RunRecord], target_ms: float, stacks: list[dict] = ()) -> str:
    charts = offered_charts(records, target_ms, stacks)
    if not charts:
        return ('<p class="nodata">No open-loop runs, so no latency-vs-offered-rate chart: add '
                '<code>arrival_rate_list</code> or <code>capacity_search</code> to config.yaml.</p>')
    return f"""{_figures(charts)}
<p class="small">Every open-loop run and capacity-search probe, valid or not, at the rate it offered: a line per
replica count. Latency: p95 (solid) and p50 (dotted), from the intended send time where the record has it (the
slot the schedule gave the request, so waiting behind a slow server or a late generator counts; capacity is judged
on that p95), else from the actual send. ✕ marks a run that fails capacity's test (hover for why: failed or
dropped requests, invalid, p95 not under {fmt_ms(target_ms)} ms, or unstable); one with no measurement sits on the
chart's edge. The ring labels the capacity: the capacity search's result (capacity.json) or, for a stack with no
search, the highest passing rate (≥: capacity is at least that). Throughput: requests answered per second in the
window; the grey dotted line is y = x (answered = offered), and where a curve bends below it the stack is
saturated. Where several runs share a rate, the line goes through their mean; each has its own marker.</p>"""


def scaling_chart(records: list[RunRecord]) -> str:
    scaling = analysis.scaling(records)
    series = []
    y_max = 0.0
    for i, variant in enumerate(analysis.variants(records)):
        rows = scaling.get(variant, [])
        color = VARIANT_COLORS.get(variant, PALETTE[(i + 2) % len(PALETTE)])
        pts = [(s.replicas, s.peak.rps, f"{_tip(s.peak)}; {s.ratio:.2f}x of {s.base_replicas}, efficiency "
                f"{fmt_pct(s.efficiency)}", s.peak.run_id) for s in rows]
        ideal = [(s.replicas, s.base_rps * s.replicas / s.base_replicas, "", "") for s in rows]
        y_max = max([y_max] + [y for _, y, _, _ in pts + ideal])
        series.append(Series(f"{variant} peak", color, pts))
        if len(rows) > 1:
            series.append(Series(f"{variant} linear", color, ideal, "2 4", "series ideal"))
    return line_chart("Peak throughput vs replicas (scaling)", series, "replicas", "req/s",
                      [r.models for r in records], y_max)


# --- HTML ----------------------------------------------------------------------------------------------------

def esc(value) -> str:
    return html.escape(str(value))


def run_link(run_id: str) -> str:
    return f'<a href="#{anchor(run_id)}">{esc(run_id)}</a>'


MAX_EVIDENCE = 8
SECTION_NAMES = {"speedup": "CPU vs GPU", "scaling": "scaling", "capacity": "capacity and saturation",
                 "repeats": "repeats"}


def conclusion_html(c: Conclusion) -> str:
    text = esc(c.text)
    mentioned = set()
    ids = sorted(set(c.run_ids), key=len, reverse=True)
    if ids:
        pattern = re.compile(r"(?<![\w/.])(" + "|".join(re.escape(esc(i)) for i in ids) + r")(?![\w/])")

        def sub(m: re.Match) -> str:
            mentioned.add(html.unescape(m.group(1)))
            return run_link(html.unescape(m.group(1)))

        text = pattern.sub(sub, text)
    rest = [i for i in dict.fromkeys(c.run_ids) if i not in mentioned]
    if len(rest) > MAX_EVIDENCE and c.see:
        shown = ", ".join(run_link(i) for i in rest[:MAX_EVIDENCE - 2])
        text += (f' <span class="evidence">runs: {shown} and {len(rest) - MAX_EVIDENCE + 2} more '
                 f'(<a href="#{esc(c.see)}">all in the {esc(SECTION_NAMES.get(c.see, c.see))} table</a>)</span>')
    elif rest:
        text += ' <span class="evidence">runs: ' + ", ".join(run_link(i) for i in rest) + "</span>"
    return f'<li class="{esc(c.kind)}">{text}</li>'


def table(head: list[str], rows: list[str], left: tuple[str, ...] = (), css: str = "sortable") -> str:
    """A sortable table in a scrolling box; `left`: the headings of text columns (aligned left)."""
    cells = "".join(f'<th class="l">{esc(h)}</th>' if h in left else f"<th>{esc(h)}</th>" for h in head)
    return (f'<div class="scroll"><table class="{css}"><thead><tr>{cells}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody></table></div>")


def _td(value, sort_value=None, cls: str = "") -> str:
    data = "" if sort_value is None else f' data-v="{esc(sort_value)}"'
    klass = f' class="{cls}"' if cls else ""
    return f"<td{data}{klass}>{value}</td>"


def _num_td(value: float | None, fmt) -> str:
    return _td(fmt(value) if value is not None else "–", value if value is not None else -1)


KIND_WORDS = {"closed": "closed loop", "open": "open loop", "probe": "capacity probe"}


def verdict(record: RunRecord) -> str:
    if record.status != "completed":
        why = record.error or "; ".join(record.validity.reasons) or "no measurement"
        return f"{record.status}: {why}"
    if record.validity.valid:
        return "valid"
    return "invalid: " + "; ".join(record.validity.reasons)


def window_text(record: RunRecord) -> tuple[str, float]:
    """The measurement window of a run as shown in the table (HTML), and its sort value (its length in seconds)."""
    window = (record.load.window if record.load else None) or {}
    if not window:
        return "–", -1
    if window.get("start_at") is None:
        return "none: still spawning at the end", 0
    duration = window.get("duration_s") or record.load.duration_s
    warmup = window.get("warmup_s")
    text = f"{duration:.0f} s"
    text += f'<br><span class="small">after {format_number(warmup)} s warm-up</span>' if warmup else ""
    return text, duration


def generator_text(record: RunRecord) -> tuple[str, str, float]:
    """The load generator's CPU over the window: text, tooltip and sort value."""
    gen = (record.load.generator if record.load else None) or {}
    mean = gen.get("cpu_pct_mean")
    if mean is None:
        return "–", "", -1
    cores = gen.get("cores") or 1
    top = gen.get("cpu_pct_max")
    tip = (f"mean {mean:g}%, max {'?' if top is None else f'{top:g}'}% of {cores} core(s), "
           f"{gen.get('samples', '?')} samples")
    if gen.get("locust_cpu_warning"):
        tip += "; Locust warned its CPU was above 90%"
    return f"{mean:.0f}%<br><span class=\"small\">of {cores} core{'s' if cores != 1 else ''}</span>", tip, mean


def verdict_html(record: RunRecord) -> str:
    badge = '<span class="badge">client-bound</span> ' if record.validity.client_bound else ""
    return badge + esc(verdict(record))


def runs_table(records: list[RunRecord]) -> str:
    head = ["run", "variant", "kind", "replicas", "users", "spawn/s", "offered req/s", "requests", "failures",
            "req/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "max ms", "window", "Locust CPU", "bottleneck",
            "verdict"]
    rows = []
    for r in sorted(records, key=sort_key):
        lat = r.load.latency_ms if r.load else {}
        html_file = r.files.get("html")
        link = f'<a href="{esc(r.variant + "/" + html_file)}">{esc(r.id)}</a>' if html_file else esc(r.id)
        ok = analysis.usable(r)
        kind = run_kind(r)
        if kind == "closed":
            load_cells = [_td(r.users, r.users), _td(format_number(r.spawn_rate), r.spawn_rate), _td("–", -1)]
        else:  # open loop: users only count Locust processes, so they are no axis here
            procs = f'<span title="{r.users} Locust process(es) shared the rate">–</span>'
            rate = analysis.arrival_rate(r)
            load_cells = [_td(procs, -1), _td("–", -1), _td(format_number(rate), rate)]
        cells = [_td(link, r.id), _td(esc(r.variant)), _td(esc(KIND_WORDS[kind]), kind, "l"),
                 _td(r.models, r.models), *load_cells,
                 _td(r.load.requests if r.load else "–", r.load.requests if r.load else -1),
                 _td(r.load.failures if r.load else "–", r.load.failures if r.load else -1),
                 _num_td(r.load.rps if r.load else None, fmt_rps)]
        cells += [_num_td(lat.get(q), fmt_ms) for q in ("p50", "p90", "p95", "p99", "max")]
        window, window_sort = window_text(r)
        cpu, cpu_tip, cpu_sort = generator_text(r)
        cells.append(_td(window, window_sort, "l"))
        cpu_cell = f'<span title="{esc(cpu_tip)}">{cpu}</span>' if cpu_tip else cpu
        cells.append(_td(cpu_cell, cpu_sort, "bad" if r.validity.client_bound else ""))
        cells.append(bottleneck_td(r))
        cells.append(_td(verdict_html(r), cls="verdict"))
        cls = "" if ok else ' class="excluded"'
        rows.append(f'<tr id="{anchor(r.id)}"{cls}>' + "".join(cells) + "</tr>")
    return table(head, rows, left=("run", "variant", "kind", "window", "bottleneck", "verdict"),
                 css="sortable runs")


def bottleneck_td(record: RunRecord) -> str:
    """What limited the run, the figures in its tooltip; a host limit in red: it is the machine's, not the stack's."""
    limit = bottleneck.of(record)
    checked = "; ".join(limit.get("checked") or [])
    tip = limit["detail"] + (f" — checked: {checked}" if checked else "")
    return _td(f'<span title="{esc(tip)}">{esc(limit["kind"])}</span>', limit["kind"],
               "l bad" if limit["kind"] == "host" else "l")


def _change_td(r: float | None, higher_is_better: bool) -> str:
    if r is None:
        return _td("–", 0)
    change = r - 1
    good = change > 0 if higher_is_better else change < 0
    cls = "good" if good and abs(change) >= 0.005 else "bad" if abs(change) >= 0.005 else ""
    return _td(fmt_pct(change, signed=True), round(change, 6), cls)


def speedup_section(records: list[RunRecord]) -> str:
    present = analysis.variants(records)
    sp = analysis.speedups(records)
    if not sp:
        notes = [c for c in analysis._gpu_vs_cpu(records) if c.kind == "note"]
        why = notes[0].text if notes else "No CPU vs GPU comparison."
        extra = "" if "gpu" in present else (" Add <code>gpu</code> to <code>variants</code> in config.yaml on a "
                                             "machine with an NVIDIA GPU to get this section.")
        return f'<p class="nodata">{esc(why)}{extra}</p>'
    head = ["replicas", "users", "spawn/s", "CPU req/s", "GPU req/s", "throughput", "CPU p50", "GPU p50",
            "p50 change", "CPU p95", "GPU p95", "p95 change", "runs"]
    rows = []
    for s in sp:
        rows.append("<tr>" + "".join([
            _td(s.models, s.models), _td(s.users, s.users), _td(format_number(s.spawn_rate), s.spawn_rate),
            _num_td(s.base.rps, fmt_rps), _num_td(s.other.rps, fmt_rps),
            _td(f"{s.throughput_ratio:.2f}x", round(s.throughput_ratio, 6),
                "good" if s.throughput_ratio > 1.005 else "bad" if s.throughput_ratio < 0.995 else ""),
            _num_td(s.base.p50, fmt_ms), _num_td(s.other.p50, fmt_ms), _change_td(s.p50_ratio, False),
            _num_td(s.base.p95, fmt_ms), _num_td(s.other.p95, fmt_ms), _change_td(s.p95_ratio, False),
            _td(run_link(s.base.run_id) + " vs " + run_link(s.other.run_id), cls="runs"),
        ]) + "</tr>")
    return ('<p>Every grid point with a valid run in both variants. Throughput: GPU req/s ÷ CPU req/s; latency '
            'change: GPU vs CPU (negative is faster).</p>'
            + table(head, rows, left=("runs",)))


def capacity_section(records: list[RunRecord], target_ms: float) -> str:
    sats = {(s.variant, s.replicas): s for s in analysis.saturations(records)}
    head = ["variant", "replicas", f"capacity req/s (p95 < {fmt_ms(target_ms)} ms)", "kind", "at", "p95 ms",
            "saturation", "req/s there"]
    rows = []
    for c in sizing.stack_capacities(records, target_ms):
        runs = ", ".join(run_link(i) for i in c.run_ids)
        if c.rps is not None:
            ci = f'<br><span class="small">{esc(c.ci_text())}</span>' if c.ci_text() else ""
            cap = [_td(("≥ " if c.at_least else "") + fmt_rps(c.rps) + ci, c.rps), _td(esc(c.label), cls="l"),
                   _td(f"{runs} ({esc(c.where)})", cls="l"), _num_td(c.p95_ms, fmt_ms)]
        else:
            note = (f"none under target (lowest p95 {fmt_ms(c.p95_ms)} ms: {runs})" if c.p95_ms is not None
                    else esc(c.note or "no p95 recorded"))
            cap = [_td("–", -1, "bad"), _td("–", cls="l"), _td(note, cls="l"), _td("–", -1)]
        s = sats.get((c.variant, c.replicas))
        if s is None or len(s.curve) < 2:
            sat = [_td("one user count only" if s else "no closed-loop curve", -1, "l"), _td("–", -1)]
        elif s.at is None:
            sat = [_td(f"not reached (still rising at {s.last.users} users)", 1e12, "l"), _td("–", -1)]
        else:
            sat = [_td(f"about {s.at.users} users ({run_link(s.at.run_id)})", s.at.users, "l"),
                   _num_td(s.at.rps, fmt_rps)]
        rows.append("<tr>" + "".join([_td(esc(c.variant)), _td(c.replicas, c.replicas), *cap, *sat]) + "</tr>")
    return table(head, rows, left=("variant", "kind", "at", "saturation"))


def _ci_td(est: Estimate | None, fmt, wide: bool) -> str:
    if est is None:
        return _td("–", -1) + _td("–", -1)
    ci = "–" if est.low is None else f"{fmt(est.low)} – {fmt(est.high)}"
    cv = "" if est.cv is None else f" (CV {fmt_pct(est.cv)})"
    return _td(fmt(est.mean), round(est.mean, 6), "bad" if wide else "") + _td(ci + cv, est.cv or 0,
                                                                              "bad" if wide else "")


def points_section(records: list[RunRecord]) -> str:
    """Per grid point over its repeats: mean and 95% CI of req/s, p50, p95 and the spread flag."""
    head = ["point", "valid / runs", "req/s mean", "req/s 95% CI", "p50 ms mean", "p50 95% CI", "p95 ms mean",
            "p95 95% CI", "spread", "runs"]
    rows = []
    for s in analysis.point_stats(records):
        links = ", ".join(run_link(i) for i in s.run_ids)
        note = s.spread_note or ("ok" if s.n > 1 else "–")
        cls = ' class="excluded"' if not s.n else ' class="wide"' if s.flagged else ""
        rows.append(f'<tr id="{point_anchor(s)}"{cls}>' + "".join([
            _td(esc(s.name), s.name), _td(f"{s.n} / {len(s.run_ids)}", s.n, "bad" if s.n < len(s.run_ids) else ""),
            _ci_td(s.rps, fmt_rps, "req/s" in s.wide), _ci_td(s.p50, fmt_ms, "p50" in s.wide),
            _ci_td(s.p95, fmt_ms, "p95" in s.wide),
            _td(esc(note), 1 if s.flagged else 0, "bad l" if s.flagged else "l"), _td(links, cls="runs"),
        ]) + "</tr>")
    return table(head, rows, left=("point", "spread", "runs"))


def point_anchor(s: PointStats) -> str:
    return "point-" + re.sub(r"[^A-Za-z0-9_.-]", "-", s.name)


def repeats_html(records: list[RunRecord]) -> str:
    """The section on repeats: only when some grid point was run more than once, else nothing."""
    if not analysis.has_repeats(records):
        return ""
    stats = analysis.point_stats(records)
    wide = [s for s in stats if s.flagged]
    return f"""
<h2 id="repeats">Repeats: mean and 95% confidence interval per grid point</h2>
<p>Each grid point was run up to {max(len(s.run_ids) for s in stats)} times. Only its valid repeats count: the
charts, scaling, speedups, capacity and conclusions use their <b>mean</b>, and the charts draw its 95% confidence
interval as a bar. CI = mean ± t<sub>0.975, n−1</sub> × s / √n (Student t, s the standard deviation of the n valid
repeats); a point with one valid repeat has no interval. <b>Wide spread</b> (highlighted): the coefficient of
variation s / mean of req/s, p50 or p95 over the valid repeats is above {fmt_pct(analysis.SPREAD_CV)} (a
latency spread under {format_number(analysis.LATENCY_RESOLUTION_MS)} ms, Locust's resolution, is not counted).
{len(wide)} of {len(stats)} grid points {"is" if len(wide) == 1 else "are"} flagged. Per point in
<code>points.csv</code>; per run in <code>summary.csv</code>.</p>
{points_section(records)}
"""


def scaling_table(records: list[RunRecord]) -> str:
    rows = []
    for variant, items in analysis.scaling(records).items():
        for s in items:
            rows.append("<tr>" + "".join([
                _td(esc(variant)), _td(s.replicas, s.replicas), _num_td(s.peak.rps, fmt_rps),
                _td(f"{s.ratio:.2f}x", s.ratio), _td(fmt_pct(s.efficiency), s.efficiency,
                                                     "bad" if s.efficiency < 0.7 else ""),
                _td(run_link(s.peak.run_id) + f" ({s.peak.users} users)", s.peak.users, "l"),
            ]) + "</tr>")
    if not rows:
        return '<p class="nodata">No valid runs, so no scaling figures.</p>'
    head = ["variant", "replicas", "peak req/s", "× smallest", "efficiency", "run"]
    return table(head, rows, left=("variant", "run"))


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1320px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.meta, .small { color: #555; } .small { font-size: .85em; }
ul.conclusions li { margin: .35em 0; } ul.conclusions li.note { color: #555; }
.evidence { font-size: .85em; color: #666; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1em; }
.charts figure { margin: 0; border: 1px solid #eee; padding: .3em; }
svg.chart { width: 100%; max-width: 760px; height: auto; display: block; font-size: 12px; }
svg .ctitle { font-weight: 600; font-size: 14px; } svg .grid { stroke: #eee; } svg .axis { stroke: #999; }
svg .frame { fill: none; stroke: #bbb; } svg .ytick { text-anchor: end; fill: #444; }
svg .xtick, svg .xlabel { text-anchor: middle; fill: #444; } svg .ylabel { text-anchor: middle; fill: #444; }
svg .legend { fill: #222; } svg .empty { text-anchor: middle; fill: #999; font-size: 16px; }
.scroll { max-height: min(70vh, 36em); overflow: auto; border: 1px solid #ddd; max-width: 100%; }
table { border-collapse: collapse; font-size: .85em; }
td, th { border: 1px solid #ddd; padding: .22em .45em; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; position: sticky; top: 0; z-index: 1; }
td:first-child, th:first-child, td.verdict, td.runs, td.l, th.l { text-align: left; }
td.verdict { white-space: normal; min-width: 14em; }
table.runs th { white-space: normal; vertical-align: bottom; } td.l, td.runs { white-space: normal; min-width: 8em; }
tr.excluded { background: #fdecec; } tr:target { outline: 2px solid #f28e2b; background: #fff4e0; }
td.good { color: #1a7f37; } td.bad { color: #b42318; }
tr.wide { background: #fff4e0; } ul.conclusions li.warning { color: #8a4b00; }
.badge { display: inline-block; background: #b42318; color: #fff; border-radius: 3px; padding: 0 .35em;
         font-size: .85em; font-weight: 600; }
svg .ci { opacity: .8; } svg .notetext { font-weight: 600; font-size: 11px; }
.notmeasured { background: #fff4e0; border-left: 4px solid #f28e2b; padding: .3em .6em; margin: .3em 0; }
p.answer { font-size: 1.15em; } #answer table td.l, #answer table th.l { text-align: left; }
.nodata { background: #f6f6f6; padding: .6em; border-left: 4px solid #bbb; }
.filter { margin: .4em 0; }
"""

SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.getAttribute('data-v');
    if (v !== null && v !== '' && !isNaN(v)) { return [0, parseFloat(v)]; }
    return [1, cell.textContent.toLowerCase()];
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.style.cursor = 'pointer';
      th.title = 'click to sort';
      th.addEventListener('click', function () {
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var dir = th.getAttribute('data-dir') === 'asc' ? -1 : 1;
        th.setAttribute('data-dir', dir === 1 ? 'asc' : 'desc');
        rows.sort(function (a, b) {
          var x = key(a.cells[i]), y = key(b.cells[i]);
          if (x[0] !== y[0]) { return x[0] - y[0]; }
          return (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0) * dir;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  var runs = document.querySelector('table.runs');
  if (runs) {
    var input = document.createElement('input');
    input.type = 'search';
    input.placeholder = 'filter runs, e.g. gpu/2_, invalid, open loop or probe';
    input.size = 40;
    var box = document.createElement('div');
    box.className = 'filter';
    box.appendChild(input);
    runs.parentNode.parentNode.insertBefore(box, runs.parentNode);
    input.addEventListener('input', function () {
      var q = input.value.toLowerCase();
      Array.prototype.forEach.call(runs.tBodies[0].rows, function (r) {
        r.style.display = r.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
      });
    });
  }
})();
"""


def _figures(charts: list[str]) -> str:
    return '<div class="charts">' + "".join(f"<figure>{c}</figure>" for c in charts) + "</div>"


def index_html(records: list[RunRecord], latency_target_ms: float = DEFAULT_LATENCY_TARGET_MS,
               target_source: str = "", capacity_search: str = "", answer: str = "",
               capacity_stacks: list[dict] = ()) -> str:
    """The comparison page; `capacity_search` is the open-loop capacity search's section, if one ran, and
    `capacity_stacks` its results (capacity.json's stacks), labelled on the offered-rate chart."""
    usable = [r for r in records if analysis.usable(r)]
    present = analysis.variants(records)
    dims = axes_text(records)
    several_spawn = len({r.spawn_rate for r in records if run_kind(r) == "closed"}) > 1
    conclusions = "\n".join(conclusion_html(c) for c in analysis.conclusions(records, latency_target_ms))
    repeats = analysis.has_repeats(records)
    unit = "grid point (the mean of its valid repeats)" if repeats else "run"
    spawn_note = (f"Several spawn rates were run: at each (variant, replicas, users) the curves use the valid {unit} "
                  "with the highest throughput; every run is in the table at the bottom." if several_spawn else
                  f"One spawn rate was run, so each curve point is one {unit}.")
    if repeats:
        spawn_note += " Bars on the curves are 95% confidence intervals over the repeats."
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>loadgrid results</title>
<style>{CSS}</style></head><body>
<h1>loadgrid results</h1>
<p class="meta">{len(records)} runs ({len(usable)} valid) — {esc(dims)}. Latency target:
{fmt_ms(latency_target_ms)} ms{esc(target_source)}. Built from the run records stored in this folder; rebuild with
<code>python orchestrate.py report FOLDER</code>.</p>

{answer}
<h2 id="conclusions">Conclusions</h2>
<ul class="conclusions">
{conclusions}
</ul>
<p class="small">Only valid, completed runs feed the charts, speedups, capacity and conclusions; invalid and
failed runs are listed in the <a href="#runs">run table</a> with the reason, highlighted in red. {esc(spawn_note)}
Points in the charts link to their run; hover for the numbers.</p>

<h2 id="throughput">Throughput vs users</h2>
{_figures(users_charts(records, "rps"))}

<h2 id="latency">Latency vs users</h2>
{_figures(users_charts(records, "p50") + users_charts(records, "p95", latency_target_ms))}
<p class="small">{"Charts of one measure share their y scale across variants. " if len(present) > 1 else ""}The
dashed red line is the p95 target.</p>

<h2 id="offered">Latency and throughput vs offered rate (open loop)</h2>
{offered_section(records, latency_target_ms, capacity_stacks)}

<h2 id="scaling">Scaling with replicas</h2>
<div class="charts"><figure>{scaling_chart(records)}</figure><div>{scaling_table(records)}
<p class="small">Peak = the highest valid throughput at that replica count over every user count and spawn rate.
Scaling efficiency = RPS(N) / (N/N<sub>0</sub> × RPS(N<sub>0</sub>)), N<sub>0</sub> the smallest replica count
run (normally 1); 100% is linear. The dotted lines are linear scaling from N<sub>0</sub>.</p></div></div>

<h2 id="speedup">CPU vs GPU</h2>
{speedup_section(records)}

<h2 id="capacity">Capacity and saturation</h2>
<p>Capacity: the highest open-loop arrival rate a stack size held with p95 under {fmt_ms(latency_target_ms)} ms
when open-loop runs measured it, else the highest closed-loop throughput of a valid run whose p95 stayed under it
(lower confidence); the same figure as in the answer and the conclusions.
Saturation: the smallest user count after which throughput never again rose by
{fmt_pct(analysis.SATURATION_GAIN)} or more (on the curve above).</p>
{capacity_section(records, latency_target_ms)}
{capacity_search}
{repeats_html(records)}
<h2 id="runs">All runs</h2>
<p class="small">Each run links to its Locust report (with the stack's telemetry added below Locust's own
charts). Window: the measurement window the figures cover (from when every user was spawned, after the
warm-up, to the end). Locust CPU: the load generator's mean CPU over the window, as a share of the cores it may
use; a run where it was the bottleneck is marked <span class="badge">client-bound</span> and is invalid.
Bottleneck: what limited the run, judged from its telemetry over the window (hover for the figures and what was
checked): a failing replica, the generator, the host (every core busy: the machine's ceiling, in red), the
replicas or the gateway at their CPU limit, none found, or unknown (not recorded). Click a column heading to
sort.</p>
{runs_table(records)}
<script>{SCRIPT}</script>
</body></html>
"""


def axes_text(records: list[RunRecord]) -> str:
    """The axes that were run, each kind on its own: the users grid only from closed-loop runs (open-loop runs
    and probes carry their Locust process count as users, which is no axis anyone asked for)."""
    by_kind = {k: [r for r in records if run_kind(r) == k] for k in KINDS}
    parts = [", ".join(analysis.variants(records)) or "no variant", f"replicas {_list({r.models for r in records})}"]
    if by_kind["closed"] or not records:
        parts += [f"users {_list({r.users for r in by_kind['closed']})}",
                  f"spawn rates {_list({r.spawn_rate for r in by_kind['closed']}, format_number)}"]
    if by_kind["open"]:
        parts.append(f"open loop: {_list({analysis.arrival_rate(r) for r in by_kind['open']}, format_number)} req/s")
    if by_kind["probe"]:
        n = len(by_kind["probe"])
        parts.append(f"capacity search: {n} probe{'s' if n != 1 else ''}")
    return "; ".join(parts)


def _list(values: set, fmt=str) -> str:
    return ", ".join(fmt(v) for v in sorted(values)) or "none"


def latency_target(output_dir: Path, latency_target_ms: float | None = None) -> tuple[float, str]:
    """The target and where it came from: the argument, then `<output>/session.json`, then 500 ms."""
    if latency_target_ms is not None:
        return float(latency_target_ms), " (from config.yaml)"
    try:
        value = json.loads((output_dir / SESSION_FILE).read_text()).get("latency_target_ms")
    except (OSError, ValueError, AttributeError):
        value = None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value), f" (from {SESSION_FILE})"
    return DEFAULT_LATENCY_TARGET_MS, " (default; set latency_target_ms in config.yaml)"


def write_all(output_dir: Path, latency_target_ms: float | None = None,
              plan_for: tuple[float | None, dict[str, float]] | None = None) -> list[Path]:
    """summary.csv, index.html, points.csv and answer.json; `plan_for`: (expected_rps, cost_per_replica), else
    as session.json stored them."""
    records = store.load_all(output_dir)
    target, source = latency_target(output_dir, latency_target_ms)
    written = []
    search = capacity.section_html(output_dir) if (output_dir / "capacity.json").exists() else ""
    expected_rps, cost = answer_mod.settings(output_dir) if plan_for is None else plan_for
    found = answer_mod.build(records, target, expected_rps, cost)
    written_answer = answer_mod.write(output_dir, found)
    page = index_html(records, target, source, capacity_search=search,
                      answer=answer_mod.section_html(found, run_link),
                      capacity_stacks=capacity.read(output_dir)["stacks"])
    for name, text in (("summary.csv", summary_csv(records)), ("index.html", page),
                       ("points.csv", points_csv(records))):
        store.write_atomic(output_dir / name, text)
        written.append(output_dir / name)
    run_page.annotate_all(output_dir)
    return written + [written_answer]
