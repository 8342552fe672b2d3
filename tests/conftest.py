"""Shared fixtures. Tests marked `docker` need a real engine: skipped locally when none answers,
but a failure in CI (CI=true), where a skipped engine test would hide a broken set-up."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.engine import ROOT


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


