"""A run's own report: Locust's HTML (`<stem>.html`), with what the stack did during the run added below it.

`annotate` inserts one self-contained section (inline CSS, inline SVG, no script, nothing fetched) just before
the last `</body>` of Locust's file, between `<!-- loadgrid:begin -->` and `<!-- loadgrid:end -->`:
CPU % and memory of every container over time with the measurement window marked, GPU utilisation, memory and
power when sampled (else why not), the window's totals beside the whole run's, the load generator's CPU, the
incidents (exit code, OOM, last log lines) and the verdict. Re-annotating replaces the section, so
`annotate_all` (called when the reports are rebuilt) can run any number of times. Only stored files are read.
"""

from __future__ import annotations

import html
import json
import math
import re
from datetime import datetime
from pathlib import Path

from . import bottleneck, store
from .errors import UserError
from .store import RunRecord

BEGIN = "<!-- loadgrid:begin -->"
END = "<!-- loadgrid:end -->"
_SECTION = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
_LAST_BODY = re.compile(r"</body\s*>(?!.*</body\s*>)", re.S | re.I)

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#b07aa1", "#9c755f", "#ff9da7", "#edc948",
           "#bab0ac"]
EVENT_COLOR = "#d62728"
W, H = 600, 260
ML, MR, MT, MB = 56, 172, 30, 42
PW, PH = W - ML - MR, H - MT - MB
MAX_POINTS = 600  # per line: longer series are reduced to the min and max of each time bucket


def esc(value) -> str:
    return html.escape(str(value))


# --- inserting ----------------------------------------------------------------------------------------------

def strip(text: str) -> str:
    """Locust's page without a section added earlier."""
    return _SECTION.sub("", text)


def insert(text: str, section: str) -> str:
    """`section` just before the last `</body>` (Locust's bundle has `</body>` inside a script too)."""
    text = strip(text)
    block = f"{BEGIN}\n{section}\n{END}\n"
    match = _LAST_BODY.search(text)
    if match is None:
        return text + ("" if text.endswith("\n") else "\n") + block
    return text[:match.start()] + block + text[match.start():]


def annotate(html_path: Path, record: RunRecord, telemetry_series: dict | None) -> None:
    """Add (or replace) the run's telemetry section in its Locust report, atomically (untouched when unchanged)."""
    text = Path(html_path).read_text(encoding="utf-8")
    new = insert(text, section(record, telemetry_series))
    if new != text:
        store.write_atomic(Path(html_path), new)


def annotate_all(output_dir: Path) -> list[Path]:
    """Re-annotate every run's Locust report from its stored record and time series; returns the pages done.

    Runs without a report (failed before Locust wrote one), without telemetry, or with an unreadable record
    are skipped or annotated with what there is; nothing here fails the rebuild of the reports.
    """
    done = []
    for path in store.record_paths(Path(output_dir)) if Path(output_dir).is_dir() else []:
        try:
            record = store.load(path)
        except UserError:
            continue
        page = path.parent / (record.files.get("html") or f"{path.stem}.html")
        if not page.is_file():
            continue
        series_path = path.parent / (record.files.get("telemetry") or f"{path.stem}.telemetry.json")
        try:
            series = json.loads(series_path.read_text())
        except (OSError, ValueError):
            series = None
        try:
            annotate(page, record, series if isinstance(series, dict) else None)
        except (OSError, UnicodeDecodeError):
            continue
        done.append(page)
    return done


# --- the section --------------------------------------------------------------------------------------------

