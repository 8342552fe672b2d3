"""The one chart engine of every page: geometry here (scales, ticks, paths, points as numbers), drawing in
`templates/charts.svg.j2`.

Two kinds share one drawing: `line_chart` (the results page: a measure against users, replicas or the offered
rate, linked markers, a target line, CI bars, labelled notes) and `time_chart` (a run's page: values over time,
the measurement window shaded, container events marked). Axes stay honest: y starts at 0 on a linear scale,
a log scale (x spanning a factor of 8 or more, latency when asked) says "(log scale)" in its label, values beyond
the scale are drawn at its edge.

No plotting library, on purpose: matplotlib would add numpy and tens of megabytes for a few line charts and
cannot link a point to its run's row; Vega-Lite needs its script (hundreds of kB) inlined into every page and
draws nothing without JavaScript, while a run's section in a Locust report is script-free. A page of these charts
stays one small offline file that draws with scripts off.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from markupsafe import Markup

from . import templating

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#b07aa1", "#9c755f", "#ff9da7", "#edc948",
           "#bab0ac"]
TARGET_COLOR = "#d62728"
EVENT_COLOR = "#d62728"
MAX_POINTS = 600  # per time line: longer series are reduced to the min and max of each time bucket


# --- what a chart is given ---------------------------------------------------------------------------------

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


# --- what the template draws -------------------------------------------------------------------------------

@dataclass
class Tick:
    at: float  # pixel position
    label: str | None  # None: a grid line or tick without a label (labels would overlap)


@dataclass
class Marker:
    kind: str  # "dot", "cross" or "ring" (a single-sample line's dot)
    x: float
    y: float
    r: float
    color: str
    tip: str = ""
    anchor: str = ""  # an in-page anchor (href="#..."), "" for none


@dataclass
class Line:
    """A drawn series: its path (pixel points, None for markers only) and its markers."""

    points: list[tuple[float, float]] | None
    css: str
    color: str
    dash: str
    width: float
    markers: list[Marker] = field(default_factory=list)


@dataclass
class Bar:
    x: float
    y1: float
    y2: float
    color: str


@dataclass
class NoteDraw:
    x: float
    y: float
    text_x: float
    text_y: float
    right: bool
    color: str
    text: str
    tip: str


@dataclass
class VLine:
    x: float
    tip: str


@dataclass
class LegendRow:
    y: float
    kind: str  # "line", "cross" or "text"
    color: str
    dash: str
    label: str
    tip: str = ""  # the full label when `label` is shortened


@dataclass
class Chart:
    kind: str  # "line" or "time"
    title: str
    width: int
    height: int
    ml: int
    mt: int
    pw: int
    ph: int
    yticks: list[Tick]
    xticks: list[Tick]
    xlabel: str
    ylabel: str
    legend_x: float
    legend: list[LegendRow]
    lines: list[Line] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    notes: list[NoteDraw] = field(default_factory=list)
    hline: tuple[float, str, str] | None = None  # y, color, dash
    window: tuple[float, float] | None = None  # x from, x to (the measurement window, shaded)
    events: list[VLine] = field(default_factory=list)
    empty: str = ""
    more: str = ""

    @property
    def css(self) -> str:
        return "chart" if self.kind == "line" else "tchart"


def svg(chart: Chart) -> Markup:
    """The chart as inline SVG."""
    return templating.macro("charts.svg.j2", "chart", chart)


# --- shared -------------------------------------------------------------------------------------------------

def anchor(run_id: str) -> str:
    """The in-page anchor of a run's row: only letters, digits and _.- survive, so it is safe in any href."""
    return "run-" + re.sub(r"[^A-Za-z0-9_.-]", "-", str(run_id))


def nice_step(span: float, ticks: int = 5) -> float:
    raw = max(span, 1e-9) / ticks
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def num(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.3g}"


