"""How much does serving cost on top of the model? Prints figures; asserts nothing.

  (a) raw: decode + preprocess + inference + postprocess in-process, one thread on one core (as one
      replica is configured), cycling over the five sample images: images/s and p50 per image;
  (b) served: the same images through the gateway to one replica at saturation, and (b)/(a);
  (c) unloaded: one request at a time through the gateway, p50 end to end minus the raw p50;
  (d) scaling: two single-threaded replicas over two times one replica.

Cores (2-core machine): for (a), (b) and (c) the replica (or the raw process) has core 1 alone; the gateway
and this load generator share core 0. For (d) there is no free core left: by default the two replicas,
gateway and generator all share both cores (measured better than one core per replica, --scaling-pin split).
Saturation: 16 clients per replica (two full batches in flight). (c) compares two processes measured at
different moments; the per-request figure beside it (end to end minus that request's own decode and
inference, from Server-Timing) is free of that drift. Rounds are interleaved and summarised as medians:
run-to-run noise on a small VM is about 10%. Before each phase the machine must be idle (other work is
flagged). The stack is compose project `lgtest-bench`, always torn down at the end; all traffic goes to
the gateway on 127.0.0.1.

    .venv/bin/python bench/serving.py                    # about 4 minutes, after the image build
    .venv/bin/python bench/serving.py --batch-size 1     # the same with batching off
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "lgtest-bench"
IMAGES = sorted((ROOT / "images").glob("*.jpg"))
REPLICA_CORE, GENERATOR_CORE = 1, 0


# --- (a) raw, in-process -------------------------------------------------------------------------------

def raw(seconds: float, batch: int) -> dict:
    """Runs in a child process pinned to the replica's core, with the replica's thread settings."""
    os.sched_setaffinity(0, {REPLICA_CORE})
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from model_service import model
    from model_service.app import Settings

    s = Settings()
    classifier = model.load_classifier(s.model_path, s.labels_path, "cpu", intra_op_threads=1)
    classifier.warm_up(batch)
    bodies = [p.read_bytes() for p in IMAGES]
    latencies, n, i = [], 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:  # one request at a time, as a replica without batching
        t0 = time.perf_counter()
        classifier.infer(model.prepare(bodies[i % len(bodies)], s.max_image_pixels))
        latencies.append(time.perf_counter() - t0)
        i += 1
    single = len(latencies) / (time.perf_counter() - start)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:  # batches of `batch`, as a saturated batching replica
        classifier.infer(np.concatenate([model.prepare(bodies[(n + k) % len(bodies)], s.max_image_pixels)
                                         for k in range(batch)]))
        n += batch
    batched = n / (time.perf_counter() - start)
    return {"rps": single, "p50_ms": 1000 * statistics.median(latencies), "rps_batched": batched,
            "requests": len(latencies)}


# --- a small load generator: raw HTTP/1.1 on keep-alive connections ------------------------------------

async def post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> tuple[int, str, str]:
    """One POST /predict on a keep-alive connection: (status, Server-Timing header, X-Replica header)."""
    writer.write((f"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: image/jpeg\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    status_line = await reader.readline()
    length, timing, replica = 0, "", ""
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "server-timing":
            timing = value.strip()
        elif name.lower() == "x-replica":
            replica = value.strip()
    await reader.readexactly(length)
    return int(status_line.split()[1]), timing, replica


async def one_client(port: int, bodies: list[bytes], offset: int, until: float, warm_until: float,
                     results: dict, max_requests: int | None = None) -> None:
    """Back-to-back requests until `until` (or `max_requests`); those started before `warm_until` not counted."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while time.perf_counter() < until and (max_requests is None or i - offset < max_requests):
            body = bodies[i % len(bodies)]
            i += 1
            t0 = time.perf_counter()
            status, timing, replica = await post(reader, writer, body)
            if t0 < warm_until:
                continue
            elapsed = time.perf_counter() - t0
            results["latencies"].append(elapsed)
            results["statuses"][status] = results["statuses"].get(status, 0) + 1
            results["replicas"][replica] = results["replicas"].get(replica, 0) + 1
            if timing and status == 200:
                results["timings"].append(timing)
                # What serving added to this very request: end to end minus its own decode and inference.
                work = mean_timings([timing])
                results["overheads"].append(1000 * elapsed - work.get("decode", 0) - work.get("infer", 0))
    finally:
        writer.close()


