"""Helpers for runs against a local server (no Docker): Locust run directly, and orchestrate.py with a `docker` on PATH
that records any call (target mode must make none)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loadgrid import load
from loadgrid.plan import RunSpec

from .engine import ROOT

LOCUSTFILE = ROOT / "locustfile.py"
JPEG = ROOT / "images" / "chelsea.jpg"

def clean_env() -> dict[str, str]:
    """The test's environment without loadgrid's and the throughput testers' variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LOADGRID_") and k not in ("ENDPOINT", "PAYLOAD")}


def run_locust(tmp_path: Path, host: str, spec: RunSpec, payload: Path | str, **options) -> load.LoadResult:
    files = load.RunFiles(tmp_path / "runs", spec.name)
    opts = load.LoadOptions(**options)
    env = {**load.locust_env(payload, "/predict", files, opts, spec), **{"ENDPOINT": "", "PAYLOAD": ""}}
    return load.run(spec, host, LOCUSTFILE, files, env, opts)


def orchestrate(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """orchestrate.py with a `docker` on PATH that records any call: target mode must make none."""
    fake = cwd / "fakebin"
    fake.mkdir(exist_ok=True)
    (fake / "docker").write_text(f"#!/bin/sh\necho \"$@\" >> {cwd / 'docker-called'}\nexit 1\n")
    (fake / "docker").chmod(0o755)
    full = {**(env or clean_env()), "PATH": f"{fake}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=240)
