"""Rates and latencies that are measurements: measured window bounds, open-loop achieved rate from actual
send times, latency from the intended send time (coordinated omission), exact percentiles. Pure math first,
then real Locust runs against local servers on 127.0.0.1 (each bounded to a few seconds)."""

from __future__ import annotations

import json
import math

import pytest
from support.engine import ROOT
from support.sink_server import SinkServer

from loadgrid import load, validity
from loadgrid.plan import RunSpec
from loadgrid.store import LoadReport

LOCUSTFILE = ROOT / "locustfile.py"


def key(ms: float, step: float = 1.001) -> int:  # the plugin's bucket key (loadgrid/locust_latency.py)
    return round(math.log(ms) / math.log(step))


def part(times: list[float], **extra) -> dict:
    hist: dict[str, int] = {}
    for ms in times:
        hist[str(key(ms))] = hist.get(str(key(ms)), 0) + 1
    return {"count": len(times), "sum_ms": sum(times), "max_ms": max(times), "hist": hist, **extra}


def test_exact_percentiles_keep_0_1_percent_and_merge_processes():
    # Locust's buckets store 104.9 as 100 and 105.1 as 110; the log histogram keeps both within 0.05%.
    one = part([104.9] * 60 + [250.0] * 4)
    two = part([105.1] * 30 + [9.87] * 5 + [1999.5])
    out = load.exact_latency([one, two])
    assert out["p50"] == 104.9 and out["p90"] == 105.1 and out["p95"] == 105.1
    assert out["p99"] == pytest.approx(250.0, rel=0.0005)
    assert out["max"] == 1999.5 and out["mean"] == round((104.9 * 60 + 1000 + 105.1 * 30 + 49.35 + 1999.5) / 100, 1)
    for ms in (0.37, 1.0, 52.3, 104.9, 9999.0):  # every bucket within 0.05% of what it holds
        assert abs(load.log_percentile({key(ms): 1}, 0.5) / ms - 1) <= 0.0005
    merged = load.merge_histograms([one["hist"], two["hist"]])
    assert sum(merged.values()) == 100 and merged[key(104.9)] == 60
    assert load.exact_latency([]) == {} and load.exact_latency([{"count": 0, "hist": {}}]) == {}


def test_window_thirds_by_request_end_time():
    # 0.25 s bins from t=100 to t=106: 10 requests a bin at 50 ms for the first 2 s, then 200 ms at the end.
    bins = {}
    for b in range(400, 424):
        ms = 50.0 if b < 408 else 100.0 if b < 416 else 200.0
        bins[str(b)] = {str(key(ms, 1.01)): 10}
    thirds = load.window_thirds([{"bins": bins, "bin_s": 0.25}], 100.0, 106.0)
    assert [t["requests"] for t in thirds] == [80, 80, 80] and [t["rps"] for t in thirds] == [40.0] * 3
    assert [t["p95"] for t in thirds] == pytest.approx([50, 100, 200], rel=0.005)  # 1% buckets
    assert load.window_thirds([], 100.0, 106.0) == []


def test_open_loop_counts_use_actual_send_times_and_distributions():
    spec = RunSpec("target", 1, 1, 1.0, 10, arrival_rate=100)
    late = {str(key(0.5)): 90, str(key(30.0)): 10}
    counts = {"window_start_at": 100.0, "first_slot_at": 100.0, "last_slot_at": 105.0, "scheduled": 500,
              "sent": 500, "late": 10, "dropped": 0, "late_tolerance_ms": 20.0, "max_late_ms": 31.0,
              "max_in_flight": 1000, "first_send_at": 100.01, "last_send_at": 109.9, "stopped_at": 110.0,
              "send_late_hist": late}
    # the generator got through 5 s of slots in 10 s: it sent 50 req/s, not the 100 it scheduled
    intended = {"intended": part([40.0] * 50 + [900.0] * 50)}
    out = load.open_loop_counts([counts], spec, load.LoadOptions(), [intended])
    assert out.scheduled_rate == 100.0 and out.achieved_rate == 50.0 and out.achieved_from == "send times"
    assert out.send_late_ms == {"p50": 0.5, "p99": 30.0, "max": 31.0}
    assert out.latency_intended_ms["p50"] == 40.0
    assert out.latency_intended_ms["p95"] == pytest.approx(900.0, rel=0.0005)
    reasons, behind = validity.open_loop_problems(out)
    assert behind and "50 of 100 req/s sent" in reasons[0]


