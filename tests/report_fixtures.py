"""Run-record fixtures for the comparison report and compare: built in code, stored with `store.write`.

- `small_grid()`: CPU and GPU, numbers chosen by hand so the arithmetic in the tests can be checked on paper,
  plus one invalid and one failed run that must be shown but never counted;
- `cpu_only()`: the same CPU runs alone (no GPU data);
- `large_grid()`: 5 replica counts x 8 user counts x 3 spawn rates x 2 variants, from a queueing model,
  with a few invalid and failed runs, for readability and the browser check;
- `repeated_grid()`: CPU points run 3 times (one with a wide spread, one with an invalid repeat), a
  client-bound repeat, measurement windows and load-generator CPU on every measured run.
"""

from __future__ import annotations

from pathlib import Path

from loadgrid import store
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


def write(folder: Path, records: list[RunRecord], latency_target_ms: float | None = None) -> Path:
    """Store records as a grid run would, with a stand-in Locust report beside each measured one."""
    for r in records:
        name = r.id.split("/", 1)[1]
        store.write(r, folder / r.variant / f"{name}.json")
        if r.files.get("html"):
            (folder / r.variant / r.files["html"]).write_text(f"<!doctype html><title>{r.id}</title><p>{r.id}</p>")
    if latency_target_ms is not None:
        (folder / "session.json").write_text(f'{{"latency_target_ms": {latency_target_ms}}}\n')
    return folder
