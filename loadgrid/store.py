"""Run records: versioned JSON next to each Locust report, written atomically, read through one function.

Reports are rendered only from what is stored here, so they can be rebuilt without re-running anything.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

SCHEMA_VERSION = 1


@dataclass
class ReplicaReport:
    container: str
    name: str
    status: str
    health: str | None
    restart_count: int = 0
    provider: str | None = None  # what the replica says it runs on, from its health endpoint
    device: str | None = None
    device_name: str | None = None
    requests_served: int | None = None  # during this run, from the replica's own counter
    cpu_threads: int | None = None  # the inference threads it reports (/health cpu_threads): the cores it can use


@dataclass
class StackReport:
    project: str
    compose_files: list[str]
    replicas_expected: int
    replicas_seen: int = 0
    images: dict[str, str] = field(default_factory=dict)
    replicas: list[ReplicaReport] = field(default_factory=list)


@dataclass
class LoadReport:
    locust_exit: int | None
    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    duration_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    failure_messages: dict[str, int] = field(default_factory=dict)
    # The figures above cover the window (steady state); these say where it was and add the ramp-up back.
    window: dict = field(default_factory=dict)  # start_at, end_at, spawn_complete_at, warmup_s, duration_s, bounds
    whole_run: dict = field(default_factory=dict)  # requests, failures, rps, duration_s, latency_ms
    generator: dict = field(default_factory=dict)  # processes, cores, cpu_pct_mean, cpu_pct_max
    # Open-loop runs: arrival, intended_rate, scheduled_rate, achieved_rate (req/s sent over the window),
    # scheduled, sent, late (sent more than late_tolerance_ms after their slot), dropped (not sent: every
    # in-flight slot busy), max_late_ms, max_in_flight, processes, window_s, send_late_ms (p50, p99, max),
    # latency_intended_ms (from the slot to the response, wrk2-style). Empty for closed-loop runs.
    open_loop: dict = field(default_factory=dict)
    # Runs that stop after a number of requests per user: requests_per_user, users, users_finished,
    # requests_sent, by ("requests": every user finished; "time": the run_time cap ended it first).
    stop: dict = field(default_factory=dict)
    # latency_ms comes from exact per-request times (0.1% buckets) when recorded; Locust's rounded figures here.
    latency_locust_ms: dict = field(default_factory=dict)
    # The window in three equal spans of request end time: [{"requests", "p50", "p95", "rps"}] x 3.
    window_thirds: list = field(default_factory=list)


@dataclass
class Incident:
    """A replica that died, was OOM-killed, restarted or turned unhealthy during a run."""

    container: str
    name: str
    action: str
    at: float
    exit_code: int | None = None
    oom_killed: bool | None = None
    last_logs: list[str] = field(default_factory=list)


@dataclass
class Validity:
    valid: bool
    reasons: list[str] = field(default_factory=list)
    client_bound: bool = False  # the load generator, not the stack, was the bottleneck
    unjudged: list[str] = field(default_factory=list)  # checks that could not be made, and why


@dataclass
class RunRecord:
    id: str
    variant: str
    models: int
    users: int
    spawn_rate: float
    run_time_s: int
    host: str
    status: str  # "completed" (Locust ran to the end), "failed" (no measurement), "interrupted"
    started_at: str
    ended_at: str
    stack: StackReport
    load: LoadReport | None
    validity: Validity
    error: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""  # the point's settings and inputs, see plan.fingerprint; --resume matches on it
    repeat: int = 1
    incidents: list[Incident] = field(default_factory=list)
    telemetry: dict = field(default_factory=dict)  # per container/GPU mean and max; series in files["telemetry"]
    # Open loop: the intended arrival rate (req/s) and its process (constant, poisson); None: closed loop.
    arrival_rate: float | None = None
    arrival: str | None = None
    capacity_probe: bool = False  # a capacity-search probe (see capacity.json)
    requests_per_user: int | None = None  # each user stopped after this many requests (run_time was a cap)
    target: str | None = None  # target mode: the endpoint's URL (variant "target", models 0, no stack)
    payload: dict = field(default_factory=dict)  # kind, source (and url), send_as, items, content_type, expect
    # Before the run: how loadgrid waited for an idle stack (see quiesce.py): method, waited_s, idle, detail.
    quiesce: dict = field(default_factory=dict)
    # After the scale step before this stack size's runs: how loadgrid knew it was ready (see readiness.py):
    # method (healthcheck, requests), ready, waited_s, requests, median_ms, detail. Empty: not established.
    readiness: dict = field(default_factory=dict)
    # What limited the run (bottleneck.diagnose): kind, detail, checked. Empty in records written before it;
    # reports diagnose those from their telemetry (bottleneck.of).
    bottleneck: dict = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, **{k: v for k, v in asdict(self).items() if k != "schema"}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "record") -> RunRecord:
        schema = data.get("schema")
        if schema != SCHEMA_VERSION:
            raise UserError(f"{source}: record schema {schema!r} is not supported by this loadgrid "
                            f"(reads schema {SCHEMA_VERSION}); re-run the grid or use the loadgrid that wrote it",
                            exit_code=1)
        try:
            stack = dict(data["stack"])
            stack["replicas"] = [ReplicaReport(**r) for r in stack.get("replicas", [])]
            fields = {k: v for k, v in data.items() if k not in ("schema", "stack", "load", "validity", "incidents")}
            return cls(
                **fields,
                incidents=[Incident(**i) for i in data.get("incidents", [])],
                stack=StackReport(**stack),
                load=LoadReport(**data["load"]) if data.get("load") else None,
                validity=Validity(**data["validity"]),
            )
        except (KeyError, TypeError) as exc:
            raise UserError(f"{source}: not a loadgrid run record ({exc}); remove it or re-run that point",
                            exit_code=1) from None


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written file under `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(record: RunRecord, path: Path) -> None:
    write_atomic(path, json.dumps(record.to_dict(), indent=2, sort_keys=False) + "\n")


def load(path: Path) -> RunRecord:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read run record ({exc})", exit_code=1) from None
    return RunRecord.from_dict(data, source=str(path))


# JSON files that sit beside a run's record but are not records (Locust's stats, window, telemetry series).
COMPANION_SUFFIXES = (".stats.json", ".window.json", ".telemetry.json")


def record_paths(output_dir: Path) -> list[Path]:
    """Every run record under `output_dir/<variant>/`: `<m>_<u>_<s>.json`, not its companions."""
    return sorted(p for p in output_dir.glob("*/*.json")
                  if not p.name.endswith(COMPANION_SUFFIXES) and not p.name.startswith("."))


def finished_points(output_dir: Path, fingerprints: dict[str, str], retry_failed: bool) -> set[str]:
    """Ids of planned points that need no new run: a finished record with the same fingerprint.

    --resume keeps every finished measurement (valid or not, and failed ones); --retry-failed keeps only
    the valid ones, so failed and invalid points run again. Interrupted runs always run again.
    """
    done = set()
    for path in record_paths(output_dir) if output_dir.is_dir() else []:
        try:
            record = load(path)
        except UserError:
            continue  # unreadable or another schema: run the point again rather than trust it
        if fingerprints.get(record.id) != record.fingerprint or record.status == "interrupted":
            continue
        if retry_failed and not (record.status == "completed" and record.validity.valid):
            continue
        done.add(record.id)
    return done


def load_all(output_dir: Path) -> list[RunRecord]:
    if not output_dir.is_dir():
        raise UserError(f"{output_dir}: no such output folder; run the grid first or pass the right folder",
                        exit_code=1)
    return [load(p) for p in record_paths(output_dir)]
