"""Rendering of index.html and summary.csv from stored fixtures (no browser: see test_report_browser.py)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from support import report_fixtures as fx

from loadgrid import report


def build(tmp_path: Path, records, **kwargs) -> tuple[Path, str]:
    folder = fx.write(tmp_path / "out", records, latency_target_ms=kwargs.pop("session_target", None))
    report.write_all(folder, **kwargs)
    return folder, (folder / "index.html").read_text()


def svgs(page: str) -> list[str]:
    return re.findall(r'<svg class="chart".*?</svg>', page, flags=re.S)


def test_page_sections_charts_and_links(tmp_path):
    folder, page = build(tmp_path, fx.small_grid(), session_target=500)
    for section in ("conclusions", "throughput", "latency", "scaling", "speedup", "capacity", "runs"):
        assert f'id="{section}"' in page
    charts = svgs(page)
    assert len(charts) == 7  # throughput, p50, p95 for cpu and gpu, and scaling
    titles = [re.search(r'aria-label="([^"]*)"', c).group(1) for c in charts]
    assert titles[:2] == ["CPU: throughput vs users", "GPU: throughput vs users"]
    assert all('<path class="series"' in c for c in charts)
    assert 'class="target"' in charts[4]  # the p95 target line on the CPU p95 chart
    # every run links to its Locust report, which exists; the failed one has none
    for r in fx.small_grid():
        if r.status == "completed":
            assert f'href="{r.variant}/{r.files["html"]}"' in page
            assert (folder / r.variant / r.files["html"]).is_file()
    assert 'href="gpu/2_32_4.html"' not in page
    # every in-page link has its target
    anchors = set(re.findall(r'\bid="([^"]+)"', page))
    assert {h for h in re.findall(r'href="#([^"]+)"', page)} <= anchors


def test_invalid_and_failed_runs_are_marked_and_excluded(tmp_path):
    _, page = build(tmp_path, fx.small_grid())
    rows = dict(re.findall(r'<tr id="run-([^"]+)"([^>]*)>', page))
    assert rows["cpu-2_64_4"] == ' class="excluded"' and rows["gpu-2_32_4"] == ' class="excluded"'
    assert rows["cpu-2_16_4"] == ""
    assert "invalid: 30 of 30000 requests failed (0.1%), mostly: HTTP 502" in page
    assert "failed: stack did not become healthy within 300 s" in page
    # the invalid run's 500 req/s is in the table but on no chart
    assert not any("cpu/2_64_4" in c for c in svgs(page))
    assert "excluded from the figures" in page and "Only valid, completed runs feed the charts" in page


def test_page_needs_no_network(tmp_path):
    _, page = build(tmp_path, fx.small_grid())
    assert "<link" not in page and " src=" not in page and "@import" not in page and "url(" not in page
    # the only absolute URL is the SVG namespace, which is an identifier, not a fetch
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) == {"http://www.w3.org/2000/svg"}


def test_spawn_rate_choice_is_stated(tmp_path):
    _, page = build(tmp_path, fx.small_grid())
    assert "the curves use the valid run with the highest throughput" in page
    _, page = build(tmp_path / "one", [r for r in fx.cpu_only() if r.spawn_rate == 4])
    assert "One spawn rate was run" in page


def test_cpu_only_page(tmp_path):
    _, page = build(tmp_path, fx.cpu_only())
    titles = [re.search(r'aria-label="([^"]*)"', c).group(1) for c in svgs(page)]
    assert titles == ["CPU: throughput vs users", "CPU: p50 latency vs users", "CPU: p95 latency vs users",
                      "Peak throughput vs replicas (scaling)"]
    assert "No CPU vs GPU comparison: there is no GPU data (only cpu was run)." in page
    assert "Add <code>gpu</code> to <code>variants</code>" in page


def test_conclusions_link_their_runs(tmp_path):
    _, page = build(tmp_path, fx.small_grid())
    conclusions = re.search(r'<ul class="conclusions">(.*?)</ul>', page, flags=re.S).group(1)
    assert ('GPU cuts p95 latency by 67% at 1 replica, 16 users, spawn 4/s (<a href="#run-cpu-1_16_4">cpu/1_16_4</a>'
            ' vs <a href="#run-gpu-1_16_4">gpu/1_16_4</a>)') in conclusions
    for item in re.findall(r'<li class="finding">(.*?)</li>', conclusions, flags=re.S):
        assert 'href="#run-' in item, item


def test_latency_target_comes_from_argument_then_session_then_default(tmp_path):
    _, page = build(tmp_path / "a", fx.cpu_only(), session_target=100)
    assert "capacity req/s (p95 &lt; 100 ms)" in page and "(from session.json)" in page
    _, page = build(tmp_path / "b", fx.cpu_only(), session_target=100, latency_target_ms=250)
    assert "p95 under 250 ms" in page and "(from config.yaml)" in page
    _, page = build(tmp_path / "c", fx.cpu_only())
    assert "p95 under 500 ms" in page and "(default;" in page
    folder = fx.write(tmp_path / "d", fx.cpu_only())
    (folder / "session.json").write_text('{"finished_at": "x", "runs": 3}')  # a session from before the target
    assert report.latency_target(folder) == (500.0, " (default; set latency_target_ms in config.yaml)")
    (folder / "session.json").write_text("not json")
    assert report.latency_target(folder)[0] == 500.0


def test_large_grid_stays_readable(tmp_path):
    _, page = build(tmp_path, fx.large_grid(), session_target=500)
    charts = svgs(page)
    for chart in charts:
        xs = [float(x) for x in re.findall(r'<text x="([\d.]+)" y="[\d.]+" class="xtick">', chart)]
        assert all(b - a >= 30 for a, b in zip(xs, xs[1:], strict=False)), xs  # no overlapping x labels
        ys = [float(y) for y in re.findall(r'<text x="[\d.]+" y="([\d.]+)" class="ytick">', chart)]
        assert all(a - b >= 14 for a, b in zip(ys, ys[1:], strict=False)), ys  # none overlapping on y either
        legend = re.findall(r'class="legend">([^<]*)<', chart)
        assert len(legend) == len(set(legend)) and legend
    assert re.findall(r'class="legend">([^<]*)<', charts[0]) == ["1 replica", "2 replicas", "3 replicas",
                                                                 "4 replicas", "6 replicas"]
    assert "ms (log scale)" in charts[4]  # p95 from 30 ms to 9 s: log scale
    # long evidence lists are cut short and point at the full table
    for item in re.findall(r"<li[^>]*>(.*?)</li>", page, flags=re.S):
        assert item.count("<a ") <= 10, item[:200]
    assert "all in the CPU vs GPU table" in page
    # tables scroll inside their box
    assert page.count('<div class="scroll">') == 4 and "max-height" in page


def test_summary_csv_from_stored_records(tmp_path):
    folder, _ = build(tmp_path, fx.small_grid())
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO((folder / "summary.csv").read_text()))}
    assert len(rows) == 12 and list(rows)[0] == "cpu/1_4_4"
    assert rows["gpu/2_32_4"]["status"] == "failed" and rows["gpu/2_32_4"]["valid"] == "no"
    assert rows["cpu/2_64_4"]["failures"] == "30" and "HTTP 502" in rows["cpu/2_64_4"]["reasons"]
    assert rows["cpu/1_16_4"]["p95_ms"] == "300.0" and rows["cpu/1_16_4"]["rps"] == "40.0"


def test_empty_output_folder(tmp_path):
    (tmp_path / "out").mkdir()
    report.write_all(tmp_path / "out")
    page = (tmp_path / "out" / "index.html").read_text()
    assert "0 runs" in page and "nothing to conclude" in page
