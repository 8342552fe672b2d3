"""Shared fixtures. Tests marked `docker` need a real engine: skipped locally when none answers,
but a failure in CI (CI=true), where a skipped engine test would hide a broken set-up."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _engine_problem() -> str | None:
    if not shutil.which("docker"):
        return "no docker command"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "Docker daemon not reachable"
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        return "Compose v2 missing"
    return None


def pytest_collection_modifyitems(config, items):
    docker_items = [i for i in items if "docker" in i.keywords]
    if not docker_items:
        return
    problem = _engine_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"CI must run the Docker tests, but: {problem} (run ./setup.sh)")
    for item in docker_items:
        item.add_marker(pytest.mark.skip(reason=problem))


@pytest.fixture
def project_root() -> Path:
    return ROOT


def project_resources(project: str) -> tuple[list[str], list[str]]:
    """Containers and networks carrying a compose project's label."""
    label = f"label=com.docker.compose.project={project}"
    containers = subprocess.run(["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True).stdout
    networks = subprocess.run(["docker", "network", "ls", "-q", "--filter", label], capture_output=True,
                              text=True).stdout
    return containers.split(), networks.split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def one_replica_stack(prefix: str) -> Iterator[tuple]:
    """The bundled stack built and up with one replica on a free loopback port: (compose, port, replica id).

    `compose(*args)` runs docker compose for this project; the stack is torn down and checked gone on exit.
    """
    project = f"{prefix}-{uuid.uuid4().hex[:8]}"
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
        (replica,) = compose("ps", "-q", "model").stdout.split()
        yield compose, port, replica
    finally:
        compose("down", "-v", "--remove-orphans", "--timeout", "5", timeout=120)
        assert project_resources(project) == ([], []), "compose down left containers or networks behind"


def base_image() -> str:
    """The image test stacks build on (setup.sh writes it to .env): small, and already on a set-up machine."""
    env_file = ROOT / ".env"
    for line in env_file.read_text().splitlines() if env_file.exists() else []:
        if line.startswith("LOADGRID_BASE_IMAGE="):
            return line.split("=", 1)[1]
    return os.environ.get("LOADGRID_BASE_IMAGE", "python:3.11-slim")


def stack_env(**extra: str) -> dict[str, str]:
    """The environment for a compose file outside the project root (a fixture, an example): Compose reads
    the .env of that file's folder only, so the root .env (LOADGRID_BASE_IMAGE from setup.sh) is added here."""
    env = dict(os.environ)
    dotenv = ROOT / ".env"
    for line in dotenv.read_text().splitlines() if dotenv.is_file() else []:
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            env.setdefault(key.strip(), value.strip())
    return {**env, **extra}
