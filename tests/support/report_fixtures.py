"""Run-record fixtures for the comparison report and compare: built in code, stored with `store.write`.

- `small_grid()`: CPU and GPU, numbers chosen by hand so the arithmetic in the tests can be checked on paper,
  plus one invalid and one failed run that must be shown but never counted;
- `cpu_only()`: the same CPU runs alone (no GPU data);
- `large_grid()`: 5 replica counts x 8 user counts x 3 spawn rates x 2 variants, from a queueing model,
  with a few invalid and failed runs, for readability and the browser check;
- `repeated_grid()`: CPU points run 3 times (one with a wide spread, one with an invalid repeat), a
  client-bound repeat, measurement windows and load-generator CPU on every measured run;
- `open_grid()`: a grid of users [4] x spawn [4] with open-loop runs at 10 and 20 req/s and a capacity search
  on CPU x 1 (its capacity.json in `open_grid_capacity()`), whose probes carry placeholder users/spawn of 1.
"""

from __future__ import annotations

from pathlib import Path

from loadgrid import capacity, store
from loadgrid.plan import format_number
from loadgrid.store import LoadReport, ReplicaReport, RunRecord, StackReport, Validity

PROVIDER = {"cpu": "CPUExecutionProvider", "gpu": "CUDAExecutionProvider"}


def run(variant: str, models: int, users: int, spawn: float, rps: float | None, p50: float | None = None,
        p95: float | None = None, *, status: str = "completed", reasons: list[str] | None = None,
        failures: int = 0, error: str | None = None, repeat: int = 1, client_bound: bool = False,
        window: dict | None = None, generator: dict | None = None) -> RunRecord:
    name = f"{models}_{users}_{format_number(spawn)}" + (f"_r{repeat}" if repeat > 1 else "")
    duration = 60.0
    load = None
    if rps is not None:
        requests = int(rps * duration)
        latency = {"p50": p50, "p90": p95 * 0.9, "p95": p95, "p99": p95 * 1.3, "max": p95 * 2, "mean": p50 * 1.1}
        load = LoadReport(0 if not failures else 1, requests, failures, rps, duration, latency,
                          {"HTTP 502": failures} if failures else {}, window=dict(window or {}),
                          generator=dict(generator or {}))
    reasons = list(reasons or ([error] if error else []))
    replicas = [ReplicaReport(f"c{i}", f"m{i}", "running", "healthy", provider=PROVIDER.get(variant))
                for i in range(1, models + 1)]
    return RunRecord(
        id=f"{variant}/{name}", variant=variant, models=models, users=users, spawn_rate=float(spawn), run_time_s=60,
        host="http://localhost:8080", status=status, started_at="2026-01-01T00:00:00Z",
        ended_at="2026-01-01T00:01:00Z",
        stack=StackReport(f"loadgrid-{variant}", ["docker-compose.yml"], models, models, {}, replicas),
        load=load, validity=Validity(not reasons, reasons, client_bound), error=error,
        files={"html": f"{name}.html"} if status != "failed" else {}, repeat=repeat,
    )


def small_grid() -> list[RunRecord]:
    """CPU: 1 replica saturates at 16 users (40 req/s, peak 41); 2 replicas peak at 76 req/s (1.85x, 93%).

    GPU at the two common valid points: 1_16_4 gives 2x the throughput (40 -> 80) and p95 300 -> 100 ms
    (cut 67%); 2_16_4 gives 1.5x (60 -> 90) and p95 120 -> 60 ms (cut 50%).
    """
    return [
        # cpu, 1 replica: 20 -> 38 -> 40 -> 41 req/s: after 16 users no rise of 5% or more.
        run("cpu", 1, 4, 4, 20.0, 40.0, 60.0),
        run("cpu", 1, 8, 4, 38.0, 60.0, 90.0),
        run("cpu", 1, 16, 4, 40.0, 150.0, 300.0),
        run("cpu", 1, 32, 4, 41.0, 400.0, 800.0),
        # cpu, 2 replicas: still rising at 32 users; best with p95 < 500 ms is 76 req/s at 32 users.
        run("cpu", 2, 4, 4, 21.0, 30.0, 50.0),
        run("cpu", 2, 16, 4, 60.0, 70.0, 120.0),
        run("cpu", 2, 32, 4, 76.0, 200.0, 450.0),
        # a second spawn rate at one point: the curve takes the higher throughput (60 above, not 55).
        run("cpu", 2, 16, 1, 55.0, 80.0, 130.0),
        # invalid (failed requests) with the highest throughput of all: must not count anywhere.
        run("cpu", 2, 64, 4, 500.0, 10.0, 20.0, failures=30,
            reasons=["30 of 30000 requests failed (0.1%), mostly: HTTP 502"]),
        # gpu
        run("gpu", 1, 16, 4, 80.0, 50.0, 100.0),
        run("gpu", 2, 16, 4, 90.0, 40.0, 60.0),
        # failed: no measurement at all.
        run("gpu", 2, 32, 4, None, status="failed", error="stack did not become healthy within 300 s"),
    ]


