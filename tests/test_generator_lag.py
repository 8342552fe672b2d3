"""The load generator's own lag (issue 11.1): a starved or blocked Locust uses little CPU while its timestamps
lag, so CPU share alone cannot say it was the bottleneck. Pure rules first, then real Locust runs against a
local server on 127.0.0.1 (each bounded to a few seconds): a locustfile that blocks its event loop without
using CPU must read client-bound by lag, an ordinary one must not, and the CPU share is taken over the cores
Locust can use."""

from __future__ import annotations

import math
import os

import pytest
from support.engine import ROOT
from support.sink_server import SinkServer

from loadgrid import load, validity
from loadgrid.plan import RunSpec
from loadgrid.store import LoadReport

LOCUSTFILE = ROOT / "locustfile.py"


def lag_part(pid: int, lags_ms: list[float], per_s: dict | None = None) -> dict:
    hist: dict[str, int] = {}
    for ms in lags_ms:
        k = str(round(math.log(max(ms, 0.001)) / math.log(1.001)))
        hist[k] = hist.get(k, 0) + 1
    return {"pid": pid, "lag": {"count": len(lags_ms), "sum_ms": sum(lags_ms), "max_ms": max(lags_ms), "hist": hist,
                                "per_s": per_s or {}, "interval_ms": 20.0}}


def test_lag_merges_processes_and_keeps_the_starved_one_visible():
    calm = lag_part(11, [0.2] * 980 + [1.0] * 20, {"100": 1.0, "101": 0.3})
    starved = lag_part(12, [0.2] * 900 + [40.0] * 100, {"100": 40.0, "102": 12.0})
    lag = load.generator_lag([calm, starved, {"pid": 13}])  # a part without lag (master-less old file) is skipped
    assert lag["samples"] == 2000 and lag["interval_ms"] == 20.0
    assert lag["p50"] == pytest.approx(0.2, rel=0.001) and lag["p99"] == pytest.approx(40.0, rel=0.001)
    assert lag["max"] == 40.0
    assert [(p["pid"], p["p99"]) for p in lag["per_process"]] == [(11, pytest.approx(1.0, rel=0.001)),
                                                                   (12, pytest.approx(40.0, rel=0.001))]
    assert lag["series"] == [[100, 40.0], [101, 0.3], [102, 12.0]]  # the worst per second over processes
    assert load.generator_lag([]) == {} and load.generator_lag([{"lag": {"count": 0}}]) == {}


@pytest.mark.parametrize(("p99", "p50", "samples", "bound"), [
    (5.0, 50.0, 1000, False),     # under the 8 ms floor
    (9.0, 50.0, 1000, True),      # over the floor (5% of 50 ms is 2.5 ms)
    (15.0, 400.0, 1000, False),   # 5% of a 400 ms p50 is 20 ms: 15 ms of lag is not material there
    (25.0, 400.0, 1000, True),
    (30.0, 50.0, 49, False),      # too few wake-ups to place a p99
])
def test_lag_is_material_against_the_measured_p50(p99, p50, samples, bound):
    generator = {"cores": 1, "cpu_pct_mean": 20.0, "lag_ms": {"p99": p99, "max": p99 * 2, "samples": samples}}
    got, why = validity.generator_bound(generator, 60.0, p50)
    assert got is bound
    if bound:
        assert f"lag p99 {p99:.1f} ms" in why and "CPU was 20%" in why
        assert f"later than {validity.lag_limit_ms(p50):.1f} ms, the limit max(8 ms, 5% of p50" in why


def test_judge_reads_lag_from_the_load_report():
    report = LoadReport(locust_exit=0, requests=500, rps=50.0, duration_s=10.0, latency_ms={"p50": 52.0},
                        window={"start_at": 1.0, "end_at": 11.0, "duration_s": 10.0},
                        generator={"cores": 1, "cpu_pct_mean": 24.0,
                                   "lag_ms": {"p50": 9.0, "p99": 38.0, "max": 51.0, "samples": 500}})
    verdict = validity.judge("target", 0, report, None, [], [], [], run_time_s=10)
    assert not verdict.valid and verdict.client_bound
    assert any("event loop woke late (lag p99 38.0 ms" in r for r in verdict.reasons)


def test_a_hiccup_or_two_is_not_a_lagging_generator():
    # 150 wake-ups (a 3 s window): p99 is the second worst; two late wake-ups are not 1% lagging.
    gen = {"cores": 1, "cpu_pct_mean": 4.0,
           "lag_ms": {"p99": 11.2, "max": 27.7, "samples": 150, "limit_ms": 8.0, "over_limit": 2}}
    assert validity.generator_bound(gen, 60.0, 21.4) == (False, "")
    gen["lag_ms"]["over_limit"] = validity.LAG_MIN_OVER
    bound, why = validity.generator_bound(gen, 60.0, 21.4)
    assert bound and f"{validity.LAG_MIN_OVER} of 150 wake-ups later than 8.0 ms" in why
    # the count applies to the limit it was taken at; a record judged against another p50 falls back to p99
    gen["lag_ms"]["over_limit"] = 2
    assert validity.generator_bound(gen, 60.0, 210.0)[0]  # limit 10.5 ms, p99 11.2 ms


