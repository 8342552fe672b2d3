"""End to end on the real engine, as a user runs it: a tiny grid, real stack, real Locust, real reports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.engine import ROOT, free_port, project_resources, write_config

pytestmark = pytest.mark.docker


def test_tiny_grid_end_to_end(tmp_path):
    project = "lgtest-e2e"
    output = tmp_path / "reports"
    config = write_config(tmp_path / "config.yaml", output, free_port(), project)
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(config)],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for name in ("1_4_2", "2_4_2"):
            html = output / "cpu" / f"{name}.html"
            assert html.is_file() and "locust" in html.read_text().lower()
            record = json.loads((output / "cpu" / f"{name}.json").read_text())
            assert record["status"] == "completed"
            assert record["validity"]["valid"] and record["validity"]["reasons"] == [], record["validity"]
            load = record["load"]
            assert load["requests"] > 0 and load["failures"] == 0
            # statistics cover the steady state; the whole run (with ramp-up) is kept beside them
            assert load["window"]["start_at"] >= load["window"]["spawn_complete_at"]
            assert load["whole_run"]["requests"] > load["requests"]
            assert 0 < load["generator"]["cpu_pct_mean"] <= 100 and load["generator"]["samples"] >= 3
            # telemetry: every container of the stack was sampled during the run
            containers = record["telemetry"]["containers"]
            assert sum(1 for name in containers if "-model-" in name) == int(name[0])
            assert all(c["samples"] >= 3 and c["mem_mb_max"] > 0 for c in containers.values())
            assert record["telemetry"]["gpu_absent"] == "not a GPU run"
            models = int(name[0])
            assert record["stack"]["replicas_seen"] == models
            replicas = record["stack"]["replicas"]
            assert len(replicas) == models
            assert all(r["provider"] == "CPUExecutionProvider" for r in replicas)
            # every request Locust counted in the whole run was served by one of the replicas (plus those in
            # flight when Locust stopped)
            served = sum(r["requests_served"] for r in replicas)
            assert load["whole_run"]["requests"] <= served <= load["whole_run"]["requests"] + 4
            assert (output / "cpu" / f"{name}.stats.json").is_file()
        assert "cpu/2_4_2" in (output / "summary.csv").read_text()
        assert 'href="cpu/1_4_2.html"' in (output / "index.html").read_text()
        timings = json.loads((output / "session.json").read_text())["timings_s"]
        assert timings["load_s"] >= 20
    finally:
        subprocess.run(["docker", "compose", "-p", f"{project}-cpu", "down", "-v", "--remove-orphans"],
                       capture_output=True)
    # nothing of the project is left, and the orchestrator (not the finally above) removed it
    assert project_resources(f"{project}-cpu") == ([], []), "containers or networks left behind"
