"""load_workers on Compose, on the real engine: a tiny grid whose load comes from two Locust worker containers
(the worker image, built here), valid with both workers in its record, and no worker container left after."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from support.engine import ROOT, Orchestrator, free_port, project_resources, wait_for, write_config

pytestmark = pytest.mark.docker


def worker_containers(project: str) -> list[str]:
    return subprocess.run(["docker", "ps", "-aq", "--filter", f"label=org.loadgrid.workers={project}"],
                          capture_output=True, text=True, timeout=30).stdout.split()


def remove_worker_containers(project: str) -> None:
    """After a failed test: what loadgrid should have removed."""
    for cid in worker_containers(project):
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, timeout=60)


def test_a_grid_with_two_load_workers_on_compose(tmp_path):
    project = "lgtest-workers"
    output = tmp_path / "reports"
    config = write_config(tmp_path / "config.yaml", output, free_port(), project, num_models_list="[1]",
                          num_users_list="[4]", spawn_rate_list="[4]", run_time="10s", load_workers="2",
                          master_port=str(free_port()))
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(config)],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
        assert "started 2 Locust worker container(s)" in proc.stdout
        record = json.loads((output / "cpu" / "1_4_4.json").read_text())
        assert record["validity"]["valid"], record["validity"]
        gen = record["load"]["generator"]
        assert gen["mode"] == "distributed"
        names = sorted(w["name"] for w in gen["workers"])
        assert names == [f"{project}-cpu-loadgrid-worker-1", f"{project}-cpu-loadgrid-worker-2"]
        assert all(w["container"] and w["requests"] > 0 and w["users"] == 2 for w in gen["workers"]), gen["workers"]
        dist = gen["distributed"]
        assert dist["joined"] == 2 and dist["reported"] == 2 and dist["reconciled"], dist
        assert dist["master_requests"] == record["load"]["requests"] == sum(w["requests"] for w in gen["workers"])
        # The workers are gone the moment loadgrid returns, with the stack.
        assert worker_containers(f"{project}-cpu") == []
        assert project_resources(f"{project}-cpu") == ([], [])
    finally:
        print(f"workers grid: {time.monotonic() - started:.0f} s")
        remove_worker_containers(f"{project}-cpu")


def test_ctrl_c_mid_run_removes_the_worker_containers_with_the_stack(tmp_path):
    project = "lgtest-workers-int"
    output = tmp_path / "reports"
    config = write_config(tmp_path / "config.yaml", output, free_port(), project, num_models_list="[1]",
                          num_users_list="[4]", spawn_rate_list="[4]", run_time="60s", load_workers="2",
                          master_port=str(free_port()))
    orch = Orchestrator("--config", str(config))
    try:
        # Interrupted while both workers run users: the master's workers file lists them as joined.
        joined = output / "cpu" / "1_4_4.workers.json"
        wait_for(lambda: joined.exists() and len(json.loads(joined.read_text() or "{}").get("joined", {})) == 2,
                 600, "both workers to join the first run")
        orch.proc.send_signal(signal.SIGINT)
        assert orch.finish(180) == 130, orch.lines[-20:]
        record = json.loads((output / "cpu" / "1_4_4.json").read_text())
        assert record["status"] == "interrupted"
        assert worker_containers(f"{project}-cpu") == []
        assert project_resources(f"{project}-cpu") == ([], [])
    finally:
        if orch.proc.poll() is None:
            orch.proc.kill()
        remove_worker_containers(f"{project}-cpu")
        subprocess.run(["docker", "compose", "--project-name", f"{project}-cpu", "down", "-v"], capture_output=True,
                       timeout=120)
