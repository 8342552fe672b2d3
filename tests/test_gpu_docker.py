"""The GPU variant on the real engine, on a machine without a GPU: merged compose config, a replica that
refuses the CPU when told to use the GPU, and (slow: ~1.9 GB of wheels) the GPU image build.

Build the GPU image by hand with:
    docker compose -f docker-compose.yml -f docker-compose.gpu.yml build model      # -> loadgrid-model:gpu
or run its test:  .venv/bin/python -m pytest -m slow tests/test_gpu_docker.py
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest
from support.engine import ROOT, project_resources

from loadgrid import gpu

pytestmark = pytest.mark.docker

BASE = ROOT / "docker-compose.yml"
GPU = ROOT / "docker-compose.gpu.yml"


def compose(project: str, *args: str, files=(BASE, GPU), env: dict | None = None, timeout: float = 600):
    command = ["docker", "compose", "-p", project, "--project-directory", str(ROOT)]
    for f in files:
        command += ["-f", str(f)]
    return subprocess.run([*command, *args], cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def model_config(project: str, files=(BASE, GPU), env: dict | None = None) -> dict:
    done = compose(project, "config", "--format", "json", files=files, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["services"]["model"]


def test_merged_compose_config_carries_the_gpu_reservation():
    model = model_config("lgtest-gpucfg")
    assert model["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert model["environment"]["DEVICE"] == "gpu"
    assert model["environment"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert model["build"]["args"]["REQUIREMENTS"] == "requirements-gpu.txt"
    assert model["build"]["args"]["DEVICE"] == "gpu"  # the image's own default, for hand-run containers
    assert model["image"] == "loadgrid-model:gpu"
    # the CPU stack alone reserves nothing and builds the CPU image
    cpu = model_config("lgtest-gpucfg", files=(BASE,))
    assert "deploy" not in cpu or not cpu["deploy"].get("resources")
    assert cpu["environment"]["DEVICE"] == "cpu" and cpu["image"] == "loadgrid-model:cpu"
    assert "REQUIREMENTS" not in cpu["build"].get("args", {})


def test_gpu_count_from_the_environment():
    assert model_config("lgtest-gpucfg", env=gpu.compose_env("all"))["deploy"]["resources"]["reservations"][
        "devices"][0]["count"] == -1  # compose's spelling of "all"
    assert model_config("lgtest-gpucfg", env=gpu.compose_env(2))["deploy"]["resources"]["reservations"][
        "devices"][0]["count"] == 2
    bad = compose("lgtest-gpucfg", "config", env={"LOADGRID_GPU_COUNT": "two"}, timeout=60)
    assert bad.returncode != 0 and "count" in bad.stderr


def test_generated_override_replaces_count_with_device_ids(tmp_path):
    override = tmp_path / "gpu-devices.yml"
    override.write_text(gpu.compose_override(None, ["0", "2"]))
    model = model_config("lgtest-gpucfg", files=(BASE, GPU, override))
    assert model["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "device_ids": ["0", "2"], "capabilities": ["gpu"]}]


def test_replica_told_to_use_the_gpu_refuses_on_this_machine():
    """The CPU image with DEVICE=gpu (no CUDA provider, no GPU): never healthy, exits, says why."""
    project = f"lgtest-gpurefuse-{uuid.uuid4().hex[:8]}"
    env = {"LOADGRID_DEVICE": "gpu"}
    try:
        built = compose(project, "build", "model", files=(BASE,), env=env)
        assert built.returncode == 0, built.stderr[-3000:]
        up = compose(project, "up", "-d", "--no-build", "--wait", "--wait-timeout", "90", "model", files=(BASE,),
                     env=env, timeout=180)
        assert up.returncode != 0, "a replica told to use the GPU became healthy without one"
        ids = compose(project, "ps", "-aq", "model", files=(BASE,), env=env, timeout=60).stdout.split()
        assert len(ids) == 1
        state = json.loads(subprocess.run(["docker", "inspect", ids[0], "--format", "{{json .State}}"],
                                          capture_output=True, text=True, check=True).stdout)
        assert state["Status"] == "exited" and state["ExitCode"] == 3, state
        assert (state.get("Health") or {}).get("Status") != "healthy"
        logs = compose(project, "logs", "--no-color", "model", files=(BASE,), env=env, timeout=60).stdout
        assert "replica will not become healthy: DeviceUnavailable: DEVICE=gpu" in logs, logs[-2000:]
        assert "CUDAExecutionProvider" in logs
        assert "ready:" not in logs  # it never served from the CPU
    finally:
        compose(project, "down", "-v", "--remove-orphans", "--timeout", "5", files=(BASE,), env=env, timeout=120)
        assert project_resources(project) == ([], [])


@pytest.fixture
def slow_selected(request):
    """Slow tests run only when asked for by marker (`-m slow`), never in the default run."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("slow (downloads ~1.9 GB, builds a ~3.8 GB image): run with -m slow")


@pytest.mark.slow
def test_gpu_image_builds_and_refuses_without_a_gpu(slow_selected):
    """Builds loadgrid-model:gpu (~1.9 GB of wheels, ~3.8 GB image), then checks it on this GPU-less machine."""
    project = f"lgtest-gpuimage-{uuid.uuid4().hex[:8]}"
    try:
        built = compose(project, "build", "model", timeout=3600)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        # CUDA provider present, and every library it links against resolves from the nvidia-* wheels
        # (libcuda itself is loaded at run time from the driver the container toolkit mounts).
        check = ("import glob, os, subprocess, onnxruntime as o\n"
                 "assert 'CUDAExecutionProvider' in o.get_available_providers(), o.get_available_providers()\n"
                 "so = glob.glob(os.path.dirname(o.__file__) + '/capi/libonnxruntime_providers_cuda.so')[0]\n"
                 "libs = ':'.join(glob.glob('/opt/venv/lib/python3*/site-packages/nvidia/*/lib'))\n"
                 "out = subprocess.run(['ldd', so], capture_output=True, text=True, env={'LD_LIBRARY_PATH': libs})\n"
                 "missing = [line for line in out.stdout.splitlines() if 'not found' in line]\n"
                 "assert not missing, missing\n"
                 "o.preload_dlls()\n"
                 "print('cuda provider ok', o.__version__)\n")
        done = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python", "loadgrid-model:gpu", "-c", check],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "cuda provider ok" in done.stdout, done.stdout + done.stderr
        # Without a GPU the replica refuses at once, in one line, and exits non-zero.
        run = subprocess.run(["docker", "run", "--rm", "loadgrid-model:gpu"], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 3, run.stdout + run.stderr
        assert "replica will not become healthy: DeviceUnavailable: DEVICE=gpu but no NVIDIA GPU visible" in run.stdout
    finally:
        compose(project, "down", "-v", "--remove-orphans", timeout=120)