CSS = """
#loadgrid-run { all: initial; display: block; box-sizing: border-box; background: #fff; color: #222;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; padding: 1em 1.5em 2em;
  border-top: 3px solid #4e79a7; margin-top: 1em; }
#loadgrid-run * { box-sizing: border-box; }
#loadgrid-run h2 { font-size: 1.35em; margin: .2em 0 .3em; font-weight: 600; }
#loadgrid-run h3 { font-size: 1.1em; margin: 1.3em 0 .4em; font-weight: 600; border-bottom: 1px solid #ddd;
  padding-bottom: .15em; }
#loadgrid-run p { margin: .4em 0; } #loadgrid-run .small { font-size: .85em; color: #555; }
#loadgrid-run table { border-collapse: collapse; font-size: .9em; margin: .3em 0; }
#loadgrid-run td, #loadgrid-run th { border: 1px solid #ddd; padding: .2em .5em; text-align: right;
  white-space: nowrap; vertical-align: top; }
#loadgrid-run th { background: #f4f4f4; font-weight: 600; }
#loadgrid-run td.l, #loadgrid-run th.l { text-align: left; white-space: normal; }
#loadgrid-run .verdict { padding: .5em .8em; border-left: 5px solid; margin: .5em 0; }
#loadgrid-run .verdict.ok { border-color: #1a7f37; background: #eef8f0; }
#loadgrid-run .verdict.bad { border-color: #b42318; background: #fdecec; }
#loadgrid-run .badge { display: inline-block; background: #b42318; color: #fff; border-radius: 3px;
  padding: 0 .35em; font-size: .85em; font-weight: 600; }
#loadgrid-run ul { margin: .3em 0; padding-left: 1.4em; }
#loadgrid-run pre { background: #f6f6f6; border: 1px solid #e4e4e4; padding: .4em; margin: .2em 0;
  font: 12px/1.35 ui-monospace, monospace; white-space: pre-wrap; max-height: 14em; overflow: auto; }
#loadgrid-run .charts { display: flex; flex-wrap: wrap; gap: 1em; }
#loadgrid-run .charts svg.tchart { flex: 1 1 480px; }
#loadgrid-run .side { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
#loadgrid-run .nodata { background: #f6f6f6; padding: .5em .7em; border-left: 4px solid #bbb; }
#loadgrid-run svg.tchart { width: 100%; max-width: 600px; height: auto; display: block; font-size: 12px;
  border: 1px solid #eee; background: #fff; }
#loadgrid-run svg text { font-family: system-ui, sans-serif; }
#loadgrid-run svg .ctitle { font-weight: 600; font-size: 14px; fill: #222; }
#loadgrid-run svg .grid { stroke: #eee; } #loadgrid-run svg .frame { fill: none; stroke: #bbb; }
#loadgrid-run svg .ytick { text-anchor: end; fill: #444; }
#loadgrid-run svg .xtick, #loadgrid-run svg .xlabel, #loadgrid-run svg .ylabel { text-anchor: middle; fill: #444; }
#loadgrid-run svg .legend { fill: #222; } #loadgrid-run svg .empty { text-anchor: middle; fill: #999; }
#loadgrid-run svg .window { fill: #e8f3ea; } #loadgrid-run svg .mark { font-size: 11px; fill: #2f6b3a; }
"""


def section(record: RunRecord, series: dict | None) -> str:
    t0, t_end = _time_range(record, series)
    parts = [f'<section id="loadgrid-run" aria-label="loadgrid: the stack during this run"><style>{CSS}</style>',
             f"<h2>loadgrid: {esc(record.id)} — what the stack did during this run</h2>",
             f'<p class="small">{esc(record.variant)}, {record.models} replica{"s" if record.models != 1 else ""}, '
             f"{record.users} users, spawn rate {record.spawn_rate:g}/s, run time {record.run_time_s} s"
             f"{f', repeat {record.repeat}' if record.repeat > 1 else ''}; {esc(record.started_at)} → "
             f"{esc(record.ended_at)}. Locust's figures above cover the measurement window only.</p>",
             _verdict(record), _bottleneck(record),
             "<h3>Measurement window and whole run</h3>", _totals(record),
             "<h3>Load generator</h3>", _generator(record, t0, t_end),
             "<h3>Container telemetry</h3>", _containers(record, series, t0, t_end),
             "<h3>GPU telemetry</h3>", _gpus(record, series, t0, t_end),
             "<h3>Incidents</h3>", _incidents(record, t0),
             "<h3>Replicas</h3>", _replicas(record),
             "</section>"]
    return "\n".join(parts)


