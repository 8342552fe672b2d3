"""How much load does one Locust worker drive, and do 2 and 4 workers drive twice and four times as much?

    .venv/bin/python bench/workers.py                        # N = 1, 2, 4 workers; 3 interleaved rounds of 10 s
    .venv/bin/python bench/workers.py --workers 1,2 --rounds 5 --run-time 20 --users-per-worker 32

Each run goes through loadgrid's distributed path: `loadgrid.load.run` starts a Locust master (no users of its
own) that waits for N workers, each `python -m loadgrid.worker --master 127.0.0.1:PORT --once` in a process of
its own, which fetches the run's settings and payload from the master and runs `locust --worker -f -`. The
users are closed-loop with no think time (`--users-per-worker`, 16, on every worker: enough to keep one
worker's core busy), posting a small JSON document to /predict with expect=status (any 2xx is served), so the
figure is what the generator can send, not what a model can answer.

The target is a minimal HTTP/1.1 keep-alive server (asyncio on uvloop when installed, one fixed 200 answer of
a few bytes, no parsing beyond the request's length) in a process of its own, pinned to a core of its own
(the last one) when the machine has two or more; it answers tens of thousands of requests a second on that
core, several times what a Locust worker sends. Its CPU share over each run's measurement window is printed:
near 100% means the target, not the generator, set the pace. nginx is used instead when `--nginx` is given
and `nginx` is on PATH (it is not installed by this script).

Placement: workers (and the master) run on the other cores, a core each when there are enough, else sharing
them. N workers and the target need N + 1 cores; where the machine has fewer the output says "cores do not
allow" and the ratio says how much the shared cores gave, not how loadgrid scales.

Printed: the cores this process may use (os.sched_getaffinity), the load average before and after (the
machine may be shared), a line per run, then a Markdown table per N: window req/s as median [min-max] over
the rounds, the ratio of that median to N = 1's (goal >= 0.9 x N where cores allow), each worker's req/s and
CPU (% of one core: a Locust process uses one at most), the master's and the target's CPU, the whole
machine's CPU, whether the master's window count reconciled with the sum of its workers', and loadgrid's
client-bound verdict (validity.generator_bound: a worker above the CPU limit is expected here, as the point
is to saturate it). Rounds interleave (1, 2, 4, 1, 2, 4, ...) so a neighbour's load spreads over every N.
Every process started (target, workers, Locust) is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOCUSTFILE = ROOT / "loadgrid" / "locustfile.py"
PREDICT_PATH = "/predict"
DOCUMENT = {"inputs": [[0.1, 0.2, 0.3, 0.4]], "id": "bench"}  # the request body: a small JSON document
ANSWER_BODY = b'{"ok":true}'
CPU_LIMIT_PCT = 60.0  # settings: client_cpu_limit_pct's default, what a record would be judged by
GOAL = 0.9


# --- the target (runs in its own process: `workers.py --serve`) ---------------------------------------------

def serve(port: int) -> None:
    """Answer every request with the same small 200, keep-alive; GET /stats answers the count served."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        uvloop = None
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
              + str(len(ANSWER_BODY)).encode() + b"\r\n\r\n" + ANSWER_BODY)
    served = [0]

    class Target(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.buffer = bytearray()
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data):
            self.buffer += data
            out = []
            while True:  # every whole request in the buffer (a client may pipeline), answered in one write
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = bytes(self.buffer[:end]).lower()
                at = head.find(b"\r\ncontent-length:")
                length = 0
                if at >= 0:
                    stop = head.find(b"\r\n", at + 2)
                    length = int(head[at + 17:stop if stop >= 0 else len(head)])
                if len(self.buffer) < end + 4 + length:
                    break  # the body is still on its way
                del self.buffer[:end + 4 + length]
                if head.startswith(b"get /stats "):
                    body = json.dumps({"served": served[0]}).encode()
                    out.append(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                               + str(len(body)).encode() + b"\r\n\r\n" + body)
                else:
                    served[0] += 1
                    out.append(answer)
            if out:
                self.transport.write(b"".join(out))

    async def main():
        server = await asyncio.get_running_loop().create_server(Target, "127.0.0.1", port, backlog=4096)
        print(server.sockets[0].getsockname()[1], "uvloop" if uvloop else "asyncio", flush=True)
        await server.serve_forever()

    try:
        if uvloop is not None:
            uvloop.run(main())
        else:
            asyncio.run(main())
    except KeyboardInterrupt:
        pass


