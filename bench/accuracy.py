"""How accurate is what loadgrid measures? Locust against a target whose answer takes exactly 50 ms.

    .venv/bin/python bench/accuracy.py                       # 10, 50, 100 users, then 100 users on 2 processes
    .venv/bin/python bench/accuracy.py --users 10 --run-time 10 --processes 1
    .venv/bin/python bench/accuracy.py --starved             # 100 users, alone vs starved, 3 interleaved rounds

Each run goes through loadgrid's own path (`loadgrid.load.run`: the project's locustfile, which posts images
to /predict and checks the JSON prediction, the measurement-window plugin and the generator CPU meter) against
a local target on 127.0.0.1 that holds every request for `--delay-ms` (50) and answers a valid prediction.
With closed-loop users and no think time the ideal is: median = p95 = 50 ms, throughput = users / 0.05 s.
The table shows how far the reported median and p95 are from 50 ms, the reported req/s from users / 0.05 s,
what the target itself measured (its hold time and the requests it served), and the generator's CPU.

The target is a small asyncio (uvloop when installed) HTTP/1.1 server in its own process, with keep-alive and
TCP_NODELAY, one write per answer; it serves thousands of requests a second on one core, so at 100 users
(2000 req/s ideal) it is not the bottleneck. Traffic stays on the loopback interface and every run is bounded.

--starved (issue 11.1): the target is pinned to the last core, Locust (one process) to the first; "alone" runs
Locust there by itself, "starved" adds two busy loops on Locust's core. A starved Locust uses little CPU while
its timestamps lag, so the CPU rule passes it; the lag rule must call it client-bound and "alone" valid.
Rounds interleave (alone, starved, alone, ...) and the summary gives medians and ranges. Needs 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = json.dumps({"predictions": [{"label": "tabby cat", "score": 0.62}, {"label": "tiger cat", "score": 0.21},
                                   {"label": "Egyptian cat", "score": 0.09}]}).encode()


# --- the target (runs in its own process: `accuracy.py --serve`) --------------------------------------------

def serve(delay_s: float, port: int, use_uvloop: bool = False) -> None:
    """Answer every POST after `delay_s`, measured from the moment its body has fully arrived.

    An event loop's timers fire up to a millisecond late (epoll waits in whole milliseconds), so the target
    learns its own overshoot, measured with `time.perf_counter`, and schedules that much earlier (20 µs steps
    up or down after each answer): the median of the hold times it reports then sits at `delay_s`.
    """
    import asyncio

    uvloop = None
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            uvloop = None
    clock = time.perf_counter
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
              + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
    # holds: seconds between a request's arrival and its answer; early: how much sooner than delay_s to schedule
    # uploads: seconds from a request's first byte to its last (the client's clock already runs meanwhile)
    state = {"served": 0, "holds": [], "uploads": [], "early": 0.0}

    class Target(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.buffer = bytearray()
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data):
            if not self.buffer:
                self.first_byte = clock()
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(self.buffer) < end + 4 + length:
                    return  # the body is still on its way
                del self.buffer[:end + 4 + length]
                now = clock()
                state["uploads"].append(now - self.first_byte)
                self.first_byte = now
                method, path = (head.split(b"\r\n", 1)[0].split(b" ") + [b"", b""])[:2]
                if method == b"GET" and path == b"/stats":
                    self._stats()
                else:
                    asyncio.get_running_loop().call_later(max(delay_s - state["early"], 0.0), self._answer, clock())

        def _answer(self, arrived: float):
            if not self.transport.is_closing():
                self.transport.write(answer)
                hold = clock() - arrived
                state["holds"].append(hold)
                state["early"] += 20e-6 if hold > delay_s else -20e-6  # steps towards a median hold of delay_s
                state["served"] += 1

        def _stats(self):
            holds, state["holds"] = state["holds"], []
            uploads, state["uploads"] = state["uploads"], []
            body = json.dumps({"served": state["served"], "early_ms": round(state["early"] * 1000, 3),
                               "holds_ms": [round(h * 1000, 3) for h in holds],
                               "uploads_ms": [round(u * 1000, 3) for u in uploads]}).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def main():
        server = await asyncio.get_running_loop().create_server(Target, "127.0.0.1", port, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    if uvloop is not None:
        uvloop.run(main())
    else:
        asyncio.run(main())


class TargetProcess:
    def __init__(self, delay_ms: float):
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", "--delay-ms", str(delay_ms)],
                                     stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the runs ------------------------------------------------------------------------------------------------

def baseline(target: TargetProcess, requests: int = 100, warmup: int = 60) -> float:
    """The median round trip of a plain blocking client (http.client, TCP_NODELAY), one request at a time:
    the target's hold plus what loopback and HTTP cost at best, with no load generator in the way."""
    import http.client

    images = sorted(p for p in (ROOT / "images").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    payloads = [p.read_bytes() for p in images]
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    try:
        for i in range(warmup + requests):  # the first ones let the target learn its timer's overshoot
            body = payloads[i % len(payloads)]
            start = time.perf_counter()
            conn.request("POST", "/predict", body=body, headers={"Content-Type": "image/jpeg"})
            resp = conn.getresponse()
            json.loads(resp.read())
            times.append((time.perf_counter() - start) * 1000)
    finally:
        conn.close()
    target.stats()  # drop these holds from the next run's figures
    return statistics.median(times[warmup:])


def measure(target: TargetProcess, users: int, processes: int, run_time_s: int, warmup_s: int, out: Path,
            delay_ms: float) -> dict:
    import psutil

    from loadgrid import load
    from loadgrid.plan import RunSpec

    spec = RunSpec("accuracy", 1, users, float(users), run_time_s)  # every user spawned within a second
    options = load.LoadOptions(processes=processes, warmup_s=warmup_s)
    files = load.RunFiles(out, f"{users}u_{processes}p")
    env = load.locust_env(ROOT / "images", "/predict", files, options, spec)
    before = target.stats()["served"]
    server = psutil.Process(target.proc.pid)
    server_cpu, wall = sum(server.cpu_times()[:2]), time.monotonic()
    psutil.cpu_percent()  # starts the machine-wide measurement
    result = load.run(spec, target.url, ROOT / "locustfile.py", files, env, options)
    machine = psutil.cpu_percent()
    server_pct = 100 * (sum(server.cpu_times()[:2]) - server_cpu) / (time.monotonic() - wall)
    after = target.stats()
    if result.error:
        raise SystemExit(f"run with {users} users failed: {result.error}")
    holds, uploads = after["holds_ms"], after["uploads_ms"]
    lat = result.latency_ms
    ideal = users / (delay_ms / 1000)
    from loadgrid import validity
    from loadgrid.store import Generator, GeneratorLag, WholeRun

    bound, why = validity.generator_bound(result.generator, 60.0, lat.get("p50"))
    gen = result.generator or Generator()
    lag = gen.lag_ms or GeneratorLag()
    whole = result.whole_run or WholeRun()
    return {
        "lag_p50": lag.p50, "lag_p99": lag.p99, "lag_max": lag.max, "lag_samples": lag.samples,
        "client_bound": bound, "why": why,
        "users": users, "processes": processes, "requests": result.requests, "failures": result.failures,
        "window_s": result.duration_s, "p50": lat["p50"], "p95": lat["p95"], "mean": lat["mean"],
        "whole_p50": whole.latency_ms.get("p50"),
        "p50_err": lat["p50"] - delay_ms, "p95_err": lat["p95"] - delay_ms, "rps": result.rps, "ideal": ideal,
        "rps_err": result.rps / ideal - 1, "hold_p50": statistics.median(holds) if holds else None,
        "upload_p50": statistics.median(uploads) if uploads else None,
        "served": after["served"] - before, "whole_run": whole.requests,
        "cpu": gen.cpu_pct_mean, "cpu_max": gen.cpu_pct_max, "cores": gen.cores,
        "target_cpu": server_pct, "machine_cpu": machine,
        # Locust's own consistency: req/s against users / its mean response time (the rest is the user loop)
        "rps_vs_mean": result.rps / (users / (lat["mean"] / 1000)) - 1 if lat.get("mean") else None,
        # the implied round trip from Locust's own count: users / (requests per second)
        "rtt_from_rps": 1000 * users / result.rps if result.rps else None,
    }


def table(rows: list[dict], delay_ms: float) -> str:
    head = ["users", "procs", "requests", "median", "Δ median", "p95", "Δ p95", "mean", "whole-run median", "hold p50",
            "upload p50",
            "req/s", f"ideal u/{delay_ms / 1000:g}s", "Δ req/s", "vs u/mean", "Locust CPU", "target CPU",
            "machine CPU", "lag p50/p99/max", "verdict"]
    lines = [head]
    for r in rows:
        lines.append([
            str(r["users"]), str(r["processes"]), str(r["requests"]), f"{r['p50']:g} ms", f"{r['p50_err']:+g} ms",
            f"{r['p95']:g} ms", f"{r['p95_err']:+g} ms", f"{r['mean']:.1f} ms",
            f"{r['whole_p50']:g} ms" if r["whole_p50"] is not None else "–",
            f"{r['hold_p50']:.2f} ms" if r["hold_p50"] is not None else "–",
            f"{r['upload_p50']:.2f} ms" if r["upload_p50"] is not None else "–", f"{r['rps']:.1f}",
            f"{r['ideal']:.0f}", f"{100 * r['rps_err']:+.2f}%",
            f"{100 * r['rps_vs_mean']:+.2f}%" if r["rps_vs_mean"] is not None else "–",
            f"{r['cpu']:.0f}% of {r['cores']} (max {r['cpu_max']:.0f}%)" if r["cpu"] is not None else "–",
            f"{r['target_cpu']:.0f}%", f"{r['machine_cpu']:.0f}%",
            f"{r['lag_p50']:.1f}/{r['lag_p99']:.1f}/{r['lag_max']:.1f} ms" if r["lag_p99"] is not None else "–",
            "client-bound" if r["client_bound"] else "not client-bound",
        ])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def verdicts(rows: list[dict], delay_ms: float) -> list[str]:
    out = []
    for r in rows:
        ok_median = abs(r["p50_err"]) <= 1
        ok_rps = abs(r["rps_err"]) <= 0.02
        who = f"{r['users']} users on {r['processes']} process{'es' if r['processes'] > 1 else ''}"
        out.append(f"{who}: median {'within' if ok_median else 'NOT within'} 1 ms of {delay_ms:g} ms, "
                   f"req/s {'within' if ok_rps else 'NOT within'} 2% of ideal; Locust counted "
                   f"{r['whole_run']} requests over the whole run, the target served {r['served']}.")
    return out


class BusyLoops:
    """`n` processes spinning on `core` (a starved generator's neighbours), always stopped."""

    def __init__(self, n: int, core: int):
        self.procs = [subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{core}}})\n"
                                        "while True: pass"]) for _ in range(n)]

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def starved(args, out: Path) -> int:
    """Alone vs starved, interleaved: the generator's lag, CPU, req/s and verdict."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("--starved needs 2 cores: the target on one, Locust (and the busy loops) on the other")
    users = max(args.users)
    mine = os.sched_getaffinity(0)
    target = TargetProcess(args.delay_ms)
    rows: list[dict] = []
    try:
        os.sched_setaffinity(target.proc.pid, {cores[-1]})
        baseline(target)
        os.sched_setaffinity(0, {cores[0]})  # Locust inherits this: one core, shared with the busy loops
        for round_ in range(1, args.rounds + 1):
            for scenario in ("alone", "starved"):
                print(f"round {round_}: {scenario}, {users} users on 1 Locust process for {args.run_time}s ...",
                      flush=True)
                loops = BusyLoops(2 if scenario == "starved" else 0, cores[0])
                try:
                    row = measure(target, users, 1, args.run_time, args.warmup, out, args.delay_ms)
                finally:
                    loops.stop()
                rows.append({**row, "scenario": scenario, "round": round_})
    finally:
        os.sched_setaffinity(0, mine)
        target.stop()
    print()
    print(f"target: {args.delay_ms:g} ms per request, pinned to core {cores[-1]}; Locust (1 process, {users} users) "
          f"pinned to core {cores[0]}, alone or with 2 busy loops there; {args.run_time}s runs; files in {out}")
    print(table(rows, args.delay_ms))
    print()

    def spread(values) -> str:
        values = [v for v in values if v is not None]
        return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]" if values else "-"

    for scenario in ("alone", "starved"):
        mine_rows = [r for r in rows if r["scenario"] == scenario]
        print(f"{scenario:8s} lag p99 {spread(r['lag_p99'] for r in mine_rows)} ms, Locust CPU "
              f"{spread(r['cpu'] for r in mine_rows)}%, req/s {spread(r['rps'] for r in mine_rows)} (ideal "
              f"{users / (args.delay_ms / 1000):.0f}), median {spread(r['p50'] for r in mine_rows)} ms; "
              f"client-bound {sum(r['client_bound'] for r in mine_rows)} of {len(mine_rows)}")
    for r in rows:
        if r["client_bound"]:
            print(f"  round {r['round']} {r['scenario']}: {r['why']}")
    print("median [min-max] over the rounds. lag: how late Locust's event loop woke when it asked to every 20 ms "
          "(loadgrid/locust_latency.py); the rule: client-bound when its p99 is above max(8 ms, 5% of the p50).")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--processes", type=int, default=None,
                        help="only this many Locust processes (default: 1 for every user count, then 2 at the last)")
    parser.add_argument("--run-time", type=int, default=20, help="seconds per run (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds after spawning before the window opens")
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=None, help="keep Locust's files here (default: a temp folder)")
    parser.add_argument("--starved", action="store_true",
                        help="alone vs starved generator (target and Locust pinned to their own cores)")
    parser.add_argument("--rounds", type=int, default=3, help="--starved: interleaved rounds (default 3)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.delay_ms / 1000, 0)
        return 0
    if args.starved:
        return starved(args, args.out or Path(tempfile.mkdtemp(prefix="loadgrid-accuracy-")))
    if args.processes is not None:
        plan = [(u, args.processes) for u in args.users]
    else:
        plan = [(u, 1) for u in args.users] + [(max(args.users), 2)]
    out = args.out or Path(tempfile.mkdtemp(prefix="loadgrid-accuracy-"))
    target = TargetProcess(args.delay_ms)
    rows = []
    try:
        floor = baseline(target)
        print(f"plain client, one request at a time: median round trip {floor:.2f} ms "
              f"({floor - args.delay_ms:+.2f} ms over the {args.delay_ms:g} ms hold)", flush=True)
        for users, processes in plan:
            print(f"running {users} users on {processes} Locust process(es) for {args.run_time}s ...", flush=True)
            rows.append(measure(target, users, processes, args.run_time, args.warmup, out, args.delay_ms))
    finally:
        target.stop()
    print()
    print(f"target: {args.delay_ms:g} ms per request on 127.0.0.1; {os.cpu_count()} cores; window "
          f"{args.run_time}s run less ramp-up and {args.warmup}s warm-up; Locust's files in {out}")
    print(table(rows, args.delay_ms))
    print()
    for line in verdicts(rows, args.delay_ms):
        print(line)
    print(f"floor: a plain blocking client's median round trip was {floor:.2f} ms.")
    print("whole-run median: the same run with the ramp-up and warm-up counted (not only the window); hold p50: "
          "the median time the target held a request (its own clock, from the request's last byte); "
          "upload p50: from a request's first byte to its last at the target; vs u/mean: Locust's req/s against "
          "users / its own mean response time (what the user loop costs outside the timed request); target and "
          "machine CPU: the target process (100% = one core) and the whole machine (100% = every core) during "
          "the run. Locust stores each response time rounded to a whole ms below 100 ms, so the reported median "
          "is the rounded round trip of the median request.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