def _finite(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


# --- line charts (the results page) -------------------------------------------------------------------------

LW, LH = 600, 340
LML, LMR, LMT, LMB = 64, 136, 34, 50
LPW, LPH = LW - LML - LMR, LH - LMT - LMB


def line_chart(title: str, series: list[Series], x_label: str, y_label: str, x_values: list[float], y_max: float,
               hline: tuple[float, str] | None = None, empty_text: str = "no valid runs",
               y_log_min: float | None = None, notes: list[Note] = (), legend_extra: list[str] = ()) -> Chart:
    """A line chart with a legend on the right: one path per series, a linked marker per point.

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
        return LML + (tx(v) - lo) / (hi - lo) * LPW

    bottom = 0.0
    if y_log_min is not None and y_log_min > 0 and y_max > y_log_min:
        bottom = 10 ** math.floor(math.log10(y_log_min))
        top = 10 ** math.ceil(math.log10(y_max))
        y_ticks = [m * 10 ** k for k in range(round(math.log10(bottom)), round(math.log10(top)) + 1)
                   for m in (1, 2, 5) if bottom <= m * 10 ** k <= top]

        def py(v: float) -> float:
            v = min(max(v, bottom), top)
            return LMT + LPH - (math.log(v) - math.log(bottom)) / (math.log(top) - math.log(bottom)) * LPH
    else:
        y_log_min = None
        step = nice_step(y_max if y_max > 0 else 1.0)
        top = step * max(1, math.ceil((y_max if y_max > 0 else 1.0) / step - 1e-9))
        y_ticks = [i * step for i in range(round(top / step) + 1)]

        def py(v: float) -> float:
            return LMT + LPH - min(v, top) / top * LPH

    yticks, last = [], 1e9
    for v in y_ticks:
        y = py(v)
        label = None
        if last - y >= 14:
            label, last = num(round(v, 6)), y
        yticks.append(Tick(y, label))
    xticks, last = [], -1e9
    for xv in xs:
        x = px(xv)
        label = None
        if x - last >= 30:
            label, last = num(xv), x
        xticks.append(Tick(x, label))
    chart = Chart("line", title, LW, LH, LML, LMT, LPW, LPH, yticks, xticks,
                  x_label + (" (log scale)" if log_x else ""), y_label + (" (log scale)" if y_log_min else ""),
                  LML + LPW + 12, [])
    legend: list[tuple[str, str, str]] = []
    if hline is not None and hline[0] <= top and (y_log_min is None or hline[0] >= bottom):
        chart.hline = (py(hline[0]), TARGET_COLOR, "6 4")
        legend.append((hline[1], TARGET_COLOR, "6 4"))
    elif hline is not None:
        legend += [(hline[1], TARGET_COLOR, "6 4"), ("(above this scale)", "", "")]
    drawn = [s for s in series if s.points]
    for s in drawn:
        for x, low, high in s.bars:
            chart.bars.append(Bar(px(x), py(max(low, 0.0)), py(min(high, top)), s.color))
    for s in drawn:
        chart.lines.append(_line(s, px, py))
        if s.legend:
            legend.append((s.label, s.color, s.dash))
    for i, n in enumerate(notes):
        cx, cy = px(n.x), py(n.y)
        right = cx > LML + LPW * 0.6  # near the right edge the text goes to the left of the point
        chart.notes.append(NoteDraw(cx, cy, cx - 8 if right else cx + 8, max(LMT + 12, cy - 10 - 14 * i), right,
                                    n.color, n.text, n.tip))
    legend += [(text, "", "") for text in legend_extra]
    if not drawn:
        chart.empty = empty_text
    for i, (label, color, dash) in enumerate(legend):
        y = LMT + 10 + i * 18
        if color:
            chart.legend.append(LegendRow(y, "line", color, dash, label))
        elif label.startswith("✕"):
            chart.legend.append(LegendRow(y, "cross", "#555", "", label[1:].strip()))
        else:
            chart.legend.append(LegendRow(y, "text", "", "", label))
    return chart


def _line(s: Series, px, py) -> Line:
    order = sorted(range(len(s.points)), key=lambda i: s.points[i][:2])
    pts = [s.points[i] for i in order]
    marks = [s.markers[i] if i < len(s.markers) else "" for i in order]
    path = None
    if s.line:
        # several points at one x (runs that share an offered rate): the line goes through their mean
        at: dict[float, list[float]] = {}
        for x, y, _, _ in pts:
            at.setdefault(x, []).append(y)
        path = [(px(x), py(sum(ys) / len(ys))) for x, ys in at.items()]
    line = Line(path, s.css, s.color, s.dash, 2)
    if s.css == "series" or not s.line:
        for (x, y, tip, run_id), mark in zip(pts, marks, strict=True):
            line.markers.append(Marker("cross" if mark == "fail" else "dot", px(x), py(y),
                                       4.5 if mark == "fail" else 3.5, s.color, tip, anchor(run_id) if run_id else ""))
    return line


# --- time charts (a run's page) -----------------------------------------------------------------------------

TW, TH = 600, 260
TML, TMR, TMT, TMB = 56, 172, 30, 42
TPW, TPH = TW - TML - TMR, TH - TMT - TMB
LEGEND_ROWS = 12


def reduce(points: list[tuple[float, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most about `limit` points: each time bucket keeps its lowest and highest sample, in time order."""
    if len(points) <= limit:
        return points
    buckets = limit // 2
    size = len(points) / buckets
    out = []
    for b in range(buckets):
        chunk = points[int(b * size):int((b + 1) * size)]
        if chunk:
            low, high = min(chunk, key=lambda p: p[1]), max(chunk, key=lambda p: p[1])
            out += sorted({low, high})
    return out


def _short(label: str) -> str:
    return label if len(label) <= 22 else label[:10] + "…" + label[-11:]


def time_chart(title: str, unit: str, lines: list[tuple[str, list[tuple[float, float]]]], t0: float, t_end: float,
               window: tuple[float, float] | None = None, events: list[tuple[float, str]] = (),
               y_floor: float = 1.0) -> Chart:
    """Values over time (s since `t0`), the measurement window shaded, events marked."""
    span = max(t_end - t0, 1.0)
    lines = [(label, [(float(t), float(v)) for t, v in pts if _finite(t) is not None and _finite(v) is not None])
             for label, pts in lines]
    values = [v for _, pts in lines for _, v in pts]
    y_top_raw = max(values + [y_floor])
    step = nice_step(y_top_raw)
    top = step * max(1, math.ceil(y_top_raw / step - 1e-9))

    def px(t: float) -> float:
        return TML + min(max((t - t0) / span, 0.0), 1.0) * TPW

    def py(v: float) -> float:
        return TMT + TPH - min(max(v / top, 0.0), 1.0) * TPH

    yticks = [Tick(py(i * step), num(round(i * step, 6))) for i in range(round(top / step) + 1)]
    xstep = nice_step(span, 6)
    xticks, k = [], 0
    while k * xstep <= span + 1e-9:
        xticks.append(Tick(px(t0 + k * xstep), num(round(k * xstep, 6))))
        k += 1
    chart = Chart("time", title, TW, TH, TML, TMT, TPW, TPH, yticks, xticks, "seconds since the first sample",
                  unit, TML + TPW + 10, [])
    if window is not None:
        chart.window = (px(window[0]), px(window[1]))
    chart.events = [VLine(px(t), label) for t, label in events]
    legend = []
    for i, (label, pts) in enumerate(lines):
        color = PALETTE[i % len(PALETTE)]
        pts = reduce(sorted(pts))
        if not pts:
            continue
        line = Line([(px(t), py(v)) for t, v in pts], "tseries", color, "", 1.6)
        if len(pts) == 1:
            line.markers.append(Marker("ring", px(pts[0][0]), py(pts[0][1]), 2.5, color))
        chart.lines.append(line)
        legend.append((label, color))
    if not legend:
        chart.empty = "no samples"
    if events:
        legend.append((f"container event ({len(events)})", EVENT_COLOR))
    for i, (label, color) in enumerate(legend[:LEGEND_ROWS]):
        chart.legend.append(LegendRow(TMT + 8 + i * 17, "line", color, "", _short(label), label))
    if len(legend) > LEGEND_ROWS:
        chart.more = f"+{len(legend) - LEGEND_ROWS} more"
    return chart
