"""Capacity search: per stack size, the highest open-loop arrival rate whose p95 stays under the target.

The search is pure (`search` calls back for each probe), so it is tested without Locust or Docker:
  up:     from `start`, multiply the rate by `factor` while probes pass, up to `max`;
  down:   when `start` already fails, divide by `factor` until a probe passes;
  bisect: between the highest passing and the lowest failing rate, until they are within 5% (or 1 req/s);
never more than `steps` probes. A probe passes when its run is valid (no failed or dropped requests, the
generator kept its schedule, the stack stayed whole), its p95 is under the target (from the intended send
time when recorded), and it is stable (see judge_probe). Rates are rounded once (`_round_rate`, max too)
and never probed twice, so every probe has its own run name and record.

Every probe is an ordinary run with its own record (`<models>_cap_r<rate>`). The results go to
`<output>/capacity.json`, one entry per (variant, replicas), shaped as `Result.to_dict()`:

    {"schema": 1, "stacks": [{"variant": "cpu", "models": 2, "latency_target_ms": 500, "arrival": "constant",
      "capacity_rps": 40.0, "run_id": "cpu/2_cap_r40", "p95_ms": 310.0, "achieved_rps": 39.9,
      "lowest_failing_rps": 80.0, "limited_by": "latency", "searched_at": "...",
      "probes": [{"rate": 10.0, "run_id": "cpu/2_cap_r10", "passed": true, "p95_ms": 120.0,
                  "achieved_rps": 10.0, "throughput_rps": 10.0, "why": ""}, ...]}]}

`limited_by` says why the search stopped where it did: "latency" (the next rate's p95 was over the target),
"errors" (it failed or dropped requests, or was invalid), "unstable" (it answered less than 98% of the offered
rate, or its last third's p95 grew past 1.5x the first third's + 20 ms: a queue still growing),
"generator" (Locust could not keep the schedule, so the capacity is at least the figure), "max" (every
rate up to max passed), "steps" (probes ran out), "start" (even the lowest rate tried failed).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import templating
from .config import CapacitySearch
from .plan import format_number
from .store import OpenLoop, RunRecord
from .templating import Piece, Row, Table, cell, file_link, joined

FILE = "capacity.json"
SCHEMA = 1
RESOLUTION = 0.05


@dataclass
class Probe:
    rate: float
    run_id: str
    passed: bool
    p95_ms: float | None = None
    achieved_rps: float | None = None
    throughput_rps: float | None = None
    why: str = ""
    kind: str = ""  # for a failed probe: latency, errors or generator


@dataclass
class Result:
    variant: str
    models: int
    latency_target_ms: float
    arrival: str
    capacity_rps: float | None = None
    run_id: str | None = None
    p95_ms: float | None = None
    achieved_rps: float | None = None
    lowest_failing_rps: float | None = None
    limited_by: str = ""
    searched_at: str = ""
    probes: list[Probe] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# A probe is stable when the stack served what was offered and its latency did not grow across the window.
THROUGHPUT_SHARE = 0.98  # throughput (req/s answered in the window) must reach 98% of the offered rate
# Latency trend: the last third of the window's p95 against the first third's. A queue that grows makes the
# last third slower; noise alone rarely makes it 1.5 times slower *and* 20 ms slower (the 20 ms keeps fast
# services, whose p95 of a few ms doubles on scheduling jitter, from failing on noise).
TREND_RATIO = 1.5
TREND_MARGIN_MS = 20.0


def _probe_p95(load) -> tuple[float | None, str]:
    """p95 from the intended send time (coordinated omission counted) when recorded, else from the send."""
    intended = load.open_loop.latency_intended_ms if load and load.open_loop else None
    if intended and isinstance(intended.get("p95"), (int, float)):
        return float(intended["p95"]), "p95 from the intended send time"
    p95 = load.latency_ms.get("p95") if load else None
    return p95, "p95"


def latency_trend(load) -> tuple[bool | None, str]:
    """(growing, words): is the last third's p95 over the first third's x TREND_RATIO + TREND_MARGIN_MS?
    None when the record has no usable window thirds (older records): the trend is not judged."""
    thirds = load.window_thirds if load else None
    try:
        first, last = float(thirds[0]["p95"]), float(thirds[-1]["p95"])
        if len(thirds) != 3:
            raise ValueError
    except (TypeError, KeyError, IndexError, ValueError):
        return None, "latency trend: not judged (the record has no window thirds)"
    limit = first * TREND_RATIO + TREND_MARGIN_MS
    words = (f"latency growing across the window: last third's p95 {format_number(round(last, 1))} ms is over the "
             f"first third's {format_number(round(first, 1))} ms x {format_number(TREND_RATIO)} + "
             f"{format_number(TREND_MARGIN_MS)} ms = {format_number(round(limit, 1))} ms (a queue still growing)")
    return (True, words) if last > limit else (False, "")


def judge_probe(record: RunRecord, target_ms: float) -> Probe:
    """Did this probe keep p95 under the target, stably, in a valid run? Checked in this order:
    no measurement; failed or dropped requests ("errors", before anything else: a run that lost requests is
    judged on that even when the generator was also behind); any other invalidity ("generator" when
    client-bound, else "errors"); p95 (intended-time when recorded) not under the target ("latency");
    throughput under THROUGHPUT_SHARE of the offered rate, or latency trending up ("unstable")."""
    load = record.load
    open_loop = (load.open_loop if load else None) or OpenLoop()
    p95, p95_words = _probe_p95(load)
    rate = record.arrival_rate or 0.0
    probe = Probe(rate=rate, run_id=record.id, passed=False, p95_ms=p95,
                  achieved_rps=open_loop.achieved_rate, throughput_rps=load.rps if load else None)
    if record.status != "completed" or load is None or not load.requests:
        probe.why, probe.kind = record.error or "no request completed", "errors"
        return probe
    lost = [f"{load.failures} failed requests"] if load.failures else []
    if open_loop.dropped:
        lost.append(f"{open_loop.dropped} dropped sends")
    if lost:
        reasons = "; ".join(record.validity.reasons)
        probe.why, probe.kind = " and ".join(lost) + (f" ({reasons})" if reasons else ""), "errors"
    elif not record.validity.valid:
        probe.why = "; ".join(record.validity.reasons)
        probe.kind = "generator" if record.validity.client_bound else "errors"
    elif p95 is None or p95 >= target_ms:
        probe.kind = "latency"
        probe.why = f"{p95_words} {format_number(p95 or 0)} ms is not under {format_number(target_ms)} ms"
    elif rate and load.rps < THROUGHPUT_SHARE * rate:
        probe.why = (f"throughput {format_number(round(load.rps, 2))} req/s is under {THROUGHPUT_SHARE:.0%} of the "
                     f"offered {format_number(rate)} req/s (the stack did not keep up)")
        probe.kind = "unstable"
    else:
        growing, words = latency_trend(load)
        if growing:
            probe.why, probe.kind = words, "unstable"
        else:
            probe.passed, probe.why = True, words  # "" or "latency trend: not judged (...)"
    return probe


def _round_rate(rate: float) -> float:
    """Rates as probed and named: whole req/s from 100 up, one decimal below; run names come from this value."""
    return float(round(rate)) if rate >= 100 else round(rate, 1)


def search(settings: CapacitySearch, run_probe: Callable[[float], Probe], variant: str, models: int,
           target_ms: float, arrival: str = "constant") -> Result:
    """Run probes through `run_probe(rate)` and return the capacity found (at most settings.steps probes)."""
    result = Result(variant, models, target_ms, arrival)
    best: Probe | None = None  # highest passing
    worst: Probe | None = None  # lowest failing

    top = _round_rate(settings.max)  # max as a probed rate: 150.4 -> 150, so "below max" cannot loop on 150
    tried: set[float] = set()

    def probe(rate: float) -> Probe:
        nonlocal best, worst
        tried.add(rate)
        p = run_probe(rate)
        result.probes.append(p)
        if p.passed and (best is None or p.rate > best.rate):
            best = p
        if not p.passed and (worst is None or p.rate < worst.rate):
            worst = p
        return p

    rate = min(_round_rate(settings.start), top)
    first = probe(rate)
    if first.passed:  # up
        while len(result.probes) < settings.steps and rate < top:
            rate = min(_round_rate(rate * settings.factor), top)
            if rate in tried or not probe(rate).passed:
                break
    else:  # down
        while len(result.probes) < settings.steps and rate > 0.1:
            rate = _round_rate(rate / settings.factor)
            if rate <= 0 or rate in tried or probe(rate).passed:
                break
    while best is not None and worst is not None and len(result.probes) < settings.steps:  # bisect
        lo, hi = best.rate, worst.rate
        if hi - lo <= max(1.0, RESOLUTION * lo):
            break
        mid = _round_rate((lo + hi) / 2)
        if not lo < mid < hi or mid in tried:
            break
        probe(mid)

    if best is not None:
        result.capacity_rps, result.run_id = best.rate, best.run_id
        result.p95_ms, result.achieved_rps = best.p95_ms, best.achieved_rps
    if worst is not None:
        result.lowest_failing_rps = worst.rate
    if best is None:
        result.limited_by = "start"
    elif worst is None:
        result.limited_by = "max" if best.rate >= top else "steps"
    elif worst.rate - best.rate > max(1.0, RESOLUTION * best.rate) and len(result.probes) >= settings.steps:
        result.limited_by = "steps"
    else:
        result.limited_by = worst.kind or "latency"
    return result


# --- storage and a minimal report section -------------------------------------------------------------------

def read(output_dir: Path) -> dict:
    try:
        data = json.loads((output_dir / FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {"schema": SCHEMA, "stacks": []}
    return data if isinstance(data, dict) and isinstance(data.get("stacks"), list) else {"schema": SCHEMA,
                                                                                          "stacks": []}


def write(output_dir: Path, result: Result) -> Path:
    """Add or replace the result for its (variant, replicas) in `<output>/capacity.json`."""
    from .store import write_atomic

    data = read(output_dir)
    stacks = [s for s in data["stacks"] if (s.get("variant"), s.get("models")) != (result.variant, result.models)]
    stacks.append(result.to_dict())
    stacks.sort(key=lambda s: (s.get("variant", ""), s.get("models", 0)))
    path = output_dir / FILE
    write_atomic(path, json.dumps({"schema": SCHEMA, "stacks": stacks}, indent=2) + "\n")
    return path


def summary_line(result: Result) -> str:
    who = result.variant if result.variant == "target" else f"{result.variant} x {result.models}"
    target = format_number(result.latency_target_ms)
    if result.capacity_rps is None:
        low = format_number(result.lowest_failing_rps or 0)
        return f"capacity {who}: no rate tried kept p95 under {target} ms (lowest tried {low} req/s)"
    text = f"capacity {who}: {format_number(result.capacity_rps)} req/s with p95 {format_number(result.p95_ms or 0)}" \
           f" ms under {target} ms"
    if result.lowest_failing_rps is not None:
        text += f"; {format_number(result.lowest_failing_rps)} req/s failed ({result.limited_by})"
    else:
        text += f" (limited by {result.limited_by})"
    return text + f", {len(result.probes)} probes"


LIMITS = {"latency": "p95 over the target above it", "errors": "failed or dropped requests above it",
          "unstable": "throughput under the offered rate or latency growing across the window above it",
          "generator": "the load generator could not go faster (capacity is at least this)",
          "max": "every rate up to max passed (capacity is at least this)",
          "steps": "probes ran out before the bounds met", "start": "even the lowest rate tried failed"}


def _shown(value) -> str:
    """A number of capacity.json as the page shows it; "–" for anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return format_number(value)


