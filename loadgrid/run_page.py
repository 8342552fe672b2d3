"""A run's own report: Locust's HTML (`<stem>.html`), with what the stack did during the run added below it.

`annotate` inserts one self-contained section (inline CSS, inline SVG, no script, nothing fetched; laid out by
`templates/run_section.html.j2` from the plain data built here) just before
the last `</body>` of Locust's file, between `<!-- loadgrid:begin -->` and `<!-- loadgrid:end -->`:
CPU % and memory of every container over time with the measurement window marked, GPU utilisation, memory and
power when sampled (else why not), the window's totals beside the whole run's, the load generator's CPU, the
incidents (exit code, OOM, last log lines) and the verdict. Re-annotating replaces the section, so
`annotate_all` (called when the reports are rebuilt) can run any number of times. Only stored files are read.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from pathlib import Path

from . import bottleneck, store, templating
from .charts import MAX_POINTS, reduce, time_chart  # noqa: F401 (the run page's series reduction, tested here)
from .errors import UserError
from .store import OpenLoop, RunRecord, Telemetry, WholeRun, Window
from .templating import Piece, parts

BEGIN = "<!-- loadgrid:begin -->"
END = "<!-- loadgrid:end -->"
_SECTION = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
_LAST_BODY = re.compile(r"</body\s*>(?!.*</body\s*>)", re.S | re.I)


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
            series = json.loads(series_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            series = None
        try:
            annotate(page, record, series if isinstance(series, dict) else None)
        except (OSError, UnicodeDecodeError):
            continue
        done.append(page)
    return done


# --- the section: plain data for templates/run_section.html.j2 ----------------------------------------------

def _m(name: str, view) -> str:
    return templating.macro("run_section.html.j2", name, view)


def section(record: RunRecord, series: dict | None) -> str:
    t0, t_end = _time_range(record, series)
    return _m("section", {
        "id": record.id, "head": _head_text(record), "verdict": _verdict_view(record),
        "bottleneck": _bottleneck_view(record), "totals": _totals_view(record),
        "generator": _generator_view(record, t0, t_end), "containers": _containers_view(record, series, t0, t_end),
        "gpus": _gpus_view(record, series, t0, t_end), "incidents": _incidents_view(record, t0),
        "replicas": _replicas_view(record)})


def _head_text(record: RunRecord) -> str:
    models, users, spawn = _count(record.models), _count(record.users), _number(record.spawn_rate)
    repeat = _count(record.repeat) or 1
    return (f"{record.variant}, {_num(models)} replica{'s' if models != 1 else ''}, {_num(users)} users, spawn rate "
            f"{'–' if spawn is None else f'{spawn:g}'}/s, run time {_num(_count(record.run_time_s))} s"
            f"{f', repeat {repeat}' if repeat > 1 else ''}; {record.started_at} → {record.ended_at}. Locust's figures "
            "above cover the measurement window only.")


def _verdict_view(record: RunRecord) -> dict:
    v = record.validity
    if record.status != "completed":
        head = f"{record.status}: {record.error or 'no measurement'}"
    else:
        head = "valid" if v.valid else "invalid"
    # Checks that could not be made are part of the verdict: "valid" says nothing about them.
    return {"ok": record.status == "completed" and v.valid, "head": head, "client_bound": bool(v.client_bound),
            "reasons": [str(r) for r in v.reasons], "unjudged": [str(u) for u in v.unjudged]}


def _verdict(record: RunRecord) -> str:
    return _m("verdict", _verdict_view(record))


def _bottleneck_view(record: RunRecord) -> dict:
    """What limited the run, with the figures, and every check made (bottleneck.diagnose)."""
    limit = bottleneck.of(record)
    return {"kind": limit.kind or "unknown", "detail": limit.detail or "", "host": limit.kind == "host",
            "checked": [str(c) for c in limit.checked]}


def _number(value) -> float | None:
    """A record's number, None for anything else (a string where a number belongs is shown as a dash)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value, digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        text = f"{value:.{digits}f}"
        return text[:-2] if text.endswith(".0") else text
    return str(int(value))