def load(port: int, concurrency: int, seconds: float, warmup: float = 2.0) -> dict:
    bodies = [p.read_bytes() for p in IMAGES]
    results: dict = {"latencies": [], "statuses": {}, "timings": [], "replicas": {}, "overheads": []}
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)

    async def main():
        now = time.perf_counter()
        until, warm_until = now + warmup + seconds, now + warmup
        await asyncio.gather(*(one_client(port, bodies, k, until, warm_until, results) for k in range(concurrency)))

    try:
        import uvloop  # a cheaper event loop: less of the generator's CPU taken from the stack
        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    lat = sorted(results["latencies"])
    ok = results["statuses"].get(200, 0)
    return {
        "rps": ok / seconds, "requests": len(lat), "statuses": results["statuses"],
        "per_replica": sorted(results["replicas"].values(), reverse=True),
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else float("nan"),
        "p95_ms": 1000 * lat[int(len(lat) * 0.95)] if lat else float("nan"),
        "generator_cpu_pct": 100 * ((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime))
        / (seconds + warmup),
        "server_timing_ms": mean_timings(results["timings"]),
    }


def mean_timings(headers: list[str]) -> dict:
    """Mean of each Server-Timing metric (ms) and the mean batch size."""
    sums: dict[str, float] = {}
    batches = []
    for header in headers:
        for part in header.split(","):
            fields = [f.strip() for f in part.split(";")]
            for f in fields[1:]:
                if f.startswith("dur="):
                    sums[fields[0]] = sums.get(fields[0], 0.0) + float(f[4:])
                elif f.startswith('desc="batch of '):
                    batches.append(int(f[len('desc="batch of '):-1]))
    out = {k: round(v / len(headers), 2) for k, v in sums.items()} if headers else {}
    if batches:
        out["batch"] = round(statistics.mean(batches), 2)
    return out


def machine_busy(seconds: float = 2.0) -> float:
    """Share (%) of all cores busy over `seconds`: before a phase, that is other work on the machine."""
    def snapshot() -> tuple[int, int]:
        with open("/proc/stat", encoding="utf-8") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    (total0, idle0), _ = snapshot(), time.sleep(seconds)
    total1, idle1 = snapshot()
    return 100.0 * (1 - (idle1 - idle0) / max(1, total1 - total0))


def wait_quiet(limit_pct: float, max_wait_s: float) -> float:
    """Wait (bounded) until other work leaves the machine; returns the last busy share seen."""
    deadline = time.monotonic() + max_wait_s
    busy = machine_busy()
    while busy > limit_pct and time.monotonic() < deadline:
        busy = machine_busy(5.0)
    return busy


# --- the stack ---------------------------------------------------------------------------------------

