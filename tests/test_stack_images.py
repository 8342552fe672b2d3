"""The real images on the real engine: build them, run one replica behind the gateway, ask it for a cat.

Traffic goes only to the gateway's port on 127.0.0.1. The base image comes from LOADGRID_BASE_IMAGE
(setup.sh writes it to .env, which compose reads).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
import uuid

import pytest
from conftest import ROOT, project_resources

pytestmark = pytest.mark.docker

CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
SHA256 = (ROOT / "model_service" / "model" / "efficientnet_lite0.onnx.sha256").read_text().split()[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack():
    project = f"lgtest-images-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {**os.environ, "LOADGRID_GATEWAY_PORT": str(port)}

    def compose(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        command = ["docker", "compose", "-p", project, "-f", str(ROOT / "docker-compose.yml"), *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    try:
        built = compose("build")
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        up = compose("up", "-d", "--no-build", "--wait", "--wait-timeout", "120", "--scale", "model=1")
        assert up.returncode == 0, up.stdout + up.stderr + compose("logs").stdout[-3000:]
        yield compose, f"http://127.0.0.1:{port}"
    finally:
        compose("down", "-v", "--remove-orphans", "--timeout", "5", timeout=120)
        assert project_resources(project) == ([], []), "compose down left containers or networks behind"


def replica_exec(compose, *command: str) -> str:
    done = compose("exec", "-T", "model", *command, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_gateway_serves_a_cat_prediction(stack):
    _, gateway = stack
    photo = (ROOT / "images" / "chelsea.jpg").read_bytes()
    request = urllib.request.Request(f"{gateway}/predict", data=photo, headers={"Content-Type": "image/jpeg"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
        assert response.headers["X-Replica"] == body["replica"]
    assert CATS & {p["label"] for p in body["predictions"]}, body


def test_replica_runs_as_non_root(stack):
    compose, _ = stack
    assert replica_exec(compose, "id", "-u") == "10001"


def test_replica_health_reports_the_cpu_provider_and_model(stack):
    compose, _ = stack
    health = json.loads(replica_exec(compose, "python", "-c", "import urllib.request as u; "
                                     "print(u.urlopen('http://127.0.0.1:8000/health').read().decode())"))
    assert health["ready"] is True
    assert health["provider"] == "CPUExecutionProvider" and health["device"] == "cpu"
    assert health["model"] == {"name": "efficientnet_lite0", "sha256": SHA256}


def test_image_is_labelled_with_the_model_sha256(stack):
    compose, _ = stack
    container = compose("ps", "-q", "model").stdout.split()[0]
    image = subprocess.run(["docker", "inspect", container, "--format", "{{.Image}}"],
                           capture_output=True, text=True, check=True).stdout.strip()
    labels = subprocess.run(["docker", "image", "inspect", image, "--format", "{{json .Config.Labels}}"],
                            capture_output=True, text=True, check=True).stdout
    assert json.loads(labels)["org.loadgrid.model.sha256"] == SHA256
