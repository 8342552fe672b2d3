"""backend: swarm on the real engine: a tiny grid (sizes 1 and 2) on a single-node swarm, as a user runs it.

The test makes the swarm itself when the engine is in none (`docker swarm init --advertise-addr 127.0.0.1`)
and leaves it afterwards, with the bridge network Swarm adds, so the engine ends as it began; an engine that
is already a manager is used as it is and left so. loadgrid itself never inits or leaves a swarm.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from support.engine import (
    ROOT,
    Orchestrator,
    check_killed_run_and_the_next,
    free_port,
    orchestrate,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.docker

STACK_LABEL = "label=com.docker.stack.namespace"
SWARM_NETWORKS = {"docker_gwbridge", "ingress"}  # what `docker swarm init` adds to the engine


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def swarm_state() -> tuple[str, str]:
    out = docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}").stdout.split()
    return (out + ["", ""])[0], (out + ["", ""])[1]


def networks() -> set[str]:
    return set(docker("network", "ls", "--format", "{{.Name}}").stdout.split())


@pytest.fixture(scope="module")
def single_node_swarm() -> Iterator[None]:
    state, manager = swarm_state()
    if state == "active" and manager != "true":
        pytest.skip("this engine is a swarm worker: the test needs a manager or no swarm")
    if state not in ("active", "inactive"):
        pytest.skip(f"swarm state {state!r}: neither in a swarm nor out of one")
    created = state == "inactive"
    before = networks()
    if created:
        init = docker("swarm", "init", "--advertise-addr", "127.0.0.1")
        assert init.returncode == 0, init.stderr
    try:
        yield
    finally:
        if created:
            left = docker("swarm", "leave", "--force")
            assert left.returncode == 0, left.stderr
            # docker_gwbridge stays after leaving: removed when it was not there before. Only Swarm's own
            # networks are touched and compared: the engine is shared with other projects.
            for name in (SWARM_NETWORKS & networks()) - before:
                docker("network", "rm", name)
            assert swarm_state()[0] == "inactive"
            assert SWARM_NETWORKS & networks() == SWARM_NETWORKS & before


def stack_leftovers(project: str) -> dict[str, list[str]]:
    """Services, networks and containers of a swarm stack, by Swarm's label and by name."""
    return {
        "services": docker("service", "ls", "--quiet", "--filter", f"{STACK_LABEL}={project}").stdout.split()
        + docker("service", "ls", "--quiet", "--filter", f"name={project}_").stdout.split(),
        "networks": docker("network", "ls", "--quiet", "--filter", f"{STACK_LABEL}={project}").stdout.split()
        + docker("network", "ls", "--quiet", "--filter", f"name={project}_").stdout.split(),
        "containers": docker("ps", "-aq", "--filter", f"{STACK_LABEL}={project}").stdout.split()
        + docker("ps", "-aq", "--filter", f"name={project}_").stdout.split(),
    }


def remove_stack(project: str) -> None:
    """After a failed run: the stack removed (bounded wait) before the swarm is left; nothing when none is left."""
    if any(stack_leftovers(project).values()):
        docker("stack", "rm", project)
        deadline = time.monotonic() + 120
        while any(stack_leftovers(project).values()) and time.monotonic() < deadline:
            time.sleep(0.5)  # pacing between polls of a bounded loop


def test_tiny_grid_on_a_single_node_swarm(tmp_path, single_node_swarm):
    project = "lgtest-swarm"
    output = tmp_path / "reports"
    config = write_config(tmp_path / "config.yaml", output, free_port(), project, backend="swarm")
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(config)],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
        containers_by_size = {}
        for name in ("1_4_2", "2_4_2"):
            models = int(name[0])
            record = json.loads((output / "cpu" / f"{name}.json").read_text())
            assert record["status"] == "completed"
            assert record["validity"]["valid"] and record["validity"]["reasons"] == [], record["validity"]
            assert record["incidents"] == []
            load = record["load"]
            assert load["requests"] > 0 and load["failures"] == 0
            stack = record["stack"]
            assert stack["project"] == f"{project}-cpu" and stack["replicas_seen"] == models
            replicas = stack["replicas"]
            assert len({r["container"] for r in replicas}) == models, replicas
            assert all(r["name"].startswith(f"{project}-cpu_model.") and r["health"] == "healthy" for r in replicas)
            assert all(r["provider"] == "CPUExecutionProvider" for r in replicas)
            assert all(r["node"] for r in replicas), replicas  # the node each task ran on
            # the gateway reached every task (the service's DNS name answers each of them), and every request
            # Locust counted was served by one of them
            assert all(r["requests_served"] > 0 for r in replicas), replicas
            served = sum(r["requests_served"] for r in replicas)
            assert load["whole_run"]["requests"] <= served <= load["whole_run"]["requests"] + 4
            # telemetry from the task containers, found by Swarm's labels
            telemetry = record["telemetry"]["containers"]
            tasks = [n for n, c in telemetry.items() if c["service"] == "model"]
            assert len(tasks) == models and all(telemetry[n]["samples"] >= 3 for n in tasks), telemetry
            assert any(c["service"] == "gateway" for c in telemetry.values())
            containers_by_size[models] = {r["container"] for r in replicas}
        assert len(containers_by_size[1] | containers_by_size[2]) >= 2
        stack_file = output / "swarm" / f"{project}-cpu.stack.yml"
        assert "endpoint_mode: dnsrr" in stack_file.read_text()
        # nothing of the stack is left the moment loadgrid returns: it waited for `docker stack rm` to complete
        assert stack_leftovers(f"{project}-cpu") == {"services": [], "networks": [], "containers": []}
    finally:
        print(f"swarm grid: {time.monotonic() - started:.0f} s")
        remove_stack(f"{project}-cpu")