def cpu_only() -> list[RunRecord]:
    return [r for r in small_grid() if r.variant == "cpu"]


def large_grid() -> list[RunRecord]:
    """Closed-loop users (think time 0.45 s) against N replicas that each serve one request at a time."""
    records = []
    service = {"cpu": 0.05, "gpu": 0.02}
    for variant, s in service.items():
        for n in (1, 2, 3, 4, 6):
            capacity = n / s * (1 - 0.06 * (n - 1))
            for users in (1, 2, 4, 8, 16, 32, 64, 128):
                for spawn in (1, 5, 25):
                    offered = users / (0.45 + s)
                    rps = min(offered, capacity) * (1 - 0.01 * (spawn == 1))
                    latency = max(s, users / rps - 0.45)
                    if (variant, n, users, spawn) == ("cpu", 3, 64, 5):
                        records.append(run(variant, n, users, spawn, rps, latency * 1000, latency * 1500,
                                           failures=12, reasons=["12 of 1000 requests failed (1.2%), mostly: "
                                                                 "HTTP 502"]))
                    elif (variant, n, users, spawn) == ("gpu", 6, 128, 25):
                        records.append(run(variant, n, users, spawn, None, status="failed",
                                           error="replica m4 exited with code 137 (OOM-killed)"))
                    elif (variant, n, users, spawn) == ("gpu", 1, 8, 1):
                        records.append(run(variant, n, users, spawn, rps, latency * 1000, latency * 1500,
                                           reasons=["replica m1 ran on CPUExecutionProvider, not on the GPU"]))
                    else:
                        records.append(run(variant, n, users, spawn, rps, latency * 1000, latency * 1500))
    return records


WINDOW = {"start_at": 1767225605.0, "spawn_complete_at": 1767225600.0, "warmup_s": 5.0, "duration_s": 55.0}


def gen(cpu: float, cores: int = 1) -> dict:
    return {"processes": cores, "cores": cores, "cpu_pct_mean": cpu, "cpu_pct_max": min(100.0, cpu * 1.3),
            "samples": 55, "locust_cpu_warning": False}


CLIENT_BOUND = ("client-bound: Locust used 85% of its 1 core(s) (limit 60%), so the numbers measure the load "
                "generator; raise locust_processes or give it more cores")


def repeated_grid() -> list[RunRecord]:
    """CPU, 1 and 2 replicas x 4 and 16 users, spawn 4, three repeats each (hand-checkable arithmetic).

    - 1_4_4: 20, 21, 22 req/s (mean 21, sd 1, CI 21 ± 4.303/sqrt(3) = ±2.484), p95 60, 62, 64;
    - 1_16_4: 40, 40, 40 req/s with p95 300 each (no spread at all);
    - 2_4_4: 20, 30, 40 req/s: CV 33%, flagged as a wide spread;
    - 2_16_4: repeat 2 invalid (failed requests), repeat 3 client-bound: one usable repeat (60 req/s), no CI.
    """
    w = {"window": WINDOW}
    return [
        run("cpu", 1, 4, 4, 20.0, 40.0, 60.0, repeat=1, generator=gen(20.0), **w),
        run("cpu", 1, 4, 4, 21.0, 41.0, 62.0, repeat=2, generator=gen(21.0), **w),
        run("cpu", 1, 4, 4, 22.0, 42.0, 64.0, repeat=3, generator=gen(22.0), **w),
        run("cpu", 1, 16, 4, 40.0, 150.0, 300.0, repeat=1, generator=gen(30.0), **w),
        run("cpu", 1, 16, 4, 40.0, 150.0, 300.0, repeat=2, generator=gen(30.0), **w),
        run("cpu", 1, 16, 4, 40.0, 150.0, 300.0, repeat=3, generator=gen(30.0), **w),
        run("cpu", 2, 4, 4, 20.0, 30.0, 50.0, repeat=1, generator=gen(20.0), **w),
        run("cpu", 2, 4, 4, 30.0, 30.0, 50.0, repeat=2, generator=gen(25.0), **w),
        run("cpu", 2, 4, 4, 40.0, 30.0, 50.0, repeat=3, generator=gen(30.0), **w),
        run("cpu", 2, 16, 4, 60.0, 70.0, 120.0, repeat=1, generator=gen(40.0, 2), **w),
        run("cpu", 2, 16, 4, 62.0, 70.0, 120.0, repeat=2, failures=5, generator=gen(40.0, 2),
            reasons=["5 of 3720 requests failed (0.1%), mostly: HTTP 502"], **w),
        run("cpu", 2, 16, 4, 55.0, 75.0, 130.0, repeat=3, client_bound=True, reasons=[CLIENT_BOUND],
            generator=gen(85.0), **w),
    ]


