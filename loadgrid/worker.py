"""`loadgrid worker --master HOST[:PORT]` (also `python -m loadgrid.worker`): a Locust worker for loadgrid's
master, joined by hand from any machine with loadgrid installed, or started by loadgrid in a container.

A grid runs one Locust master per run, so a worker serves run after run: it waits for a master, asks it
for the run's settings and payload (locust_dist.py answers), starts `locust --worker -f -` (Locust's own file
distribution brings the locustfile and loadgrid's plugins), and when that run ends waits for the next one,
until Ctrl-C (or after one run with --once). It checks that it runs the master's loadgrid and Locust: the
plugins come from the master, the locustfile's helpers from the worker's own install.

This process imports Locust (its gevent patching) to speak Locust's protocol; the orchestrator never does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import __version__, procs

DEFAULT_PORT = 5557


class WorkerError(Exception):
    """One line, printed as `loadgrid worker: error: ...`; the worker exits 2 (bad input) or 1."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Master:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_master(text: str) -> Master:
    """HOST[:PORT] (an IPv6 address in brackets: [::1]:5557)."""
    text = (text or "").strip()
    host, port = text, str(DEFAULT_PORT)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise WorkerError(f"--master: {text!r} is not HOST[:PORT]; give the master's address, e.g. 10.0.0.5:5557", 2)
    return Master(host, int(port))


def fetch_setup(master: Master, last_run: str | None, wait_s: float | None, say) -> dict:
    """The settings of the master's next run (not `last_run`, the one this worker already served), asked for
    every 2 s through a fresh temporary client (a closed client's unanswered question is dropped, so a master
    that comes up later is not flooded). `wait_s` bounds the wait (None: until a master answers)."""
    import gevent
    from locust.rpc import Message, zmqrpc

    began = time.monotonic()
    told = None
    while True:
        client_id = f"{socket.gethostname()}_loadgrid_setup_{uuid.uuid4().hex}"
        client = zmqrpc.Client(master.host, master.port, client_id)
        try:
            client.send(Message("loadgrid_setup", {"loadgrid_version": __version__, "last_run": last_run},
                                client_id))
            reply = gevent.with_timeout(2.0, client.recv, timeout_value=None)
        finally:
            client.close(linger=0)
        data = reply.data if reply is not None and reply.type == "loadgrid_setup" else None
        if isinstance(data, dict):
            if data.get("error"):
                raise WorkerError(f"the master at {master} says: {data['error']}")
            if not data.get("refused") and data.get("run") != last_run:
                return data
            reason = data.get("refused") or "the run this worker served is still ending"
        else:
            reason = "no master answers yet"
        if reason != told:
            say(f"loadgrid worker: waiting for a master at {master} ({reason})")
            told = reason
        if wait_s is not None and time.monotonic() - began > wait_s:
            raise WorkerError(f"no run from a master at {master} within {wait_s:g}s ({reason}); is loadgrid running "
                              "there with expect_workers, and is the port reachable from here?")
        if reply is not None:
            gevent.sleep(1.0)


def check_versions(setup: dict, locust_version: str | None = None) -> None:
    """The master's loadgrid and Locust against this worker's (Locust's version read without importing it)."""
    import importlib.metadata

    mine = locust_version or importlib.metadata.version("locust")
    theirs = setup.get("loadgrid_version") or "?"
    if theirs != __version__:
        raise WorkerError(f"this worker runs loadgrid {__version__}, the master {theirs}: install the master's "
                          "version here (the plugins come from the master, the locustfile's helpers from here)")
    if setup.get("locust_version") != mine:
        raise WorkerError(f"this worker runs Locust {mine}, the master {setup.get('locust_version')}: "
                          f"pip install locust=={setup.get('locust_version')}")