def _verdict(record: RunRecord) -> str:
    v = record.validity
    badge = ' <span class="badge">client-bound</span>' if v.client_bound else ""
    if record.status != "completed":
        head = f"{esc(record.status)}: {esc(record.error or 'no measurement')}"
    else:
        head = "valid" if v.valid else "invalid"
    reasons = "".join(f"<li>{esc(r)}</li>" for r in v.reasons)
    ok = record.status == "completed" and v.valid
    # Checks that could not be made are part of the verdict: "valid" says nothing about them.
    unjudged = "".join(f"<li>{esc(u)}</li>" for u in v.unjudged)
    return (f'<div class="verdict {"ok" if ok else "bad"}"><b>Verdict: {head}</b>{badge}'
            + (f"<ul>{reasons}</ul>" if reasons else "")
            + (f'<p class="small">Not judged:</p><ul class="unjudged">{unjudged}</ul>' if unjudged else "")
            + "</div>")


def _bottleneck(record: RunRecord) -> str:
    """What limited the run, with the figures, and every check made (bottleneck.diagnose)."""
    limit = bottleneck.of(record)
    note = (" This is the machine's ceiling, not the stack's: more replicas on this host cannot raise it."
            if limit["kind"] == "host" else "")
    checked = "".join(f"<li>{esc(c)}</li>" for c in limit.get("checked") or [])
    return (f"<p><b>Bottleneck: {esc(limit['kind'])}</b> — {esc(limit['detail'])}.{note}</p>"
            + (f'<details class="small"><summary>What was checked</summary><ul>{checked}</ul></details>'
               if checked else ""))


def _num(value, digits: int = 1) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        text = f"{value:.{digits}f}"
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def _totals(record: RunRecord) -> str:
    load = record.load
    if load is None:
        return '<p class="nodata">No measurement: Locust produced no totals for this run.</p>'
    window, whole = load.window or {}, load.whole_run or {}
    wl, hl = load.latency_ms or {}, whole.get("latency_ms") or {}
    rows = [("duration s", load.duration_s, whole.get("duration_s")),
            ("requests", load.requests, whole.get("requests")),
            ("failures", load.failures, whole.get("failures")), ("req/s", load.rps, whole.get("rps"))]
    rows += [(f"{q} ms", wl.get(q), hl.get(q)) for q in ("p50", "p90", "p95", "p99", "max", "mean")]
    body = "".join(f'<tr><th class="l">{esc(name)}</th><td>{_num(a, 2 if name == "req/s" else 1)}</td>'
                   f'<td>{_num(b, 2 if name == "req/s" else 1)}</td></tr>' for name, a, b in rows)
    table = ('<table><thead><tr><th class="l"></th><th>measurement window</th><th>whole run (with ramp-up)</th>'
             f"</tr></thead><tbody>{body}</tbody></table>")
    if not window:
        where = "This record has no measurement window: its figures cover the whole run."
    elif window.get("start_at") is None:
        where = ("No measurement window: users were still spawning when the run ended, so no steady state was "
                 "measured and the figures are the whole run's.")
    else:
        where = "The window opened when every user was spawned"
        if window.get("warmup_s"):
            where += f" and a {_num(window['warmup_s'])} s warm-up had passed"
        where += f" (at {_clock(window['start_at'])}"
        if window.get("spawn_complete_at"):
            where += f"; spawning completed at {_clock(window['spawn_complete_at'])}"
        if window.get("end_at"):
            where += (f"), and lasted {_num(window.get('duration_s') or load.duration_s)} s to the end of the run "
                      f"({_clock(window['end_at'])}); req/s = requests / that span, measured "
                      f"({window.get('bounds', 'window bounds')}). ")
        else:
            where += (f"), and lasted {_num(window.get('duration_s') or load.duration_s)} s to the last request. ")
        where += "The whole run adds the ramp-up and warm-up back."
    if not whole:
        where += " The whole run's totals were not recorded."
    if window.get("latency_from") == "exact":
        where += (" Latencies are exact per-request times (0.1% buckets); Locust's own rounded figures: p50 "
                  f"{_num((load.latency_locust_ms or {}).get('p50'))} ms, p95 "
                  f"{_num((load.latency_locust_ms or {}).get('p95'))} ms.")
    return (f'<div class="side">{table}<p class="small" style="max-width:32em">{esc(where)}</p></div>'
            + _open_loop_latency(load))


