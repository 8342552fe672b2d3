"""Reports rendered only from stored run records: `summary.csv`, `points.csv` and `index.html` at the output's top.

Rebuilding them needs no Docker and re-runs nothing (`orchestrate.py report OUTPUT`). `index.html` is
self-contained: charts are inline SVG (`charts`), the only script (table sorting and filtering) is inline and
optional, and nothing is fetched from the network, so it opens from the file system anywhere.
The numbers come from `analysis`; this module only builds the page's data (`page_view`: plain strings, numbers and
the small dataclasses of `templating` and `charts`), which `templates/index.html.j2` lays out with autoescape on.
Rebuilding also re-annotates each run's own Locust report with its telemetry (`run_page`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from . import analysis, bottleneck, capacity, run_page, sizing, store, templating
from . import answer as answer_mod
from .analysis import Conclusion, Estimate, Point, PointStats, fmt_ms, fmt_pct, fmt_rps, replicas_text
from .charts import PALETTE, Chart, Note, Series, anchor, line_chart
from .config import TARGET_VARIANT
from .plan import format_number
from .store import Generator, RunRecord, Window
from .templating import Cell, Piece, Row, Table, cell, file_link, joined, parts

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
        gen = (r.load.generator if r.load else None) or Generator()
        window = (r.load.window if r.load else None) or Window()
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
            "generator_cpu_pct": _blank(gen.cpu_pct_mean), "generator_cores": _blank(gen.cores),
            "window_s": _blank(window.duration_s if window.start_at is not None else None),
            "warmup_s": _blank(window.warmup_s),
            "bottleneck": _blank(limit.kind), "bottleneck_detail": _blank(limit.detail),
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


# --- charts: the data of each chart (loadgrid.charts lays it out, templates/charts.svg.j2 draws it) ---------

VARIANT_COLORS = {"cpu": "#4e79a7", "gpu": "#59a14f"}
IDEAL_COLOR = "#888888"


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


def users_charts(records: list[RunRecord], metric: str, target_ms: float | None = None) -> list[Chart]:
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
        intended = (load.open_loop.latency_intended_ms if load and load.open_loop else None) or {}
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


def offered_charts(records: list[RunRecord], target_ms: float, stacks: list[dict] = ()) -> list[Chart]:
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


def scaling_chart(records: list[RunRecord]) -> Chart:
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


# --- the page's view: plain data for templates/index.html.j2 -------------------------------------------------

def run_link(run_id: str) -> Piece:
    """A run id linking to its row in the run table (the anchor keeps only safe characters)."""
    return Piece(str(run_id), "link", "#" + anchor(run_id))


def run_links(ids) -> tuple[Piece, ...]:
    return joined([run_link(i) for i in ids])


def _number(value) -> float | None:
    """A record's number as a float, None for anything else (a string where a number belongs is not shown)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


MAX_EVIDENCE = 8
SECTION_NAMES = {"speedup": "CPU vs GPU", "scaling": "scaling", "capacity": "capacity and saturation",
                 "repeats": "repeats"}


@dataclass(frozen=True)
class ConclusionView:
    kind: str
    text: tuple[Piece, ...]  # the sentence, the run ids it names linked
    evidence: tuple[Piece, ...]  # the other runs behind it ("" for none)


def conclusion_view(c: Conclusion) -> ConclusionView:
    ids = sorted(set(c.run_ids), key=len, reverse=True)
    mentioned: set[str] = set()
    text: list = []
    if ids:
        pattern = re.compile(r"(?<![\w/.])(" + "|".join(re.escape(i) for i in ids) + r")(?![\w/])")
        at = 0
        for m in pattern.finditer(c.text):
            text += [c.text[at:m.start()], run_link(m.group(1))]
            mentioned.add(m.group(1))
            at = m.end()
        text.append(c.text[at:])
    else:
        text.append(c.text)
    rest = [i for i in dict.fromkeys(c.run_ids) if i not in mentioned]
    evidence: tuple[Piece, ...] = ()
    if len(rest) > MAX_EVIDENCE and c.see:
        evidence = parts("runs: ", run_links(rest[:MAX_EVIDENCE - 2]),
                         f" and {len(rest) - MAX_EVIDENCE + 2} more (",
                         Piece(f"all in the {SECTION_NAMES.get(c.see, c.see)} table", "link",
                               "#" + re.sub(r"[^A-Za-z0-9_-]", "-", c.see)), ")")
    elif rest:
        evidence = parts("runs: ", run_links(rest))
    return ConclusionView(c.kind, parts(text), evidence)


