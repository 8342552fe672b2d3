"""Loaded into Locust next to the locustfile (`-f locustfile.py,locust_window.py`): the measurement window.

Statistics should describe the steady state, not the ramp-up. When every user is spawned (plus an optional
warm-up, LOADGRID_WARMUP_S), this resets Locust's statistics, so its HTML report and final JSON cover the
window only; what came before is saved to LOADGRID_WINDOW_FILE so the whole run can still be rebuilt.
With LOADGRID_WINDOW_RESET=0 (runs that stop after N requests per user) nothing is reset: the window is
the whole run, from the test's start.
Under a master, the master decides: it opens its window and tells every worker to open theirs (a message,
registered here), so all of them count from the same moment.
The window's end is measured too (test_stop here: every user stopped, its request in flight answered);
loadgrid prefers the same moment recorded in each process with users (locust_latency.py), since a master
notices its workers have stopped only on its next one-second check.
It runs inside Locust's gevent world; of loadgrid it imports only safefile (standard library only).
"""

import json
import os
import time

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import StatsEntry, StatsError

from loadgrid import safefile  # stdlib only: safe to import in Locust's gevent world

WARMUP_S = float(os.environ.get("LOADGRID_WARMUP_S", "0") or 0)
WINDOW_FILE = os.environ.get("LOADGRID_WINDOW_FILE", "")
RESET = os.environ.get("LOADGRID_WINDOW_RESET", "1") != "0"

_state = {"spawn_complete_at": None, "window_start_at": None, "before_window": None, "test_start_at": None,
          "window_end_at": None, "before_window_errors": {}}
_environment = {}


@events.init.add_listener
def _remember(environment, **_kw):
    _environment["env"] = environment


@events.test_start.add_listener
def _started(**_kw):
    _state["test_start_at"] = _state["test_start_at"] or time.time()


@events.test_stop.add_listener
def _stopped(**_kw):
    _state["window_end_at"] = time.time()


def _open_window():
    env = _environment["env"]
    runner = env.runner
    if not RESET:
        _state["window_start_at"] = _state["test_start_at"]
        if isinstance(runner, MasterRunner):
            # Nothing is reset (the window is the whole run), but the workers' clocks are still measured: their
            # first and last users' times bound the window.
            _clocks["sent_at"] = time.time()
            runner.send_message("loadgrid_clock")
        return
    # What the ramp-up (and warm-up) measured, kept before the reset throws it away.
    _state["before_window"] = [e.serialize() for e in runner.stats.entries.values()]
    _state["before_window_errors"] = _errors(runner.stats)  # ramp-up/warm-up failures by message
    _state["window_start_at"] = time.time()
    if isinstance(runner, MasterRunner):
        # Every worker opens its window now too: they count from the master's moment, not each from its own
        # last spawn. Until a worker's acknowledgement arrives, its statistics reports still hold requests from
        # before its window (a report sent while the message travelled): they are dropped (`_drop_early`), so
        # the master's totals are the sum of what the workers counted in their windows.
        _pending.update(c.id for c in runner.clients.all)
        _clocks["sent_at"] = time.time()
        runner.send_message("loadgrid_window")
    _reset_here(env)


_pending: set = set()  # on the master: workers whose window is not yet open


def _reset_here(env):
    env.runner.stats.reset_all()
    # Locust fires reset_stats only from its web UI; fired here, the locustfile's own counters follow the window.
    env.events.reset_stats.fire()


def _worker_opens(environment, **_kw):
    runner = environment.runner
    # What this worker counted since its last report is from before the window: reported now, so the master
    # counts it with the ramp-up (whole_run) instead of the reset throwing it away.
    send_stats = getattr(runner, "_send_stats", None)
    if send_stats is not None:
        send_stats()
    _reset_here(environment)
    # Sent after the reset: every report this worker sent before it travels ahead of this message. It carries
    # this worker's clock at its window's opening, for the master to place its times on the master's clock.
    runner.send_message("loadgrid_window_ack", {"at": time.time()})


def _clock_asked(environment, **_kw):
    environment.runner.send_message("loadgrid_window_ack", {"at": time.time()})


def _acknowledged(environment, msg, **_kw):
    """A worker's window is open. Its clock against the master's: it opened between the master's message and
    this answer, so its offset is its time then minus the middle of that round trip (within half of it)."""
    _pending.discard(msg.node_id)
    received, sent = time.time(), _clocks.get("sent_at")
    at = (msg.data or {}).get("at") if isinstance(msg.data, dict) else None
    if sent and isinstance(at, (int, float)):
        _clocks.setdefault("workers", {})[safefile.file_part(msg.node_id)] = {
            "offset_s": round(at - (sent + received) / 2, 6), "round_trip_s": round(received - sent, 6)}


_clocks: dict = {}  # on the master: when it opened the window, and each worker's clock offset


@events.worker_report.add_listener
def _before_window(client_id=None, data=None, **_kw):
    """A report from a worker whose window is not open yet holds requests from before the window: kept with the
    ramp-up's (before_window), and taken out of the report before Locust's own listener merges it into the
    window's statistics (this one is registered at import, so it runs first)."""
    if client_id not in _pending or not isinstance(data, dict):
        return
    runner = _environment["env"].runner
    _late["entries"].extend(data.get("stats") or [])
    for error in (data.get("errors") or {}).values():
        message = StatsError.parse_error(error.get("error"))
        _late["errors"][message] = _late["errors"].get(message, 0) + int(error.get("occurrences") or 0)
    data["stats"], data["errors"] = [], {}
    data["stats_total"] = StatsEntry(runner.stats, "Aggregated", None).serialize()


_late = {"entries": [], "errors": {}}  # on the master: workers' reports from before their window opened


@events.init.add_listener
def _listen(environment, **_kw):
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message("loadgrid_window", _worker_opens)
        environment.runner.register_message("loadgrid_clock", _clock_asked)
    elif isinstance(environment.runner, MasterRunner):
        environment.runner.register_message("loadgrid_window_ack", _acknowledged)


@events.spawning_complete.add_listener
def _on_spawned(user_count, **_kw):
    if isinstance(_environment["env"].runner, WorkerRunner):
        return  # a worker opens its window when the master says (loadgrid_window)
    _state["spawn_complete_at"] = time.time()
    if WARMUP_S > 0 and RESET:
        gevent.spawn_later(WARMUP_S, _open_window)
    else:
        _open_window()


def _merged(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def _errors(stats) -> dict:
    out = {}
    for error in stats.errors.values():
        message = StatsError.parse_error(error.error)
        out[message] = out.get(message, 0) + error.occurrences
    return out


@events.quitting.add_listener
def _write(environment, **_kw):
    if not WINDOW_FILE or isinstance(environment.runner, WorkerRunner):
        return
    report = {
        "warmup_s": WARMUP_S if RESET else 0,
        "reset": RESET,
        "spawn_complete_at": _state["spawn_complete_at"],
        "window_start_at": _state["window_start_at"],
        "window_end_at": _state["window_end_at"] or time.time(),
        "test_start_at": _state["test_start_at"],
        "distributed": isinstance(environment.runner, MasterRunner),
        "worker_clocks": _clocks.get("workers", {}),
        "before_window": (_state["before_window"] or []) + _late["entries"],
        "before_window_errors": _merged(_state["before_window_errors"], _late["errors"]),
        # The window's failures by message, final: Locust's _failures.csv is rewritten only once a second.
        "errors": _errors(environment.runner.stats),
    }
    safefile.replace(WINDOW_FILE, json.dumps(report))
