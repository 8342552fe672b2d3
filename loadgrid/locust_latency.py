"""Loaded into Locust next to the locustfile (`-f locustfile.py,locust_window.py,locust_latency.py`): exact latencies.

Locust keeps response times in rounded buckets (above 100 ms, two significant digits: 104.9 ms is stored as
100), so its percentiles can be off by up to 5%. This plugin listens to every request in every process that
runs users and keeps the exact response time (float ms, as Locust's client measured it) in a log-linear
histogram: key = round(ln(ms) / ln(1.001)), so a bucket's value 1.001**key is within 0.05% of every time in
it. It also keeps, per 0.25 s of request end time, a coarser histogram (1% buckets) for the window's thirds,
and, for open-loop users (loadgrid.locust_users sets `loadgrid_slot` on the sending greenlet), the latency
from the intended send time (the slot) to the response, as wrk2 does.

Counting restarts when the measurement window opens (loadgrid's window plugin fires reset_stats). Each
process writes `<LOADGRID_LATENCY_FILE>.<pid>.part` at quit (temp file + rename); loadgrid merges them.
It runs inside Locust's gevent world and imports nothing from loadgrid.
"""

import json
import math
import os
import time

import gevent
from locust import events
from locust.runners import MasterRunner

LATENCY_FILE = os.environ.get("LOADGRID_LATENCY_FILE", "")
STEP = math.log(1.001)  # exact histogram: 0.1% buckets
COARSE_STEP = math.log(1.01)  # per-time-bin histograms for the window's thirds: 1% buckets
BIN_S = 0.25


def key(ms: float, step: float = STEP) -> int:
    return round(math.log(max(ms, 0.001)) / step)


def _fresh() -> dict:
    return {"window_start_at": None, "count": 0, "sum_ms": 0.0, "max_ms": 0.0, "hist": {}, "bins": {},
            "intended": {"count": 0, "sum_ms": 0.0, "max_ms": 0.0, "hist": {}}}


_state = _fresh()
_times = {"stopped_at": None, "test_start_at": None}


def _add(hist: dict, k: int) -> None:
    hist[k] = hist.get(k, 0) + 1


@events.request.add_listener
def _on_request(response_time=None, start_time=None, **_kw):
    if response_time is None:
        return
    ms = float(response_time)
    now = time.time()
    _state["count"] += 1
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


@events.reset_stats.add_listener
def _window_opened(**_kw):
    _state.clear()
    _state.update(_fresh(), window_start_at=time.time())


@events.test_start.add_listener
def _started(**_kw):
    _times["test_start_at"] = _times["test_start_at"] or time.time()


@events.test_stop.add_listener
def _stopped(**_kw):
    # This process's users have all stopped (their requests in flight finished): the run ended here.
    _times["stopped_at"] = time.time()


@events.quitting.add_listener
def _write(environment, **_kw):
    if not LATENCY_FILE or isinstance(environment.runner, MasterRunner):
        return
    report = {**_state, **_times, "pid": os.getpid(), "step": 1.001, "coarse_step": 1.01, "bin_s": BIN_S,
              "written_at": time.time()}
    path = f"{LATENCY_FILE}.{os.getpid()}.part"
    with open(path + ".tmp", "w") as fh:
        json.dump(report, fh)
    os.replace(path + ".tmp", path)