def test_cpu_share_is_over_the_cores_locust_can_use():
    # 4 processes on 2 cores could never pass 50% when divided by 4; the divisor is min(processes, usable).
    usable = load.usable_cores()
    assert usable == len(os.sched_getaffinity(0))
    meter = load.CpuMeter.__new__(load.CpuMeter)
    meter.samples = [(10.0, 11.0, 1.9), (11.0, 12.0, 1.9)]  # 1.9 cores busy
    assert meter.summary(None, cores=min(4, 2))["cpu_pct_mean"] == 95.0
    assert validity.generator_bound({"cores": 2, "cpu_pct_mean": 95.0}, 60.0)[0]


# Blocks the whole process (every greenlet, the event loop) for 30 ms after each response without using CPU,
# as a synchronous library call in a locustfile does: Locust's CPU stays low while its clock runs late.
BLOCKING = """
import ctypes
from locust import HttpUser, constant, task

_libc = ctypes.CDLL(None)


class Blocking(HttpUser):
    wait_time = constant(0)

    @task
    def predict(self):
        self.client.post("/predict", data=b"x")
        _libc.usleep(30000)  # not patched by gevent: the hub cannot run
"""


def run(tmp_path, host, spec, locustfile=LOCUSTFILE, **options) -> load.LoadResult:
    files = load.RunFiles(tmp_path / "runs", spec.name)
    opts = load.LoadOptions(**options)
    env = {**load.locust_env(ROOT / "images", "/predict", files, opts, spec), "ENDPOINT": "", "PAYLOAD": ""}
    return load.run(spec, host, locustfile, files, env, opts)


def as_report(result: load.LoadResult) -> LoadReport:
    return LoadReport(locust_exit=result.locust_exit, requests=result.requests, failures=result.failures,
                      rps=result.rps, duration_s=result.duration_s, latency_ms=result.latency_ms,
                      window=result.window, whole_run=result.whole_run, generator=result.generator)


def test_a_blocked_event_loop_reads_client_bound_by_lag_not_cpu(tmp_path):
    locustfile = tmp_path / "blocking_locustfile.py"
    locustfile.write_text(BLOCKING)
    with SinkServer(delay_s=0.05) as sink:
        result = run(tmp_path, sink.url, RunSpec("target", 1, 4, 4.0, 5), locustfile)
    assert result.error is None and result.requests > 20
    gen = result.generator
    lag = gen.lag_ms
    assert lag.samples >= validity.LAG_MIN_SAMPLES and lag.interval_ms == 20.0
    assert lag.p99 > 20.0, lag  # 30 ms blocks, several a cycle
    assert lag.limit_ms == pytest.approx(validity.lag_limit_ms(result.latency_ms["p50"]), abs=0.01)
    assert lag.over_limit >= validity.LAG_MIN_OVER
    assert gen.cpu_pct_mean is not None and gen.cpu_pct_mean < 60.0, gen  # the CPU rule would pass it
    bound, why = validity.generator_bound(gen, 60.0, result.latency_ms["p50"])
    assert bound and "event loop woke late" in why
    verdict = validity.judge("target", 0, as_report(result), None, [], [], [], run_time_s=5, ramp_up_s=1)
    assert verdict.client_bound and not verdict.valid


def test_an_ordinary_run_records_lag_and_cpu_series_and_is_not_bound_by_them(tmp_path):
    with SinkServer(delay_s=0.05) as sink:
        result = run(tmp_path, sink.url, RunSpec("target", 1, 2, 2.0, 4))
    assert result.error is None
    gen = result.generator
    assert gen.cores == 1 and gen.usable_cores == len(os.sched_getaffinity(0))
    lag = gen.lag_ms
    # ~3 s of window at one wake-up per 20 ms; the sampler stops with the users
    assert 50 <= lag.samples <= 4 * 50 + 10, lag
    assert len(lag.per_process) == 1 and lag.series and lag.p50 <= lag.p99 <= lag.max
    assert all(t > result.window.start_at for t, _ in gen.cpu_series)  # window intervals only
    assert gen.cpu_series and all(0 <= pct <= 100 * gen.cores + 5 for _, pct in gen.cpu_series)


def test_the_sampler_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("LOADGRID_LAG_INTERVAL_MS", "0")
    with SinkServer(delay_s=0.01) as sink:
        result = run(tmp_path, sink.url, RunSpec("target", 1, 1, 1.0, 2), requests_per_user=5)
    assert result.error is None and result.requests == 5 and result.generator.lag_ms is None