def _totals_view(record: RunRecord) -> dict | None:
    load = record.load
    if load is None:
        return None
    window, whole = load.window, load.whole_run or WholeRun()
    wl, hl = load.latency_ms or {}, whole.latency_ms
    rows = [("duration s", load.duration_s, whole.duration_s), ("requests", load.requests, whole.requests),
            ("failures", load.failures, whole.failures), ("req/s", load.rps, whole.rps)]
    rows += [(f"{q} ms", wl.get(q), hl.get(q)) for q in ("p50", "p90", "p95", "p99", "max", "mean")]
    return {"rows": [(name, _num(a, 2 if name == "req/s" else 1), _num(b, 2 if name == "req/s" else 1))
                     for name, a, b in rows],
            "where": _where(load, window, load.whole_run), "open_loop": _open_loop_view(load)}


def _where(load, window: Window | None, whole: WholeRun | None) -> str:
    """Which span the figures cover, in words."""
    if window is None:
        where = "This record has no measurement window: its figures cover the whole run."
    elif window.start_at is None:
        where = ("No measurement window: users were still spawning when the run ended, so no steady state was "
                 "measured and the figures are the whole run's.")
    else:
        where = "The window opened when every user was spawned"
        if window.warmup_s:
            where += f" and a {_num(window.warmup_s)} s warm-up had passed"
        where += f" (at {_clock(window.start_at)}"
        if window.spawn_complete_at:
            where += f"; spawning completed at {_clock(window.spawn_complete_at)}"
        if window.end_at:
            where += (f"), and lasted {_num(window.duration_s or load.duration_s)} s to the end of the run "
                      f"({_clock(window.end_at)}); req/s = requests / that span, measured "
                      f"({window.bounds or 'window bounds'}). ")
        else:
            where += (f"), and lasted {_num(window.duration_s or load.duration_s)} s to the last request. ")
        where += "The whole run adds the ramp-up and warm-up back."
    if not whole:
        where += " The whole run's totals were not recorded."
    if window is not None and window.latency_from == "exact":
        where += (" Latencies are exact per-request times (0.1% buckets); Locust's own rounded figures: p50 "
                  f"{_num((load.latency_locust_ms or {}).get('p50'))} ms, p95 "
                  f"{_num((load.latency_locust_ms or {}).get('p95'))} ms.")
    return where


def _totals(record: RunRecord) -> str:
    return _m("totals", _totals_view(record))


def _open_loop_view(load) -> dict | None:
    """Open loop: latency from the actual send beside latency from the intended send (the slot), as wrk2 does."""
    loop = load.open_loop or OpenLoop()
    intended = loop.latency_intended_ms
    if not intended:
        return None
    actual, late = load.latency_ms or {}, loop.send_late_ms
    qs = ("p50", "p95", "p99", "max")
    rows = [("latency from the actual send", actual),
            ("from the intended send (includes generator lateness)", intended)]
    note = (f"Sends left their slots {_num(late.get('p50'), 2)} ms late at the median, {_num(late.get('p99'), 2)} ms "
            f"at p99 and {_num(late.get('max'))} ms at most." if late else "")
    return {"head": [f"{q} ms" for q in qs], "rows": [(name, [_num(v.get(q)) for q in qs]) for name, v in rows],
            "note": note}


def _clock(t: float | None) -> str:
    if not _number(t):
        return "?"
    return datetime.fromtimestamp(t).astimezone().strftime("%H:%M:%S")


