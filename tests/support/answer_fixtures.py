"""Run records for the answer and the one capacity: closed-loop grid points plus open-loop capacity-search probes.

- `issue_grid()`: the issue's case: cpu, 1 replica, a grid at 4 users (139 req/s, p95 300 ms: closed loop) and a
  capacity search whose highest passing rate is 132 req/s; the probes above it fail on intended-time p95 (165:
  Locust's p95 496 ms is under 500, the intended 620 is not), on throughput (148: 140 req/s answered is under
  98%), and on latency (198, 264);
- `sized()`: cpu 1, 2, 3 replicas searched to 132, 250, 340 req/s and gpu 1 replica to 400 req/s, each with a
  closed-loop point of higher throughput that must not be the capacity.
"""

from __future__ import annotations

from loadgrid.plan import format_number
from loadgrid.store import LoadReport, RunRecord

from . import report_fixtures as fx


def probe(variant: str, models: int, rate: float, p95: float, rps: float | None = None, *, locust_p95=None,
          repeat: int = 1, probe_run: bool = True, failures: int = 0, reasons: list[str] | None = None) -> RunRecord:
    """An open-loop run at `rate` req/s whose p95 from the intended send time is `p95` (Locust's: `locust_p95`)."""
    rps = rate if rps is None else rps
    name = f"{models}_{'cap_' if probe_run else ''}r{format_number(rate)}" + (f"_r{repeat}" if repeat > 1 else "")
    r = fx.run(variant, models, 1, 1, rps, p95 / 3, locust_p95 if locust_p95 is not None else p95 * 0.8,
               repeat=repeat, failures=failures, reasons=reasons)
    r.id = f"{variant}/{name}"
    r.files = {"html": f"{name}.html"}
    r.arrival_rate, r.arrival, r.capacity_probe = float(rate), "constant", probe_run
    assert isinstance(r.load, LoadReport)
    r.load.open_loop = {"achieved_rate": rate, "dropped": 0, "scheduled": int(rate * 60), "sent": int(rate * 60),
                        "latency_intended_ms": {"p50": p95 / 2, "p95": p95}}
    r.load.window_thirds = [{"requests": int(rps * 20), "p50": p95 / 2, "p95": p95, "rps": rps}] * 3
    return r


def issue_grid() -> list[RunRecord]:
    return [
        fx.run("cpu", 1, 4, 4, 139.0, 120.0, 300.0),
        probe("cpu", 1, 33, 50.0), probe("cpu", 1, 66, 80.0), probe("cpu", 1, 132, 310.0),
        probe("cpu", 1, 264, 2000.0, 180.0), probe("cpu", 1, 198, 900.0, 170.0),
        probe("cpu", 1, 165, 620.0, locust_p95=496.0), probe("cpu", 1, 148, 400.0, 140.0),
    ]


def sized() -> list[RunRecord]:
    out = []
    for variant, models, cap, closed in (("cpu", 1, 132, 139), ("cpu", 2, 250, 262), ("cpu", 3, 340, 355),
                                         ("gpu", 1, 400, 420)):
        out += [fx.run(variant, models, 4, 4, float(closed), 100.0, 300.0),
                probe(variant, models, cap, 300.0), probe(variant, models, cap * 2, 1500.0, cap * 1.1)]
    return out