def _open_loop_latency(load) -> str:
    """Open loop: latency from the actual send beside latency from the intended send (the slot), as wrk2 does."""
    loop = getattr(load, "open_loop", None) or {}
    intended = loop.get("latency_intended_ms") or {}
    if not intended:
        return ""
    actual, late = load.latency_ms or {}, loop.get("send_late_ms") or {}
    qs = ("p50", "p95", "p99", "max")
    head = "".join(f"<th>{q} ms</th>" for q in qs)
    rows = [("latency from the actual send", actual), ("from the intended send (includes generator lateness)",
                                                       intended)]
    body = "".join(f'<tr><th class="l">{esc(name)}</th>' + "".join(f"<td>{_num(v.get(q))}</td>" for q in qs)
                   + "</tr>" for name, v in rows)
    note = (f"Sends left their slots {_num(late.get('p50'), 2)} ms late at the median, {_num(late.get('p99'), 2)} ms "
            f"at p99 and {_num(late.get('max'))} ms at most." if late else "")
    return (f'<table><thead><tr><th class="l">open loop</th>{head}</tr></thead><tbody>{body}</tbody></table>'
            f'<p class="small" style="max-width:32em">{esc(note)}</p>')


def _clock(t: float | None) -> str:
    if not t:
        return "?"
    return datetime.fromtimestamp(t).astimezone().strftime("%H:%M:%S")


def _generator(record: RunRecord, t0: float = 0.0, t_end: float = 1.0) -> str:
    gen = (record.load.generator if record.load else None) or {}
    if not gen or gen.get("cpu_pct_mean") is None:
        return '<p class="nodata">No load-generator CPU was recorded for this run.</p>'
    cores = gen.get("cores") or 1
    text = (f"Locust ran as {gen.get('processes', cores)} process{'es' if gen.get('processes', 1) != 1 else ''} on "
            f"up to {cores} core{'s' if cores != 1 else ''}; over the window its CPU was "
            f"<b>{_num(gen.get('cpu_pct_mean'))}%</b> on average and {_num(gen.get('cpu_pct_max'))}% at most, "
            f"as a share of those cores ({gen.get('samples', '?')} samples about once a second).")
    if gen.get("locust_cpu_warning"):
        text += " Locust itself warned that its CPU usage was above 90%."
    if gen.get("cpu_ms_per_request") is not None:
        text += (f" It spent {_num(gen['cpu_ms_per_request'])} ms of CPU per request, so a response arriving together"
                 f" with all the others of its process could wait up to {_num(gen.get('self_delay_worst_ms'))} ms"
                 " inside Locust (compare with the latencies above).")
    loop = getattr(record.load, "open_loop", None) or {}
    if loop:
        text += (f" Open loop ({esc(loop.get('arrival', '?'))}): intended {_num(loop.get('intended_rate'))} req/s, "
                 f"sent {_num(loop.get('achieved_rate'))} req/s; {_num(loop.get('late', 0))} requests late, "
                 f"{_num(loop.get('dropped', 0))} dropped.")
    lag = gen.get("lag_ms") or {}
    if lag:
        per = lag.get("per_process") or []
        worst = max(per, key=lambda p: p.get("p99") or 0) if len(per) > 1 else None
        text += (f" Its event loop's lag (how late it woke when it asked to every {_num(lag.get('interval_ms'))} ms;"
                 " every response arriving meanwhile is timestamped that much late): p50 "
                 f"<b>{_num(lag.get('p50'), 2)} ms</b>, p99 <b>{_num(lag.get('p99'), 2)} ms</b>, max "
                 f"{_num(lag.get('max'), 2)} ms over {lag.get('samples', '?')} wake-ups"
                 + (f"; worst process p99 {_num(worst.get('p99'), 2)} ms" if worst else "") + ".")
    else:
        text += " Its event loop's lag was not measured."
    if record.validity.client_bound:
        text += (' <span class="badge">client-bound</span> The load generator, not the stack, was the bottleneck: '
                 "this run's numbers are invalid.")
    else:
        text += " Its CPU and lag stayed under the client-bound limits."
    chart = ""
    cpu_series = [(t, v) for t, v in gen.get("cpu_series") or []]
    lag_series = [(t + 0.5, v) for t, v in lag.get("series") or []]  # each second's worst, drawn mid-second
    if cpu_series or lag_series:
        times = [t for t, _ in cpu_series + lag_series]
        lo, hi = min([t0, *times]), max([t_end, *times])
        window = _window_span(record, hi)
        chart = ('<div class="charts">'
                 + time_chart("Locust CPU", "% of its cores", [("CPU", cpu_series)], lo, hi, window, (), 10.0)
                 + time_chart("Locust event-loop lag (worst per second)", "ms", [("lag", lag_series)], lo, hi,
                              window, (), 1.0) + "</div>")
    return f"<p>{text}</p>{chart}"


