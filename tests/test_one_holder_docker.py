"""Someone else loading the stack, on the real engine: a second client makes the run invalid; a second
orchestrate run against a held output folder is refused in one line naming the holder."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from support.engine import ROOT, free_port, orchestrate, wait_for, write_config

pytestmark = pytest.mark.docker


def _second_client(url: str, stop: threading.Event, sent: list, limit: int = 2000, seconds: float = 60.0):
    """Another client on 127.0.0.1, bounded in time and count."""
    body = (ROOT / "images" / "chelsea.jpg").read_bytes()
    deadline = time.monotonic() + seconds
    while not stop.is_set() and len(sent) < limit and time.monotonic() < deadline:
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "image/jpeg"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
            sent.append(1)
        except OSError:
            stop.wait(0.05)


def test_another_client_makes_the_run_invalid_and_a_held_output_is_refused(tmp_path):
    project = "lgtest-other"
    output = tmp_path / "reports"
    port = free_port()
    config = write_config(tmp_path / "config.yaml", output, port, project, num_models_list="[1]",
                          num_users_list="[1]", spawn_rate_list="[1]", run_time="10s")
    proc = orchestrate(config)
    stop, sent = threading.Event(), []
    other = threading.Thread(target=_second_client, args=(f"http://127.0.0.1:{port}/predict", stop, sent))
    try:
        wait_for(lambda: (output / "cpu" / "1_1_1.locust.log").exists(), 600, "the run to start")
        # a second orchestrate run against the held output folder is refused at once, in one line
        second = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(config)],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stdout + second.stderr
        line = (second.stdout + second.stderr).strip()
        assert "\n" not in line and f"pid {proc.pid}" in line and str(config) in line, line
        other.start()
        out, _ = proc.communicate(timeout=600)
    finally:
        stop.set()
        if other.is_alive():
            other.join(timeout=30)
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["docker", "compose", "-p", f"{project}-cpu", "down", "-v"], capture_output=True)
    assert proc.returncode == 0, out
    assert len(sent) > 30, "the second client loaded the stack"
    record = json.loads((output / "cpu" / "1_1_1.json").read_text())
    assert record["validity"]["valid"] is False
    assert any("loadgrid did not send: another client is loading it" in r for r in record["validity"]["reasons"]), \
        record["validity"]