def compose(env: dict, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    command = ["docker", "compose", "-p", PROJECT, "--project-directory", str(ROOT),
               "-f", str(ROOT / "docker-compose.yml"), *args]
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"docker compose {' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
    return done


def scale(env: dict, replicas: int) -> list[str]:
    compose(env, "up", "-d", "--no-build", "--wait", "--wait-timeout", "180", "--scale", f"model={replicas}")
    ids = compose(env, "ps", "-q", "model").stdout.split()
    assert len(ids) == replicas, ids
    return ids


def pin(container: str, cores: str) -> None:
    subprocess.run(["docker", "update", "--cpuset-cpus", cores, container], check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_served(port: int, replicas: int) -> None:
    """Until the gateway has answered from `replicas` distinct replicas (it re-resolves every 2 s); bounded."""
    import urllib.request

    body, seen, deadline = IMAGES[0].read_bytes(), set(), time.monotonic() + 60
    while len(seen) < replicas and time.monotonic() < deadline:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body,
                                         headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(request, timeout=30) as response:
            seen.add(response.headers["X-Replica"])
    if len(seen) < replicas:
        raise SystemExit(f"the gateway reached {len(seen)} of {replicas} replicas within 60 s")


# --- main --------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15, help="measured time per load point (default 15)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of (a)-(d), interleaved (default 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="the replicas' MAX_BATCH_SIZE (1 = off)")
    parser.add_argument("--batch-wait-ms", type=float, default=2, help="the replicas' MAX_BATCH_WAIT_MS")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="clients per replica at saturation (default 16: two full batches in flight)")
    parser.add_argument("--unloaded-requests", type=int, default=200)
    parser.add_argument("--scaling-pin", choices=["float", "split"], default="float",
                        help="(d): replicas share both cores (float, default) or get one each (split)")
    parser.add_argument("--quiet-pct", type=float, default=15,
                        help="before each phase, wait up to --quiet-wait s for the machine to be this idle")
    parser.add_argument("--quiet-wait", type=float, default=120)
    parser.add_argument("--no-build", action="store_true", help="use the images as they are")
    parser.add_argument("--raw-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_only:
        print(json.dumps(raw(args.seconds / 2, args.batch_size)))
        return
    cores = os.cpu_count() or 1
    if cores < 2:
        raise SystemExit("needs 2 cores: one for the replica, one for the gateway and the load generator")
    everything = f"0-{cores - 1}"

    def quiet(phase: str) -> str:
        busy = wait_quiet(args.quiet_pct, args.quiet_wait)
        flag = "" if busy <= args.quiet_pct else ", NOT QUIET: other work skews this figure"
        return f"[machine {busy:.0f}% busy before{flag}]"

    print(f"batching: MAX_BATCH_SIZE={args.batch_size}, MAX_BATCH_WAIT_MS={args.batch_wait_ms:g}; "
          f"{args.repeats} rounds of {args.seconds:g} s per load point")
    port = free_port()
    env = {"LOADGRID_GATEWAY_PORT": str(port), "LOADGRID_MAX_BATCH_SIZE": str(args.batch_size),
           "LOADGRID_MAX_BATCH_WAIT_MS": str(args.batch_wait_ms), "LOADGRID_INTRA_OP_THREADS": "1"}
    figures: dict[str, list[float]] = {k: [] for k in ("a", "a_p50", "a_batched", "b", "c_p50", "c_overhead", "d")}
    try:
        compose(env, "down", "-v", "--remove-orphans", "--timeout", "5")
        if not args.no_build:
            compose(env, "build", timeout=3600)
        for round_ in range(1, args.repeats + 1):
            print(f"round {round_}")
            os.sched_setaffinity(0, set(range(cores)))
            note = quiet("(a)")
            child = subprocess.run([sys.executable, __file__, "--raw-only", "--seconds", str(args.seconds),
                                    "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
            r = json.loads(child.stdout.strip().splitlines()[-1])
            figures["a"].append(r["rps"])
            figures["a_p50"].append(r["p50_ms"])
            figures["a_batched"].append(r["rps_batched"])
            print(f"  (a) raw, 1 thread on core {REPLICA_CORE}: {r['rps']:.1f} images/s, p50 {r['p50_ms']:.2f} ms "
                  f"per image; in batches of {args.batch_size}: {r['rps_batched']:.1f} images/s {note}")

            (replica,) = scale(env, 1)
            pin(replica, str(REPLICA_CORE))
            compose(env, "restart", "gateway")  # after a scale-down: forget the removed replica at once
            (gateway,) = compose(env, "ps", "-q", "gateway").stdout.split()
            pin(gateway, str(GENERATOR_CORE))
            os.sched_setaffinity(0, {GENERATOR_CORE})
            wait_served(port, 1)
            note = quiet("(b)")
            b = load(port, args.concurrency, args.seconds)
            figures["b"].append(b["rps"])
            print(f"  (b) served, 1 replica on core {REPLICA_CORE}, gateway and {args.concurrency} clients on core "
                  f"{GENERATOR_CORE}: {b['rps']:.1f} req/s, p50 {b['p50_ms']:.0f} ms, statuses {b['statuses']}, "
                  f"generator CPU {b['generator_cpu_pct']:.0f}% of a core; Server-Timing means (ms) "
                  f"{b['server_timing_ms']} {note}")
            note = quiet("(c)")
            c = unloaded(port, args.unloaded_requests)
            figures["c_p50"].append(c["p50_ms"])
            figures["c_overhead"].append(c["overhead_p50_ms"])
            print(f"  (c) unloaded, 1 client, {c['requests']} requests: p50 {c['p50_ms']:.2f} ms end to end; "
                  f"per request, end to end minus its decode + inference: p50 {c['overhead_p50_ms']:.2f} ms; "
                  f"Server-Timing means (ms) {c['server_timing_ms']} {note}")

            os.sched_setaffinity(0, set(range(cores)))
            pin(gateway, everything)
            replicas = scale(env, 2)
            for core, container in enumerate(replicas):
                pin(container, str(core) if args.scaling_pin == "split" else everything)
            compose(env, "restart", "gateway")  # so it sees both replicas at once
            wait_served(port, 2)
            where = "one core each" if args.scaling_pin == "split" else "both sharing cores " + everything
            note = quiet("(d)")
            d = load(port, 2 * args.concurrency, args.seconds)
            figures["d"].append(d["rps"])
            print(f"  (d) 2 replicas ({where}) with gateway and {2 * args.concurrency} clients: {d['rps']:.1f} "
                  f"req/s, p50 {d['p50_ms']:.0f} ms, statuses {d['statuses']}, per replica {d['per_replica']}, "
                  f"generator CPU {d['generator_cpu_pct']:.0f}% {note}")
    finally:
        subprocess.run(["docker", "compose", "-p", PROJECT, "--project-directory", str(ROOT), "-f",
                        str(ROOT / "docker-compose.yml"), "down", "-v", "--remove-orphans", "--timeout", "5"],
                       env={**os.environ, **env}, capture_output=True, timeout=300)
    if figures["d"]:
        summarise(figures, args.batch_size)


def summarise(f: dict[str, list[float]], batch: int) -> None:
    def m(key: str) -> float:
        return statistics.median(f[key])

    def spread(key: str, digits: int = 1) -> str:
        return f"{m(key):.{digits}f} (range {min(f[key]):.{digits}f}-{max(f[key]):.{digits}f}, n={len(f[key])})"

    print("summary (medians over rounds)")
    print(f"  (a) raw: {spread('a')} images/s, p50 {spread('a_p50', 2)} ms; in batches of {batch}: "
          f"{spread('a_batched')} images/s")
    print(f"  (b) served, 1 replica: {spread('b')} req/s; served / raw = {m('b') / m('a'):.3f} (goal >= 0.85); "
          f"per round {[round(b / a, 3) for a, b in zip(f['a'], f['b'], strict=True)]}")
    print(f"  (c) unloaded p50 {spread('c_p50', 2)} ms; minus raw p50 = {m('c_p50') - m('a_p50'):.2f} ms "
          f"(goal <= 3 ms); per round {[round(c - a, 2) for a, c in zip(f['a_p50'], f['c_p50'], strict=True)]}")
    print(f"      the same without the drift between two processes: per request, end to end minus that request's own "
          f"decode + inference (Server-Timing): p50 {spread('c_overhead', 2)} ms")
    print(f"  (d) 2 replicas: {spread('d')} req/s; 2 replicas / (2 x 1 replica) = {m('d') / (2 * m('b')):.3f} "
          f"(goal >= 0.9); per round {[round(d / (2 * b), 3) for b, d in zip(f['b'], f['d'], strict=True)]}")


def unloaded(port: int, requests: int, warmup: float = 1.0) -> dict:
    """One client, one request at a time (no think time): `requests` of them after `warmup` seconds."""
    bodies = [p.read_bytes() for p in IMAGES]
    results: dict = {"latencies": [], "statuses": {}, "timings": [], "replicas": {}, "overheads": []}
    now = time.perf_counter()
    # Bounded by the request count (the warm-up adds ~60 more), with a deadline as a backstop.
    asyncio.run(one_client(port, bodies, 0, now + 300, now + warmup, results, max_requests=requests + 60))
    lat = results["latencies"][:requests]
    return {"requests": len(lat), "statuses": results["statuses"], "p50_ms": 1000 * statistics.median(lat),
            "server_timing_ms": mean_timings(results["timings"]),
            "overhead_p50_ms": statistics.median(results["overheads"][:requests])}


if __name__ == "__main__":
    main()