def _generator_view(record: RunRecord, t0: float = 0.0, t_end: float = 1.0) -> dict | None:
    gen = record.load.generator if record.load else None
    if gen is None or gen.cpu_pct_mean is None:
        return None
    cores = _count(gen.cores) or 1
    procs = _count(gen.processes) or cores
    samples = _count(gen.samples)
    if gen.mode == "distributed":
        text: list = [f"Locust ran as a master here (it runs no users) with {len(gen.workers)} worker"
                      f"{'s' if len(gen.workers) != 1 else ''} (below); over the window the master's CPU was ",
                      Piece(f"{_num(gen.cpu_pct_mean)}%", "b"), f" of its core on average and "
                      f"{_num(gen.cpu_pct_max)}% at most ({'?' if samples is None else samples} samples)."]
    else:
        text = [f"Locust ran as {procs} process{'es' if procs != 1 else ''} on up to {cores} "
                f"core{'s' if cores != 1 else ''}; over the window its CPU was ",
                Piece(f"{_num(gen.cpu_pct_mean)}%", "b"),
                f" on average and {_num(gen.cpu_pct_max)}% at most, as a share of those cores "
                f"({'?' if samples is None else samples} samples about once a second)."]
    if gen.locust_cpu_warning:
        text.append(" Locust itself warned that its CPU usage was above 90%.")
    if gen.cpu_ms_per_request is not None:
        text.append(f" It spent {_num(gen.cpu_ms_per_request)} ms of CPU per request, so a response arriving "
                    f"together with all the others of its process could wait up to "
                    f"{_num(gen.self_delay_worst_ms)} ms inside Locust (compare with the latencies above).")
    loop = record.load.open_loop
    if loop is not None:
        text.append(f" Open loop ({loop.arrival or '?'}): intended {_num(loop.intended_rate)} req/s, "
                    f"sent {_num(loop.achieved_rate)} req/s; {_num(loop.late or 0)} requests late, "
                    f"{_num(loop.dropped or 0)} dropped.")
    lag = gen.lag_ms
    if lag is not None:
        per = [p for p in lag.per_process if isinstance(p, dict)]
        worst = max(per, key=lambda p: _number(p.get("p99")) or 0) if len(per) > 1 else None
        wakeups = _count(lag.samples)
        whose = "The workers' event loops' lag (how late each woke" if gen.mode == "distributed" \
            else "Its event loop's lag (how late it woke"
        text += [f" {whose} when it asked to every {_num(lag.interval_ms)} ms;"
                 " every response arriving meanwhile is timestamped that much late): p50 ",
                 Piece(f"{_num(lag.p50, 2)} ms", "b"), ", p99 ", Piece(f"{_num(lag.p99, 2)} ms", "b"),
                 f", max {_num(lag.max, 2)} ms over {'?' if wakeups is None else wakeups} wake-ups"
                 + (f"; worst process p99 {_num(worst.get('p99'), 2)} ms" if worst else "") + "."]
    else:
        text.append(" Its event loop's lag was not measured.")
    if record.validity.client_bound:
        text += [" ", Piece("client-bound", "badge"), " The load generator, not the stack, was the bottleneck: "
                 "this run's numbers are invalid."]
    else:
        text.append(" Its CPU and lag stayed under the client-bound limits." if gen.mode != "distributed" else
                    " The master's and every worker's CPU and lag stayed under the client-bound limits.")
    charts_ = []
    cpu_series = _pairs(gen.cpu_series)
    lag_series = [(t + 0.5, v) for t, v in _pairs(lag.series if lag else [])]  # each second's worst, drawn mid-second
    if cpu_series or lag_series:
        times = [t for t, _ in cpu_series + lag_series]
        lo, hi = min([t0, *times]), max([t_end, *times])
        window = _window_span(record, hi)
        # Distributed: the CPU measured here is the master's, the lag is the workers' (each measures its own).
        who_cpu, who_lag = ("Locust master", "Locust workers'") if gen.mode == "distributed" else ("Locust", "Locust")
        charts_ = [time_chart(f"{who_cpu} CPU", "% of its cores", [("CPU", cpu_series)], lo, hi, window, (), 10.0),
                   time_chart(f"{who_lag} event-loop lag (worst per second)", "ms", [("lag", lag_series)], lo, hi,
                              window, (), 1.0)]
    return {"text": parts(text), "charts": charts_, **_workers_view(gen)}


