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


# --- judge_probe: the pass rules, on records built by hand ---------------------------------------------------

def _probe_record(rate=100.0, rps=100.0, p95=100.0, failures=0, dropped=0, thirds=None, valid=True,
                  client_bound=False, intended_p95=None, reasons=()):
    from loadgrid.store import LoadReport, RunRecord, StackReport, Validity

    open_loop = {"achieved_rate": rate, "dropped": dropped}
    if intended_p95 is not None:
        open_loop["latency_intended_ms"] = {"p50": intended_p95 / 2, "p95": intended_p95}
    load = LoadReport(0, requests=1000, failures=failures, rps=rps, latency_ms={"p50": p95 / 2, "p95": p95},
                      open_loop=open_loop)
    if thirds is not None:
        load.window_thirds = [{"requests": 300, "p50": t / 2, "p95": t, "rps": rps} for t in thirds]
    return RunRecord(id=f"cpu/1_cap_r{rate:g}", variant="cpu", models=1, users=1, spawn_rate=1, run_time_s=30,
                     host="h", status="completed", started_at="", ended_at="", stack=StackReport("p", [], 1),
                     load=load, validity=Validity(valid, list(reasons), client_bound), arrival_rate=rate)


def test_a_stable_probe_passes():
    probe = capacity.judge_probe(_probe_record(thirds=[100, 105, 110]), 500)
    assert probe.passed and probe.why == ""


def test_throughput_under_98_percent_of_the_offered_rate_fails_unstable():
    probe = capacity.judge_probe(_probe_record(rate=132, rps=128.9, thirds=[100, 100, 100]), 500)
    assert not probe.passed and probe.kind == "unstable" and "98%" in probe.why
    assert capacity.judge_probe(_probe_record(rate=132, rps=129.5, thirds=[100, 100, 100]), 500).passed


def test_latency_growing_across_the_window_fails_unstable():
    # 132 req/s on a ~132 req/s replica: p95 within the target, but the queue (and the last third's p95) grows
    probe = capacity.judge_probe(_probe_record(rate=132, rps=131.9, p95=300, thirds=[100, 200, 400]), 500)
    assert not probe.passed and probe.kind == "unstable" and "latency growing" in probe.why
    assert "170 ms" in probe.why  # 100 x 1.5 + 20
    # both conditions: 1.5x alone (fast service, 4 -> 10 ms) or +20 ms alone (300 -> 330 ms) are noise
    assert capacity.judge_probe(_probe_record(thirds=[4, 6, 10]), 500).passed
    assert capacity.judge_probe(_probe_record(thirds=[300, 310, 330], p95=330), 500).passed


def test_without_window_thirds_the_trend_is_said_not_judged():
    probe = capacity.judge_probe(_probe_record(thirds=None), 500)
    assert probe.passed and probe.why == "latency trend: not judged (the record has no window thirds)"


def test_failed_or_dropped_requests_are_judged_before_client_bound():
    record = _probe_record(failures=3, valid=False, client_bound=True, reasons=["client-bound: Locust CPU 90%"])
    probe = capacity.judge_probe(record, 500)
    assert probe.kind == "errors" and probe.why.startswith("3 failed requests")
    probe = capacity.judge_probe(_probe_record(dropped=5, valid=False, client_bound=True), 500)
    assert probe.kind == "errors" and "5 dropped sends" in probe.why
    assert capacity.judge_probe(_probe_record(valid=False, client_bound=True), 500).kind == "generator"


def test_p95_from_the_intended_send_time_is_judged_when_recorded():
    probe = capacity.judge_probe(_probe_record(p95=100, intended_p95=650, thirds=[100, 100, 100]), 500)
    assert not probe.passed and probe.kind == "latency" and probe.p95_ms == 650
    assert "intended send time" in probe.why
    assert capacity.judge_probe(_probe_record(p95=100, thirds=[100, 100, 100]), 500).p95_ms == 100


def test_a_fractional_max_probes_no_rate_twice_and_names_are_unique():
    from loadgrid.plan import RunSpec

    run, tried = server(10_000)
    result = capacity.search(CapacitySearch(start=10, max=150.4, steps=8), run, "cpu", 1, 500)
    assert tried == [10, 20, 40, 80, 150]  # was 10, 20, 40, 80, 150, 150, 150, 150
    assert result.limited_by == "max" and result.capacity_rps == 150
    names = [RunSpec("cpu", 1, 1, 1.0, 30, arrival_rate=r, probe=True).name for r in tried]
    assert len(set(names)) == len(names)
    # fractional factor and start: still one probe per rate, bisection included
    run, tried = server(57.3)
    capacity.search(CapacitySearch(start=7.33, max=150.4, steps=20, factor=1.7), run, "cpu", 1, 500)
    assert len(tried) == len(set(tried))
    assert len({f"{r:g}" for r in tried}) == len(tried)