# --- charts ---------------------------------------------------------------------------------------------

def _time_range(record: RunRecord, series: dict | None) -> tuple[float, float]:
    times = []
    for samples in ((series or {}).get("containers") or {}).values():
        times += [s[0] for s in samples if isinstance(s, (list, tuple)) and s]
    for samples in ((series or {}).get("gpus") or {}).values():
        times += [s.get("t") for s in samples if isinstance(s, dict) and s.get("t") is not None]
    window = (record.load.window if record.load else None) or {}
    marks = [window.get("spawn_complete_at"), window.get("start_at")]
    if isinstance(window.get("start_at"), (int, float)) and window.get("duration_s"):
        marks.append(window["start_at"] + window["duration_s"])
    times += [t for t in marks if isinstance(t, (int, float))]
    if not times:
        return 0.0, 1.0
    return min(times), max(times)


def nice_step(span: float, ticks: int = 5) -> float:
    raw = max(span, 1e-9) / ticks
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


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


def time_chart(title: str, unit: str, lines: list[tuple[str, list[tuple[float, float]]]], t0: float, t_end: float,
               window: tuple[float, float] | None = None, events: list[tuple[float, str]] = (),
               y_floor: float = 1.0) -> str:
    """An inline SVG chart of values over time (s since `t0`), the measurement window shaded, events marked."""
    span = max(t_end - t0, 1.0)
    values = [v for _, pts in lines for _, v in pts]
    y_top_raw = max(values + [y_floor])
    step = nice_step(y_top_raw)
    top = step * max(1, math.ceil(y_top_raw / step - 1e-9))

    def px(t: float) -> float:
        return ML + min(max((t - t0) / span, 0.0), 1.0) * PW

    def py(v: float) -> float:
        return MT + PH - min(max(v / top, 0.0), 1.0) * PH

    out = [f'<svg class="tchart" role="img" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg" '
           f'aria-label="{esc(title)}"><title>{esc(title)}</title>',
           f'<text x="{ML}" y="19" class="ctitle">{esc(title)}</text>']
    if window is not None:
        x1, x2 = px(window[0]), px(window[1])
        out.append(f'<rect x="{x1:.1f}" y="{MT}" width="{max(x2 - x1, 0.5):.1f}" height="{PH}" class="window">'
                   f"<title>measurement window</title></rect>")
    for i in range(round(top / step) + 1):
        y = py(i * step)
        out.append(f'<line x1="{ML}" x2="{ML + PW}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{ML - 6}" y="{y + 4:.1f}" class="ytick">{round(i * step, 6):g}</text>')
    xstep = nice_step(span, 6)
    k = 0
    while k * xstep <= span + 1e-9:
        x = px(t0 + k * xstep)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{MT + PH}" y2="{MT + PH + 4}" stroke="#999"/>')
        out.append(f'<text x="{x:.1f}" y="{MT + PH + 16}" class="xtick">{round(k * xstep, 6):g}</text>')
        k += 1
    out.append(f'<rect x="{ML}" y="{MT}" width="{PW}" height="{PH}" class="frame"/>')
    out.append(f'<text x="{ML + PW / 2:.1f}" y="{H - 8}" class="xlabel">seconds since the first sample</text>')
    out.append(f'<text transform="translate(15 {MT + PH / 2:.1f}) rotate(-90)" class="ylabel">{esc(unit)}</text>')
    if window is not None:
        x = px(window[0])
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{MT}" y2="{MT + PH}" stroke="#2f6b3a" stroke-width="1.5" '
                   f'stroke-dasharray="5 3"/><text x="{x + 3:.1f}" y="{MT + 12}" class="mark">window start</text>')
    for t, label in events:
        x = px(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{MT}" y2="{MT + PH}" stroke="{EVENT_COLOR}" '
                   f'stroke-width="1.5"><title>{esc(label)}</title></line>')
    legend = []
    for i, (label, pts) in enumerate(lines):
        color = PALETTE[i % len(PALETTE)]
        pts = reduce(sorted(pts))
        if not pts:
            continue
        d = " ".join(f"{'M' if j == 0 else 'L'}{px(t):.1f} {py(v):.1f}" for j, (t, v) in enumerate(pts))
        out.append(f'<path class="tseries" d="{d}" stroke="{color}" fill="none" stroke-width="1.6"/>')
        if len(pts) == 1:
            out.append(f'<circle cx="{px(pts[0][0]):.1f}" cy="{py(pts[0][1]):.1f}" r="2.5" fill="{color}"/>')
        legend.append((label, color))
    if not legend:
        out.append(f'<text x="{ML + PW / 2:.1f}" y="{MT + PH / 2:.1f}" class="empty">no samples</text>')
    lx = ML + PW + 10
    if events:
        legend.append((f"container event ({len(events)})", EVENT_COLOR))
    for i, (label, color) in enumerate(legend[:12]):
        y = MT + 8 + i * 17
        short = label if len(label) <= 22 else label[:10] + "…" + label[-11:]
        out.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="2"/>'
                   f'<text x="{lx + 23}" y="{y + 4}" class="legend">{esc(short)}<title>{esc(label)}</title></text>')
    if len(legend) > 12:
        out.append(f'<text x="{lx}" y="{MT + 8 + 12 * 17 + 4}" class="legend">+{len(legend) - 12} more</text>')
    out.append("</svg>")
    return "\n".join(out)