def _workers_view(gen) -> dict:
    """The workers' table (each as it measured itself over its window) and the master's reconciliation."""
    rows = [(w.name or w.id or "?", w.hostname or "?", (w.container or "")[:12], _num(w.users), _num(w.requests),
             _num(w.failures), _num(w.cpu_pct_mean), _num(w.cpu_pct_max), _num(w.lag_p99_ms, 2),
             _num(w.lag_over_limit)) for w in gen.workers]
    dist = gen.distributed
    note = ""
    if dist is not None:
        note = (f"Workers expected {_num(dist.expected)}, joined {_num(dist.joined)}, reported their final counts "
                f"{_num(dist.reported)}. The master counted {_num(dist.master_requests)} requests in the window, "
                f"the workers {_num(dist.workers_requests)} (tolerance {_num(dist.tolerance)}): "
                + ("reconciled." if dist.reconciled else "NOT reconciled: statistics were lost."))
        if dist.missing:
            note += f" No final counts from: {', '.join(dist.missing)}."
    return {"workers": rows, "workers_note": note}


def _pairs(values) -> list[tuple[float, float]]:
    """(time, value) pairs of a stored series; anything else in it is left out."""
    out = []
    for item in values or []:
        if isinstance(item, (list, tuple)) and len(item) >= 2:
            t, v = _number(item[0]), _number(item[1])
            if t is not None and v is not None:
                out.append((t, v))
    return out


# --- time ranges and series ---------------------------------------------------------------------------------

def _time_range(record: RunRecord, series: dict | None) -> tuple[float, float]:
    times = []
    for samples in ((series or {}).get("containers") or {}).values():
        times += [s[0] for s in samples or [] if isinstance(s, (list, tuple)) and s]
    for samples in ((series or {}).get("gpus") or {}).values():
        times += [s.get("t") for s in samples or [] if isinstance(s, dict)]
    window = (record.load.window if record.load else None) or Window()
    start, duration = _number(window.start_at), _number(window.duration_s)
    times += [window.spawn_complete_at, start, start + duration if start is not None and duration else None]
    times = [t for t in map(_number, times) if t is not None]
    if not times:
        return 0.0, 1.0
    return min(times), max(times)


def _window_span(record: RunRecord, t_end: float) -> tuple[float, float] | None:
    """From the window's start to its last request (or the last sample when its length is unknown)."""
    window = (record.load.window if record.load else None) or Window()
    start = _number(window.start_at)
    if start is None:
        return None
    duration = _number(window.duration_s) or (_number(record.load.duration_s) if record.load else 0.0)
    return start, start + duration if duration else max(start, t_end)


def _events(series: dict | None) -> list[tuple[float, str]]:
    out = []
    for e in (series or {}).get("events") or []:
        if isinstance(e, dict) and _number(e.get("time")) is not None:
            code = f", exit code {e['exit_code']}" if e.get("exit_code") is not None else ""
            out.append((e["time"], f"{e.get('name') or e.get('container', '?')}: {e.get('action', '?')}{code}"))
    return out


def _samples(values, i: int, j: int, scale: float = 1.0) -> list[tuple[float, float]]:
    """(time, value) from columns i and j of a container's stored samples ([t, cpu %, memory bytes])."""
    out = []
    for s in values or []:
        if isinstance(s, (list, tuple)) and len(s) >= 3:
            t, v = _number(s[i]), _number(s[j])
            if t is not None and v is not None:
                out.append((t, v * scale))
    return out


def _containers_view(record: RunRecord, series: dict | None, t0: float, t_end: float) -> dict:
    containers = (series or {}).get("containers") or {}
    summary = (record.telemetry or Telemetry()).containers
    view = {"series": series is not None, "charts": [], "prefix": "", "rows": [], "host": _host_view(record)}
    if containers:
        window, events = _window_span(record, t_end), _events(series)
        prefix = f"{record.stack.project}-"
        names = sorted(containers)
        labels = {n: n[len(prefix):] if all(m.startswith(prefix) for m in names) else n for n in names}
        cpu = [(labels[n], _samples(containers[n], 0, 1)) for n in names]
        host_cores = _number((record.telemetry or Telemetry()).host.get("cores"))
        if series.get("host") and host_cores:  # in the same unit (one core = 100%): what the containers competed for
            cpu.append((f"host, all {_num(host_cores)} cores", _samples(series["host"], 1, 2, host_cores)))
        mem = [(labels[n], _samples(containers[n], 0, 2, 1 / 2**20)) for n in names]
        view["charts"] = [time_chart("CPU per container", "% of one core", cpu, t0, t_end, window, events, 10.0),
                          time_chart("Memory per container", "MiB", mem, t0, t_end, window, events, 10.0)]
        view["prefix"] = prefix if labels[names[0]] != names[0] else ""
    view["any"] = bool(containers)
    view["rows"] = [(name, _num(_count(s.get("samples"))), _num(s.get("cpu_pct_mean")), _num(s.get("cpu_pct_max")),
                     _num(s.get("mem_mb_mean")), _num(s.get("mem_mb_max")), _num(s.get("cpu_limit_cores")))
                    for name, s in sorted(summary.items()) if isinstance(s, dict)]
    return view