def unpack_payload(payload: dict | None, into: Path) -> str:
    """The payload's files from the master, written under `into`; the path (or URL) the locustfile reads."""
    payload = payload or {}
    if "files" not in payload:
        return str(payload.get("url") or "")
    name = str(payload.get("name") or "payload")
    names = [name, *payload["files"]]
    if any(not n or "/" in n or "\\" in n or n in (".", "..") for n in names):
        raise WorkerError("the master sent a payload file name that is not a plain name; refusing to write it")
    root = into / "payload"
    root.mkdir()
    folder = root / name if payload.get("folder") else root
    folder.mkdir(exist_ok=True)
    for file_name, data in payload["files"].items():
        (folder / file_name).write_bytes(bytes(data))
    return str(folder if payload.get("folder") else folder / next(iter(payload["files"])))


def worker_env(setup: dict, scratch: Path, *, name: str = "", target: str = "") -> dict[str, str]:
    """This worker's Locust environment: its own, less any loadgrid file paths, plus the master's settings."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith("LOADGRID_") and k.endswith("_FILE"))}
    env.update({str(k): str(v) for k, v in (setup.get("env") or {}).items() if str(k).startswith("LOADGRID_")})
    env["LOADGRID_PAYLOAD"] = unpack_payload(setup.get("payload"), scratch)
    env.pop("LOADGRID_IMAGES_DIR", None)
    # Locust's `-f -` writes the master's files to the temp folder: one of this worker's own, so two workers
    # on one machine never read each other's half-written copy.
    env["TMPDIR"] = str(scratch)
    env["LOADGRID_WORKER_NAME"] = name or os.environ.get("LOADGRID_WORKER_NAME") or socket.gethostname()
    if target:
        env["LOADGRID_WORKER_TARGET"] = target
    else:
        env.pop("LOADGRID_WORKER_TARGET", None)
    return env


def locust_worker_command(master: Master) -> list[str]:
    return [sys.executable, "-m", "locust", "--worker", "--master-host", master.host, "--master-port",
            str(master.port), "-f", "-", "--loglevel", "WARNING"]


def serve(master: Master, *, once: bool = False, name: str = "", target: str = "", wait_s: float | None = None,
          say=print) -> int:
    """Serve the master's runs, one after another; 0 when stopped by Ctrl-C/SIGTERM or after --once."""
    last_run = None
    while True:
        setup = fetch_setup(master, last_run, wait_s, say)
        check_versions(setup)
        scratch = Path(tempfile.mkdtemp(prefix="loadgrid-worker-"))
        try:
            env = worker_env(setup, scratch, name=name, target=target)
            say(f"loadgrid worker: joining run {str(setup.get('run'))[:8]} of the master at {master}")
            proc = subprocess.Popen(locust_worker_command(master), env=env, cwd=scratch, stdin=subprocess.DEVNULL)
            try:
                code = proc.wait()
            except BaseException:
                procs.stop(proc)
                raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        last_run = setup.get("run")
        if code != 0:
            say(f"loadgrid worker: Locust's worker exited with {code}")
        if once:
            return code


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="loadgrid worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--master", required=True, metavar="HOST[:PORT]", help="the loadgrid master to join")
    parser.add_argument("--name", default="", help="this worker's name in the records (default: the host name)")
    parser.add_argument("--target", default="", metavar="URL",
                        help="send the requests here instead of the master's host (a different route to the stack)")
    parser.add_argument("--once", action="store_true", help="serve one run, then exit with Locust's status")
    parser.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                        help="give up when no master starts a run within this time (default: wait forever)")
    return parser.parse_args(argv)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop), handled as Ctrl-C: the Locust worker is stopped, the scratch folder removed."""


def _terminate(*_args) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        master = parse_master(args.master)
        return serve(master, once=args.once, name=args.name, target=args.target, wait_s=args.wait,
                     say=lambda line: print(line, flush=True))
    except WorkerError as exc:
        print(f"loadgrid worker: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("loadgrid worker: stopped", file=sys.stderr, flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
