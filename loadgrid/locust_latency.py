"""Loaded into Locust next to the locustfile (`-f locustfile.py,locust_window.py,locust_latency.py`): exact latencies.

Locust keeps response times in rounded buckets (above 100 ms, two significant digits: 104.9 ms is stored as
100), so its percentiles can be off by up to 5%. This plugin listens to every request in every process that
runs users and keeps the exact response time (float ms, as Locust's client measured it) in a log-linear
histogram: key = round(ln(ms) / ln(1.001)), so a bucket's value 1.001**key is within 0.05% of every time in
it. It also keeps, per 0.25 s of request end time, a coarser histogram (1% buckets) for the window's thirds,
and, for open-loop users (loadgrid.locust_users sets `loadgrid_slot` on the sending greenlet), the latency
from the intended send time (the slot) to the response, as wrk2 does.

It also measures the generator's own lag: a greenlet asks to wake every LOADGRID_LAG_INTERVAL_MS (20 ms;
0 turns it off) and records how late it woke. A process whose hub is starved (no CPU to run on) or busy
(other users' callbacks, a blocking call in the locustfile) wakes late, and every response that arrived in
that time was timestamped late by as much: the lag is an error in the measured latency that CPU share alone
does not show (a starved process uses little CPU). Kept as a 0.1% histogram plus the worst lag per second.

It also keeps the process's own CPU time over the window (and per second, with the lag samples): a worker
on another machine is out of reach of loadgrid's CPU meter, so each process measures itself.

Counting restarts when the measurement window opens (loadgrid's window plugin fires reset_stats). A single
Locust process writes `<LOADGRID_LATENCY_FILE>.<pid>.part` at quit (temp file + rename); a worker (local or
remote) sends the same part to its master when its users stop (locust_dist.py), and the master writes it.
loadgrid merges the parts.
It runs inside Locust's gevent world; of loadgrid it imports only safefile (standard library only).
"""

import json
import math
import os
import re
import socket
import time

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from loadgrid import safefile  # stdlib only: safe to import in Locust's gevent world

LATENCY_FILE = os.environ.get("LOADGRID_LATENCY_FILE", "")
STEP = math.log(1.001)  # exact histogram: 0.1% buckets
COARSE_STEP = math.log(1.01)  # per-time-bin histograms for the window's thirds: 1% buckets
BIN_S = 0.25
LAG_INTERVAL_S = float(os.environ.get("LOADGRID_LAG_INTERVAL_MS", "20") or 0) / 1000


def key(ms: float, step: float = STEP) -> int:
    return round(math.log(max(ms, 0.001)) / step)


def _fresh() -> dict:
    return {"window_start_at": None, "count": 0, "sum_ms": 0.0, "max_ms": 0.0, "hist": {}, "bins": {},
            "intended": {"count": 0, "sum_ms": 0.0, "max_ms": 0.0, "hist": {}},
            "lag": {"count": 0, "sum_ms": 0.0, "max_ms": 0.0, "hist": {}, "per_s": {},
                    "interval_ms": LAG_INTERVAL_S * 1000},
            # CPU seconds this process used per second of the window (1.0 = one core busy), and in all.
            "failures": 0, "cpu": {"at_start": time.process_time(), "started": time.time(), "per_s": {}}}


_state = _fresh()
_times = {"stopped_at": None, "test_start_at": None}
_sampler = {}


def _add(hist: dict, k: int) -> None:
    hist[k] = hist.get(k, 0) + 1


@events.request.add_listener
def _on_request(response_time=None, start_time=None, exception=None, **_kw):
    if response_time is None:
        return
    ms = float(response_time)
    now = time.time()
    _state["count"] += 1
    if exception is not None:
        _state["failures"] += 1
    _state["sum_ms"] += ms
    _state["max_ms"] = max(_state["max_ms"], ms)
    _add(_state["hist"], key(ms))
    _add(_state["bins"].setdefault(int(now / BIN_S), {}), key(ms, COARSE_STEP))
    slot = getattr(gevent.getcurrent(), "loadgrid_slot", None)
    if slot is not None:
        # From the slot the request was due in to its response: the generator's own lateness counts too.
        sent = start_time if start_time is not None else now - ms / 1000
        late_ms = max(0.0, (sent - slot) * 1000)
        intended = _state["intended"]
        total = late_ms + ms
        intended["count"] += 1
        intended["sum_ms"] += total
        intended["max_ms"] = max(intended["max_ms"], total)
        _add(intended["hist"], key(total))


