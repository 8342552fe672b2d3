"""Loaded into Locust next to the locustfile (`-f locustfile.py,...,locust_dist.py`): Locust's master and its
workers, over Locust's own messages (nothing home-made travels beside them).

Every Locust process that runs users under a master is a WorkerRunner: the `--processes` children on this
machine as much as `loadgrid worker` on another one. They all report the same way, through the master:

  setup   A joining `loadgrid worker` asks the master (message loadgrid_setup, from a temporary client, the
          way Locust's own `-f -` fetches the locustfile) for the run's settings (the LOADGRID_* variables the
          locustfile reads at import) and the payload's files; then it starts `locust --worker -f -`, which
          fetches the locustfile and loadgrid's plugins from the master (Locust's file distribution).
          A master whose test has begun refuses: a late worker would get no users (Locust does not rebalance
          by default) and would count in no window.
  window  The master opens the measurement window (locust_window.py) and tells every worker to (loadgrid_window),
          so all processes count from the same moment, give or take the message's trip.
  stop    When the run ends, the master tells every worker to stop its users now (loadgrid_stop) and waits,
          bounded, for each one's parts (its counts and exact latencies, loadgrid_part) before it quits; Locust
          alone would send `quit` and wait 0.5 s for final statistics, which a busy worker can miss.
  parts   The master writes each worker's parts as `<prefix>.<worker id>.part`, where loadgrid reads them,
          and `LOADGRID_WORKERS_FILE`: who joined, when, and whose parts arrived.

It runs inside Locust's gevent world; of loadgrid it imports only safefile (standard library only).
"""

import functools
import json
import os
import time
import uuid

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from loadgrid import safefile  # stdlib only: safe to import in Locust's gevent world

WORKERS_FILE = os.environ.get("LOADGRID_WORKERS_FILE", "")
RUN_ID = os.environ.get("LOADGRID_RUN_ID", "") or uuid.uuid4().hex
STOP_WAIT_S = float(os.environ.get("LOADGRID_STOP_WAIT_S", "25") or 25)
# The master's settings a worker needs: what the locustfile and the plugins read at import. The files named
# here are the master's own paths (a worker's parts come back as messages instead).
NOT_SHIPPED = {"LOADGRID_WINDOW_FILE", "LOADGRID_COUNTS_FILE", "LOADGRID_LATENCY_FILE", "LOADGRID_WORKERS_FILE",
               "LOADGRID_PAYLOAD", "LOADGRID_IMAGES_DIR", "LOADGRID_WORKER_TARGET", "LOADGRID_WORKER_NAME"}
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024

_workers = {"run": RUN_ID, "joined": {}, "parts": {}, "stop": None}


def safe_id(worker_id: str) -> str:
    """A worker's id (Locust's `hostname_uuid`) as part of a file name."""
    return safefile.file_part(worker_id)


def _write_workers() -> None:
    if WORKERS_FILE:
        safefile.replace(WORKERS_FILE, json.dumps(_workers))


@functools.lru_cache(maxsize=4)  # read once per master, however many workers join
def payload_files(source: str) -> dict:
    """The payload as the files a worker rebuilds it from: {"name": its file or folder name, "files": {name:
    bytes}}; a URL travels as it is (the worker fetches it once, as the master would)."""
    if not source or "://" in source:
        return {"url": source}
    path = os.path.abspath(source)
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)) and not n.startswith("."))
        files, folder = {n: os.path.join(path, n) for n in names}, True
    else:
        files, folder = {os.path.basename(path): path}, False
    total = sum(os.path.getsize(p) for p in files.values())
    if total > MAX_PAYLOAD_BYTES:
        raise ValueError(f"the payload is {total / 2**20:.0f} MiB, more than the {MAX_PAYLOAD_BYTES // 2**20} MiB "
                         "loadgrid ships to workers; use a smaller payload or an http(s) URL each worker fetches")
    out = {}
    for name, p in files.items():
        with open(p, "rb") as fh:
            out[name] = fh.read()
    return {"name": os.path.basename(path.rstrip("/")), "folder": folder, "files": out}