def run(tmp_path, host, spec, locustfile=LOCUSTFILE, **options) -> load.LoadResult:
    files = load.RunFiles(tmp_path / "runs", spec.name)
    opts = load.LoadOptions(**options)
    env = {**load.locust_env(ROOT / "images", "/predict", files, opts, spec), "ENDPOINT": "", "PAYLOAD": ""}
    result = load.run(spec, host, locustfile, files, env, opts)
    assert not files.latency_parts() and not files.count_parts()  # merged into the result and removed
    return result


def test_one_user_x_20_requests_of_100_ms_reports_the_true_rate(tmp_path):
    with SinkServer(delay_s=0.1) as slow:
        result = run(tmp_path, slow.url, RunSpec("target", 1, 1, 1.0, 30), requests_per_user=20)
        seen = [s.at for s in slow.seen]
    assert result.error is None and result.requests == 20 and result.stop.by == "requests"
    # true: from the first send to the last answer (the server saw the first request when it was sent and held
    # the last one 100 ms); the last answer's trip back is included by adding the measured mean overhead.
    overhead_s = result.latency_ms["mean"] / 1000 - 0.1
    true_rate = 20 / (seen[-1] - seen[0] + 0.1 + overhead_s)
    assert abs(result.rps / true_rate - 1) < 0.02, (result.rps, true_rate, result.window)
    # Locust's own first-to-last-answer span leaves out the first request's 100 ms: about 5% too fast
    assert 20 / result.window.locust_duration_s / true_rate - 1 > 0.03
    assert result.window.bounds == "first user started to last user finished"
    assert result.window.end_at - result.window.start_at == pytest.approx(result.duration_s, abs=0.002)
    assert result.whole_run.rps == result.rps


RECORDING = """
import json, os
from locust import events
from locustfile import ModelUser  # noqa: F401  the project's own user

TIMES = []


@events.request.add_listener
def _keep(response_time, **_kw):
    TIMES.append(response_time)


@events.quitting.add_listener
def _dump(**_kw):
    with open(os.environ["RAW_TIMES_FILE"], "w") as fh:
        json.dump(TIMES, fh)
"""


