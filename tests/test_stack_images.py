"""The real images on the real engine: build them, run one replica behind the gateway, ask it for a cat.

Traffic goes only to the gateway's port on 127.0.0.1. The base image comes from LOADGRID_BASE_IMAGE
(setup.sh writes it to .env, which compose reads).
"""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest
from conftest import ROOT, one_replica_stack

pytestmark = pytest.mark.docker

CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
SHA256 = (ROOT / "model_service" / "model" / "efficientnet_lite0.onnx.sha256").read_text().split()[0]


PREFIX = "lgtest-images"


@pytest.fixture(scope="module")
def stack():
    with one_replica_stack(PREFIX) as (compose, port, replica):
        yield compose, f"http://127.0.0.1:{port}"


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
