"""One run's raw facts, and the record they make: what Locust, the stack and the monitor said, no verdict.

`measure` runs one point: waits for an idle stack (quiesce), probes the replicas, runs Locust with the monitor
alongside, probes again, keeps the logs and telemetry. `unmeasured` is the point that failed before any load
(build, scale, GPU fit, Ctrl-C). `judge.judge` turns either into a verdict; `record` below is the one place a
RunRecord (and its load, stack and replica sub-records) is put together.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import load, quiesce, sizes, store
from . import monitor as monitor_mod
from . import payload as payload_mod
from . import plan as plan_mod
from .backend import Stack
from .config import Config
from .plan import RunSpec
from .progress import Progress
from .session import Timings, now
from .sizes import SizeState
from .stack import Replica
from .store import Incident, LoadReport, ReplicaReport, RunRecord, StackReport, Validity


@dataclass
class Measured:
    """What one point found, before it is judged."""

    spec: RunSpec
    host: str
    status: str  # completed, failed, interrupted
    started_at: str
    ended_at: str
    stack: StackReport
    run_fields: dict  # how the load was made (see run_fields)
    ran: bool = True  # False: the point failed before any load (error says why); nothing else was measured
    error: str | None = None
    load: LoadReport | None = None
    expected_replicas: int = 0  # the size planned (0 in target mode: no replicas to count)
    before: list[Replica] = field(default_factory=list)  # the replicas just before the load, and just after
    after: list[Replica] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    telemetry: dict = field(default_factory=dict)
    quiesce: dict = field(default_factory=dict)
    readiness: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


def record(measured: Measured, verdict: Validity) -> RunRecord:
    """The run's record: its facts and verdict (the bottleneck and fingerprint are added by judge and store)."""
    spec = measured.spec
    return RunRecord(
        id=spec.id, variant=spec.variant, models=spec.models, users=spec.users, spawn_rate=spec.spawn_rate,
        run_time_s=spec.run_time_s, host=measured.host, status=measured.status, started_at=measured.started_at,
        ended_at=measured.ended_at, stack=measured.stack, load=measured.load, validity=verdict, error=measured.error,
        files=measured.files, repeat=spec.repeat, incidents=measured.incidents, telemetry=measured.telemetry,
        quiesce=measured.quiesce, readiness=measured.readiness, **measured.run_fields,
    )


def load_report(result: load.LoadResult) -> LoadReport | None:
    """Locust's figures for the record; None when it measured nothing (it never ran, or failed with no request)."""
    if result.locust_exit is None or (result.error and not result.requests):
        return None
    return LoadReport(result.locust_exit, result.requests, result.failures, result.rps,
                      result.duration_s, result.latency_ms, result.failure_messages,
                      window=result.window, whole_run=result.whole_run, generator=result.generator,
                      open_loop=result.open_loop, stop=result.stop,
                      latency_locust_ms=result.latency_locust_ms, window_thirds=result.window_thirds)


def stack_report(spec: RunSpec, stack: Stack | None, replicas: list[Replica] | None = None,
                 reports: list[ReplicaReport] | None = None) -> StackReport:
    """The stack as the record states it; target mode: no compose project, no replicas to see. Without
    `replicas` (a point that never ran) only what was planned."""
    if stack is None:
        return StackReport(project="", compose_files=[], replicas_expected=0)
    if replicas is None:
        return StackReport(project=stack.project, compose_files=[str(p) for p in stack.files],
                           replicas_expected=spec.models)
    return StackReport(
        project=stack.project,
        compose_files=[str(p) for p in stack.files],
        replicas_expected=spec.models,
        replicas_seen=sum(1 for r in replicas if r.ready),
        images=dict(sorted({r.name: r.image_id for r in replicas}.items())),
        replicas=reports or [],
    )


def replica_report(replica: Replica, before: dict, after: dict) -> ReplicaReport:
    served = None
    if isinstance(after.get("requests"), int) and isinstance(before.get("requests"), int):
        served = after["requests"] - before["requests"]
    return ReplicaReport(
        container=replica.container_id[:12], name=replica.name, status=replica.status, health=replica.health,
        restart_count=replica.restart_count, provider=after.get("provider"), device=after.get("device"),
        device_name=after.get("device_name"), requests_served=served,
        cpu_threads=after.get("cpu_threads") if isinstance(after.get("cpu_threads"), int) else None,
        node=replica.node,
    )


def payload_description(config: Config) -> dict:
    """The payload as every record states it (kind, source, items, expect, ...); an error when it cannot load."""
    try:
        described = payload_mod.load(config.payload_source, config.send_as).describe()
    except payload_mod.PayloadError as exc:
        described = {"source": config.payload_source, "error": str(exc)}
    described["expect"] = payload_mod.describe_expect(config.expect) if config.expect \
        else payload_mod.default_expect(described.get("kind", ""))
    if config.payload_url:
        described["url"] = config.payload_url
    return described


def run_fields(config: Config, spec: RunSpec, payload: dict) -> dict:
    """The record's fields that say how the load was made: open loop, request count, target, payload."""
    return {"arrival_rate": spec.arrival_rate if spec.open_loop else None,
            "arrival": config.arrival if spec.open_loop else None, "capacity_probe": spec.probe,
            "requests_per_user": config.requests_per_user if config.requests_per_user and not spec.open_loop
            else None, "target": config.target_url, "payload": dict(payload)}