NGINX_CONF = """worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
"""


class Target:
    """The target's process (the Python server above, or nginx with one worker), stopped in `stop`."""

    def __init__(self, port: int, use_nginx: bool, folder: Path):
        self.kind = "python"
        if use_nginx:
            port = port or free_port()
            conf = folder / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=folder, port=port, body=ANSWER_BODY.decode()), encoding="utf-8")
            # nginx -c CONF runs in the foreground (daemon off); its single worker is the process that serves
            self.proc = subprocess.Popen([shutil.which("nginx"), "-p", str(folder), "-c", str(conf)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)
            self.port = port
            self.kind = "nginx (1 worker)"
            wait_for_port(port, self.proc)
        else:
            self.proc = subprocess.Popen([sys.executable, __file__, "--serve", "--target-port", str(port)],
                                         stdout=subprocess.PIPE, text=True, start_new_session=True)
            first = self.proc.stdout.readline().split()
            if not first:
                raise SystemExit("the target did not start")
            self.port, self.kind = int(first[0]), f"python ({first[1]})"
        self.url = f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The processes that serve (nginx: master and its worker)."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return [root.pid, *(c.pid for c in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def served(self) -> int | None:
        if self.kind.startswith("nginx"):
            return None
        with urllib.request.urlopen(f"{self.url}/stats", timeout=10) as resp:
            return json.loads(resp.read())["served"]

    def stop(self) -> None:
        stop_group(self.proc, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the target exited ({proc.returncode}) before it listened on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # polling a port that is coming up, bounded by the deadline
    raise SystemExit(f"the target did not listen on {port} within {limit_s:g}s")


def stop_group(proc: subprocess.Popen, sig: int, wait_s: float = 10.0) -> None:
    """Stop a process started with start_new_session (it leads its own group) and whatever it started: `sig`
    to the group, then SIGKILL after `wait_s`. Only this one group, by its id."""
    try:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait_s)
        os.killpg(proc.pid, signal.SIGKILL)  # children left behind by a leader that has exited
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait()


# --- CPU over the measurement window -------------------------------------------------------------------------

class CpuSampler:
    """CPU seconds of some processes, and the machine's busy time, sampled every 0.2 s with the wall clock, so
    the share over any interval (the measurement window, known only after the run) can be read back."""

    def __init__(self, pids: list[int], period_s: float = 0.2):
        import psutil

        self.psutil = psutil
        self.procs = [psutil.Process(p) for p in pids]
        self.samples: list[tuple[float, float, float, float]] = []  # (unix time, proc CPU s, busy s, total s)
        self.period_s = period_s
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        cpu = 0.0
        for p in self.procs:
            try:
                t = p.cpu_times()
                cpu += t.user + t.system
            except self.psutil.NoSuchProcess:
                pass
        m = self.psutil.cpu_times()
        idle = m.idle + getattr(m, "iowait", 0.0)
        total = sum(m)
        self.samples.append((time.time(), cpu, total - idle, total))

    def _loop(self) -> None:
        while not self.done.is_set():
            self._sample()
            self.done.wait(self.period_s)

    def __enter__(self) -> CpuSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def share(self, start: float | None, end: float | None) -> tuple[float | None, float | None]:
        """(the processes' CPU in % of one core, the machine's busy share in % of all its cores) between the
        first sample at or after `start` and the last at or before `end`; None without two such samples."""
        inside = [s for s in self.samples if (start is None or s[0] >= start) and (end is None or s[0] <= end)]
        if len(inside) < 2:
            return None, None
        a, b = inside[0], inside[-1]
        wall = b[0] - a[0]
        if wall <= 0:
            return None, None
        machine = 100 * (b[2] - a[2]) / (b[3] - a[3]) if b[3] > a[3] else None
        return 100 * (b[1] - a[1]) / wall, machine


# --- the runs ------------------------------------------------------------------------------------------------

@dataclass
class Placement:
    """Which cores the target, the workers and the master run on (None: wherever the OS puts them)."""

    cores: list[int]
    target: set[int] | None = None
    generator: list[int] = field(default_factory=list)

    @classmethod
    def plan(cls, pin: bool) -> Placement:
        cores = sorted(os.sched_getaffinity(0))
        if pin and len(cores) >= 2:
            return cls(cores, {cores[-1]}, cores[:-1])
        return cls(cores, None, cores)

    def allows(self, n: int) -> bool:
        """A core for each worker and one for the target (the master, gathering statistics once a second,
        takes little and shares)."""
        return len(self.cores) >= n + 1

    def worker(self, k: int, n: int) -> set[int] | None:
        if self.target is None:
            return None
        return {self.generator[k]} if len(self.generator) >= n else set(self.generator)

    def master(self, n: int) -> set[int] | None:
        if self.target is None:
            return None
        return set(self.generator[n:] or self.generator)

    def describe(self, n: int) -> str:
        if self.target is None:
            return "unpinned"
        workers = [self.worker(k, n) for k in range(n)]
        shown = ", ".join(f"w{k} {sorted(c)}" for k, c in enumerate(workers))
        return f"target {sorted(self.target)}, {shown}, master {sorted(self.master(n))}"


class Workers:
    """N `loadgrid worker --once` processes, each leading its own process group (its Locust is in it)."""

    def __init__(self, n: int, port: int, placement: Placement, folder: Path, tag: str):
        self.procs: list[subprocess.Popen] = []
        self.logs = []
        try:
            for k in range(n):
                log = open(folder / f"{tag}_w{k}.log", "w", encoding="utf-8")  # noqa: SIM115 closed in stop
                self.logs.append(log)
                proc = subprocess.Popen([sys.executable, "-m", "loadgrid.worker", "--master", f"127.0.0.1:{port}",
                                         "--once", "--name", f"w{k}"], cwd=ROOT, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
                self.procs.append(proc)
                cores = placement.worker(k, n)
                if cores is not None:  # before it starts its Locust (after the master answers), which inherits it
                    os.sched_setaffinity(proc.pid, cores)
        except BaseException:
            self.stop()
            raise

    def finish(self, wait_s: float = 30.0) -> list[int | None]:
        """Exit codes of workers that end by themselves (--once) within `wait_s`; the rest are stopped."""
        deadline = time.monotonic() + wait_s
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(None)
        return codes

    def stop(self) -> None:
        for proc in self.procs:
            stop_group(proc, signal.SIGINT)
        for log in self.logs:
            log.close()


def spec_for(n: int, users_per_worker: int, run_time_s: int, round_: int):
    from loadgrid.plan import RunSpec

    users = n * users_per_worker
    return RunSpec(f"workers{n}", 1, users, float(users), run_time_s, round_)  # every user spawned within ~1 s


def measure(n: int, round_: int, args, target: Target, placement: Placement, payload: Path, out: Path) -> dict:
    from loadgrid import load, validity

    spec = spec_for(n, args.users_per_worker, args.run_time, round_)
    port = args.port or free_port()
    options = load.LoadOptions(workers=n, master_port=port, worker_wait_s=30, warmup_s=args.warmup,
                               expect="status")
    files = load.RunFiles(out, f"r{round_}_n{n}")
    env = {**load.locust_env(payload, PREDICT_PATH, files, options, spec), "ENDPOINT": "", "PAYLOAD": ""}
    mine = os.sched_getaffinity(0)
    served_before = target.served()
    workers = Workers(n, port, placement, out, f"r{round_}_n{n}")
    try:
        master_cores = placement.master(n)
        if master_cores is not None:
            os.sched_setaffinity(0, master_cores)  # the master Locust inherits this process's cores
        try:
            with CpuSampler(target.pids()) as sampler:
                result = load.run(spec, target.url, LOCUSTFILE, files, env, options)
        finally:
            os.sched_setaffinity(0, mine)
        codes = workers.finish()
    finally:
        workers.stop()
    served_after = target.served()
    if result.error:
        raise SystemExit(f"N={n} round {round_}: {result.error} (see {files.locust_log} and {out}/*_w*.log)")
    window = result.window
    target_cpu, machine_cpu = sampler.share(window.start_at if window else None, window.end_at if window else None)
    gen = result.generator
    ws = sorted(gen.workers if gen else [], key=lambda w: w.name or "")
    dist = gen.distributed if gen else None
    bound, why = validity.generator_bound(gen, CPU_LIMIT_PCT, result.latency_ms.get("p50"))
    window_s = result.duration_s or None
    return {
        "n": n, "round": round_, "users": spec.users, "requests": result.requests, "failures": result.failures,
        "rps": result.rps, "window_s": result.duration_s, "p50": result.latency_ms.get("p50"),
        "worker_rps": [(w.requests or 0) / window_s if window_s else None for w in ws],
        "worker_cpu": [w.cpu_pct_mean for w in ws], "worker_lag": [w.lag_p99_ms for w in ws],
        "master_cpu": gen.cpu_pct_mean if gen else None,
        "target_cpu": target_cpu, "machine_cpu": machine_cpu,
        "reconciled": dist.reconciled if dist else None,
        "master_requests": dist.master_requests if dist else None,
        "workers_requests": dist.workers_requests if dist else None,
        "served": (served_after - served_before) if served_before is not None else None,
        "whole_run": result.whole_run.requests if result.whole_run else None,
        "exit_codes": codes, "client_bound": bound, "why": why,
    }


# --- the report ----------------------------------------------------------------------------------------------

def spread(values, fmt: str = "{:.0f}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def run_line(r: dict) -> str:
    per = ", ".join((f"{rps:.0f} req/s at {cpu:.0f}% CPU" if rps is not None and cpu is not None else "–")
                    + (f" lag p99 {lag:.1f} ms" if lag is not None else "")
                    for rps, cpu, lag in zip(r["worker_rps"], r["worker_cpu"], r["worker_lag"], strict=True))
    target = f"{r['target_cpu']:.0f}%" if r["target_cpu"] is not None else "–"
    machine = f"{r['machine_cpu']:.0f}%" if r["machine_cpu"] is not None else "–"
    served = f", target served {r['served']} (Locust counted {r['whole_run']} in the whole run)" \
        if r["served"] is not None else ""
    return (f"  round {r['round']} N={r['n']}: {r['rps']:.0f} req/s ({r['requests']} in {r['window_s']:.1f}s, "
            f"{r['failures']} failed, p50 {r['p50']} ms); workers {per}; target CPU {target}, machine {machine}; "
            f"master {r['master_requests']} vs workers {r['workers_requests']} "
            f"({'reconciled' if r['reconciled'] else 'NOT reconciled'}){served}")


def summary(rows: list[dict], ns: list[int], placement: Placement) -> list[str]:
    by_n = {n: [r for r in rows if r["n"] == n] for n in ns}
    base = statistics.median(r["rps"] for r in by_n[ns[0]]) if by_n[ns[0]] else None
    base_n = ns[0]
    head = ["N workers", "users", "cores allow?", "req/s median [min-max]", f"ratio to N={base_n}",
            f"goal >= {GOAL:g} x N", "req/s per worker", "CPU per worker (% of a core)", "lag p99 per worker",
            "master CPU", "target CPU", "machine CPU", "reconciled", "client-bound"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for n in ns:
        rs = by_n[n]
        if not rs:
            continue
        med = statistics.median(r["rps"] for r in rs)
        ratio = med / base if base else None
        goal = GOAL * n / base_n
        allows = placement.allows(n)
        if ratio is None:
            verdict = "–"
        elif n == base_n:
            verdict = "(base)"
        else:
            verdict = ("met" if ratio >= goal else "NOT met") + ("" if allows else " (cores do not allow)")
        cells = [
            str(n), str(rs[0]["users"]),
            "yes" if allows else f"no: cores do not allow ({n} workers + target need {n + 1}, "
                                 f"{len(placement.cores)} available)",
            spread([r["rps"] for r in rs]),
            f"{ratio:.2f}x" if ratio is not None else "–", f"{goal:.1f}x: {verdict}",
            spread([x for r in rs for x in r["worker_rps"]]),
            spread([x for r in rs for x in r["worker_cpu"]]),
            spread([x for r in rs for x in r["worker_lag"]], "{:.1f}") + " ms",
            spread([r["master_cpu"] for r in rs]) + "%",
            spread([r["target_cpu"] for r in rs]) + "%",
            spread([r["machine_cpu"] for r in rs]) + "%",
            f"{sum(bool(r['reconciled']) for r in rs)}/{len(rs)}",
            f"{sum(r['client_bound'] for r in rs)}/{len(rs)}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def hints(rows: list[dict], placement: Placement) -> list[str]:
    out = []
    for r in rows:
        why = []
        if r["target_cpu"] is not None and r["target_cpu"] >= 80:
            why.append(f"the target used {r['target_cpu']:.0f}% of its core: it may set the pace")
        if r["machine_cpu"] is not None and r["machine_cpu"] >= 90:
            why.append(f"the machine was {r['machine_cpu']:.0f}% busy: every core was taken")
        if r["client_bound"]:
            why.append(r["why"].split(", so the numbers")[0].split("; give")[0])  # the finding, not the advice
        if not placement.allows(r["n"]):
            why.append(f"cores do not allow: {r['n']} workers + target on {len(placement.cores)} cores")
        if any(c not in (0, None) for c in r["exit_codes"]) or None in r["exit_codes"]:
            why.append(f"worker exit codes {r['exit_codes']}")
        if why:
            out.append(f"  round {r['round']} N={r['n']}: " + "; ".join(why))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated (default 1,2,4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--run-time", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds after spawning before the window opens")
    parser.add_argument("--users-per-worker", type=int, default=16, help="closed-loop users on each worker")
    parser.add_argument("--port", type=int, default=0, help="the Locust master's port (default: a free one per run)")
    parser.add_argument("--target-port", type=int, default=0, help="the target's port (default: a free one)")
    parser.add_argument("--no-pin", action="store_true", help="let the OS place the target and the workers")
    parser.add_argument("--nginx", action="store_true", help="nginx (one worker process) as the target, if on PATH")
    parser.add_argument("--out", type=Path, default=None, help="keep Locust's files here (default: a temp folder)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.target_port)
        return 0
    try:
        ns = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--workers: {args.workers!r} is not a comma-separated list of counts, e.g. 1,2,4")
    if not ns or min(ns) < 1:
        parser.error("--workers: give positive counts, e.g. 1,2,4")
    if args.nginx and not shutil.which("nginx"):
        parser.error("--nginx: nginx is not on PATH (this script installs nothing); drop --nginx")
    # A `kill` ends the runs as Ctrl-C does: through the finally blocks that stop every process started.
    signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT) if callable(signal.getsignal(signal.SIGINT))
                  else signal.default_int_handler)
    out = args.out or Path(tempfile.mkdtemp(prefix="loadgrid-workers-"))
    out.mkdir(parents=True, exist_ok=True)
    payload = out / "document.json"
    payload.write_text(json.dumps(DOCUMENT), encoding="utf-8")
    placement = Placement.plan(not args.no_pin)
    load_before = os.getloadavg()
    print(f"cores available (sched_getaffinity): {len(placement.cores)} {placement.cores}; load average before "
          f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
    print(f"nginx: {shutil.which('nginx') or 'not installed'}" + ("" if args.nginx else " (not used)"), flush=True)
    rows: list[dict] = []
    target = Target(args.target_port, args.nginx, out)
    try:
        if placement.target is not None:
            for pid in target.pids():
                os.sched_setaffinity(pid, placement.target)
        print(f"target: {target.kind} on {target.url}{PREDICT_PATH}; {args.users_per_worker} users per worker, "
              f"{args.run_time}s runs ({args.warmup}s warm-up), {args.rounds} rounds of N = {ns}; files in {out}",
              flush=True)
        for round_ in range(1, args.rounds + 1):
            for n in ns:
                note = "" if placement.allows(n) else " [cores do not allow]"
                print(f"round {round_}: N={n} ({placement.describe(n)}){note} ...", flush=True)
                rows.append(measure(n, round_, args, target, placement, payload, out))
                print(run_line(rows[-1]), flush=True)
    finally:
        target.stop()
    load_after = os.getloadavg()
    print()
    print(f"loadgrid distributed load on {len(placement.cores)} cores {placement.cores}, target {target.kind} "
          f"({'pinned to core ' + str(sorted(placement.target)) if placement.target else 'unpinned'}); "
          f"{args.users_per_worker} closed-loop users per worker, {args.run_time}s runs, {args.rounds} rounds; "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print()
    print("\n".join(summary(rows, ns, placement)))
    print()
    found = hints(rows, placement)
    if found:
        print("client-bound hints:")
        print("\n".join(found))
    print("median [min-max] over the rounds (per worker: over every worker of every round). req/s: the "
          "master's window requests / measured window seconds; CPU per worker: its Locust's CPU over the window "
          "(100% = one core, all a Locust process can use); lag p99: how late its event loop woke (starvation); "
          "target and master CPU: % of one core; machine CPU: % "
          "of all cores. A target near 100% limits the run; a worker near 100% is the generator's limit, what "
          f"this measures. Ratios where N workers + target exceed the {len(placement.cores)} cores say how much "
          "the shared cores gave, not how the workers scale.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
