"""Builders of plain data for pure tests: a run record, a config."""

from __future__ import annotations

from pathlib import Path

from loadgrid.config import Config
from loadgrid.store import LoadReport, ReplicaReport, RunRecord, StackReport, Validity


def record(**changes) -> RunRecord:
    values = dict(
        id="cpu/2_50_10", variant="cpu", models=2, users=50, spawn_rate=10.0, run_time_s=60,
        host="http://localhost:8080", status="completed", started_at="t0", ended_at="t1",
        stack=StackReport("loadgrid-cpu", ["/x/docker-compose.yml"], 2, 2, {"m1": "sha256:1"},
                          [ReplicaReport("abc", "m1", "running", "healthy", provider="CPUExecutionProvider",
                                         requests_served=10)]),
        load=LoadReport(0, 100, 0, 10.0, 10.0, {"p50": 10.0, "p95": 20.0}),
        validity=Validity(True, []), files={"html": "2_50_10.html"},
    )
    values.update(changes)
    return RunRecord(**values)


def make_config(**changes) -> Config:
    values = dict(num_models_list=(1, 2), num_users_list=(10, 50), spawn_rate_list=(1.0, 10.0), run_time_s=60,
                  host="http://localhost:8080", variants=("cpu", "gpu"), compose_files=(Path("/s/dc.yml"),),
                  gpu_compose_files=(Path("/s/dc.gpu.yml"),), output_dir=Path("/out"))
    values.update(changes)
    return Config(**values)
