"""Capacity search: the stepped-then-binary search over arrival rates, pure, with a model server."""

from __future__ import annotations

import json

from loadgrid import capacity
from loadgrid.config import CapacitySearch


def server(capacity_rps: float, kind: str = "latency"):
    """A probe runner for a server that keeps p95 under the target up to `capacity_rps`."""
    tried = []

    def run(rate: float) -> capacity.Probe:
        tried.append(rate)
        ok = rate <= capacity_rps
        return capacity.Probe(rate, f"cpu/2_cap_r{rate:g}", ok, p95_ms=100.0 if ok else 900.0, achieved_rps=rate,
                              why="" if ok else "too slow", kind="" if ok else kind)

    return run, tried


def test_steps_up_then_bisects_within_the_step_budget():
    run, tried = server(57)
    result = capacity.search(CapacitySearch(start=10, max=1000, steps=7), run, "cpu", 2, 500)
    assert tried[:4] == [10, 20, 40, 80]  # stepped: x2 until a probe fails
    assert tried[4:] == [60, 50, 55]  # then bisect between 40 and 80, till the budget runs out
    assert result.capacity_rps == 55 and result.lowest_failing_rps == 60 and result.run_id == "cpu/2_cap_r55"
    assert result.limited_by == "steps" and len(result.probes) == 7


def test_stops_when_the_bounds_are_close():
    run, tried = server(57)
    result = capacity.search(CapacitySearch(start=10, max=1000, steps=20), run, "cpu", 2, 500)
    assert result.capacity_rps is not None and 54 <= result.capacity_rps <= 57
    assert result.lowest_failing_rps - result.capacity_rps <= 0.05 * result.capacity_rps + 1
    assert result.limited_by == "latency" and len(tried) < 20


def test_a_failing_start_searches_down():
    run, tried = server(3)
    result = capacity.search(CapacitySearch(start=10, max=100, steps=8), run, "target", 1, 500)
    assert tried[:3] == [10, 5, 2.5]
    assert 2.5 <= result.capacity_rps <= 3


def test_every_rate_up_to_max_passing():
    run, tried = server(10_000)
    result = capacity.search(CapacitySearch(start=10, max=50, steps=8), run, "cpu", 1, 500)
    assert tried == [10, 20, 40, 50]
    assert result.capacity_rps == 50 and result.limited_by == "max" and result.lowest_failing_rps is None


def test_nothing_passes():
    run, tried = server(0.01, kind="errors")
    result = capacity.search(CapacitySearch(start=10, max=100, steps=3), run, "cpu", 1, 500)
    assert len(tried) == 3 and result.capacity_rps is None and result.limited_by == "start"
    assert "no rate tried" in capacity.summary_line(result)


def test_results_are_stored_per_stack_and_rendered(tmp_path):
    for models, cap in ((1, 30), (2, 57)):
        run, _ = server(cap)
        capacity.write(tmp_path, capacity.search(CapacitySearch(steps=6), run, "cpu", models, 500))
    run, _ = server(45)
    capacity.write(tmp_path, capacity.search(CapacitySearch(steps=6), run, "cpu", 2, 500))  # replaces 2's
    data = json.loads((tmp_path / "capacity.json").read_text())
    # 45: 10, 20, 40 pass, 80, 60, 50 fail: the six probes end at 40
    assert [(s["models"], s["capacity_rps"]) for s in data["stacks"]] == [(1, 30), (2, 40)]
    section = capacity.section_html(tmp_path)
    assert 'id="capacity-search"' in section and 'href="cpu/2_cap_r40.html"' in section
    assert capacity.section_html(tmp_path / "none") == ""