def _window_span(record: RunRecord, t_end: float) -> tuple[float, float] | None:
    """From the window's start to its last request (or the last sample when its length is unknown)."""
    window = (record.load.window if record.load else None) or {}
    start = window.get("start_at")
    if not isinstance(start, (int, float)):
        return None
    duration = window.get("duration_s") or (record.load.duration_s if record.load else 0.0)
    return start, start + duration if duration else max(start, t_end)


def _events(series: dict | None) -> list[tuple[float, str]]:
    out = []
    for e in (series or {}).get("events") or []:
        if isinstance(e, dict) and isinstance(e.get("time"), (int, float)):
            code = f", exit code {e['exit_code']}" if e.get("exit_code") is not None else ""
            out.append((e["time"], f"{e.get('name') or e.get('container', '?')}: {e.get('action', '?')}{code}"))
    return out


def _containers(record: RunRecord, series: dict | None, t0: float, t_end: float) -> str:
    containers = (series or {}).get("containers") or {}
    summary = (record.telemetry or {}).get("containers") or {}
    out = []
    if series is None:
        out.append('<p class="nodata">No telemetry time series stored for this run (no telemetry file beside '
                   "the record).</p>")
    elif not containers:
        out.append('<p class="nodata">No container samples were recorded during this run.</p>')
    else:
        window, events = _window_span(record, t_end), _events(series)
        prefix = f"{record.stack.project}-"
        names = sorted(containers)
        labels = {n: n[len(prefix):] if all(m.startswith(prefix) for m in names) else n for n in names}
        cpu = [(labels[n], [(s[0], s[1]) for s in containers[n] if len(s) >= 3]) for n in names]
        host_cores = ((record.telemetry or {}).get("host") or {}).get("cores")
        if series.get("host") and host_cores:  # in the same unit (one core = 100%): what the containers competed for
            cpu.append((f"host, all {host_cores} cores", [(s[1], s[2] * host_cores) for s in series["host"]]))
        mem = [(labels[n], [(s[0], s[2] / 2**20) for s in containers[n] if len(s) >= 3]) for n in names]
        out.append('<div class="charts">'
                   + time_chart("CPU per container", "% of one core", cpu, t0, t_end, window, events, 10.0)
                   + time_chart("Memory per container", "MiB", mem, t0, t_end, window, events, 10.0) + "</div>")
        shown = (f" (names without the project prefix <code>{esc(prefix)}</code>)"
                 if labels[names[0]] != names[0] else "")
        out.append('<p class="small">Sampled from Docker\'s stats stream about once a second for every container '
                   f"of the stack{shown} (100% = one full core; memory without reclaimable page cache, as "
                   "<code>docker stats</code>). Shaded: the measurement window; red lines: container events.</p>")
    if summary:
        rows = "".join(
            f'<tr><td class="l">{esc(name)}</td><td>{s.get("samples", "–")}</td><td>{_num(s.get("cpu_pct_mean"))}'
            f'</td><td>{_num(s.get("cpu_pct_max"))}</td><td>{_num(s.get("mem_mb_mean"))}</td>'
            f'<td>{_num(s.get("mem_mb_max"))}</td><td>{_num(s.get("cpu_limit_cores"))}</td></tr>'
            for name, s in sorted(summary.items()))
        out.append('<table><thead><tr><th class="l">container</th><th>samples</th><th>CPU % mean</th>'
                   "<th>CPU % max</th><th>memory MiB mean</th><th>memory MiB max</th><th>CPU limit, cores</th>"
                   f"</tr></thead><tbody>{rows}</tbody></table>")
    out.append(_host(record))
    return "\n".join(out)


