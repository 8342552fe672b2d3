"""Locust argument building and totals from Locust's final JSON: pure, no Docker."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from loadgrid import load
from loadgrid.plan import RunSpec

SPEC = RunSpec("cpu", 2, 50, 10.0, 60)


def test_locust_command():
    files = load.RunFiles.for_run(SPEC, Path("/out"))
    cmd = load.locust_command(SPEC, "http://localhost:8080", Path("/p/locustfile.py"), files)
    assert cmd[:3] == [sys.executable, "-m", "locust"]

    def arg(flag):
        return cmd[cmd.index(flag) + 1]

    assert "--headless" in cmd
    assert arg("--users") == "50" and arg("--spawn-rate") == "10" and arg("--run-time") == "60s"
    assert arg("--host") == "http://localhost:8080"
    assert arg("--html") == "/out/cpu/2_50_10.html"
    assert arg("--csv") == "/out/cpu/2_50_10"
    # Locust appends .json itself
    assert arg("--json-file") == "/out/cpu/2_50_10.stats"
    assert files.stats_json == Path("/out/cpu/2_50_10.stats.json")
    assert files.record == Path("/out/cpu/2_50_10.json")


def entry(times: dict, failures=0, start=100.0, end=110.0):
    return {"name": "/predict", "method": "POST", "start_time": start, "last_request_timestamp": end,
            "num_requests": sum(times.values()), "num_failures": failures, "max_response_time": max(map(int, times)),
            "response_times": {str(k): v for k, v in times.items()}}


def test_totals_merge_endpoints_and_compute_percentiles():
    result = load.totals([entry({10: 50, 20: 40}, start=100, end=108), entry({30: 9, 400: 1}, failures=2, end=110)])
    assert result.requests == 100 and result.failures == 2
    assert result.duration_s == 10.0 and result.rps == 10.0
    assert result.latency_ms["p50"] == 10.0
    assert result.latency_ms["p90"] == 20.0
    assert result.latency_ms["p95"] == 30.0
    assert result.latency_ms["p99"] == 30.0
    assert result.latency_ms["max"] == 400.0


def test_percentile_edges():
    assert load.percentile({}, 0.5) == 0.0
    assert load.percentile({7: 1}, 0.99) == 7.0
    assert load.percentile({1: 99, 1000: 1}, 0.99) == 1.0
    assert load.percentile({1: 98, 1000: 2}, 0.99) == 1000.0


def test_parse_result_without_stats_is_a_failed_run(tmp_path):
    files = load.RunFiles(tmp_path, "1_1_1")
    files.locust_log.write_text("Traceback...\nImportError: boom\n")
    result = load.parse_result(2, files)
    assert result.error and "no final stats" in result.error and "boom" in result.error


@pytest.mark.parametrize("code, broken", [(0, False), (1, False), (2, True)])
def test_locust_exit_codes(tmp_path, code, broken):
    files = load.RunFiles(tmp_path, "1_1_1")
    files.stats_json.write_text(json.dumps([entry({10: 5}, failures=1 if code else 0)]))
    files.locust_log.write_text("")
    assert (load.parse_result(code, files).error is not None) is broken


def test_self_delay_estimate_from_cpu_share():
    # 37% of one core over 20 s for 12,245 requests: 0.6 ms of Locust CPU each; 50 users on that process can
    # queue about 30 ms behind each other (bench/accuracy.py measured the median 13 ms over the true 50 ms).
    gen = {"processes": 1, "cores": 1, "cpu_pct_mean": 37.0}
    delay = load.self_delay(gen, 12245, 20.0, 50)
    assert delay == {"cpu_ms_per_request": 0.604, "self_delay_worst_ms": 30.2}
    assert load.self_delay({"processes": 2, "cores": 2, "cpu_pct_mean": 35.0}, 1000, 10.0, 100)[
        "self_delay_worst_ms"] == 350.0
    assert load.self_delay({"cpu_pct_mean": None}, 10, 1.0, 1) == {}


HISTORY_HEADER = ("Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
                  "99.99%,100%,Total Request Count,Total Failure Count,Total Median Response Time,"
                  "Total Average Response Time,Total Min Response Time,Total Max Response Time,"
                  "Total Average Content Size\r\n")


def history_row(ts, rps, p95, requests, failures):
    return f"{ts},10,,Aggregated,{rps},0.000000,40,50,60,70,80,{p95},100,110,120,130,140,{requests},{failures}," \
           "40,45.5,3,200,512\r\n"


def test_live_figures_are_the_last_complete_row(tmp_path):
    path = tmp_path / "run_stats_history.csv"
    assert load.live_figures(path) is None  # Locust has not written it yet
    path.write_text(HISTORY_HEADER)
    assert load.live_figures(path) is None  # the header only
    path.write_text(HISTORY_HEADER + history_row(1, "0.000000", "N/A", 0, 0))
    assert load.live_figures(path) == load.LiveFigures(rps=0.0, p95_ms=None, failures=0, requests=0)
    rows = "".join(history_row(t, f"{t * 1.5:f}", 90 + t, 10 * t, t // 100) for t in range(2, 2000))
    path.write_text(HISTORY_HEADER + rows + "2000,10,,Aggreg")  # a long run, its last row cut by a flush
    assert load.live_figures(path) == load.LiveFigures(rps=1999 * 1.5, p95_ms=2089.0, failures=19, requests=19990)


def test_run_passes_each_tick_the_live_figures(tmp_path, monkeypatch):
    # A stand-in for Locust: writes its stats history, then waits (bounded) for loadgrid's tick to have seen it.
    files = load.RunFiles(tmp_path / "cpu", "1_5_5")
    seen = tmp_path / "ticked"
    text = HISTORY_HEADER + history_row(1, "7.5", 42, 30, 2)
    script = (f"import pathlib, time\n"
              f"pathlib.Path({str(files.stats_history)!r}).write_text({text!r})\n"
              f"end = time.monotonic() + 20\n"
              f"while not pathlib.Path({str(seen)!r}).exists() and time.monotonic() < end:\n"
              f"    time.sleep(0.05)\n")
    monkeypatch.setattr(load, "locust_command", lambda *a, **k: [sys.executable, "-c", script])
    ticks = []

    def on_tick(seconds, live):
        ticks.append((seconds, live))
        if live is not None:
            seen.touch()

    load.run(RunSpec("cpu", 1, 5, 5.0, 5), "http://h", Path("l.py"), files, {"PATH": "/usr/bin"}, on_tick=on_tick)
    assert ticks and all(seconds > 0 for seconds, _ in ticks)
    assert ticks[-1][1] == load.LiveFigures(rps=7.5, p95_ms=42.0, failures=2, requests=30)
