"""Helpers for tests on the real engine: the project root, free ports, a tiny grid's config, orchestrate.py as a user
runs it, bounded polls, a one-replica stack, and what a project left behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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


def write_config(path: Path, output: Path, port: int, project: str, **extra) -> Path:
    lines = {
        "num_models_list": "[1, 2]", "num_users_list": "[4]", "spawn_rate_list": "[2]", "run_time": "10s",
        "host": f"http://127.0.0.1:{port}", "project": project, "output_dir": str(output),
        "compose_files": f"[{ROOT / 'docker-compose.yml'}]", "locustfile": str(ROOT / "locustfile.py"),
        "images_dir": str(ROOT / "images"), **extra,
    }
    path.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    return path


def wait_for(predicate, timeout_s: float, what: str):
    """Poll `predicate` until it returns something truthy, bounded by `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def orchestrate(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class Orchestrator:
    """orchestrate.py as a user runs it, with its output read line by line as it comes."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "orchestrate.py"), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()

    def wait_for_line(self, fragment: str, timeout_s: float = 600) -> None:
        with self._seen:
            found = self._seen.wait_for(lambda: any(fragment in line for line in self.lines)
                                        or self.proc.poll() is not None, timeout=timeout_s)
        assert found and any(fragment in line for line in self.lines), f"no line with {fragment!r}: {self.lines}"

    def finish(self, timeout_s: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def check_killed_run_and_the_next(output: Path, victim: str) -> dict:
    """A replica killed (SIGKILL) during cpu/2_4_4: that run is invalid with the incident (exit 137, last log
    lines kept), and the next run, cpu/2_6_4, is valid on two replicas with no incident. Returns its record."""
    killed = json.loads((output / "cpu" / "2_4_4.json").read_text())
    assert killed["validity"]["valid"] is False
    assert any("died during the run" in r and "137" in r for r in killed["validity"]["reasons"]), killed["validity"]
    [incident] = killed["incidents"]
    assert victim.startswith(incident["container"]) and incident["exit_code"] == 137
    assert incident["last_logs"], "the dead replica's last log lines are kept"
    after = json.loads((output / "cpu" / "2_6_4.json").read_text())
    assert after["validity"]["valid"], after["validity"]
    assert after["stack"]["replicas_seen"] == 2 and after["incidents"] == []
    return after
