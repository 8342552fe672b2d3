"""How a locustfile's requests are paced: the base class `LoadgridUser`, imported by the locustfile.

A subclass defines `request(self)`, one request. Settings come from the environment (set by loadgrid):

  closed loop (default)       each user sends back to back: a slow server slows its clients down
    LOADGRID_REQUESTS_PER_USER  N > 0: each user stops after N requests; Locust quits when all have
                                (the run time is then a cap)
  open loop                   arrivals follow a clock, whatever the server's response times
    LOADGRID_ARRIVAL_RATE       requests per second over all users (all Locust processes)
    LOADGRID_ARRIVAL            constant (even spacing) or poisson (exponential gaps)
    LOADGRID_USERS              how many users share that rate (loadgrid runs one per Locust process)
    LOADGRID_MAX_IN_FLIGHT      requests one user may have in flight; a slot that finds them all busy is
                                dropped (not sent) and counted. 0 = rate x timeout
    LOADGRID_TIMEOUT_S          request timeout (default 60; loadgrid sets 10 for open loop)
    LOADGRID_LATE_MS            a request sent more than this after its slot is counted late (default 20)
  LOADGRID_COUNTS_FILE          each Locust process with users writes its counts to `<this>.<pid>.part`
                                at exit: requests sent, users that finished, and the open-loop counts of
                                the measurement window (reset when loadgrid's window plugin opens it):
                                actual send times (first/last), when sending stopped, and how late each
                                send left its slot (a 0.1% log histogram, like loadgrid's exact latencies)

It runs inside Locust's gevent world and imports nothing heavy.
"""

from __future__ import annotations

import json
import math
import os
import random
import time

import gevent
import gevent.pool
from locust import FastHttpUser, constant, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from loadgrid import safefile  # stdlib only: safe to import in Locust's gevent world


def _number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


REQUESTS_PER_USER = int(_number("LOADGRID_REQUESTS_PER_USER", 0))
ARRIVAL_RATE = _number("LOADGRID_ARRIVAL_RATE", 0.0)
ARRIVAL = os.environ.get("LOADGRID_ARRIVAL", "constant") or "constant"
OPEN_USERS = max(1, int(_number("LOADGRID_USERS", 1)))
TIMEOUT_S = _number("LOADGRID_TIMEOUT_S", 60.0)
LATE_S = _number("LOADGRID_LATE_MS", 20.0) / 1000.0
COUNTS_FILE = os.environ.get("LOADGRID_COUNTS_FILE", "")
OPEN_LOOP = ARRIVAL_RATE > 0
RATE_PER_USER = ARRIVAL_RATE / OPEN_USERS if OPEN_LOOP else 0.0
MAX_IN_FLIGHT = int(_number("LOADGRID_MAX_IN_FLIGHT", 0)) or min(1000, max(10, math.ceil(RATE_PER_USER * TIMEOUT_S)))

# This process's counts; the open-loop ones restart when the measurement window opens.
# first_user_at: when this process's first user started (the earliest a request could leave);
# last_finished_at: when its last user with N requests finished; stopped_at: when open-loop sending stopped.
counts = {"users_started": 0, "users_finished": 0, "requests_sent": 0, "first_user_at": None, "last_finished_at": None,
          "window_start_at": None, "scheduled": 0, "sent": 0, "late": 0, "dropped": 0,
          "first_slot_at": None, "last_slot_at": None, "max_late_ms": 0.0,
          "first_send_at": None, "last_send_at": None, "stopped_at": None, "send_late_hist": {}}
LATE_STEP = math.log(1.001)


def _late_key(ms: float) -> int:
    return round(math.log(max(ms, 0.001)) / LATE_STEP)