def _host_view(record: RunRecord) -> dict:
    telemetry = record.telemetry or Telemetry()
    host = telemetry.host
    if host.get("cpu_pct_mean") is None:
        return {"why": telemetry.host_absent or "not recorded"}
    return {"why": "", "mean": _num(host["cpu_pct_mean"]), "cores": _num(host.get("cores")),
            "max": _num(host.get("cpu_pct_max")), "interval": host.get("interval", "whole run"),
            "samples": _num(host.get("samples"))}


def _gpus_view(record: RunRecord, series: dict | None, t0: float, t_end: float) -> dict:
    gpus = (series or {}).get("gpus") or {}
    summary = (record.telemetry or Telemetry()).gpus
    if not gpus and not summary:
        reason = (record.telemetry or Telemetry()).gpu_absent or (
            "not a GPU run" if record.variant != "gpu" else "no GPU samples were recorded")
        return {"absent": reason, "charts": [], "rows": []}
    charts_ = []
    if gpus:
        window, events = _window_span(record, t_end), _events(series)

        def lines(key: str):
            return [(f"GPU {index}: {(samples[0].get('name') if samples else '') or '?'}",
                     [(s["t"], s[key]) for s in samples if isinstance(s, dict) and _number(s.get(key)) is not None
                      and _number(s.get("t")) is not None])
                    for index, samples in sorted(gpus.items())]

        charts_ = [time_chart("GPU utilisation", "%", lines("util_pct"), t0, t_end, window, events, 10.0),
                   time_chart("GPU memory used", "MiB", lines("mem_used_mb"), t0, t_end, window, events, 10.0),
                   time_chart("GPU power", "W", lines("power_w"), t0, t_end, window, events, 10.0)]
    rows = [(i, s.get("name") or "?", _num(_count(s.get("samples"))), _num(s.get("util_pct_mean")),
             _num(s.get("util_pct_max")), _num(s.get("mem_used_mb_mean")), _num(s.get("mem_used_mb_max")),
             _num(s.get("power_w_mean")), _num(s.get("power_w_max")))
            for i, s in sorted(summary.items()) if isinstance(s, dict)]
    return {"absent": "", "charts": charts_, "rows": rows}


def _incidents_view(record: RunRecord, t0: float) -> list[dict]:
    rows = []
    for i in record.incidents:
        at = _number(i.at)
        when = f"{at - t0:.1f} s" if t0 and at else _clock(at)
        oom = "yes" if i.oom_killed else "no" if i.oom_killed is not None else "?"
        rows.append({"name": i.name, "container": i.container, "action": i.action, "when": when,
                     "exit_code": _num(_count(i.exit_code)), "oom": oom,
                     "logs": "\n".join(str(x) for x in i.last_logs) if i.last_logs else "(no log lines)"})
    return rows


def _replicas_view(record: RunRecord) -> dict:
    reps = record.stack.replicas
    if not reps and not record.stack.replicas_expected:
        return {"none": getattr(record, "target", None) or record.host, "rows": []}
    return {"none": "", "seen": _num(_count(record.stack.replicas_seen)),
            "expected": _num(_count(record.stack.replicas_expected)),
            "rows": [(r.name, r.status, r.health or "–", _num(_count(r.restart_count)), r.provider or "–",
                      r.device_name or r.device or "–", _num(_count(r.requests_served))) for r in reps]}
