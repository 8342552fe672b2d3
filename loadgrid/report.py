"""Reports rendered only from stored run records: `summary.csv` and `index.html` at the output's top.

Rebuilding them needs no Docker and re-runs nothing (`orchestrate.py report OUTPUT`).
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

from . import store
from .plan import format_number
from .store import RunRecord

SUMMARY_COLUMNS = ["id", "variant", "models", "users", "spawn_rate", "status", "requests", "failures", "rps",
                   "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "valid", "reasons", "report"]


def sort_key(record: RunRecord) -> tuple:
    return (record.variant, record.models, record.users, record.spawn_rate)


def summary_rows(records: list[RunRecord]) -> list[dict]:
    rows = []
    for r in sorted(records, key=sort_key):
        lat = r.load.latency_ms if r.load else {}
        rows.append({
            "id": r.id, "variant": r.variant, "models": r.models, "users": r.users,
            "spawn_rate": format_number(r.spawn_rate), "status": r.status,
            "requests": r.load.requests if r.load else 0, "failures": r.load.failures if r.load else 0,
            "rps": r.load.rps if r.load else 0.0,
            **{f"{q}_ms": lat.get(q, "") for q in ("p50", "p90", "p95", "p99", "max")},
            "valid": "yes" if r.validity.valid else "no", "reasons": "; ".join(r.validity.reasons),
            "report": f"{r.variant}/{r.files.get('html', '')}" if r.files.get("html") else "",
        })
    return rows


def summary_csv(records: list[RunRecord]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary_rows(records))
    return buf.getvalue()


def index_html(records: list[RunRecord]) -> str:
    rows = []
    for row in summary_rows(records):
        link = (f'<a href="{html.escape(row["report"])}">{html.escape(row["id"])}</a>'
                if row["report"] else html.escape(row["id"]))
        verdict = "valid" if row["valid"] == "yes" else f'invalid: {html.escape(row["reasons"])}'
        cls = "" if row["valid"] == "yes" else ' class="invalid"'
        cells = [link, row["variant"], row["models"], row["users"], row["spawn_rate"], row["requests"],
                 row["failures"], row["rps"], row["p50_ms"], row["p95_ms"], row["p99_ms"], verdict]
        rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = ["run", "variant", "replicas", "users", "spawn/s", "requests", "failures", "req/s", "p50 ms",
            "p95 ms", "p99 ms", "verdict"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>loadgrid results</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .3em .6em; text-align: right; }}
td:first-child, td:last-child {{ text-align: left; }} tr.invalid {{ background: #fde8e8; }}
</style></head><body>
<h1>loadgrid results</h1>
<p>{len(records)} runs. Each run links to its Locust report.</p>
<table><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
</body></html>
"""


def write_all(output_dir: Path) -> list[Path]:
    records = store.load_all(output_dir)
    written = []
    for name, text in (("summary.csv", summary_csv(records)), ("index.html", index_html(records))):
        store.write_atomic(output_dir / name, text)
        written.append(output_dir / name)
    return written
