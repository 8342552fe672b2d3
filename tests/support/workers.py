"""`loadgrid worker` processes for tests: started beside a master (load.run with LoadOptions(workers=N)), each
serving one run (--once), always stopped when the test ends."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from .engine import ROOT, free_port  # noqa: F401  free_port: the master's port in these tests


def worker_command(master: str, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "loadgrid.worker", "--master", master, "--once", "--name", name, *extra]


@contextlib.contextmanager
def workers(commands: list[list[str]], log_dir: Path) -> Iterator[list[subprocess.Popen]]:
    """Start each command (a worker, perhaps inside `ip netns exec`), logging to log_dir/<i>.log; stopped on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        for i, cmd in enumerate(commands):
            log = open(log_dir / f"worker-{i}.log", "w")  # noqa: SIM115  closed with the process below
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                          stdin=subprocess.DEVNULL))
            log.close()
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def log_text(log_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(log_dir.glob("worker-*.log")))