def load_options(config: Config, spec: RunSpec | None, cpus: int) -> load.LoadOptions:
    # auto: one core of two for Locust, the rest for the stack; an open-loop run has one user per process.
    processes = spec.users if spec is not None and spec.open_loop else plan_mod.generator_processes(config, cpus)
    return load.LoadOptions(processes=processes, warmup_s=config.warmup_s, send_as=config.send_as,
                            expect=config.expect, requests_per_user=config.requests_per_user, arrival=config.arrival,
                            max_in_flight=config.max_in_flight, workers=config.load_workers + config.expect_workers,
                            master_bind=master_bind(config), master_port=config.master_port,
                            worker_wait_s=config.worker_wait_s)


def master_bind(config: Config) -> str:
    """Where the master listens: loopback when every worker is a container on this machine's network (Compose's
    load_workers), else every interface (workers joined by hand, a swarm's nodes), unless master_bind says."""
    if config.master_bind:
        return config.master_bind
    return "127.0.0.1" if not config.expect_workers and config.backend == "compose" else "*"


def unmeasured(config: Config, spec: RunSpec, stack: Stack | None, error: str, payload: dict,
               readiness: dict | None = None, status: str = "failed") -> Measured:
    """A point that failed before any load (or was interrupted): only what was planned, and why."""
    stamp = now()
    return Measured(spec=spec, host=config.host, status=status, started_at=stamp, ended_at=stamp,
                    stack=stack_report(spec, stack), run_fields=run_fields(config, spec, payload), ran=False,
                    error=error, readiness=dict(readiness or {}))


def measure(config: Config, spec: RunSpec, stack: Stack | None, size: SizeState, timings: Timings,
            say: Callable[[str], None], progress: Progress, payload: dict, cpus: int) -> Measured:
    """One point; `stack` is None in target mode (no replicas to probe, no containers to watch)."""
    files = load.RunFiles.for_run(spec, config.output_dir)
    t0 = time.monotonic()
    quiet = _quiesce(config, stack, size)
    before = stack.replicas() if stack else []
    probes_before = _probe_all(config, stack, before) if stack else {}
    timings.probe_s += time.monotonic() - t0
    cap = "at most " if config.requests_per_user and not spec.open_loop else ""
    say(f"{progress.begin(spec)}: {load_words(config, spec)}, {cap}{spec.run_time_s}s")
    started_at = now()
    t0 = time.monotonic()
    options = load_options(config, spec, cpus)
    monitor = stack.monitor(gpu=spec.variant == "gpu") if stack else None
    try:
        with monitor or contextlib.nullcontext():
            result = load.run(spec, config.host, config.locustfile, files,
                              load.locust_env(config.payload_source, config.predict_path, files, options, spec),
                              options, on_tick=lambda *tick: progress.tick(spec, *tick))
    finally:
        progress.clear()
        timings.load_s += time.monotonic() - t0
    ended_at = now()
    status, error = ("failed", result.error) if result.error else ("completed", None)

    names = {"html": files.html.name, "stats": files.stats_json.name, "locust_log": files.locust_log.name}
    after: list[Replica] = []
    reports: list[ReplicaReport] = []
    incidents: list[Incident] = []
    if stack is not None and monitor is not None:
        t0 = time.monotonic()
        after = stack.replicas()
        probes_after = _probe_all(config, stack, after)
        incidents = monitor_mod.incidents(monitor.replica_events(), after, stack.last_logs)
        stack.logs(files.stack_log)
        store.write_atomic(files.telemetry_json, json.dumps({
            "containers": monitor.telemetry.containers, "gpus": monitor.telemetry.gpus, "host": monitor.telemetry.host,
            "events": [e.__dict__ for e in monitor.events]}) + "\n")
        timings.probe_s += time.monotonic() - t0
        reports = [replica_report(r, probes_before.get(r.container_id, {}), probes_after.get(r.container_id, {}))
                   for r in after]
        names.update(containers_log=files.stack_log.name, telemetry=files.telemetry_json.name)
    measured_load = load_report(result)
    return Measured(
        spec=spec, host=config.host, status=status, started_at=started_at, ended_at=ended_at,
        stack=stack_report(spec, stack, after, reports), run_fields=run_fields(config, spec, payload),
        error=error, load=measured_load, expected_replicas=spec.models if stack else 0, before=before, after=after,
        incidents=incidents, telemetry=monitor.telemetry.summary(window_bounds(measured_load)) if monitor else {},
        quiesce=quiet, readiness=dict(size.readiness) if stack else {}, files=names,
    )


def window_bounds(load_report: LoadReport | None) -> tuple[float, float] | None:
    """The measurement window (epoch seconds), so the stack's CPU is summarised over what the figures cover."""
    window = load_report.window if load_report else None
    if window is None or window.start_at is None or window.end_at is None:
        return None
    return window.start_at, window.end_at


def load_words(config: Config, spec: RunSpec) -> str:
    if spec.open_loop:
        return (f"open loop {spec.arrival_rate:g} req/s ({config.arrival}{', capacity probe' if spec.probe else ''}), "
                f"{spec.users} Locust process(es)")
    words = f"{spec.users} users, spawn rate {spec.spawn_rate:g}/s"
    if config.requests_per_user:
        words += f", {config.requests_per_user} requests each"
    return words


def _probe_all(config: Config, stack: Stack, replicas: list[Replica]) -> dict[str, dict]:
    return {r.container_id: (stack.probe(r, config.replica_port, config.replica_health_path) or {})
            for r in replicas if r.status == "running"}


def _quiesce(config: Config, stack: Stack | None, size: SizeState) -> dict:
    """Wait (bounded) for an idle stack: replica gauges where exposed (stack runs), unloaded requests always."""
    gauges = None
    if stack is not None:
        def gauges():
            return {r.name: quiesce.parse_gauges(stack.get_text(r, config.replica_port, "/metrics"))
                    for r in stack.replicas() if r.status == "running"}
    return quiesce.wait_idle(gauges, sizes.unloaded_sender(config), size.baseline_ms)