def _host(record: RunRecord) -> str:
    telemetry = record.telemetry or {}
    host = telemetry.get("host") or {}
    if host.get("cpu_pct_mean") is None:
        why = telemetry.get("host_absent") or "not recorded"
        return f'<p class="small">Host CPU: {esc(why)}.</p>'
    return (f'<p class="small">Host CPU (every process on the machine, from /proc/stat): {_num(host["cpu_pct_mean"])}% '
            f'of its {host.get("cores")} cores on average, {_num(host.get("cpu_pct_max"))}% at most, over the '
            f'{esc(host.get("interval", "whole run"))} ({host.get("samples")} samples; 100% = every core busy). '
            "CPU limit: what each container may use (none set: the host's cores).</p>")


def _gpus(record: RunRecord, series: dict | None, t0: float, t_end: float) -> str:
    gpus = (series or {}).get("gpus") or {}
    summary = (record.telemetry or {}).get("gpus") or {}
    if not gpus and not summary:
        reason = (record.telemetry or {}).get("gpu_absent") or (
            "not a GPU run" if record.variant != "gpu" else "no GPU samples were recorded")
        return f'<p class="nodata">no GPU telemetry: {esc(reason)}</p>'
    out = []
    if gpus:
        window, events = _window_span(record, t_end), _events(series)

        def lines(key: str, scale: float = 1.0):
            return [(f"GPU {index}: {(samples[0].get('name') if samples else '') or '?'}",
                     [(s["t"], s[key] * scale) for s in samples if s.get(key) is not None and s.get("t") is not None])
                    for index, samples in sorted(gpus.items())]

        out.append('<div class="charts">'
                   + time_chart("GPU utilisation", "%", lines("util_pct"), t0, t_end, window, events, 10.0)
                   + time_chart("GPU memory used", "MiB", lines("mem_used_mb"), t0, t_end, window, events, 10.0)
                   + time_chart("GPU power", "W", lines("power_w"), t0, t_end, window, events, 10.0) + "</div>")
        out.append('<p class="small">Sampled from NVML about once a second.</p>')
    if summary:
        rows = "".join(
            f'<tr><td class="l">{esc(i)}</td><td class="l">{esc(s.get("name") or "?")}</td>'
            f'<td>{s.get("samples", "–")}</td><td>{_num(s.get("util_pct_mean"))}</td><td>{_num(s.get("util_pct_max"))}'
            f'</td><td>{_num(s.get("mem_used_mb_mean"))}</td><td>{_num(s.get("mem_used_mb_max"))}</td>'
            f'<td>{_num(s.get("power_w_mean"))}</td><td>{_num(s.get("power_w_max"))}</td></tr>'
            for i, s in sorted(summary.items()))
        out.append('<table><thead><tr><th class="l">GPU</th><th class="l">name</th><th>samples</th>'
                   "<th>util % mean</th><th>util % max</th><th>memory MiB mean</th><th>memory MiB max</th>"
                   f"<th>power W mean</th><th>power W max</th></tr></thead><tbody>{rows}</tbody></table>")
    return "\n".join(out)