def test_a_task_killed_mid_run_invalidates_that_run_and_the_next_size_is_whole(tmp_path, single_node_swarm):
    project = "lgtest-swarm-kill"
    output = tmp_path / "reports"
    config = write_config(tmp_path / "config.yaml", output, free_port(), project, backend="swarm",
                          num_models_list="[2]", num_users_list="[4, 6]", spawn_rate_list="[4]", run_time="12s")
    proc = orchestrate(config)
    try:
        wait_for(lambda: (output / "cpu" / "2_4_4.locust.log").exists(), 600, "the first run to start")
        label = f"label=com.docker.swarm.service.name={project}-cpu_model"
        victim = docker("ps", "-q", "--filter", label).stdout.split()[0]
        assert docker("kill", victim).returncode == 0
        out, _ = proc.communicate(timeout=600)
        left = stack_leftovers(f"{project}-cpu")  # as loadgrid left it, before any clean-up here
    finally:
        if proc.poll() is None:
            proc.kill()
        remove_stack(f"{project}-cpu")
    assert proc.returncode == 0, out
    # Swarm replaced the task; the next run had exactly two healthy tasks again, the dead one not among them
    after = check_killed_run_and_the_next(output, victim)
    assert not any(victim.startswith(r["container"]) for r in after["stack"]["replicas"])
    assert left == {"services": [], "networks": [], "containers": []}


def test_ctrl_c_mid_run_removes_the_whole_stack(tmp_path, single_node_swarm):
    project = "lgtest-swarm-int"
    output = tmp_path / "reports"
    config = write_config(tmp_path / "config.yaml", output, free_port(), project, backend="swarm",
                          num_models_list="[2]", num_users_list="[2]", spawn_rate_list="[2]", run_time="20s")
    run = Orchestrator("--config", str(config))
    try:
        run.wait_for_line("run 1/1 cpu/2_2_2 (")
        run.proc.send_signal(signal.SIGINT)
        assert run.finish() == 130, run.lines
        left = stack_leftovers(f"{project}-cpu")  # as loadgrid left it
    finally:
        remove_stack(f"{project}-cpu")
    assert left == {"services": [], "networks": [], "containers": []}, run.lines
    assert json.loads((output / "cpu" / "2_2_2.json").read_text())["status"] == "interrupted"


def test_load_workers_run_as_a_swarm_service_and_leave_nothing(tmp_path, single_node_swarm):
    project = "lgtest-swarm-workers"
    output = tmp_path / "reports"
    config = write_config(tmp_path / "config.yaml", output, free_port(), project, backend="swarm",
                          num_models_list="[1]", num_users_list="[4]", spawn_rate_list="[4]", run_time="10s",
                          load_workers="2", master_port=str(free_port()))
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(config)],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
        record = json.loads((output / "cpu" / "1_4_4.json").read_text())
        assert record["status"] == "completed"
        # Valid, or (on a shared 2-core machine) client-bound by a worker's lag: either way the workers measured.
        assert all(r.startswith("client-bound: Locust worker") for r in record["validity"]["reasons"]), record
        gen = record["load"]["generator"]
        workers = gen["workers"]
        assert len(workers) == 2 and all(f"{project}-cpu_loadgrid-worker." in w["name"] and "@" in w["name"]
                                         and w["requests"] > 0 for w in workers), workers
        assert gen["distributed"]["joined"] == 2 and gen["distributed"]["reconciled"], gen["distributed"]
        left = docker("service", "ls", "--quiet", "--filter", f"name={project}-cpu_loadgrid-worker").stdout.split()
        assert left == []
        assert stack_leftovers(f"{project}-cpu") == {"services": [], "networks": [], "containers": []}
    finally:
        docker("service", "rm", f"{project}-cpu_loadgrid-worker")
        remove_stack(f"{project}-cpu")