def test_exact_latency_reads_what_the_client_measured_not_locusts_bucket(tmp_path, monkeypatch):
    # ~105 ms a request: Locust's buckets say 100 or 110; the record says what the client measured, which a
    # test locustfile keeps raw (every response_time Locust's client timed) to compare with.
    locustfile = tmp_path / "recording_locustfile.py"
    locustfile.write_text(RECORDING)
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}:{__import__('os').environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("RAW_TIMES_FILE", str(tmp_path / "raw.json"))
    with SinkServer(delay_s=0.1035) as slow:
        result = run(tmp_path, slow.url, RunSpec("target", 1, 2, 2.0, 30), locustfile, requests_per_user=10)
    raw = sorted(json.loads((tmp_path / "raw.json").read_text()))
    assert result.window.latency_from == "exact" and len(raw) == result.requests == 20
    for name, q in load.PERCENTILES.items():  # same rank rule: the ceil(q * n)-th smallest
        truth = raw[math.ceil(q * len(raw)) - 1]
        assert abs(result.latency_ms[name] / truth - 1) < 0.001, (name, result.latency_ms, truth)
    assert result.latency_ms["max"] == round(raw[-1], 1) and result.latency_ms["mean"] == round(sum(raw) / 20, 1)
    truth_p50 = raw[9]
    locust_error = abs(result.latency_locust_ms["p50"] - truth_p50)
    assert result.latency_locust_ms["p50"] in (100.0, 110.0)
    assert locust_error > 10 * abs(result.latency_ms["p50"] - truth_p50)
    assert len(result.window_thirds) == 3 and sum(t["requests"] for t in result.window_thirds) == 20


BUSY = '''
import time
from loadgrid.locust_users import LoadgridUser


class Busy(LoadgridUser):
    def request(self):
        end = time.perf_counter() + 0.02
        while time.perf_counter() < end:  # 20 ms of CPU that blocks the gevent hub: at most 50 sends a second
            pass
        self.client.post("/predict", data=b"x", name="/predict")
'''


def test_a_generator_that_sends_late_shows_it_in_rate_and_intended_latency(tmp_path):
    locustfile = tmp_path / "busy_locustfile.py"
    locustfile.write_text(BUSY)
    with SinkServer(delay_s=0.005) as sink:
        result = run(tmp_path, sink.url, RunSpec("target", 1, 1, 1.0, 4, arrival_rate=100), locustfile,
                     expect="status")
    ol = result.open_loop
    assert result.error is None and ol.dropped == 0 and ol.achieved_from == "send times"
    assert ol.scheduled_rate == pytest.approx(100, rel=0.05)
    assert ol.achieved_rate < 0.7 * ol.scheduled_rate, ol  # ~50 req/s really left
    reasons, behind = validity.open_loop_problems(ol)
    assert behind and any("fell behind its schedule" in r for r in reasons)
    # measured from the actual send the server looks fast; from the intended send, the lateness shows
    # measured from the actual send the lateness is hidden; from the intended send (the slot) it shows
    actual, intended = result.latency_ms, ol.latency_intended_ms
    assert intended["p50"] > actual["p50"] + 0.8 * ol.send_late_ms["p50"], (actual, ol)
    assert intended["p95"] > actual["p95"] + 0.25 * ol.send_late_ms["p50"] and ol.send_late_ms["p50"] > 200
    assert ol.send_late_ms["max"] >= ol.send_late_ms["p99"] >= ol.send_late_ms["p50"]
    assert ol.send_late_ms["p99"] > 500 and ol.send_late_ms["max"] >= ol.send_late_ms["p99"]


def test_timed_run_rate_counts_from_the_window_reset_not_from_the_first_answer(tmp_path):
    # One user, 100 ms a request, a 3 s run: the first answer after the reset comes 100 ms into the window.
    with SinkServer(delay_s=0.1) as slow:
        result = run(tmp_path, slow.url, RunSpec("target", 1, 1, 1.0, 3))
    assert result.error is None and result.window.bounds == "stats reset to test_stop"
    true_rate = 1000 / result.latency_ms["mean"]  # one user back to back: one request per round trip
    assert abs(result.rps / true_rate - 1) < 0.02, (result.rps, true_rate, result.window)
    assert result.requests / result.window.locust_duration_s / true_rate - 1 > 0.02


def test_run_page_shows_both_open_loop_latencies_and_the_measured_window():
    from types import SimpleNamespace

    from loadgrid import run_page
    from loadgrid.store import LoadReport

    report = LoadReport(0, 400, 0, 40.0, 10.0, {"p50": 20.0, "p95": 30.0, "p99": 40.0, "max": 50.0},
                        window={"start_at": 100.0, "end_at": 110.0, "duration_s": 10.0,
                                "bounds": "stats reset to test_stop", "latency_from": "exact"},
                        latency_locust_ms={"p50": 20.0, "p95": 30.0},
                        open_loop={"latency_intended_ms": {"p50": 120.0, "p95": 930.0, "p99": 990.0, "max": 1000.0},
                                   "send_late_ms": {"p50": 100.0, "p99": 950.0, "max": 960.0}})
    html = run_page._totals(SimpleNamespace(load=report))
    assert "latency from the actual send</th><td>20</td><td>30</td>" in html
    assert "from the intended send (includes generator lateness)</th><td>120</td><td>930</td>" in html
    assert "to the end of the run" in html and "stats reset to test_stop" in html and "exact per-request" in html
    closed = run_page._totals(SimpleNamespace(load=LoadReport(0, 10, 0, 1.0, 10.0, {"p50": 1.0})))
    assert "intended send" not in closed


def test_failures_in_the_warm_up_are_judged_with_their_commonest_message(tmp_path):
    # The first 5 requests fail (503) during ramp-up; the window (after 1 s of warm-up) is clean.
    with SinkServer(delay_s=0.02, fail_first=5) as flaky:
        result = run(tmp_path, flaky.url, RunSpec("target", 1, 2, 2.0, 5), warmup_s=1.0)
    assert result.error is None and result.failures == 0 and result.whole_run.failures == 5
    messages = result.whole_run.failures_before_window
    assert sum(messages.values()) == 5 and all("503" in m for m in messages), messages
    report = LoadReport(locust_exit=result.locust_exit, requests=result.requests, failures=result.failures,
                        rps=result.rps, duration_s=result.duration_s, latency_ms=result.latency_ms,
                        window=result.window, whole_run=result.whole_run, generator=result.generator)
    verdict = validity.judge("target", 0, report, None, [], [], [], run_time_s=5, ramp_up_s=1)
    reason = next(r for r in verdict.reasons if "before the measurement window" in r)
    assert reason.startswith("5 requests failed before the measurement window (ramp-up/warm-up), mostly: ")
    assert "503" in reason and not verdict.valid