def open_run(variant: str, models: int, rate: float, rps: float | None, p50: float | None = None,
             p95: float | None = None, *, intended_p95: float | None = None, probe: bool = False,
             dropped: int = 0, failures: int = 0, reasons: list[str] | None = None, status: str = "completed",
             error: str | None = None, processes: int = 1) -> RunRecord:
    """An open-loop run (or a capacity probe) as the grid stores it: users = spawn rate = Locust processes."""
    r = run(variant, models, processes, processes, rps, p50, p95, status=status, reasons=reasons,
            failures=failures, error=error)
    name = f"{models}_{'cap_' if probe else ''}r{format_number(rate)}"
    r.id, r.arrival_rate, r.arrival, r.capacity_probe = f"{variant}/{name}", float(rate), "constant", probe
    r.files = {"html": f"{name}.html"} if status != "failed" else {}
    if r.load is not None:
        r.load.open_loop = {"arrival": "constant", "intended_rate": rate, "achieved_rate": rate, "dropped": dropped,
                            "processes": processes}
        if intended_p95 is not None:
            r.load.open_loop.latency_intended_ms = {"p50": p50 * 1.2, "p95": intended_p95,
                                                       "p99": intended_p95 * 1.2}
        r.load.window_thirds = [{"requests": int(rps * 20), "p50": p50, "p95": p95, "rps": rps}] * 3
    return r


DROPPED = "40 of 7200 sends dropped: every in-flight slot was busy (the server fell behind)"


def open_grid() -> list[RunRecord]:
    """Users [4] x spawn [4] on 1 and 2 replicas, CPU and GPU; open loop at 10 and 20 req/s everywhere; a
    capacity search on CPU x 1: 10, 20, 40, 80 pass, 160 fails on latency (intended p95 2000 ms, actual 400),
    120 fails with dropped sends, 100 passes: capacity 100 req/s. cpu/2_r20 failed with no measurement.
    GPU x 1 has no search: its highest passing open-loop rate is 20 req/s."""
    probes = [open_run("cpu", 1, rate, rate, 20.0 + rate / 10, 40.0 + rate, intended_p95=45.0 + rate, probe=True)
              for rate in (10, 20, 40, 80)]
    probes += [
        open_run("cpu", 1, 160, 131.0, 150.0, 400.0, intended_p95=2000.0, probe=True),
        open_run("cpu", 1, 120, 118.0, 60.0, 300.0, intended_p95=420.0, probe=True, dropped=40, reasons=[DROPPED]),
        open_run("cpu", 1, 100, 99.8, 40.0, 150.0, intended_p95=180.0, probe=True),
    ]
    return [
        run("cpu", 1, 4, 4, 139.0, 20.0, 30.0),
        run("cpu", 2, 4, 4, 150.0, 15.0, 25.0),
        run("gpu", 1, 4, 4, 300.0, 8.0, 12.0),
        open_run("cpu", 1, 10, 10.0, 20.0, 35.0, intended_p95=36.0),
        open_run("cpu", 1, 20, 20.0, 21.0, 38.0, intended_p95=39.0),
        open_run("cpu", 2, 10, 10.0, 18.0, 30.0, intended_p95=31.0),
        open_run("cpu", 2, 20, None, status="failed", error="stack did not become healthy within 300 s"),
        open_run("gpu", 1, 10, 10.0, 6.0, 10.0, intended_p95=11.0),
        open_run("gpu", 1, 20, 20.0, 6.0, 11.0, intended_p95=12.0),
        *probes,
    ]


def open_grid_capacity(records: list[RunRecord], target_ms: float = 500.0) -> list[capacity.Result]:
    """capacity.json's entry for CPU x 1, judged from the fixture's own probes (in the order they ran)."""
    probes = [capacity.judge_probe(r, target_ms) for r in records if r.capacity_probe]
    passed = [p for p in probes if p.passed]
    best = max(passed, key=lambda p: p.rate)
    failing = min((p for p in probes if not p.passed), key=lambda p: p.rate)
    return [capacity.Result("cpu", 1, target_ms, "constant", best.rate, best.run_id, best.p95_ms, best.achieved_rps,
                            failing.rate, failing.kind, "2026-01-01T00:10:00Z", probes)]


def write(folder: Path, records: list[RunRecord], latency_target_ms: float | None = None,
          searches: list[capacity.Result] = ()) -> Path:
    """Store records as a grid run would, with a stand-in Locust report beside each measured one."""
    for r in records:
        name = r.id.split("/", 1)[1]
        store.write(r, folder / r.variant / f"{name}.json")
        if r.files.get("html"):
            (folder / r.variant / r.files["html"]).write_text(f"<!doctype html><title>{r.id}</title><p>{r.id}</p>")
    if latency_target_ms is not None:
        (folder / "session.json").write_text(f'{{"latency_target_ms": {latency_target_ms}}}\n')
    for result in searches:
        capacity.write(folder, result)
    return folder
