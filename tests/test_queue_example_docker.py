"""The queue example (examples/queue: API -> Redis -> N model workers, no health checks) end to end on the
real engine with 1 and 2 workers, as a user runs it with its own config; each worker's share is recorded."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
import yaml
from support.engine import ROOT, free_port, project_resources, stack_env

pytestmark = pytest.mark.docker

EXAMPLE = ROOT / "examples" / "queue"


def test_queue_example_with_one_and_two_workers(tmp_path):
    project = f"lgtest-queue-{uuid.uuid4().hex[:6]}"
    output = tmp_path / "reports"
    config = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    config.update(num_users_list=[2], spawn_rate_list=[2], run_time="5s", host=f"http://127.0.0.1:{free_port()}",
                  project=project, output_dir=str(output), compose_files=[str(EXAMPLE / "docker-compose.yml")],
                  images_dir=str(ROOT / "images"), startup_timeout="120s")
    assert config["service"] == "worker" and config["num_models_list"] == [1, 2]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(path)],
                              capture_output=True, text=True, timeout=900, env=stack_env())
    finally:
        left = project_resources(f"{project}-cpu")
        subprocess.run(["docker", "compose", "-p", f"{project}-cpu", "down", "-v", "--remove-orphans", "-t", "1"],
                       capture_output=True)
    assert left == ([], []), "the orchestrator left containers or networks behind"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sum("worker has no health check" in line for line in proc.stdout.splitlines()) == 1, proc.stdout
    for workers in (1, 2):
        record = json.loads((output / "cpu" / f"{workers}_2_2.json").read_text())
        assert record["status"] == "completed", record["error"]
        assert record["validity"]["valid"], record["validity"]["reasons"]
        assert record["load"]["failures"] == 0 and record["load"]["requests"] >= 20
        assert record["readiness"]["method"] == "requests" and record["readiness"]["ready"], record["readiness"]
        # every worker's processed count, read from its /health before and after the run
        replicas = record["stack"]["replicas"]
        assert len(replicas) == workers and all("-worker-" in r["name"] for r in replicas)
        served = [r["requests_served"] for r in replicas]
        assert all(isinstance(n, int) and n > 0 for n in served), replicas
        sent = record["load"]["whole_run"]["requests"]
        assert sent <= sum(served) <= sent + 4, (served, sent)  # + the jobs in flight when Locust stopped
