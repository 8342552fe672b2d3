"""Stopping a child process the way Locust expects: SIGINT (it writes its reports and exits), then, past a grace
period, SIGKILL. Standard library only: `loadgrid worker` uses it too, and imports little before Locust."""

from __future__ import annotations

import signal
import subprocess


def stop(proc: subprocess.Popen, grace_s: float = 15) -> None:
    """SIGINT, wait up to `grace_s`, then kill; waited for in every case. Nothing when it has already exited."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
