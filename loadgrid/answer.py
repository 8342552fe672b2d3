"""The answer: for the load the user expects, how many replicas of which variant, from the stored runs alone.

Pure over `list[RunRecord]` (valid runs only, through `sizing`); written to `<output>/answer.json`, rendered first on
index.html and said at the end of a run. How it is chosen:

- per variant, the capacity of each measured stack size is `sizing`'s one figure (open loop when measured, else the
  closed-loop peak under the target, lower confidence);
- with `expected_rps`: the smallest measured size whose capacity reaches it holds it, shown by that figure's runs;
- when none does: the largest measured capacity, and an extrapolation marked "not measured": the Universal
  Scalability Law (`usl`) fitted to the measured sizes when there are at least three, else linear from the largest
  measured size (every replica adding that size's capacity per replica: optimistic); the size it predicts is the
  next one worth measuring;
- with `cost_per_replica`: each answer costs replicas x the variant's cost; the cheapest is the lowest cost among
  the measured answers (among the extrapolations, marked so, when no variant has a measured one);
- CPU against GPU, per stack size run in both: the capacity ratio and the median p95 ratio at equal load (open-loop
  runs at the same offered rate, else closed-loop grid points at the same users and spawn rate).

answer.json: {"schema": 1, "latency_target_ms", "expected_rps" (or null), "cost_per_replica" (or null),
"variants": [{"variant", "sizes": [capacity per size], "holds" (or null), "largest", "extrapolation" (or null),
"cost" (or null)}], "cheapest" (or null), "cpu_vs_gpu": [per size], "lines": [the console lines]}.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path

from . import analysis, capacity, sizing, store, templating, usl
from .analysis import fmt_ms, fmt_rps, replicas_text
from .config import TARGET_VARIANT
from .plan import format_number
from .sizing import StackCapacity
from .store import RunRecord
from .templating import Piece, Row, Table, cell, joined, parts

FILE = "answer.json"
SCHEMA = 1
SESSION_FILE = "session.json"


def _size(c: StackCapacity, cost: float | None) -> dict:
    est = c.interval
    return {"replicas": c.replicas, "capacity_rps": None if c.rps is None else round(c.rps, 2), "kind": c.kind,
            "label": c.label, "at_least": c.at_least, "p95_ms": None if c.p95_ms is None else round(c.p95_ms, 2),
            "where": c.where, "ci_low": None if est is None or est.low is None else round(est.low, 2),
            "ci_high": None if est is None or est.high is None else round(est.high, 2), "run_ids": list(c.run_ids),
            "note": c.note, "cost": None if cost is None else round(cost * c.replicas, 6)}


def _fmt_cost(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def extrapolate(sizes: list[StackCapacity], expected_rps: float) -> dict:
    """Not measured: the size the measured capacities predict for `expected_rps` (USL with 3+ sizes, else linear)."""
    measured = sorted((c.replicas, c.rps) for c in sizes if c.rps is not None and c.replicas > 0)
    if not measured:
        return {"measured": False, "model": None, "replicas_needed": None, "predicted_rps": None,
                "next_to_measure": None, "text": "no measured size kept p95 under the target, so there is "
                                                 "nothing to extrapolate from; try a smaller load or a looser target"}
    top_n = measured[-1][0]
    out: dict = {"measured": False}
    if len({n for n, _ in measured}) >= usl.MIN_POINTS:
        f = usl.fit([(float(n), float(x)) for n, x in measured])
        needed = f.smallest_n(expected_rps)
        out.update(model="usl", lam=round(f.lam, 4), sigma=round(f.sigma, 6), kappa=round(f.kappa, 8),
                   sizes_fitted=len(measured), replicas_needed=needed,
                   predicted_rps=None if needed is None else round(f.x(needed), 2),
                   peak_replicas=None if math.isinf(f.peak_n) else round(f.peak_n, 1),
                   peak_rps=None if math.isinf(f.peak_x) else round(f.peak_x, 2))
        words = (f"Universal Scalability Law fitted to {len(measured)} measured sizes (λ {fmt_rps(f.lam)} req/s, "
                 f"contention σ {f.sigma:.3g}, coherency κ {f.kappa:.3g})")
        if needed is None:
            peak = ("" if out["peak_rps"] is None else
                    f"; its peak is {fmt_rps(f.peak_x)} req/s at about {format_number(out['peak_replicas'])} replicas")
            out["text"] = (f"{words}: no size reaches {fmt_rps(expected_rps)} req/s{peak}, so more replicas of "
                           f"this variant will not hold it")
        else:
            out["text"] = f"{words}: {replicas_text(needed)} would give about {fmt_rps(f.x(needed))} req/s"
    else:
        n, x = measured[-1]
        per = x / n
        needed = math.ceil(expected_rps / per - 1e-9)
        out.update(model="linear", from_replicas=n, from_rps=round(x, 2), replicas_needed=needed,
                   predicted_rps=round(per * needed, 2))
        out["text"] = (f"linear from the largest measured size ({replicas_text(n)}, {fmt_rps(x)} req/s, "
                       f"{fmt_rps(per)} req/s per replica; fewer than {usl.MIN_POINTS} sizes measured, so no "
                       f"scalability fit, and linear is optimistic): {replicas_text(needed)} would give about "
                       f"{fmt_rps(per * needed)} req/s")
    needed = out["replicas_needed"]
    if needed is not None:
        out["next_to_measure"] = max(needed, top_n + 1)
    else:  # no size reaches it: measuring near the predicted peak confirms the ceiling (when not measured yet)
        peak = out.get("peak_replicas")
        out["next_to_measure"] = round(peak) if peak is not None and round(peak) > top_n else None
    return out


def _p95(record: RunRecord) -> float | None:
    return capacity._probe_p95(record.load)[0]


def cpu_vs_gpu(records: list[RunRecord], caps: dict[tuple[str, int], StackCapacity]) -> list[dict]:
    """Per stack size run in both variants: GPU capacity / CPU capacity and the median GPU / CPU p95 at equal load."""
    ok = [r for r in records if analysis.usable(r)]
    open_pairs: dict[int, list[tuple[float, list[str]]]] = {}
    by_rate: dict[tuple[str, int, float], list[RunRecord]] = {}
    for r in ok:
        if analysis.arrival_rate(r):
            by_rate.setdefault((r.variant, r.models, analysis.arrival_rate(r)), []).append(r)
    for (variant, models, rate), cpu_runs in by_rate.items():
        gpu_runs = by_rate.get(("gpu", models, rate)) if variant == "cpu" else None
        if not gpu_runs:
            continue
        a = [p for p in map(_p95, cpu_runs) if p is not None]
        b = [p for p in map(_p95, gpu_runs) if p is not None]
        if a and b and statistics.fmean(a) > 0:
            open_pairs.setdefault(models, []).append((statistics.fmean(b) / statistics.fmean(a),
                                                      [r.id for r in cpu_runs + gpu_runs]))
    closed_pairs: dict[int, list[tuple[float, list[str]]]] = {}
    for s in analysis.speedups(records):
        if s.p95_ratio is not None:
            closed_pairs.setdefault(s.models, []).append((s.p95_ratio, [*s.base.ids, *s.other.ids]))
    out = []
    for models in sorted({m for v, m in caps if v == "cpu"} & {m for v, m in caps if v == "gpu"}):
        cpu, gpu = caps[("cpu", models)], caps[("gpu", models)]
        pairs, basis = ((open_pairs[models], "open loop, equal offered rate") if models in open_pairs else
                        (closed_pairs.get(models, []), "closed loop, equal users and spawn rate"))
        out.append({
            "replicas": models, "cpu_capacity_rps": cpu.rps, "gpu_capacity_rps": gpu.rps,
            "cpu_kind": cpu.kind, "gpu_kind": gpu.kind,
            "capacity_ratio": round(gpu.rps / cpu.rps, 4) if cpu.rps and gpu.rps is not None else None,
            "p95_ratio": round(statistics.median(r for r, _ in pairs), 4) if pairs else None,
            "p95_points": len(pairs), "p95_basis": basis if pairs else "",
            "run_ids": list(dict.fromkeys([*cpu.run_ids, *gpu.run_ids, *(i for _, ids in pairs for i in ids)])),
        })
    return out


def build(records: list[RunRecord], target_ms: float, expected_rps: float | None = None,
          cost_per_replica: dict[str, float] | None = None) -> dict:
    """The answer as stored in answer.json (see the module's docstring)."""
    cost_per_replica = dict(cost_per_replica or {})
    caps = sizing.stack_capacities(records, target_ms)
    by = {(c.variant, c.replicas): c for c in caps}
    entries = []
    for variant in analysis.variants([r for r in records if analysis.usable(r)]):
        sizes = [c for c in caps if c.variant == variant]
        unit = cost_per_replica.get(variant)
        held = [c for c in sizes if c.rps is not None]
        largest = max(held, key=lambda c: (c.rps, -c.replicas)) if held else None
        entry: dict = {"variant": variant, "sizes": [_size(c, unit) for c in sizes],
                       "largest": None if largest is None else _size(largest, unit),
                       "holds": None, "extrapolation": None, "cost": None}
        if expected_rps:
            hold = next((c for c in sizes if c.rps is not None and c.rps >= expected_rps), None)
            if hold is not None:
                entry["holds"] = _size(hold, unit)
                entry["cost"] = entry["holds"]["cost"]
            elif variant != TARGET_VARIANT:  # an endpoint as it is has no replica axis to extrapolate along
                entry["extrapolation"] = extrapolate(sizes, expected_rps)
                needed = entry["extrapolation"]["replicas_needed"]
                if unit is not None and needed is not None:
                    entry["extrapolation"]["cost"] = round(unit * needed, 6)
        entries.append(entry)
    answer = {"schema": SCHEMA, "latency_target_ms": target_ms, "expected_rps": expected_rps,
              "cost_per_replica": cost_per_replica or None, "variants": entries,
              "cheapest": _cheapest(entries) if expected_rps and cost_per_replica else None,
              "cpu_vs_gpu": cpu_vs_gpu(records, by)}
    answer["lines"] = lines(answer)
    return answer


def _cheapest(entries: list[dict]) -> dict | None:
    measured = [(e["cost"], e["holds"]["replicas"], e["variant"]) for e in entries
                if e["holds"] is not None and e["cost"] is not None]
    if measured:
        cost, n, variant = min(measured)
        return {"variant": variant, "replicas": n, "cost": cost, "measured": True, "of": len(measured)}
    guessed = [(e["extrapolation"]["cost"], e["extrapolation"]["replicas_needed"], e["variant"]) for e in entries
               if e["extrapolation"] and e["extrapolation"].get("cost") is not None]
    if guessed:
        cost, n, variant = min(guessed)
        return {"variant": variant, "replicas": n, "cost": cost, "measured": False, "of": len(guessed)}
    return None


# --- words -------------------------------------------------------------------------------------------------

def _cap_words(s: dict) -> str:
    at_least = "at least " if s["at_least"] else ""
    return f"{at_least}{fmt_rps(s['capacity_rps'])} req/s ({s['label']})"


def _units(n: int, variant: str) -> str:
    name = variant.upper() if variant in ("cpu", "gpu") else variant
    return f"{n} {name} replica{'s' if n != 1 else ''}"


def variant_line(answer: dict, e: dict) -> str:
    """One console line for one variant."""
    target = fmt_ms(answer["latency_target_ms"])
    v = e["variant"]
    if not answer["expected_rps"]:
        sizes = [f"{replicas_text(s['replicas'])} {_cap_words(s)}" if s["capacity_rps"] is not None
                 else f"{replicas_text(s['replicas'])} none" for s in e["sizes"]]
        return (f"answer: {v} capacity with p95 under {target} ms: " + "; ".join(sizes)
                + " (set expected_rps for the size that holds your load)")
    head = f"answer: {v}: {fmt_rps(answer['expected_rps'])} req/s with p95 under {target} ms: "
    h = e["holds"]
    if h is not None:
        cost = "" if h["cost"] is None else f"; cost {_fmt_cost(h['cost'])}"
        who = "the endpoint holds it" if v == TARGET_VARIANT else replicas_text(h["replicas"])
        return head + f"{who} ({', '.join(h['run_ids'])}, capacity {_cap_words(h)}){cost}"
    big = e["largest"]
    text = head + ("the endpoint does not hold it" if v == TARGET_VARIANT else "no measured size holds it")
    if big is not None:
        text += f"; largest measured capacity: {replicas_text(big['replicas'])}, {_cap_words(big)}"
    x = e["extrapolation"]
    if x is not None and x["replicas_needed"] is not None:
        text += (f"; not measured: {'USL fit' if x['model'] == 'usl' else 'linear from the largest size'} predicts "
                 f"{replicas_text(x['replicas_needed'])}; measure {x['next_to_measure']} replicas next")
    elif x is not None:
        text += f"; not measured: {x['text']}"
        if x["next_to_measure"] is not None:
            text += f"; measure {x['next_to_measure']} replicas next to confirm that ceiling"
    return text


def decision_words(answer: dict) -> str:
    """'300 req/s: 3 CPU replicas or 1 GPU replica (not measured: about 4); cheapest: gpu (1.20 vs 0.30)'."""
    parts = []
    for e in answer["variants"]:
        if e["holds"] is not None:
            parts.append(_units(e["holds"]["replicas"], e["variant"]))
        elif e["extrapolation"] and e["extrapolation"]["replicas_needed"] is not None:
            parts.append(f"about {_units(e['extrapolation']['replicas_needed'], e['variant'])} (not measured)")
        elif e["extrapolation"] and e["extrapolation"].get("peak_rps") is not None:
            parts.append(f"no {e['variant'].upper()} size (not measured: the fit peaks at "
                         f"{fmt_rps(e['extrapolation']['peak_rps'])} req/s)")
        else:
            parts.append(f"no {e['variant'].upper()} size measured or predicted")
    text = f"{fmt_rps(answer['expected_rps'])} req/s with p95 under {fmt_ms(answer['latency_target_ms'])} ms: " \
           + " or ".join(parts)
    cheap = answer["cheapest"]
    if cheap is not None and cheap["of"] > 1:
        others = [e for e in answer["variants"] if e["variant"] != cheap["variant"]]
        costs = [(e["cost"] if cheap["measured"] else (e["extrapolation"] or {}).get("cost")) for e in others]
        vs = ", ".join(_fmt_cost(c) for c in costs if c is not None)
        text += (f"; cheapest: {cheap['variant']} ({_fmt_cost(cheap['cost'])}{' vs ' + vs if vs else ''}"
                 f"{', not measured' if not cheap['measured'] else ''})")
    return text


def lines(answer: dict) -> list[str]:
    out = [variant_line(answer, e) for e in answer["variants"]]
    if answer["expected_rps"] and len(answer["variants"]) > 1:
        out.append("answer: " + decision_words(answer))
    for row in answer["cpu_vs_gpu"]:
        if row["capacity_ratio"] is not None:
            p95 = "" if row["p95_ratio"] is None else f", p95 at equal load {row['p95_ratio']:.2f}x"
            out.append(f"answer: GPU vs CPU at {replicas_text(row['replicas'])}: capacity "
                       f"{row['capacity_ratio']:.2f}x{p95}")
    return out


# --- storage and the page's first section ------------------------------------------------------------------

def settings(output_dir: Path) -> tuple[float | None, dict[str, float]]:
    """expected_rps and cost_per_replica as the last run stored them in session.json (None, {} when absent)."""
    try:
        data = json.loads((output_dir / SESSION_FILE).read_text())
    except (OSError, ValueError):
        return None, {}
    if not isinstance(data, dict):
        return None, {}
    rps = data.get("expected_rps")
    cost = data.get("cost_per_replica")
    rps = float(rps) if isinstance(rps, (int, float)) and not isinstance(rps, bool) and rps > 0 else None
    cost = {k: float(v) for k, v in cost.items() if isinstance(v, (int, float))} if isinstance(cost, dict) else {}
    return rps, cost


def write(output_dir: Path, answer: dict) -> Path:
    path = output_dir / FILE
    store.write_atomic(path, json.dumps(answer, indent=2) + "\n")
    return path


def stored_lines(output_dir: Path) -> list[str]:
    try:
        data = json.loads((output_dir / FILE).read_text())
    except (OSError, ValueError):
        return []
    return [str(line) for line in data.get("lines", [])] if isinstance(data, dict) else []


def _plain(run_id: str) -> Piece:
    return Piece(str(run_id))


def _runs(ids: list[str], link: Callable[[str], Piece]) -> tuple[Piece, ...]:
    return joined([link(i) for i in ids])


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _vs_row(r: dict) -> Row:
    cpu = fmt_rps(r["cpu_capacity_rps"]) if r["cpu_capacity_rps"] is not None else "–"
    gpu = fmt_rps(r["gpu_capacity_rps"]) if r["gpu_capacity_rps"] is not None else "–"
    basis = (r["p95_basis"] or "no common point") + (f" ({r['p95_points']})" if r["p95_points"] else "")
    return Row((cell(r["replicas"]), cell(cpu), cell(gpu), cell(_ratio(r["capacity_ratio"])),
                cell(_ratio(r["p95_ratio"])), cell(basis, cls="l")))


def _item(e: dict, link: Callable[[str], Piece]) -> dict:
    """One variant's line of the answer: the size that holds the load, or the largest measured and a prediction."""
    v = Piece(str(e["variant"]), "b")
    h = e["holds"]
    if h is not None:
        cost = "" if h["cost"] is None else f"; cost {_fmt_cost(h['cost'])}"
        who = "the endpoint holds it" if e["variant"] == TARGET_VARIANT else Piece(replicas_text(h["replicas"]), "b")
        return {"text": parts(v, ": ", who, f": capacity {_cap_words(h)} (p95 {fmt_ms(h['p95_ms'])} ms, "
                              f"{h['where']}; ", _runs(h["run_ids"], link), f"){cost}."), "not_measured": None}
    big = e["largest"]
    text = [v, ": no measured size holds it"]
    if big is not None:
        text += [f"; the largest measured capacity is {_cap_words(big)} at {replicas_text(big['replicas'])} (",
                 _runs(big["run_ids"], link), ")"]
    x = e["extrapolation"]
    not_measured = None
    if x is not None:
        nxt = "" if x["next_to_measure"] is None else f" Measure {x['next_to_measure']} replicas next."
        cost = "" if x.get("cost") is None else f" Cost about {_fmt_cost(x['cost'])}."
        text.append(".")
        not_measured = f"{x['text']}.{cost}{nxt}"
    return {"text": parts(text), "not_measured": not_measured}


def _size_row(e: dict, s: dict, link: Callable[[str], Piece]) -> Row:
    cap = "none" if s["capacity_rps"] is None else f"{'≥ ' if s['at_least'] else ''}{fmt_rps(s['capacity_rps'])}"
    ci = "–" if s["ci_low"] is None else f"{fmt_rps(s['ci_low'])} – {fmt_rps(s['ci_high'])}"
    note = f" ({s['note']})" if s["note"] else ""
    cost = [] if s["cost"] is None else [cell(_fmt_cost(s["cost"]))]
    return Row((cell(e["variant"]), cell(s["replicas"]), cell(cap), cell(s["label"] or "–", note, cls="l"),
                cell(ci), cell(fmt_ms(s["p95_ms"])), *cost,
                cell(f"{s['where']}: ", _runs(s["run_ids"], link) or "–", cls="l")))


def section_view(answer: dict, link: Callable[[str], Piece] = _plain) -> dict:
    """The first section of index.html as plain data (templates/sections.html.j2, `answer`): the decision, the
    capacity per size behind it, and how it is chosen. `link` makes a run id a piece (a link in the page)."""
    expected = bool(answer["expected_rps"])
    rows = [_size_row(e, s, link) for e in answer["variants"] for s in e["sizes"]]
    head = ["variant", "replicas", "capacity req/s", "kind", "95% CI", "p95 ms"] + \
        (["cost"] if answer["cost_per_replica"] else []) + ["shown by"]
    return {
        "target": fmt_ms(answer["latency_target_ms"]), "file": FILE,
        "decision": decision_words(answer) if expected else "",
        "lines": [_item(e, link) for e in answer["variants"]] if expected else [],
        "table": Table(tuple((h, h in ("kind", "shown by")) for h in head), tuple(rows)) if rows else None,
        "vs": Table(tuple((h, h == "equal load means (points)") for h in (
            "replicas", "CPU capacity", "GPU capacity", "GPU ÷ CPU capacity", "GPU ÷ CPU p95 at equal load",
            "equal load means (points)")), tuple(_vs_row(r) for r in answer["cpu_vs_gpu"]))
        if answer["cpu_vs_gpu"] else None,
    }


def section_html(answer: dict, link: Callable[[str], Piece] = _plain) -> str:
    """The answer's section on its own, as HTML."""
    return templating.macro("sections.html.j2", "answer", section_view(answer, link))
