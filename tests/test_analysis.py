"""The comparison report's arithmetic and sentences, from stored fixtures (tests/report_fixtures.py)."""

from __future__ import annotations

import pytest
from support import report_fixtures as fx

from loadgrid import analysis, store
from loadgrid.analysis import Point


@pytest.fixture
def stored(tmp_path):
    """Records as the report sees them: written to disk, read back through the store."""
    def load(records):
        return store.load_all(fx.write(tmp_path / "out", records))
    return load


def pt(users: int, rps: float, p95: float | None = None) -> Point:
    return Point(f"cpu/1_{users}_1", "cpu", 1, users, 1.0, rps, None, p95)


def test_only_valid_completed_runs_are_usable(stored):
    records = stored(fx.small_grid())
    excluded = sorted(r.id for r in records if not analysis.usable(r))
    assert excluded == ["cpu/2_64_4", "gpu/2_32_4"]
    ids = {p.run_id for p in analysis.points(records)}
    assert "cpu/2_64_4" not in ids and "gpu/2_32_4" not in ids


def test_curves_take_the_best_spawn_rate_per_user_count(stored):
    curves = analysis.curves(stored(fx.small_grid()))
    assert sorted(curves) == [("cpu", 1), ("cpu", 2), ("gpu", 1), ("gpu", 2)]
    assert [(p.users, p.rps) for p in curves[("cpu", 2)]] == [(4, 21.0), (16, 60.0), (32, 76.0)]
    assert curves[("cpu", 2)][1].run_id == "cpu/2_16_4"  # 60 req/s at spawn 4 beats 55 at spawn 1
    assert all(p.users != 64 for p in curves[("cpu", 2)])  # the invalid 500 req/s run is not on the curve


@pytest.mark.parametrize("rps, expected", [
    ([20, 38, 40, 41], 16),  # 38 -> 41 is +7.9%; 40 -> 41 is +2.5%: saturated at 16
    ([10, 20, 40, 80], None),  # still rising at the largest user count
    ([30, 29, 28, 27], 4),  # falling from the start: the smallest count
    ([20, 30, 30.5, 45], None),  # a late rise of 5% or more means not saturated at 16
    ([20, 20.5, 20.8, 20.9], 4),  # every later point within 5% of the first
    ([50], None),  # one point: cannot be told
])
def test_saturation_point(rps, expected):
    curve = [pt(u, r) for u, r in zip((4, 8, 16, 32), rps, strict=False)]
    found = analysis.saturation_point(curve)
    assert (found.users if found else None) == expected


def test_saturation_threshold_is_exactly_five_percent():
    assert analysis.saturation_point([pt(4, 100.0), pt(8, 105.0)]) is None  # +5.0% still counts as a rise
    assert analysis.saturation_point([pt(4, 100.0), pt(8, 104.9)]).users == 4


def test_scaling_efficiency(stored):
    scaling = analysis.scaling(stored(fx.small_grid()))
    one, two = scaling["cpu"]
    assert (one.replicas, one.peak.rps, one.efficiency) == (1, 41.0, 1.0)
    assert two.peak.run_id == "cpu/2_32_4" and two.peak.rps == 76.0  # not the invalid 500 req/s
    assert two.ratio == pytest.approx(76 / 41)
    assert two.efficiency == pytest.approx(76 / (2 * 41))
    assert scaling["gpu"][1].efficiency == pytest.approx(90 / 160)


def test_scaling_baseline_is_the_smallest_replica_count():
    records = [fx.run("cpu", 2, 8, 1, 40.0, 10, 20), fx.run("cpu", 4, 8, 1, 60.0, 10, 20)]
    (base, four) = analysis.scaling(records)["cpu"]
    assert base.replicas == 2 and four.ratio == pytest.approx(1.5) and four.efficiency == pytest.approx(0.75)


def test_speedups_cover_common_valid_points_only(stored):
    sp = analysis.speedups(stored(fx.small_grid()))
    assert [(s.models, s.users, s.spawn_rate) for s in sp] == [(1, 16, 4.0), (2, 16, 4.0)]  # gpu/2_32_4 failed
    first, second = sp
    assert first.throughput_ratio == pytest.approx(2.0)
    assert first.p95_ratio == pytest.approx(100 / 300) and first.p50_ratio == pytest.approx(50 / 150)
    assert second.throughput_ratio == pytest.approx(1.5) and second.p95_ratio == pytest.approx(0.5)
    assert (first.base.run_id, first.other.run_id) == ("cpu/1_16_4", "gpu/1_16_4")


def test_capacity_under_the_latency_target(stored):
    caps = {(c.variant, c.replicas): c for c in analysis.capacities(stored(fx.small_grid()), 500)}
    assert caps[("cpu", 1)].best.run_id == "cpu/1_16_4"  # 41 req/s at 32 users has p95 800
    assert caps[("cpu", 2)].best.run_id == "cpu/2_32_4"  # p95 450 < 500
    tight = {(c.variant, c.replicas): c for c in analysis.capacities(stored(fx.small_grid()), 100)}
    assert tight[("cpu", 1)].best.run_id == "cpu/1_8_4"  # p95 90
    assert tight[("gpu", 1)].best is None and tight[("gpu", 1)].lowest_p95.p95 == 100  # p95 must be *under*


