"""Repeats: one point per grid point (the mean of its valid repeats), 95% CI, spread flag, points.csv, the page.

Also the run table's client-bound marking, measurement window and load-generator CPU (issue 6, "Honest runs").
Fixtures: tests/report_fixtures.py `repeated_grid()` (numbers checkable on paper).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import re

import pytest
from support import report_fixtures as fx

from loadgrid import analysis, report, store


@pytest.fixture
def stored(tmp_path):
    def load(records):
        return store.load_all(fx.write(tmp_path / "out", records))
    return load


def build(tmp_path, records):
    folder = fx.write(tmp_path / "out", records, latency_target_ms=500)
    report.write_all(folder)
    return folder, (folder / "index.html").read_text()


# --- the statistics -----------------------------------------------------------------------------------------

def test_t_table():
    assert analysis.t95(1) == 12.706 and analysis.t95(2) == 4.303 and analysis.t95(4) == 2.776
    assert analysis.t95(10) == 2.228 and analysis.t95(30) == 2.042
    assert all(a > b for a, b in zip(analysis.T95, analysis.T95[1:], strict=False))  # shrinks as df grows
    assert 1.96 < analysis.t95(31) < analysis.t95(30) and analysis.t95(1000) == pytest.approx(1.96, abs=0.01)
    with pytest.raises(ValueError):
        analysis.t95(0)


def test_estimate_mean_and_interval():
    est = analysis.estimate([20.0, 21.0, 22.0])
    half = 4.303 * 1.0 / math.sqrt(3)  # sd 1, n 3, df 2
    assert est.mean == 21.0 and est.sd == pytest.approx(1.0)
    assert (est.low, est.high) == (pytest.approx(21 - half), pytest.approx(21 + half))
    assert est.half_width == pytest.approx(2.4843, abs=1e-4) and est.cv == pytest.approx(1 / 21)
    two = analysis.estimate([10.0, 12.0])  # sd sqrt(2), t(1) = 12.706: a very wide interval from two runs
    assert two.half_width == pytest.approx(12.706 * math.sqrt(2) / math.sqrt(2))
    one = analysis.estimate([7.0])
    assert (one.mean, one.low, one.high, one.cv) == (7.0, None, None, None)
    assert analysis.estimate([]) is None


def test_point_stats_over_repeats(stored):
    stats = {s.name: s for s in analysis.point_stats(stored(fx.repeated_grid()))}
    assert list(stats) == ["cpu/1_4_4", "cpu/1_16_4", "cpu/2_4_4", "cpu/2_16_4"]  # grid order, not text order
    a = stats["cpu/1_4_4"]
    assert a.run_ids == ("cpu/1_4_4", "cpu/1_4_4_r2", "cpu/1_4_4_r3") and a.n == 3
    assert a.rps.mean == 21.0 and a.rps.low == pytest.approx(18.516, abs=1e-3) and not a.flagged
    assert a.p95.mean == 62.0 and a.p95.half_width == pytest.approx(2 * 4.303 / math.sqrt(3))
    assert stats["cpu/1_16_4"].rps.half_width == 0.0 and stats["cpu/1_16_4"].spread_note == ""
    wide = stats["cpu/2_4_4"]
    assert wide.flagged and wide.wide == ("req/s",) and wide.rps.cv == pytest.approx(1 / 3)
    assert wide.spread_note == "wide spread: req/s CV 33%"
    few = stats["cpu/2_16_4"]  # repeat 2 failed requests, repeat 3 client-bound: one valid repeat
    assert few.usable_ids == ("cpu/2_16_4",) and few.n == 1 and few.rps.low is None and not few.flagged
    assert few.spread_note == "1 usable of 3 repeats: no interval"


def test_spread_flag_threshold_and_latency_resolution():
    def stats(rps, p50=(40.0, 40.0), p95=(60.0, 60.0)):
        rows = zip(rps, p50, p95, strict=True)
        records = [fx.run("cpu", 1, 4, 4, r, a, b, repeat=i + 1) for i, (r, a, b) in enumerate(rows)]
        return analysis.point_stats(records)[0]

    assert not stats((100.0, 114.0)).flagged  # CV 9.3%
    assert stats((100.0, 116.0)).wide == ("req/s",)  # CV 10.5%
    # p50 of 2 vs 3 ms is a CV of 28%, but a spread under Locust's resolution does not count
    assert not stats((100.0, 100.0), p50=(2.0, 3.0), p95=(4.0, 5.0)).flagged
    assert stats((100.0, 100.0), p95=(60.0, 90.0)).wide == ("p95",)


def test_curves_and_figures_use_one_point_per_grid_point(stored):
    records = stored(fx.repeated_grid())
    pts = analysis.points(records)
    assert len(pts) == 4  # not 10 valid runs
    by_name = {p.run_id: p for p in pts}
    assert by_name["cpu/1_4_4"].rps == 21.0 and by_name["cpu/1_4_4"].p95 == 62.0 and by_name["cpu/1_4_4"].n == 3
    assert by_name["cpu/2_4_4"].rps == 30.0 and by_name["cpu/2_16_4"].rps == 60.0  # the invalid 62 / 55 left out
    assert by_name["cpu/1_4_4"].ref == "cpu/1_4_4 + 2 repeats" and by_name["cpu/2_16_4"].ref == "cpu/2_16_4"
    curves = analysis.curves(records)
    assert [(p.users, p.rps) for p in curves[("cpu", 1)]] == [(4, 21.0), (16, 40.0)]
    one, two = analysis.scaling(records)["cpu"]
    assert (one.peak.rps, two.peak.rps) == (40.0, 60.0) and two.efficiency == pytest.approx(0.75)
    caps = {c.replicas: c for c in analysis.capacities(records, 61)}
    assert caps[1].best is None and caps[1].lowest_p95.p95 == 62.0  # the mean p95 (60, 62, 64) is not under 61


def test_speedups_compare_means():
    records = [fx.run("cpu", 1, 8, 1, r, 50, 100, repeat=i + 1) for i, r in enumerate((38.0, 40.0, 42.0))]
    records += [fx.run("gpu", 1, 8, 1, r, 25, 50, repeat=i + 1) for i, r in enumerate((79.0, 80.0, 81.0))]
    (sp,) = analysis.speedups(records)
    assert sp.throughput_ratio == pytest.approx(2.0) and sp.p95_ratio == pytest.approx(0.5)
    assert set(sp.base.ids) == {"cpu/1_8_1", "cpu/1_8_1_r2", "cpu/1_8_1_r3"}


def test_conclusions_say_repeats_and_flag_the_wide_point(stored):
    conclusions = analysis.conclusions(stored(fx.repeated_grid()), 500)
    text = "\n".join(c.text for c in conclusions)
    assert "12 runs: 10 valid, 2 invalid" in text
    assert "4 grid points run up to 3 times each: every figure below uses the mean of a point's valid repeats" in text
    warning = [c for c in conclusions if c.kind == "warning"]
    assert len(warning) == 1 and "cpu/2_4_4 (req/s CV 33% over 3 repeats)" in warning[0].text
    assert set(warning[0].run_ids) == {"cpu/2_4_4", "cpu/2_4_4_r2", "cpu/2_4_4_r3"}
    # every repeat behind a finding is its evidence, and no invalid repeat is
    for c in conclusions[1:]:
        assert "cpu/2_16_4_r2" not in c.run_ids and "cpu/2_16_4_r3" not in c.run_ids
        for word in c.text.replace("(", " ").replace(")", " ").replace(",", " ").split():
            if word.startswith("cpu/"):
                assert word.rstrip(".:;") in c.run_ids, (word, c)
    saturation = next(c for c in conclusions if c.text.startswith("cpu with 1 replica"))
    assert "cpu/1_4_4 + 2 repeats" in saturation.text and "cpu/1_4_4_r3" in saturation.run_ids


def test_single_runs_say_nothing_about_repeats(stored):
    conclusions = analysis.conclusions(stored(fx.small_grid()), 500)
    assert not any("repeat" in c.text for c in conclusions)
    assert not any(c.kind == "warning" for c in conclusions)


# --- the files ----------------------------------------------------------------------------------------------

def test_summary_csv_keeps_one_row_per_run(tmp_path):
    folder, _ = build(tmp_path, fx.repeated_grid())
    rows = list(csv.DictReader(io.StringIO((folder / "summary.csv").read_text())))
    assert len(rows) == 12
    assert list(rows[0]) == report.SUMMARY_COLUMNS and "repeat" in rows[0]
    assert [r["id"] for r in rows[:3]] == ["cpu/1_4_4", "cpu/1_4_4_r2", "cpu/1_4_4_r3"]
    assert [r["repeat"] for r in rows[:3]] == ["1", "2", "3"]
    by_id = {r["id"]: r for r in rows}
    bound = by_id["cpu/2_16_4_r3"]
    assert bound["client_bound"] == "yes" and bound["valid"] == "no" and bound["generator_cpu_pct"] == "85.0"
    assert bound["generator_cores"] == "1" and bound["reasons"].startswith("client-bound:")
    assert by_id["cpu/1_4_4"]["client_bound"] == "no" and by_id["cpu/2_16_4"]["generator_cores"] == "2"
    assert by_id["cpu/1_4_4"]["window_s"] == "55.0" and by_id["cpu/1_4_4"]["warmup_s"] == "5.0"


def test_points_csv_one_row_per_grid_point(tmp_path):
    folder, _ = build(tmp_path, fx.repeated_grid())
    rows = {r["point"]: r for r in csv.DictReader(io.StringIO((folder / "points.csv").read_text()))}
    assert list(rows) == ["cpu/1_4_4", "cpu/1_16_4", "cpu/2_4_4", "cpu/2_16_4"]
    a = rows["cpu/1_4_4"]
    assert (a["runs"], a["valid_runs"], a["rps_mean"], a["rps_ci_low"], a["rps_ci_high"]) == \
        ("3", "3", "21.0", "18.52", "23.48")
    assert (a["p95_ms_mean"], a["p95_ms_ci_low"], a["p95_ms_ci_high"]) == ("62.0", "57.03", "66.97")
    assert a["wide_spread"] == "no" and a["run_ids"] == "cpu/1_4_4 cpu/1_4_4_r2 cpu/1_4_4_r3"
    assert rows["cpu/2_4_4"]["wide_spread"] == "yes" and rows["cpu/2_4_4"]["rps_cv"] == "0.3333"
    few = rows["cpu/2_16_4"]
    assert (few["valid_runs"], few["rps_mean"], few["rps_ci_low"], few["wide_spread"]) == ("1", "60.0", "", "no")


def test_points_csv_without_repeats(tmp_path):
    folder, _ = build(tmp_path, fx.small_grid())
    rows = list(csv.DictReader(io.StringIO((folder / "points.csv").read_text())))
    assert len(rows) == 12 and all(r["runs"] == "1" and r["rps_ci_low"] == "" for r in rows)
    failed = next(r for r in rows if r["point"] == "gpu/2_32_4")
    assert failed["valid_runs"] == "0" and failed["rps_mean"] == ""


# --- the page -----------------------------------------------------------------------------------------------

def test_page_shows_the_points_table_when_there_are_repeats(tmp_path):
    _, page = build(tmp_path, fx.repeated_grid())
    assert 'id="repeats"' in page and "95% confidence interval" in page
    assert "coefficient of variation" in page and "above 10%" in page  # the flag's rule is stated
    rows = dict(re.findall(r'<tr id="point-([^"]+)"([^>]*)>', page))
    assert rows == {"cpu-1_4_4": "", "cpu-1_16_4": "", "cpu-2_4_4": ' class="wide"', "cpu-2_16_4": ""}
    row = re.search(r'<tr id="point-cpu-1_4_4".*?</tr>', page, flags=re.S).group(0)
    assert "18.5 – 23.5 (CV 5%)" in row and "3 / 3" in row
    assert "wide spread: req/s CV 33%" in page and "1 usable of 3 repeats: no interval" in page
    # charts draw the interval as a bar, the points are means
    throughput = re.search(r'<svg class="chart".*?</svg>', page, flags=re.S).group(0)
    assert throughput.count('class="ci"') == 3  # the three points with an interval (2_16_4 has one valid run)
    assert "cpu/1_4_4 + 2 repeats: 4 users" in throughput and "(mean of 3 repeats)" in throughput
    anchors = set(re.findall(r'\bid="([^"]+)"', page))
    assert {h for h in re.findall(r'href="#([^"]+)"', page)} <= anchors


def test_page_says_nothing_extra_without_repeats(tmp_path):
    _, page = build(tmp_path, fx.small_grid())
    assert 'id="repeats"' not in page and 'class="ci"' not in page and "confidence interval" not in page


def test_run_table_marks_client_bound_and_shows_window_and_generator_cpu(tmp_path):
    _, page = build(tmp_path, fx.repeated_grid())
    head = re.search(r'<table class="sortable runs">.*?</thead>', page, flags=re.S).group(0)
    assert ">window</th>" in head and ">Locust CPU</th>" in head
    row = re.search(r'<tr id="run-cpu-2_16_4_r3" class="excluded">.*?</tr>', page, flags=re.S).group(0)
    assert '<span class="badge">client-bound</span> invalid: client-bound: Locust used 85%' in row
    assert '85%<br><span class="small">of 1 core</span>' in row and 'class="bad"' in row
    assert '55 s<br><span class="small">after 5 s warm-up</span>' in row
    ok = re.search(r'<tr id="run-cpu-2_16_4">.*?</tr>', page, flags=re.S).group(0)
    assert "client-bound" not in ok and "40%<br><span class=\"small\">of 2 cores</span>" in ok
    assert 'title="mean 40%, max 52% of 2 core(s), 55 samples"' in ok


def test_runs_without_window_or_generator_show_a_dash(tmp_path):
    _, page = build(tmp_path, fx.small_grid())
    row = re.search(r'<tr id="run-cpu-1_4_4">.*?</tr>', page, flags=re.S).group(0)
    assert row.count('<td data-v="-1" class="l">–</td>') == 1 and "badge" not in row
    still = fx.run("cpu", 1, 4, 4, 20.0, 40.0, 60.0, window={"start_at": None, "spawn_complete_at": None,
                                                            "warmup_s": 0.0})
    assert report.window_text(still) == ("none: still spawning at the end", 0)


@pytest.mark.browser
def test_repeats_page_in_headless_chromium(tmp_path):
    from support.browser import check_page, find_browser, open_report

    binary = find_browser()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser check, but no chromium is installed (see setup.sh)")
        pytest.skip("no chromium installed (apt-get install chromium)")
    folder, _ = build(tmp_path, fx.repeated_grid())
    result = open_report(binary, folder / "index.html", tmp_path / "repeats.png")
    check_page(result, variants=1)
    assert result["rows"] == 12 and result["excluded"] == 2


def test_open_loop_runs_are_points_of_their_own_and_not_on_the_users_curves():
    closed = fx.run("cpu", 1, 2, 2, 40.0, 50.0, 100.0)
    opened = [dataclasses.replace(fx.run("cpu", 1, 2, 2, rps, 20.0, 40.0, repeat=k), arrival_rate=30.0,
                                  arrival="constant", id="cpu/1_r30" + (f"_r{k}" if k > 1 else ""))
              for k, rps in ((1, 29.0), (2, 30.0))]
    stats = analysis.point_stats([closed, *opened])
    assert [(s.name, len(s.run_ids)) for s in stats] == [("cpu/1_2_2", 1), ("cpu/1_r30", 2)]
    assert stats[1].arrival_rate == 30.0 and stats[1].rps.mean == 29.5
    assert [p.run_id for p in analysis.points([closed, *opened])] == ["cpu/1_2_2"]
    coverage = analysis.conclusions([closed, *opened], 500)[0].text
    assert ("2 open-loop runs (a fixed arrival rate) are on the charts against offered rate, not on the curves "
            "over users") in coverage