def _lag_sampler():
    """Ask to wake every LAG_INTERVAL_S; how late the wake-up came is the hub's scheduling delay. Once a
    second it also notes the CPU time this process used since the last second."""
    last = [int(time.time()), time.process_time()]
    while _times["stopped_at"] is None:  # after this process's users stopped, nothing it measures is late
        due = time.perf_counter() + LAG_INTERVAL_S
        gevent.sleep(LAG_INTERVAL_S)
        late_ms = max(0.0, (time.perf_counter() - due) * 1000)
        lag = _state["lag"]  # looked up each time: the window's opening replaces it
        lag["count"] += 1
        lag["sum_ms"] += late_ms
        lag["max_ms"] = max(lag["max_ms"], late_ms)
        _add(lag["hist"], key(late_ms))
        second = int(time.time())
        lag["per_s"][second] = max(lag["per_s"].get(second, 0.0), round(late_ms, 2))
        if second != last[0]:
            cpu = time.process_time()
            _state["cpu"]["per_s"][last[0]] = round((cpu - last[1]) / max(1, second - last[0]), 3)
            last[:] = [second, cpu]


@events.reset_stats.add_listener
def _window_opened(**_kw):
    _state.clear()
    _state.update(_fresh(), window_start_at=time.time())


@events.test_start.add_listener
def _started(environment=None, **_kw):
    _times["test_start_at"] = _times["test_start_at"] or time.time()
    # Only processes that run users measure lag: a master's hub holds no user's clock.
    runner = getattr(environment, "runner", None)
    if LAG_INTERVAL_S > 0 and not isinstance(runner, MasterRunner) and not _sampler:
        _sampler["greenlet"] = gevent.spawn(_lag_sampler)


@events.test_stop.add_listener
def _stopped(environment=None, **_kw):
    # This process's users have all stopped (their requests in flight finished): the run ended here.
    _times["stopped_at"] = _times["stopped_at"] or time.time()
    if isinstance(getattr(environment, "runner", None), WorkerRunner) and not _sent:
        _sent["at"] = time.time()
        _send_to_master(environment, _report())


_sent = {}  # a worker sends its part once, even where test_stop fires twice (a stop, then quit)


def _report() -> dict:
    cpu = _state["cpu"]
    end = _times["stopped_at"] or time.time()
    report = {**_state, **_times, "pid": os.getpid(), "step": 1.001, "coarse_step": 1.01, "bin_s": BIN_S,
              "written_at": time.time()}
    report["cpu"] = {"seconds": round(time.process_time() - cpu["at_start"], 3),
                     "wall_s": round(end - cpu["started"], 3), "per_s": cpu["per_s"]}
    return report


def _send_to_master(environment, report: dict) -> None:
    """A worker's part goes to its master as a message (locust_dist.py writes it there), with where it ran."""
    report["where"] = where()
    environment.runner.send_message("loadgrid_part", {"kind": "latency", "part": report})


def where() -> dict:
    """Where this process runs: host name, the name `loadgrid worker --name` gave, container id (in one), pid,
    and the cores it may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return {"hostname": socket.gethostname(), "name": os.environ.get("LOADGRID_WORKER_NAME", ""),
            "container": container_id(), "pid": os.getpid(), "cores": cores}


def container_id() -> str:
    """The container this process runs in (Docker's id, from /proc/self/mountinfo), or "" outside one."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            found = re.search(r"/containers/([0-9a-f]{64})/", fh.read())
    except OSError:
        return ""
    return found.group(1)[:12] if found else ""


@events.quitting.add_listener
def _write(environment, **_kw):
    if not LATENCY_FILE or isinstance(environment.runner, (MasterRunner, WorkerRunner)):
        return
    safefile.replace(f"{LATENCY_FILE}.{os.getpid()}.part", json.dumps(_report()))
