"""Compare two sets of stored runs point by point: two output folders, or two variants of one folder.

    orchestrate.py compare OLD NEW                  every (variant, replicas, users, spawn rate) run in both
    orchestrate.py compare OUT:cpu OUT:gpu          two variants of one folder, by (replicas, users, spawn rate)
    orchestrate.py compare OLD:cpu NEW:cpu --fail-if-slower 10

A is the baseline, B the candidate. With `--fail-if-slower PCT`, B is *worse* on a point when its throughput is
lower than A's by more than PCT percent, or its p95 latency higher by more than PCT percent, or its run is
invalid or failed where A's was valid. Exit status: 0 no point worse (always 0 without the option), 1 some
point worse, 2 bad input (missing folder, unknown variant, no common grid point).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from . import analysis, store
from .analysis import Point, fmt_ms, fmt_pct, fmt_rps
from .errors import UserError
from .plan import format_number
from .store import RunRecord

_VARIANT = re.compile(r"[A-Za-z0-9_-]+")


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


@dataclass(frozen=True)
class Row:
    name: str
    a: RunRecord
    b: RunRecord
    a_point: Point | None
    b_point: Point | None
    worse: bool
    note: str

    @property
    def compared(self) -> bool:
        return self.a_point is not None and self.b_point is not None

    def change(self, attr: str) -> float | None:
        """B against A as a fraction (+0.1: B's value is 10% higher); None when not comparable."""
        if not self.compared:
            return None
        r = analysis.ratio(getattr(self.b_point, attr), getattr(self.a_point, attr))
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


def _key(record: RunRecord, by_variant: bool) -> tuple:
    base = (record.models, record.users, record.spawn_rate)
    return (record.variant, *base) if by_variant else base


def _name(record: RunRecord, by_variant: bool) -> str:
    point = f"{record.models}_{record.users}_{format_number(record.spawn_rate)}"
    return f"{record.variant}/{point}" if by_variant else point


def _judge(a: RunRecord, b: RunRecord, fail_pct: float | None) -> tuple[Point | None, Point | None, bool, str]:
    ap = analysis.point(a) if analysis.usable(a) and a.load and a.load.rps > 0 else None
    bp = analysis.point(b) if analysis.usable(b) else None
    if ap is None:
        return ap, bp, False, f"not compared: A's run {run_status(a)}"
    if bp is None:
        worse = fail_pct is not None
        return ap, bp, worse, f"{'WORSE: ' if worse else ''}B's run {run_status(b)}"
    if fail_pct is None:
        return ap, bp, False, ""
    tol = fail_pct / 100
    problems = []
    if bp.rps < ap.rps * (1 - tol):
        problems.append(f"throughput {fmt_pct(bp.rps / ap.rps - 1, signed=True)}")
    if ap.p95 and bp.p95 is not None and bp.p95 > ap.p95 * (1 + tol):
        problems.append(f"p95 {fmt_pct(bp.p95 / ap.p95 - 1, signed=True)}")
    return ap, bp, bool(problems), ("WORSE: " + ", ".join(problems)) if problems else "ok"


def run_status(record: RunRecord) -> str:
    """Why a run has no usable measurement, as the end of a sentence: 'failed (...)', 'is invalid (...)'."""
    if record.status != "completed":
        verb = "failed" if record.status == "failed" else f"was {record.status}"
        return f"{verb} ({record.error or '; '.join(record.validity.reasons) or 'no measurement'})"
    return "is invalid (" + ("; ".join(record.validity.reasons) or "no request completed") + ")"


def compare(a: Side, b: Side, fail_pct: float | None = None) -> Comparison:
    if (a.variant is None) != (b.variant is None):
        raise UserError("compare: give a variant on both sides (reports:cpu other:cpu) or on neither "
                        "(two whole folders)")
    by_variant = a.variant is None
    a_runs = {_key(r, by_variant): r for r in a.records}
    b_runs = {_key(r, by_variant): r for r in b.records}
    common = sorted(set(a_runs) & set(b_runs))
    if not common:
        raise UserError(f"compare: no common grid point between A {a.label} and B {b.label} "
                        f"(matched by {'variant, ' if by_variant else ''}replicas, users and spawn rate)")
    rows = []
    for key in common:
        ra, rb = a_runs[key], b_runs[key]
        ap, bp, worse, note = _judge(ra, rb, fail_pct)
        rows.append(Row(_name(ra, by_variant), ra, rb, ap, bp, worse, note))
    if not any(r.compared or r.worse for r in rows):
        raise UserError(f"compare: none of the {len(rows)} common grid points has a valid run on both sides")
    return Comparison(a, b, fail_pct, tuple(rows))


def _change(value: float | None) -> str:
    return "–" if value is None else fmt_pct(value, signed=True)


def render(cmp: Comparison) -> str:
    head = ["point", "A req/s", "B req/s", "Δ req/s", "A p50", "B p50", "Δ p50", "A p95", "B p95", "Δ p95", "verdict"]
    table = [head]
    for r in cmp.rows:
        a, b = r.a_point, r.b_point
        table.append([
            r.name,
            fmt_rps(a.rps) if a else "–", fmt_rps(b.rps) if b else "–", _change(r.change("rps")),
            fmt_ms(a.p50) if a else "–", fmt_ms(b.p50) if b else "–", _change(r.change("p50")),
            fmt_ms(a.p95) if a else "–", fmt_ms(b.p95) if b else "–", _change(r.change("p95")),
            r.note,
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    lines = [f"A: {cmp.a.label}, {len(cmp.a.records)} runs", f"B: {cmp.b.label}, {len(cmp.b.records)} runs",
             "latency in ms; Δ is B against A", ""]
    for i, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:-1], widths[1:], strict=True)]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  -------")
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
    return "\n".join(lines)


def run(a_spec: str, b_spec: str, fail_pct: float | None = None) -> tuple[str, int]:
    """The table text and the exit status (0 or 1); bad input raises `UserError` (exit 2)."""
    cmp = compare(load_side(a_spec), load_side(b_spec), fail_pct)
    return render(cmp), cmp.exit_code
