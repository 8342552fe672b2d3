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
