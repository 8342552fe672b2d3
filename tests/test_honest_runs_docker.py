"""Honest runs on the real engine: a replica killed mid-run, a replica out of memory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.engine import (
    ROOT,
    check_killed_run_and_the_next,
    free_port,
    orchestrate,
    project_resources,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.docker


def model_containers(project: str) -> list[str]:
    return subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                           "--filter", "label=com.docker.compose.service=model"],
                          capture_output=True, text=True).stdout.split()


def test_replica_killed_mid_run_invalidates_that_run_only(tmp_path):
    project = "lgtest-kill"
    output = tmp_path / "reports"
    config = write_config(tmp_path / "config.yaml", output, free_port(), project, num_models_list="[2]",
                          num_users_list="[4, 6]", spawn_rate_list="[4]", run_time="12s")
    proc = orchestrate(config)
    try:
        # the first run has started once Locust writes its log; kill one replica while it runs
        wait_for(lambda: (output / "cpu" / "2_4_4.locust.log").exists(), 600, "the first run to start")
        victim = model_containers(f"{project}-cpu")[0]
        subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["docker", "compose", "-p", f"{project}-cpu", "down", "-v"], capture_output=True)
    assert proc.returncode == 0, out

    check_killed_run_and_the_next(output, victim)  # invalid with its incident; the grid went on whole
    assert "INVALID" in out and "replica" in out
    assert project_resources(f"{project}-cpu") == ([], [])


def test_replica_out_of_memory_is_reported_oom_killed(tmp_path):
    project = "lgtest-oom"
    output = tmp_path / "reports"
    # A limit below what one replica needs to load the model (about 90 MB measured here).
    override = tmp_path / "small-memory.yml"
    override.write_text("services:\n  model:\n    mem_limit: 48m\n    memswap_limit: 48m\n")
    config = write_config(tmp_path / "config.yaml", output, free_port(), project, num_models_list="[1]",
                          num_users_list="[2]", spawn_rate_list="[2]", run_time="5s",
                          compose_files=f"[{ROOT / 'docker-compose.yml'}, {override}]")
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(config)],
                              capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run(["docker", "compose", "-p", f"{project}-cpu", "down", "-v"], capture_output=True)
    # the run could not be measured: recorded as failed, with the cause, and the exit code says so
    assert proc.returncode == 1, proc.stdout + proc.stderr
    record = json.loads((output / "cpu" / "1_2_2.json").read_text())
    assert record["status"] == "failed" and record["validity"]["valid"] is False
    assert "OOM-killed" in record["error"], record["error"]
    assert "OOM-killed" in proc.stdout
    assert project_resources(f"{project}-cpu") == ([], [])