def section_view(output_dir: Path, link_prefix: str = "") -> dict | None:
    """The capacity search's section as plain data (templates/sections.html.j2, `capacity_search`); None when no
    capacity search was run. Each probe links to its run's page when its id is a plain relative file name; the
    numbers are cast, so whatever a shared folder's capacity.json holds reaches the page as text."""
    stacks = [s for s in read(output_dir)["stacks"] if isinstance(s, dict)]
    if not stacks:
        return None

    def link(run_id, text: str) -> Piece:
        return file_link(text, f"{link_prefix}{run_id}.html") if isinstance(run_id, str) and run_id else Piece(text)

    rows = []
    for s in stacks:
        probes = joined([link(p.get("run_id"), f"{_shown(p.get('rate'))}{' ✓' if p.get('passed') else ' ✗'}")
                         for p in s.get("probes") or [] if isinstance(p, dict)])
        cap = "none" if s.get("capacity_rps") is None else f"{_shown(s['capacity_rps'])} req/s"
        limited = s.get("limited_by", "")
        rows.append(Row((
            cell(s.get("variant")), cell("–" if s.get("variant") == "target" else _shown(s.get("models"))),
            cell(link(s.get("run_id"), cap)), cell(_shown(s.get("p95_ms"))), cell(_shown(s.get("lowest_failing_rps"))),
            cell(LIMITS.get(limited, limited) if isinstance(limited, str) else ""), cell(probes))))
    head = ("variant", "replicas", "capacity", "p95 ms", "lowest failing rate", "limited by", "probes (req/s)")
    return {"target": _shown(stacks[0].get("latency_target_ms")),
            "table": Table(tuple((h, False) for h in head), tuple(rows))}


def section_html(output_dir: Path, link_prefix: str = "") -> str:
    """The capacity search's section of the results page, as HTML; "" when no capacity search was run."""
    view = section_view(output_dir, link_prefix)
    return "" if view is None else templating.macro("sections.html.j2", "capacity_search", view)