def table(head: list[str], rows: list[Row], left: tuple[str, ...] = (), css: str = "sortable") -> Table:
    """A sortable table in a scrolling box; `left`: the headings of text columns (aligned left)."""
    return Table(tuple((h, h in left) for h in head), tuple(rows), css)


def _num_cell(value, fmt) -> Cell:
    v = _number(value)
    return cell(fmt(v) if v is not None else "–", sort=v if v is not None else -1)


def _count_cell(value) -> Cell:
    v = _count(value)
    return cell(v if v is not None else "–", sort=v if v is not None else -1)


KIND_WORDS = {"closed": "closed loop", "open": "open loop", "probe": "capacity probe"}


def verdict(record: RunRecord) -> str:
    if record.status != "completed":
        why = record.error or "; ".join(record.validity.reasons) or "no measurement"
        return f"{record.status}: {why}"
    if record.validity.valid:
        return "valid"
    return "invalid: " + "; ".join(record.validity.reasons)


def window_text(record: RunRecord) -> tuple[str, float]:
    """The measurement window of a run as shown in the table, and its sort value (its length in seconds)."""
    window = record.load.window if record.load else None
    if window is None:
        return "–", -1
    if window.start_at is None:
        return "none: still spawning at the end", 0
    duration = _number(window.duration_s) or _number(record.load.duration_s) or 0.0
    return f"{duration:.0f} s", duration


def window_note(record: RunRecord) -> str:
    """The warm-up the window began after, as the table's second line ("" for none)."""
    window = (record.load.window if record.load else None) or Window()
    warmup = _number(window.warmup_s) if window.start_at is not None else None
    return f"after {format_number(warmup)} s warm-up" if warmup else ""


def generator_cell(record: RunRecord) -> Cell:
    """The load generator's CPU over the window, its figures on hover; red when the run was client-bound."""
    gen = (record.load.generator if record.load else None) or Generator()
    mean = _number(gen.cpu_pct_mean)
    cls = "bad" if record.validity.client_bound else ""
    if mean is None:
        return cell("–", sort=-1, cls=cls)
    cores = _count(gen.cores) or 1
    top = _number(gen.cpu_pct_max)
    samples = _count(gen.samples)
    tip = (f"mean {mean:g}%, max {'?' if top is None else f'{top:g}'}% of {cores} core(s), "
           f"{'?' if samples is None else samples} samples")
    if gen.locust_cpu_warning:
        tip += "; Locust warned its CPU was above 90%"
    # the hover covers the figure and its second line
    return cell(Piece(f"{mean:.0f}%", "tip", tip=tip, small=f"of {cores} core{'s' if cores != 1 else ''}"),
                sort=mean, cls=cls)


def verdict_cell(record: RunRecord) -> Cell:
    badge = [Piece("client-bound", "badge"), " "] if record.validity.client_bound else []
    return cell(badge, verdict(record), cls="verdict")


def bottleneck_cell(record: RunRecord) -> Cell:
    """What limited the run, the figures in its tooltip; a host limit in red: it is the machine's, not the stack's."""
    limit = bottleneck.of(record)
    checked = "; ".join(limit.checked)
    kind = limit.kind or "unknown"
    tip = (limit.detail or "") + (f" — checked: {checked}" if checked else "")
    return cell(Piece(kind, "tip", tip=tip), sort=kind, cls="l bad" if kind == "host" else "l")