class LoadgridUser(FastHttpUser):
    """A client: closed loop (back to back, optionally N requests) or open loop (on a clock), by environment."""

    abstract = True
    wait_time = constant(0)
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S
    # The connection pool: an open-loop user has up to MAX_IN_FLIGHT requests on the wire at once.
    concurrency = MAX_IN_FLIGHT if OPEN_LOOP else 10

    def request(self) -> None:
        raise NotImplementedError("a LoadgridUser subclass defines request(self): one request")

    def on_start(self) -> None:
        counts["users_started"] += 1
        counts["first_user_at"] = counts["first_user_at"] or time.time()
        self._sent = 0
        if OPEN_LOOP:
            self._pool = gevent.pool.Pool(MAX_IN_FLIGHT)
            gap = 1.0 / RATE_PER_USER
            # A random phase, so users in several processes do not send in lockstep.
            self._next_slot = time.time() + (random.uniform(0, gap) if ARRIVAL == "constant"
                                             else random.expovariate(RATE_PER_USER))

    def on_stop(self) -> None:
        if OPEN_LOOP:
            counts["stopped_at"] = max(counts["stopped_at"] or 0.0, time.time())
            # The requests in flight are measured too: wait for them, within the request timeout.
            self._pool.join(timeout=TIMEOUT_S)
            self._pool.kill(block=False)

    @task
    def _one_step(self) -> None:
        if OPEN_LOOP:
            self._open_loop_slot()
            return
        self.request()
        self._sent += 1
        counts["requests_sent"] += 1
        if REQUESTS_PER_USER and self._sent >= REQUESTS_PER_USER:
            counts["users_finished"] += 1
            counts["last_finished_at"] = time.time()
            raise StopUser()

    def _open_loop_slot(self) -> None:
        slot = self._next_slot
        delay = slot - time.time()
        if delay > 0:
            gevent.sleep(delay)
        late = time.time() - slot
        counts["scheduled"] += 1
        counts["first_slot_at"] = counts["first_slot_at"] or slot
        counts["last_slot_at"] = slot
        if self._pool.full():
            counts["dropped"] += 1
        else:
            if late > LATE_S:
                counts["late"] += 1
            counts["max_late_ms"] = max(counts["max_late_ms"], round(late * 1000, 1))
            k = _late_key(late * 1000)
            counts["send_late_hist"][k] = counts["send_late_hist"].get(k, 0) + 1
            counts["sent"] += 1
            counts["requests_sent"] += 1
            sent_at = time.time()
            counts["first_send_at"] = counts["first_send_at"] or sent_at
            counts["last_send_at"] = sent_at
            self._pool.spawn(self._send, slot)
        self._next_slot = slot + (1.0 / RATE_PER_USER if ARRIVAL == "constant"
                                  else random.expovariate(RATE_PER_USER))

    def _send(self, slot: float) -> None:
        # loadgrid's latency plugin reads this to time the request from its slot (the intended send time).
        gevent.getcurrent().loadgrid_slot = slot
        try:
            self.request()
        except Exception as exc:  # reported like an error in a task, then the next slot goes on
            self.environment.events.user_error.fire(user_instance=self, exception=exc, tb=exc.__traceback__)


@events.reset_stats.add_listener
def _window_opened(**_kw) -> None:
    """loadgrid's window plugin fires reset_stats when the steady state begins: count from there."""
    counts.update(window_start_at=time.time(), scheduled=0, sent=0, late=0, dropped=0, first_slot_at=None,
                  last_slot_at=None, max_late_ms=0.0, first_send_at=None, last_send_at=None, send_late_hist={})


_watcher = {}


@events.spawning_complete.add_listener
def _watch_for_done(**_kw) -> None:
    """With N requests per user, quit once every user has finished (the master or the only process decides)."""
    env = _environment.get("env")
    if not REQUESTS_PER_USER or OPEN_LOOP or env is None or isinstance(env.runner, WorkerRunner) or _watcher:
        return

    def watch() -> None:
        while env.runner.user_count > 0:
            gevent.sleep(0.25)
        print(f"loadgrid: every user sent its {REQUESTS_PER_USER} requests; stopping", flush=True)
        env.runner.quit()

    _watcher["greenlet"] = gevent.spawn(watch)


_environment = {}


@events.init.add_listener
def _remember(environment, **_kw) -> None:
    _environment["env"] = environment


def _counts_report() -> dict:
    return {**counts, "pid": os.getpid(), "written_at": time.time(), "open_loop": OPEN_LOOP, "arrival": ARRIVAL,
            "arrival_rate": ARRIVAL_RATE, "rate_per_user": RATE_PER_USER, "max_in_flight": MAX_IN_FLIGHT,
            "late_tolerance_ms": LATE_S * 1000, "requests_per_user": REQUESTS_PER_USER}


_sent = {}


@events.test_stop.add_listener
def _send_counts(environment, **_kw) -> None:
    """A worker (local or remote) sends its counts to the master when its users have stopped (loadgrid's
    locust_dist.py plugin writes them there); a single process writes its own file at quit."""
    if isinstance(environment.runner, WorkerRunner) and counts["users_started"] and not _sent:
        _sent["at"] = time.time()
        environment.runner.send_message("loadgrid_part", {"kind": "counts", "part": _counts_report()})


@events.quitting.add_listener
def _write_counts(environment, **_kw) -> None:
    if not COUNTS_FILE or isinstance(environment.runner, (MasterRunner, WorkerRunner)) or not counts["users_started"]:
        return
    safefile.replace(f"{COUNTS_FILE}.{os.getpid()}.part", json.dumps(_counts_report()))
