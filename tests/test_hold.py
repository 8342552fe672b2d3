"""One holder at a time: real processes hold the lock; a second is refused naming it; a killed one is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from loadgrid import hold
from loadgrid.errors import UserError

CHILD = """
import sys, time
from loadgrid import hold
h = hold.acquire(sys.argv[1], ["proj-cpu"], "child.yaml")
print("held", flush=True)
time.sleep(60)
"""


def _child(tmp_path, env):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout.readline().strip() == "held"  # blocks until the child holds its locks
    return proc


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("LOADGRID_LOCK_DIR", str(tmp_path / "locks"))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def test_a_second_holder_is_refused_naming_the_first_and_a_killed_one_is_taken_over(tmp_path, env):
    proc = _child(tmp_path, env)
    try:
        with pytest.raises(UserError) as err:
            hold.acquire(tmp_path / "out", ["proj-cpu"], "mine.yaml")
        assert err.value.exit_code == 1
        line = str(err.value)
        assert "\n" not in line and f"pid {proc.pid}" in line and "child.yaml" in line and "output folder" in line
        # another output folder, same compose project: still refused, naming the project
        with pytest.raises(UserError) as err:
            hold.acquire(tmp_path / "other", ["proj-cpu"], "mine.yaml")
        assert "compose project proj-cpu" in str(err.value) and f"pid {proc.pid}" in str(err.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    # the kernel released the killed child's flock: the stale file is taken over
    mine = hold.acquire(tmp_path / "out", ["proj-cpu"], "mine.yaml")
    try:
        assert f'"pid": {os.getpid()}' in (tmp_path / "out" / hold.LOCK_NAME).read_text()
    finally:
        mine.release()
    again = hold.acquire(tmp_path / "out", ["proj-cpu"], "mine.yaml")  # released: taken again
    again.release()