def runs_table(records: list[RunRecord]) -> Table:
    head = ["run", "variant", "kind", "replicas", "users", "spawn/s", "offered req/s", "requests", "failures",
            "req/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "max ms", "window", "Locust CPU", "bottleneck",
            "verdict"]
    rows = []
    for r in sorted(records, key=sort_key):
        lat = (r.load.latency_ms if r.load else None) or {}
        html_file = r.files.get("html")
        link = file_link(r.id, f"{r.variant}/{html_file}") if isinstance(html_file, str) and html_file else r.id
        kind = run_kind(r)
        if kind == "closed":
            spawn = _number(r.spawn_rate)
            load_cells = [_count_cell(r.users), cell(format_number(spawn) if spawn is not None else "–",
                                                     sort=spawn if spawn is not None else -1), cell("–", sort=-1)]
        else:  # open loop: users only count Locust processes, so they are no axis here
            procs = Piece("–", "tip", tip=f"{_count(r.users)} Locust process(es) shared the rate")
            rate = analysis.arrival_rate(r)
            load_cells = [cell(procs, sort=-1), cell("–", sort=-1), cell(format_number(rate), sort=rate)]
        cells = [cell(link, sort=r.id), cell(r.variant), cell(KIND_WORDS[kind], sort=kind, cls="l"),
                 _count_cell(r.models), *load_cells,
                 _count_cell(r.load.requests if r.load else None), _count_cell(r.load.failures if r.load else None),
                 _num_cell(r.load.rps if r.load else None, fmt_rps)]
        cells += [_num_cell(lat.get(q), fmt_ms) for q in ("p50", "p90", "p95", "p99", "max")]
        window, window_sort = window_text(r)
        note = window_note(r)
        cells.append(cell(window, Piece(note, "small") if note else None, sort=window_sort, cls="l"))
        cells += [generator_cell(r), bottleneck_cell(r), verdict_cell(r)]
        rows.append(Row(tuple(cells), anchor(r.id), "" if analysis.usable(r) else "excluded"))
    return table(head, rows, left=("run", "variant", "kind", "window", "bottleneck", "verdict"),
                 css="sortable runs")


def _change_cell(r: float | None, higher_is_better: bool) -> Cell:
    if r is None:
        return cell("–", sort=0)
    change = r - 1
    good = change > 0 if higher_is_better else change < 0
    cls = "good" if good and abs(change) >= 0.005 else "bad" if abs(change) >= 0.005 else ""
    return cell(fmt_pct(change, signed=True), sort=round(change, 6), cls=cls)


def speedup_view(records: list[RunRecord]) -> dict:
    """The CPU vs GPU section: a table, or why there is none (and whether adding gpu would give one)."""
    sp = analysis.speedups(records)
    if not sp:
        notes = [c for c in analysis._gpu_vs_cpu(records) if c.kind == "note"]
        return {"table": None, "why": notes[0].text if notes else "No CPU vs GPU comparison.",
                "add_gpu": "gpu" not in analysis.variants(records)}
    head = ["replicas", "users", "spawn/s", "CPU req/s", "GPU req/s", "throughput", "CPU p50", "GPU p50",
            "p50 change", "CPU p95", "GPU p95", "p95 change", "runs"]
    rows = []
    for s in sp:
        rows.append(Row((
            cell(s.models, sort=s.models), cell(s.users, sort=s.users),
            cell(format_number(s.spawn_rate), sort=s.spawn_rate),
            _num_cell(s.base.rps, fmt_rps), _num_cell(s.other.rps, fmt_rps),
            cell(f"{s.throughput_ratio:.2f}x", sort=round(s.throughput_ratio, 6),
                 cls="good" if s.throughput_ratio > 1.005 else "bad" if s.throughput_ratio < 0.995 else ""),
            _num_cell(s.base.p50, fmt_ms), _num_cell(s.other.p50, fmt_ms), _change_cell(s.p50_ratio, False),
            _num_cell(s.base.p95, fmt_ms), _num_cell(s.other.p95, fmt_ms), _change_cell(s.p95_ratio, False),
            cell(run_link(s.base.run_id), " vs ", run_link(s.other.run_id), cls="runs"),
        )))
    return {"table": table(head, rows, left=("runs",)), "why": "", "add_gpu": False}


