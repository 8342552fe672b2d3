"""The real images on the real engine: build them, run one replica behind the gateway, ask it for a cat.

Traffic goes only to the gateway's port on 127.0.0.1. The base image comes from LOADGRID_BASE_IMAGE
(setup.sh writes it to .env, which compose reads).
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
import urllib.request

import pytest
from support.engine import ROOT, one_replica_stack

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


def container_image(compose, service: str) -> tuple[str, str]:
    container = compose("ps", "-q", service).stdout.split()[0]
    image = subprocess.run(["docker", "inspect", container, "--format", "{{.Image}}"],
                           capture_output=True, text=True, check=True).stdout.strip()
    return container, image


def layer_files(image: str) -> list[str]:
    """Every regular file in every layer of `image`, as `docker save` hands the layers out (a file deleted by
    a later layer is still in the layer that added it)."""
    proc = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    names: list[str] = []
    with tarfile.open(fileobj=proc.stdout, mode="r|") as saved:
        for member in saved:
            if not member.isfile():
                continue
            try:
                with tarfile.open(fileobj=saved.extractfile(member), mode="r|*") as layer:
                    names.extend(m.name for m in layer if m.isfile())
            except tarfile.TarError:  # the manifest, the config: not a layer
                continue
    assert proc.wait(timeout=300) == 0
    return names


@pytest.mark.parametrize("service", ["model", "gateway"])
def test_no_image_layer_holds_the_build_ca_bundle(stack, service):
    """setup.sh copies a CA bundle into model_service/ca and gateway/ca for the builds; the old Dockerfiles
    copied the folder to /tmp/ca and removed it in a later step, leaving it in the COPY layer."""
    compose, _ = stack
    _, image = container_image(compose, service)
    files = layer_files(image)
    assert len(files) > 1000  # the layers were read (the base alone has thousands of files)
    leaked = [name for name in files if name.endswith("extra-ca.crt") or name.startswith("tmp/ca/")]
    assert not leaked, leaked


def test_gateway_nginx_runs_unprivileged_and_hides_its_version(stack):
    compose, gateway = stack
    container, _ = container_image(compose, "gateway")
    # docker top runs ps on the host: the uids are the host's view (no user namespace here: 0 would be root).
    top = subprocess.run(["docker", "top", container, "-o", "pid,uid,args"], capture_output=True, text=True,
                         check=True).stdout.splitlines()[1:]
    nginx = [line.split(None, 2)[1:] for line in top if "nginx:" in line]
    assert any("master process" in args for _, args in nginx) and any("worker process" in args for _, args in nginx)
    assert all(uid != "0" and uid != "root" for uid, _ in nginx), top
    with urllib.request.urlopen(f"{gateway}/gateway-health", timeout=10) as response:
        assert response.headers["Server"] == "nginx"  # server_tokens off: no "nginx/1.22.1"
    photo = (ROOT / "images" / "chelsea.jpg").read_bytes()
    request = urllib.request.Request(f"{gateway}/predict", data=photo, headers={"Content-Type": "image/jpeg"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert "/" not in response.headers["Server"]  # a proxied answer: nginx's header, still no version
    # the access log still reaches Docker's log (nginx opens /dev/stdout as its unprivileged user)
    assert _logged(container, "POST /predict")


def _logged(container: str, words: str) -> bool:
    """The access log is buffered (flush=1s): poll it, bounded, for the request just sent."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True, timeout=60)
        if words in logs.stdout + logs.stderr:
            return True
        time.sleep(0.25)
    return False
