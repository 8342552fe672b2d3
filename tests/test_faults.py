"""Faults answered with one clear line and the right exit code, before anything is started where possible."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.engine import ROOT, base_image, free_port, project_resources, write_config


def orchestrate(config: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(config)],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("loadgrid: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in err, err


def test_docker_daemon_not_reachable(tmp_path):
    config = write_config(tmp_path / "config.yaml", tmp_path / "out", free_port(), "lgtest-nodaemon")
    proc = orchestrate(config, env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert proc.returncode == 1
    one_line_error(proc, "Docker daemon not reachable")
    assert not (tmp_path / "out").exists()


@pytest.mark.docker
def test_compose_v2_missing(tmp_path):
    env = {"DOCKER_CONFIG": str(tmp_path / "docker-config")}  # hides a per-user compose plugin
    if subprocess.run(["docker", "compose", "version"], capture_output=True, env={**os.environ, **env}).returncode == 0:
        pytest.skip("compose is installed system-wide here; cannot hide it")
    config = write_config(tmp_path / "config.yaml", tmp_path / "out", free_port(), "lgtest-nocompose")
    proc = orchestrate(config, env=env)
    assert proc.returncode == 1
    one_line_error(proc, "Compose v2 missing")


@pytest.mark.docker
def test_invalid_compose_file_is_named(tmp_path):
    bad = tmp_path / "broken-compose.yml"
    bad.write_text("services:\n  model:\n    image: x\n    ports: 12\n")
    config = write_config(tmp_path / "config.yaml", tmp_path / "out", free_port(), "lgtest-badcompose",
                          compose_files=f"[{bad}]")
    proc = orchestrate(config)
    assert proc.returncode == 2
    one_line_error(proc, "compose file invalid", str(bad))
    assert project_resources("lgtest-badcompose-cpu") == ([], [])


@pytest.mark.docker
def test_gateway_port_already_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "config.yaml", tmp_path / "out", port, "lgtest-porttaken")
        proc = orchestrate(config)
    assert proc.returncode == 1
    one_line_error(proc, f"port {port} is already in use")
    assert project_resources("lgtest-porttaken-cpu") == ([], [])


@pytest.mark.docker
def test_image_build_failure_points_at_the_build_log(tmp_path):
    stack = tmp_path / "stack"
    (stack / "svc").mkdir(parents=True)
    (stack / "svc" / "Dockerfile").write_text(f"FROM {base_image()}\nRUN echo the-build-broke-here && false\n")
    (stack / "compose.yml").write_text("services:\n  model:\n    build: ./svc\n    image: lgtest-broken:1\n")
    out = tmp_path / "out"
    config = write_config(tmp_path / "config.yaml", out, free_port(), "lgtest-badbuild",
                          compose_files=f"[{stack / 'compose.yml'}]")
    proc = orchestrate(config)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    log = out / "cpu" / "build.log"
    assert "the-build-broke-here" in log.read_text()
    for name in ("1_4_2", "2_4_2"):
        record = json.loads((out / "cpu" / f"{name}.json").read_text())
        assert record["status"] == "failed" and "image build failed" in record["error"] and str(log) in record["error"]
    assert "image build failed" in proc.stdout and str(log) in proc.stdout
    assert project_resources("lgtest-badbuild-cpu") == ([], [])


@pytest.mark.docker
def test_host_not_reachable_after_the_stack_is_up(tmp_path):
    stack = tmp_path / "stack"
    stack.mkdir()
    # a user's stack whose service answers nothing on the configured host
    (stack / "compose.yml").write_text(
        f"services:\n  model:\n    image: {base_image()}\n    command: [sleep, '600']\n    init: true\n")
    out = tmp_path / "out"
    port = free_port()
    config = write_config(tmp_path / "config.yaml", out, port, "lgtest-unreachable",
                          compose_files=f"[{stack / 'compose.yml'}]", num_models_list="[1]", startup_timeout="5s")
    proc = orchestrate(config)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    record = json.loads((out / "cpu" / "1_4_2.json").read_text())
    assert f"host http://127.0.0.1:{port} not reachable" in record["error"]
    assert "not reachable" in proc.stdout
    assert project_resources("lgtest-unreachable-cpu") == ([], [])


@pytest.mark.docker
def test_gpu_variant_without_a_gpu_is_skipped_and_cpu_still_runs(tmp_path):
    out = tmp_path / "out"
    config = write_config(tmp_path / "config.yaml", out, free_port(), "lgtest-nogpu", num_models_list="[1]",
                          num_users_list="[2]", spawn_rate_list="[2]", run_time="4s", variants="[cpu, gpu]",
                          gpu_compose_files=f"[{ROOT / 'docker-compose.gpu.yml'}]")
    proc = orchestrate(config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [line] = [line for line in proc.stdout.splitlines() if "variant skipped" in line]
    assert line.startswith("gpu variant skipped: no NVIDIA runtime registered with Docker")
    assert json.loads((out / "cpu" / "1_2_2.json").read_text())["status"] == "completed"
    assert not list((out / "gpu").glob("*.json")) if (out / "gpu").exists() else True
    assert json.loads((out / "session.json").read_text())["skipped_variants"]["gpu"].startswith("no NVIDIA runtime")
    for project in ("lgtest-nogpu-cpu", "lgtest-nogpu-gpu"):
        assert project_resources(project) == ([], [])


@pytest.mark.docker
def test_gpu_required_without_a_gpu_fails_before_anything_starts(tmp_path):
    config = write_config(tmp_path / "config.yaml", tmp_path / "out", free_port(), "lgtest-needgpu",
                          variants="[gpu]", gpu_required="true",
                          gpu_compose_files=f"[{ROOT / 'docker-compose.gpu.yml'}]")
    proc = orchestrate(config)
    assert proc.returncode == 1
    one_line_error(proc, "gpu variant: no NVIDIA runtime registered with Docker", "gpu_required")
    assert project_resources("lgtest-needgpu-gpu") == ([], [])


@pytest.mark.docker
def test_gpu_device_ids_replace_the_count_in_the_merged_compose_config(tmp_path):
    from loadgrid import backend
    from loadgrid import config as config_mod

    path = write_config(tmp_path / "config.yaml", tmp_path / "out", free_port(), "lgtest-gpuids",
                        variants="[gpu]", gpu_device_ids="[1, 3]",
                        gpu_compose_files=f"[{ROOT / 'docker-compose.gpu.yml'}]")
    stack = backend.make_stack(config_mod.load(path), "gpu")
    merged = subprocess.run(stack.command("config", "--format", "json"), capture_output=True, text=True,
                            env=stack.env, check=True)
    [device] = json.loads(merged.stdout)["services"]["model"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["device_ids"] == ["1", "3"] and "count" not in device and device["capabilities"] == ["gpu"]