def scaling_table(records: list[RunRecord]) -> Table | None:
    rows = []
    for variant, items in analysis.scaling(records).items():
        for s in items:
            rows.append(Row((
                cell(variant), cell(s.replicas, sort=s.replicas), _num_cell(s.peak.rps, fmt_rps),
                cell(f"{s.ratio:.2f}x", sort=s.ratio),
                cell(fmt_pct(s.efficiency), sort=s.efficiency, cls="bad" if s.efficiency < 0.7 else ""),
                cell(run_link(s.peak.run_id), f" ({s.peak.users} users)", sort=s.peak.users, cls="l"),
            )))
    if not rows:
        return None
    head = ["variant", "replicas", "peak req/s", "× smallest", "efficiency", "run"]
    return table(head, rows, left=("variant", "run"))


def capacity_table(records: list[RunRecord], target_ms: float) -> Table:
    sats = {(s.variant, s.replicas): s for s in analysis.saturations(records)}
    head = ["variant", "replicas", f"capacity req/s (p95 < {fmt_ms(target_ms)} ms)", "kind", "at", "p95 ms",
            "saturation", "req/s there"]
    rows = []
    for c in sizing.stack_capacities(records, target_ms):
        runs = run_links(c.run_ids)
        if c.rps is not None:
            ci = Piece(c.ci_text(), "small") if c.ci_text() else None
            cap = [cell(("≥ " if c.at_least else "") + fmt_rps(c.rps), ci, sort=c.rps), cell(c.label, cls="l"),
                   cell(runs, f" ({c.where})", cls="l"), _num_cell(c.p95_ms, fmt_ms)]
        else:
            note = (parts(f"none under target (lowest p95 {fmt_ms(c.p95_ms)} ms: ", runs, ")")
                    if c.p95_ms is not None else parts(c.note or "no p95 recorded"))
            cap = [cell("–", sort=-1, cls="bad"), cell("–", cls="l"), cell(note, cls="l"), cell("–", sort=-1)]
        s = sats.get((c.variant, c.replicas))
        if s is None or len(s.curve) < 2:
            sat = [cell("one user count only" if s else "no closed-loop curve", sort=-1, cls="l"), cell("–", sort=-1)]
        elif s.at is None:
            sat = [cell(f"not reached (still rising at {s.last.users} users)", sort=1e12, cls="l"),
                   cell("–", sort=-1)]
        else:
            sat = [cell(f"about {s.at.users} users (", run_link(s.at.run_id), ")", sort=s.at.users, cls="l"),
                   _num_cell(s.at.rps, fmt_rps)]
        rows.append(Row((cell(c.variant), cell(c.replicas, sort=c.replicas), *cap, *sat)))
    return table(head, rows, left=("variant", "kind", "at", "saturation"))


def _ci_cells(est: Estimate | None, fmt, wide: bool) -> list[Cell]:
    if est is None:
        return [cell("–", sort=-1), cell("–", sort=-1)]
    ci = "–" if est.low is None else f"{fmt(est.low)} – {fmt(est.high)}"
    cv = "" if est.cv is None else f" (CV {fmt_pct(est.cv)})"
    cls = "bad" if wide else ""
    return [cell(fmt(est.mean), sort=round(est.mean, 6), cls=cls), cell(ci + cv, sort=est.cv or 0, cls=cls)]


def point_anchor(s: PointStats) -> str:
    return "point-" + re.sub(r"[^A-Za-z0-9_.-]", "-", s.name)


def points_table(records: list[RunRecord]) -> Table:
    """Per grid point over its repeats: mean and 95% CI of req/s, p50, p95 and the spread flag."""
    head = ["point", "valid / runs", "req/s mean", "req/s 95% CI", "p50 ms mean", "p50 95% CI", "p95 ms mean",
            "p95 95% CI", "spread", "runs"]
    rows = []
    for s in analysis.point_stats(records):
        note = s.spread_note or ("ok" if s.n > 1 else "–")
        rows.append(Row((
            cell(s.name, sort=s.name), cell(f"{s.n} / {len(s.run_ids)}", sort=s.n,
                                            cls="bad" if s.n < len(s.run_ids) else ""),
            *_ci_cells(s.rps, fmt_rps, "req/s" in s.wide), *_ci_cells(s.p50, fmt_ms, "p50" in s.wide),
            *_ci_cells(s.p95, fmt_ms, "p95" in s.wide),
            cell(note, sort=1 if s.flagged else 0, cls="bad l" if s.flagged else "l"),
            cell(run_links(s.run_ids), cls="runs"),
        ), point_anchor(s), "excluded" if not s.n else "wide" if s.flagged else ""))
    return table(head, rows, left=("point", "spread", "runs"))