def _incidents(record: RunRecord, t0: float) -> str:
    if not record.incidents:
        return "<p>No replica died, was OOM-killed, restarted or turned unhealthy during the run.</p>"
    rows = []
    for i in record.incidents:
        when = f"{i.at - t0:.1f} s" if t0 and i.at else _clock(i.at)
        logs = "\n".join(i.last_logs) if i.last_logs else "(no log lines)"
        oom = "yes" if i.oom_killed else "no" if i.oom_killed is not None else "?"
        rows.append(f'<tr><td class="l">{esc(i.name)}<br><span class="small">{esc(i.container)}</span></td>'
                    f'<td class="l">{esc(i.action)}</td><td>{esc(when)}</td><td>{_num(i.exit_code)}</td>'
                    f'<td>{oom}</td><td class="l"><pre>{esc(logs)}</pre></td></tr>')
    return ('<table><thead><tr><th class="l">replica</th><th class="l">what happened</th><th>at</th>'
            '<th>exit code</th><th>OOM-killed</th><th class="l">last log lines</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def _replicas(record: RunRecord) -> str:
    reps = record.stack.replicas
    if not reps and not record.stack.replicas_expected:
        target = getattr(record, "target", None)
        return f"<p>No compose stack: the load went to {esc(target or record.host)} as it is.</p>"
    head = (f"<p>{record.stack.replicas_seen} of {record.stack.replicas_expected} replicas running and healthy at "
            f"the end of the run.</p>")
    if not reps:
        return head
    rows = "".join(
        f'<tr><td class="l">{esc(r.name)}</td><td class="l">{esc(r.status)}</td><td class="l">{esc(r.health or "–")}'
        f'</td><td>{r.restart_count}</td><td class="l">{esc(r.provider or "–")}</td>'
        f'<td class="l">{esc(r.device_name or r.device or "–")}</td><td>{_num(r.requests_served)}</td></tr>'
        for r in reps)
    return head + ('<table><thead><tr><th class="l">replica</th><th class="l">status</th><th class="l">health</th>'
                   '<th>restarts</th><th class="l">provider</th><th class="l">device</th><th>requests served</th>'
                   f"</tr></thead><tbody>{rows}</tbody></table>")