def texts(conclusions) -> str:
    return "\n".join(c.text for c in conclusions)


def test_conclusions_with_cpu_and_gpu(stored):
    conclusions = analysis.conclusions(stored(fx.small_grid()), 500)
    text = texts(conclusions)
    assert "12 runs: 10 valid, 1 invalid, 1 failed or interrupted" in text
    assert "GPU cuts p95 latency by 67% at 1 replica, 16 users, spawn 4/s (cpu/1_16_4 vs gpu/1_16_4)" in text
    assert "GPU gives 1.75x the throughput of CPU (median)" in text and "p95 latency down 58%" in text
    assert "cpu: 2 replicas give 1.85x the throughput of 1 (scaling efficiency 93%" in text
    assert "cpu with 1 replica saturates at about 16 users (40 req/s, cpu/1_16_4)" in text
    assert "latency grows (p95 300 → 800 ms at 32 users, cpu/1_32_4), throughput does not" in text
    assert "cpu with 2 replicas did not saturate within the grid" in text
    # capacity as sizing defines it, with its kind: closed loop here (no open-loop run), never the invalid 500 req/s
    assert ("The highest capacity with p95 under 500 ms: gpu 2 replicas, at least 90 req/s (closed loop, lower "
            "confidence: 16 users, spawn 4/s, p95 60 ms") in text
    assert "For cpu it is 2 replicas: at least 76 req/s (closed loop, lower confidence: 32 users" in text
    # the invalid and failed runs appear only in the coverage note, never as evidence
    for c in conclusions[1:]:
        assert "cpu/2_64_4" not in c.run_ids and "gpu/2_32_4" not in c.run_ids, c
        assert "cpu/2_64_4" not in c.text and "500 req/s" not in c.text
    # every finding points at runs
    assert all(c.run_ids for c in conclusions if c.kind == "finding")


def test_every_run_id_named_in_a_sentence_is_evidence(stored):
    for c in analysis.conclusions(stored(fx.small_grid()), 500):
        for word in c.text.replace("(", " ").replace(")", " ").replace(",", " ").split():
            if word.startswith(("cpu/", "gpu/")):
                assert word.rstrip(".:;") in c.run_ids, (word, c)


def test_cpu_only_says_there_is_no_gpu_data(stored):
    conclusions = analysis.conclusions(stored(fx.cpu_only()), 500)
    text = texts(conclusions)
    assert "No CPU vs GPU comparison: there is no GPU data (only cpu was run)." in text
    assert "GPU cuts" not in text and analysis.speedups(stored(fx.cpu_only())) == []
    assert "cpu: 2 replicas give 1.85x" in text


def test_gpu_runs_all_invalid_is_said_plainly(stored):
    records = fx.cpu_only() + [fx.run("gpu", 1, 16, 4, 80.0, 50, 100, reasons=["replica m1 ran on "
                                                                               "CPUExecutionProvider, not on the GPU"])]
    assert "the GPU runs are all invalid or failed" in texts(analysis.conclusions(stored(records), 500))


def test_gpu_slower_somewhere_is_reported(stored):
    records = [fx.run("cpu", 1, 8, 1, 40.0, 50, 100), fx.run("gpu", 1, 8, 1, 60.0, 30, 50),
               fx.run("cpu", 1, 16, 1, 40.0, 80, 200), fx.run("gpu", 1, 16, 1, 35.0, 100, 260)]
    text = texts(analysis.conclusions(stored(records), 500))
    assert "GPU cuts p95 latency by 50% at 1 replica, 8 users" in text
    assert "But GPU raises p95 latency by 30% at 1 replica, 16 users" in text


def test_no_run_meets_the_target(stored):
    text = texts(analysis.conclusions(stored(fx.cpu_only()), 40))
    assert "cpu with 1 replica never kept p95 under 40 ms (lowest: 60 ms at 4 users, cpu/1_4_4)" in text
    assert "The highest capacity with p95 under" not in text


def test_nothing_usable(stored):
    records = [fx.run("cpu", 1, 4, 1, None, status="failed", error="no docker")]
    conclusions = analysis.conclusions(stored(records), 500)
    assert [c.kind for c in conclusions] == ["note", "note"]
    assert "nothing to conclude" in conclusions[1].text


def test_number_formats():
    assert [analysis.fmt_rps(v) for v in (40.0, 37.64, 412.3, 0.5)] == ["40", "37.6", "412", "0.5"]
    assert analysis.fmt_ms(None) == "–" and analysis.fmt_pct(-0.414, signed=True) == "-41%"