def setup_reply(last_run: str | None = None) -> dict:
    """What a joining worker needs before its Locust starts (see the module's docstring). A worker that already
    served this run (`last_run`) is told so, without the payload it would not use."""
    from locust import __version__ as locust_version

    reply = {"run": RUN_ID, "locust_version": locust_version,
             "loadgrid_version": os.environ.get("LOADGRID_VERSION", ""),
             "env": {k: v for k, v in os.environ.items() if k.startswith("LOADGRID_") and k not in NOT_SHIPPED}}
    if _workers.get("started_at"):
        reply["refused"] = "this run has already started; waiting for the next one"
        return reply
    if last_run == RUN_ID:
        return reply
    try:
        reply["payload"] = payload_files(os.environ.get("LOADGRID_PAYLOAD") or os.environ.get("LOADGRID_IMAGES_DIR")
                                         or "")
    except (OSError, ValueError) as exc:
        reply["error"] = f"the master could not ship the payload: {exc}"
    return reply


def _on_setup(environment, msg, **_kw):
    asked = msg.data if isinstance(msg.data, dict) else {}
    environment.runner.send_message("loadgrid_setup", setup_reply(asked.get("last_run")), client_id=msg.node_id)


def _on_part(environment, msg, **_kw):
    """A worker's counts or latency part: written where loadgrid reads the parts of local processes."""
    data = msg.data or {}
    kind = data.get("kind")
    prefix = {"counts": os.environ.get("LOADGRID_COUNTS_FILE", ""),
              "latency": os.environ.get("LOADGRID_LATENCY_FILE", "")}.get(kind)
    worker = safe_id(msg.node_id)
    _workers["parts"].setdefault(worker, [])
    if kind not in _workers["parts"][worker]:
        _workers["parts"][worker].append(kind)
    if prefix and isinstance(data.get("part"), dict):
        part = {**data["part"], "worker_id": worker}
        safefile.replace(f"{prefix}.{worker}.part", json.dumps(part))
    _write_workers()


@events.test_start.add_listener
def _started(environment, **_kw):
    # Locust's own state says "stopped" before any worker has joined (no worker is running), so the master
    # keeps its own word for "the test has begun".
    if isinstance(environment.runner, MasterRunner):
        _workers["started_at"] = time.time()
        _write_workers()


@events.worker_connect.add_listener
def _joined(client_id=None, **_kw):
    worker = safe_id(client_id)
    _workers["joined"].setdefault(worker, time.time())
    _write_workers()


@events.init.add_listener
def _init(environment, **_kw):
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message("loadgrid_setup", _on_setup)
        runner.register_message("loadgrid_part", _on_part)
        runner.register_message("loadgrid_done", _on_done)
        _write_workers()
    elif isinstance(runner, WorkerRunner):
        runner.register_message("loadgrid_stop", _stop_here)
        target = os.environ.get("LOADGRID_WORKER_TARGET", "")
        if target:
            _aim(runner, target)


def _aim(runner, target: str) -> None:
    """Send this worker's requests to `target` instead of the master's host (a worker whose route to the stack
    differs from the master's). Locust sets the host of every user class from each spawn message; its
    start_worker is where the host is applied, so the target is set just before that."""
    start = runner.start_worker

    def start_worker(user_classes_count, **kwargs):
        runner.environment.host = target
        return start(user_classes_count, **kwargs)

    runner.start_worker = start_worker


def _stop_here(environment, **_kw):
    """The master's loadgrid_stop: stop the users now (their requests in flight finish, within the stop timeout),
    which fires test_stop here (the plugins send their parts), send the last statistics, then say so: the
    master waits for that last message, and the channel keeps the order."""
    runner = environment.runner
    runner.stop()
    send_stats = getattr(runner, "_send_stats", None)  # Locust's own final report (it sends one more at quit)
    if send_stats is not None:
        send_stats()
    runner.send_message("loadgrid_done", {"at": time.time()})


def _on_done(environment, msg, **_kw):
    _workers["parts"].setdefault(safe_id(msg.node_id), []).append("done")


@events.test_stop.add_listener
def _collect(environment, **_kw):
    """On the master: stop every worker and wait (bounded) until each has sent its parts and last statistics."""
    runner = environment.runner
    if not isinstance(runner, MasterRunner):
        return
    expected = [safe_id(c.id) for c in runner.clients.all]
    runner.send_message("loadgrid_stop")
    began = time.monotonic()
    deadline = began + STOP_WAIT_S
    while time.monotonic() < deadline and any("done" not in _workers["parts"].get(w, []) for w in expected):
        gevent.sleep(0.05)
    missing = [w for w in expected if "done" not in _workers["parts"].get(w, [])]
    _workers["stop"] = {"workers": expected, "waited_s": round(time.monotonic() - began, 3), "missing": missing,
                        "limit_s": STOP_WAIT_S}
    _write_workers()
