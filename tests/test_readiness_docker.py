"""Readiness without a health check, on the real engine: a user-shaped stack (tests/fixtures/slowstart) whose
scaled service has no health check and holds requests until its "model" loads LOAD_S after start."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from support.engine import ROOT, free_port, project_resources, stack_env

pytestmark = pytest.mark.docker

FIXTURE = ROOT / "tests" / "fixtures" / "slowstart" / "docker-compose.yml"
LOAD_S = 4


def run_grid(tmp_path: Path, load_s: float, **extra) -> tuple[subprocess.CompletedProcess, Path, str]:
    project = f"lgtest-ready-{uuid.uuid4().hex[:6]}"
    output = tmp_path / "reports"
    lines = {"num_models_list": "[2]", "num_users_list": "[2]", "spawn_rate_list": "[2]", "run_time": "4s",
             "host": f"http://127.0.0.1:{free_port()}", "project": project, "output_dir": str(output),
             "compose_files": f"[{FIXTURE}]", "service": "app", "images_dir": str(ROOT / "images"),
             "expect": "status", **extra}
    config = tmp_path / "config.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    env = stack_env(SLOWSTART_LOAD_S=str(load_s))
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(config)],
                              capture_output=True, text=True, timeout=600, env=env)
    finally:
        left = project_resources(f"{project}-cpu")
        subprocess.run(["docker", "compose", "-p", f"{project}-cpu", "down", "-v", "--remove-orphans", "-t", "1"],
                       capture_output=True)
    assert left == ([], []), "the orchestrator left containers or networks behind"
    return proc, output, project


def test_no_healthcheck_first_run_waits_for_the_model(tmp_path):
    proc, output, _ = run_grid(tmp_path, LOAD_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # said once, in one line, what loadgrid does instead of a health check
    told = [line for line in proc.stdout.splitlines() if "has no health check" in line]
    assert len(told) == 1 and "warm-up requests" in told[0], proc.stdout
    record = json.loads((output / "cpu" / "2_2_2.json").read_text())
    ready = record["readiness"]
    assert ready["method"] == "requests" and ready["ready"], ready
    # it waited through the model's load (waited_s counts from the start of the scale step)
    assert ready["waited_s"] >= LOAD_S and ready["requests_s"] > 0, ready
    assert ready["requests"] >= 4 and "every replica answered" in ready["detail"], ready
    assert record["status"] == "completed" and record["validity"]["valid"], record["validity"]
    # no request of the run was held by the loading model: the start-up was not measured
    assert record["load"]["whole_run"]["latency_ms"]["max"] < LOAD_S * 1000 / 2, record["load"]["whole_run"]
    # both replicas are told apart and served part of the run
    assert all(r["requests_served"] for r in record["stack"]["replicas"]), record["stack"]["replicas"]
    steps = json.loads((output / "session.json").read_text())["scale_steps"]
    assert [(s["models"], s["method"], s["ready"]) for s in steps] == [(2, "requests", True)], steps


def test_never_ready_fails_the_point_with_the_reason(tmp_path):
    proc, output, _ = run_grid(tmp_path, 120, startup_timeout="3s")
    assert proc.returncode != 0 or "failed" in proc.stdout  # the grid reports the failure, it does not crash
    assert "Traceback" not in proc.stderr, proc.stderr
    record = json.loads((output / "cpu" / "2_2_2.json").read_text())
    assert record["status"] == "failed" and not record["validity"]["valid"]
    assert record["error"].startswith("stack not ready: no 4 requests in a row served"), record["error"]
    assert "startup_timeout" in record["error"]
    assert record["readiness"]["ready"] is False and record["readiness"]["method"] == "requests"
