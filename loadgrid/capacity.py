"""Capacity search: per stack size, the highest open-loop arrival rate whose p95 stays under the target.

The search is pure (`search` calls back for each probe), so it is tested without Locust or Docker:
  up:     from `start`, multiply the rate by `factor` while probes pass, up to `max`;
  down:   when `start` already fails, divide by `factor` until a probe passes;
  bisect: between the highest passing and the lowest failing rate, until they are within 5% (or 1 req/s);
never more than `steps` probes. A probe passes when its run is valid (no failed or dropped requests, the
generator kept its schedule, the stack stayed whole) and its p95 is under the target.

Every probe is an ordinary run with its own record (`<models>_cap_r<rate>`). The results go to
`<output>/capacity.json`, one entry per (variant, replicas), shaped as `Result.to_dict()`:

    {"schema": 1, "stacks": [{"variant": "cpu", "models": 2, "latency_target_ms": 500, "arrival": "constant",
      "capacity_rps": 40.0, "run_id": "cpu/2_cap_r40", "p95_ms": 310.0, "achieved_rps": 39.9,
      "lowest_failing_rps": 80.0, "limited_by": "latency", "searched_at": "...",
      "probes": [{"rate": 10.0, "run_id": "cpu/2_cap_r10", "passed": true, "p95_ms": 120.0,
                  "achieved_rps": 10.0, "throughput_rps": 10.0, "why": ""}, ...]}]}

`limited_by` says why the search stopped where it did: "latency" (the next rate's p95 was over the target),
"errors" (it failed or dropped requests, or was invalid), "generator" (Locust could not keep the schedule,
so the capacity is at least the figure), "max" (every rate up to max passed), "steps" (probes ran out),
"start" (even the lowest rate tried failed).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import CapacitySearch
from .plan import format_number
from .store import RunRecord

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


def judge_probe(record: RunRecord, target_ms: float) -> Probe:
    """Did this probe run keep p95 under the target with a valid run?"""
    load = record.load
    open_loop = load.open_loop if load else {}
    p95 = load.latency_ms.get("p95") if load else None
    probe = Probe(rate=record.arrival_rate or 0.0, run_id=record.id, passed=False, p95_ms=p95,
                  achieved_rps=open_loop.get("achieved_rate"), throughput_rps=load.rps if load else None)
    if record.status != "completed" or load is None or not load.requests:
        probe.why, probe.kind = record.error or "no request completed", "errors"
    elif not record.validity.valid:
        probe.why = "; ".join(record.validity.reasons)
        probe.kind = "generator" if record.validity.client_bound else "errors"
    elif p95 is None or p95 >= target_ms:
        probe.why, probe.kind = f"p95 {format_number(p95 or 0)} ms is not under {format_number(target_ms)} ms", \
            "latency"
    else:
        probe.passed = True
    return probe


def _round_rate(rate: float) -> float:
    return float(round(rate)) if rate >= 100 else round(rate, 1)


def search(settings: CapacitySearch, run_probe: Callable[[float], Probe], variant: str, models: int,
           target_ms: float, arrival: str = "constant") -> Result:
    """Run probes through `run_probe(rate)` and return the capacity found (at most settings.steps probes)."""
    result = Result(variant, models, target_ms, arrival)
    best: Probe | None = None  # highest passing
    worst: Probe | None = None  # lowest failing

    def probe(rate: float) -> Probe:
        nonlocal best, worst
        p = run_probe(rate)
        result.probes.append(p)
        if p.passed and (best is None or p.rate > best.rate):
            best = p
        if not p.passed and (worst is None or p.rate < worst.rate):
            worst = p
        return p

    rate = _round_rate(min(settings.start, settings.max))
    first = probe(rate)
    if first.passed:  # up
        while len(result.probes) < settings.steps and rate < settings.max:
            rate = _round_rate(min(rate * settings.factor, settings.max))
            if not probe(rate).passed:
                break
    else:  # down
        while len(result.probes) < settings.steps and rate > 0.1:
            rate = _round_rate(rate / settings.factor)
            if rate <= 0 or probe(rate).passed:
                break
    while best is not None and worst is not None and len(result.probes) < settings.steps:  # bisect
        lo, hi = best.rate, worst.rate
        if hi - lo <= max(1.0, RESOLUTION * lo):
            break
        mid = _round_rate((lo + hi) / 2)
        if not lo < mid < hi:
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
        result.limited_by = "max" if best.rate >= settings.max else "steps"
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
          "generator": "the load generator could not go faster (capacity is at least this)",
          "max": "every rate up to max passed (capacity is at least this)",
          "steps": "probes ran out before the bounds met", "start": "even the lowest rate tried failed"}


def section_html(output_dir: Path, link_prefix: str = "") -> str:
    """A self-contained <section> for the comparison report; "" when no capacity search was run."""
    stacks = read(output_dir)["stacks"]
    if not stacks:
        return ""
    esc = html.escape

    def link(run_id: str | None, text: str) -> str:
        if not run_id:
            return esc(text)
        return f'<a href="{esc(link_prefix + run_id)}.html">{esc(text)}</a>'

    rows = []
    for s in stacks:
        probes = ", ".join(
            link(p["run_id"], f"{format_number(p['rate'])}{' ✓' if p['passed'] else ' ✗'}") for p in s["probes"])
        cap = "none" if s["capacity_rps"] is None else f"{format_number(s['capacity_rps'])} req/s"
        rows.append(
            f"<tr><td>{esc(s['variant'])}</td><td>{'–' if s['variant'] == 'target' else s['models']}</td>"
            f"<td>{link(s.get('run_id'), cap)}</td><td>{'–' if s.get('p95_ms') is None else format_number(s['p95_ms'])}"
            f"</td><td>{'–' if s.get('lowest_failing_rps') is None else format_number(s['lowest_failing_rps'])}</td>"
            f"<td>{esc(LIMITS.get(s.get('limited_by', ''), s.get('limited_by', '')))}</td><td>{probes}</td></tr>")
    target = format_number(stacks[0]["latency_target_ms"])
    return (f'<section id="capacity-search"><h2>Capacity search</h2>'
            f"<p>For each stack size, the highest open-loop arrival rate whose p95 stayed under {target} ms "
            f"(✓ passed, ✗ failed; each probe links to its run).</p>"
            "<table><thead><tr><th>variant</th><th>replicas</th><th>capacity</th><th>p95 ms</th>"
            "<th>lowest failing rate</th><th>limited by</th><th>probes (req/s)</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></section>")