def repeats_view(records: list[RunRecord]) -> dict | None:
    """The section on repeats: only when some grid point was run more than once, else None."""
    if not analysis.has_repeats(records):
        return None
    stats = analysis.point_stats(records)
    return {"most": max(len(s.run_ids) for s in stats), "spread_cv": fmt_pct(analysis.SPREAD_CV),
            "resolution_ms": format_number(analysis.LATENCY_RESOLUTION_MS),
            "flagged": len([s for s in stats if s.flagged]), "points": len(stats), "table": points_table(records)}


def page_view(records: list[RunRecord], latency_target_ms: float, target_source: str, capacity_search,
              answer, capacity_stacks) -> dict:
    """Everything index.html shows, as plain data."""
    several_spawn = len({r.spawn_rate for r in records if run_kind(r) == "closed"}) > 1
    repeats = analysis.has_repeats(records)
    unit = "grid point (the mean of its valid repeats)" if repeats else "run"
    spawn_note = (f"Several spawn rates were run: at each (variant, replicas, users) the curves use the valid {unit} "
                  "with the highest throughput; every run is in the table at the bottom." if several_spawn else
                  f"One spawn rate was run, so each curve point is one {unit}.")
    if repeats:
        spawn_note += " Bars on the curves are 95% confidence intervals over the repeats."
    return {
        "runs": len(records), "valid": len([r for r in records if analysis.usable(r)]), "dims": axes_text(records),
        "target_ms": fmt_ms(latency_target_ms), "target_source": target_source, "spawn_note": spawn_note,
        "several_variants": len(analysis.variants(records)) > 1, "answer": answer,
        "conclusions": [conclusion_view(c) for c in analysis.conclusions(records, latency_target_ms)],
        "throughput": users_charts(records, "rps"),
        "latency": users_charts(records, "p50") + users_charts(records, "p95", latency_target_ms),
        "offered": offered_charts(records, latency_target_ms, capacity_stacks),
        "scaling_chart": scaling_chart(records), "scaling_table": scaling_table(records),
        "speedup": speedup_view(records), "capacity_table": capacity_table(records, latency_target_ms),
        "saturation_gain": fmt_pct(analysis.SATURATION_GAIN), "capacity_search": capacity_search,
        "repeats": repeats_view(records), "runs_table": runs_table(records),
    }


def index_html(records: list[RunRecord], latency_target_ms: float = DEFAULT_LATENCY_TARGET_MS,
               target_source: str = "", capacity_search: dict | None = None, answer: dict | None = None,
               capacity_stacks: list[dict] = ()) -> str:
    """The comparison page; `capacity_search` is the open-loop capacity search's section (capacity.section_view),
    if one ran, `answer` the answer's (answer.section_view), and `capacity_stacks` the search's results
    (capacity.json's stacks), labelled on the offered-rate chart."""
    view = page_view(records, latency_target_ms, target_source, capacity_search, answer, list(capacity_stacks))
    return templating.render("index.html.j2", **view)


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
    search = capacity.section_view(output_dir) if (output_dir / "capacity.json").exists() else None
    expected_rps, cost = answer_mod.settings(output_dir) if plan_for is None else plan_for
    found = answer_mod.build(records, target, expected_rps, cost)
    written_answer = answer_mod.write(output_dir, found)
    page = index_html(records, target, source, capacity_search=search,
                      answer=answer_mod.section_view(found, run_link),
                      capacity_stacks=capacity.read(output_dir)["stacks"])
    for name, text in (("summary.csv", summary_csv(records)), ("index.html", page),
                       ("points.csv", points_csv(records))):
        store.write_atomic(output_dir / name, text)
        written.append(output_dir / name)
    run_page.annotate_all(output_dir)
    return written + [written_answer]
