"""Run a plan: for each variant build once, for each stack size scale once, then every load point.

Each point ends as a record on disk, whatever happened: completed, failed (with why) or interrupted.
The stack of a variant is torn down when the variant ends, also on error, Ctrl-C and SIGTERM.
In target mode there is no stack: every point runs against the configured endpoint as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

from . import bottleneck, capacity, compose_lint, gpu, load, quiesce, readiness, store, validity
from . import payload as payload_mod
from . import plan as plan_mod
from .config import TARGET_VARIANT, Config
from .errors import UserError
from .monitor import Monitor
from .plan import Plan, RunSpec, StackGroup
from .progress import Progress
from .stack import ComposeStack, Replica, StackError, running
from .store import Incident, LoadReport, ReplicaReport, RunRecord, StackReport, Validity


@dataclass
class Timings:
    """Where the wall time of a grid went, so users see the cost outside the load runs."""

    build_s: float = 0.0
    scale_s: float = 0.0
    load_s: float = 0.0
    probe_s: float = 0.0
    teardown_s: float = 0.0
    wall_s: float = 0.0

    def line(self) -> str:
        other = self.wall_s - self.build_s - self.scale_s - self.load_s - self.probe_s - self.teardown_s
        return (f"wall {self.wall_s:.0f}s: Locust runs {self.load_s:.0f}s, image builds {self.build_s:.0f}s, "
                f"scaling and start-up {self.scale_s:.0f}s, replica probes and logs {self.probe_s:.0f}s, "
                f"teardown {self.teardown_s:.0f}s, other {other:.0f}s")


@dataclass
class GridOutcome:
    records: list[RunRecord] = field(default_factory=list)
    skipped_variants: dict[str, str] = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)
    # One per scale step: {project, models, seconds (scaling and start-up), ready, readiness_s, method}.
    scale_steps: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.records if r.status != "completed"]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stack_env(config: Config, variant: str) -> dict[str, str]:
    # The bundled compose file publishes the gateway on LOADGRID_GATEWAY_PORT: it follows the configured host.
    return compose_lint.loadgrid_variables(config.host, variant)


def make_stack(config: Config, variant: str) -> ComposeStack:
    files = config.compose_files_for(variant)
    env = stack_env(config, variant)
    if variant == "gpu":
        if config.gpu_device_ids:
            # Compose takes a count or device ids: ids replace the count of docker-compose.gpu.yml via an override.
            override = config.output_dir / "gpu" / "compose.gpu-devices.yml"
            override.parent.mkdir(parents=True, exist_ok=True)
            store.write_atomic(override, gpu.compose_override(None, list(config.gpu_device_ids), config.service))
            files = files + (override,)
        else:
            env.update(gpu.compose_env(config.gpu_count))
    return ComposeStack(f"{config.project}-{variant}", files, config.service, env=env)


def replica_memory_cache(config: Config) -> Path:
    """One GPU replica's memory, measured once per image, GPU model and settings, kept beside the results."""
    return config.output_dir / "gpu" / "replica-memory.json"


def gpu_preflight(config: Config, replicas: int, per_replica_mb: float | None = None,
                  facts: tuple[dict, list] | None = None) -> gpu.GpuPreflight:
    """Can `replicas` GPU replicas run here? Facts from the machine unless given (tests, re-checks)."""
    runtimes, gpus = facts if facts is not None else gpu.probe(os.environ.get("LOADGRID_BASE_IMAGE"))
    count = None if config.gpu_device_ids else config.gpu_count
    return gpu.preflight(replicas, per_replica_mb, runtimes, gpus, list(config.gpu_device_ids) or None, count)


def preflight(config: Config, plan: Plan) -> dict[str, str]:
    """Faults found before anything starts: invalid compose files, a taken gateway port, an unreachable target,
    no usable GPU. Returns the variants to skip, with why (a missing GPU fails instead with gpu_required)."""
    if config.target_mode:
        preflight_target(config)
        return {}
    skip: dict[str, str] = {}
    for variant in plan.variants:
        stack = make_stack(config, variant)
        stack.validate()
        port = stack.env.get("LOADGRID_GATEWAY_PORT")
        if port and not stack.container_ids() and _port_taken(int(port)):
            raise UserError(f"host: port {port} is already in use on this machine; stop what listens there "
                            f"or set host to another port (the gateway is published on host's port)", exit_code=1)
        if variant == "gpu":
            decision = gpu_preflight(config, max(g.models for g in plan.groups if g.variant == "gpu"))
            if not decision.gpus or not decision.ok and decision.fits is None:
                if config.gpu_required:
                    raise UserError(f"gpu variant: {decision.reason} (gpu_required is set; remove gpu from "
                                    f"variants to run the CPU variant alone)", exit_code=1)
                skip[variant] = decision.reason
    return skip


def preflight_target(config: Config) -> None:
    """The target must accept connections before any run starts (a TCP connect: nothing is sent)."""
    import socket

    parsed = urlparse(config.host)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=5):
            pass
    except OSError as exc:
        raise UserError(f"target: cannot connect to {parsed.hostname}:{port} ({exc.strerror or exc}); "
                        f"is the endpoint up?", exit_code=1) from None


def _port_taken(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def run_grid(config: Config, plan: Plan, say: Callable[[str], None] = print,
             skip: dict[str, str] | None = None) -> GridOutcome:
    """Run every group of the plan; variants in `skip` (from `preflight`) are left out with one line each."""
    outcome = GridOutcome()
    started = time.monotonic()
    progress = Progress(plan)
    try:
        for variant in plan.variants:
            groups = [g for g in plan.groups if g.variant == variant]
            if variant == TARGET_VARIANT:
                _run_target(config, groups, outcome, progress, say)
                continue
            if variant in (skip or {}):
                why = skip[variant]
                outcome.skipped_variants[variant] = why
                say(f"{variant} variant skipped: {why}")
                for spec in (r for g in groups for r in g.runs):
                    progress.end(spec)
                continue
            _run_variant(config, variant, groups, outcome, progress, say)
    finally:
        outcome.timings.wall_s = time.monotonic() - started
    return outcome


def _run_variant(config: Config, variant: str, groups: list[StackGroup], outcome: GridOutcome,
                 progress: Progress, say: Callable[[str], None]) -> None:
    stack = make_stack(config, variant)
    stack.validate()
    out = config.output_dir / variant
    out.mkdir(parents=True, exist_ok=True)
    t = outcome.timings
    with running(stack):
        try:
            say(f"[{variant}] building images (log: {out / 'build.log'})")
            t0 = time.monotonic()
            try:
                stack.build(out / "build.log")
            finally:
                t.build_s += time.monotonic() - t0
        except StackError as exc:
            say(f"[{variant}] image build failed: {exc}")
            for spec in (r for g in groups for r in g.runs):
                _finish(config, outcome, _failed_record(config, spec, stack, f"image build failed: {exc}"), say,
                        progress)
            return
        fit_problems = _gpu_fit(config, stack, groups, say) if variant == "gpu" else {}
        for group in groups:
            if group.models in fit_problems:
                for spec in group.runs:
                    _finish(config, outcome, _failed_record(config, spec, stack, fit_problems[group.models]), say,
                            progress)
                continue
            say(f"[{variant}] scaling {config.service} to {group.models}")
            scale_error = bring_up(config, stack, group.models, outcome, say)
            for spec in group.runs:
                if scale_error:
                    record = _failed_record(config, spec, stack, scale_error,
                                            _readiness.get((stack.project, group.models), {}))
                else:
                    record = _run_point(config, spec, stack, t, say, progress)
                _finish(config, outcome, record, say, progress)
                if record.status == "completed" and not _stack_whole(record):
                    # A replica died during this run: bring the stack back to N ready before the next one.
                    error = bring_up(config, stack, group.models, outcome, say)
                    scale_error = f"could not restore {group.models} replicas: {error}" if error else None
            if config.capacity_search and not scale_error:
                _capacity_search(config, group, stack, outcome, progress, say)
        t0 = time.monotonic()
    t.teardown_s += time.monotonic() - t0


def _run_target(config: Config, groups: list[StackGroup], outcome: GridOutcome, progress: Progress,
                say: Callable[[str], None]) -> None:
    """Target mode: every point against the endpoint as it is; no stack to build, scale or tear down."""
    (config.output_dir / TARGET_VARIANT).mkdir(parents=True, exist_ok=True)
    say(f"[target] {config.target_url}: {sum(len(g.runs) for g in groups)} runs, no compose stack")
    for group in groups:
        _measure_baseline(config, TARGET_VARIANT, group.models)
    for group in groups:
        for spec in group.runs:
            _finish(config, outcome, _run_point(config, spec, None, outcome.timings, say, progress), say, progress)
        if config.capacity_search:
            _capacity_search(config, group, None, outcome, progress, say)


def _capacity_search(config: Config, group: StackGroup, stack: ComposeStack | None, outcome: GridOutcome,
                     progress: Progress, say: Callable[[str], None]) -> capacity.Result:
    """Probe open-loop rates on this stack size; every probe is stored as a run, the result in capacity.json."""
    cs = config.capacity_search
    assert cs is not None
    progress.extend(cs.steps, cs.steps * cs.run_time_s)
    say(f"[{group.variant}] capacity search on {'the target' if stack is None else f'{group.models} replicas'}: "
        f"up to {cs.steps} probes of {cs.run_time_s}s, p95 under {config.latency_target_ms:g} ms")

    def run_probe(rate: float) -> capacity.Probe:
        spec = plan_mod.open_loop_spec(config, group.variant, group.models, rate, cs.run_time_s, probe=True)
        record = _run_point(config, spec, stack, outcome.timings, say, progress)
        _finish(config, outcome, record, say, progress)
        if stack is not None and record.status == "completed" and not _stack_whole(record):
            # a replica died under this probe: back to N ready for the next (or the next probe says why)
            error = bring_up(config, stack, group.models, outcome, say)
            if error:
                say(f"[{group.variant}] could not restore {group.models} replicas: {error}")
        return capacity.judge_probe(record, config.latency_target_ms)

    result = capacity.search(cs, run_probe, group.variant, group.models, config.latency_target_ms, config.arrival)
    result.searched_at = now()
    progress.extend(-(cs.steps - len(result.probes)), -(cs.steps - len(result.probes)) * cs.run_time_s)
    capacity.write(config.output_dir, result)
    say(capacity.summary_line(result))
    return result


def _gpu_fit(config: Config, stack: ComposeStack, groups: list[StackGroup], say) -> dict[int, str]:
    """Measure one GPU replica's memory once (or take it from the cache), then say which sizes will not fit."""
    runtimes, gpus = gpu.probe(os.environ.get("LOADGRID_BASE_IMAGE"))
    try:
        image = stack.service_image_id()
        memory = gpu.measure_replica_memory(
            replica_memory_cache(config), image, lambda: gpu.query_gpus(os.environ.get("LOADGRID_BASE_IMAGE")),
            lambda: stack.scale(1, config.startup_timeout_s), device_ids=list(config.gpu_device_ids) or None)
    except (gpu.GpuQueryError, StackError) as exc:
        say(f"[gpu] one replica's GPU memory could not be measured ({exc}); sizes are not checked for fit")
        return {}
    origin = "measured now" if memory.measured_now else f"measured before, kept in {replica_memory_cache(config)}"
    say(f"[gpu] one replica takes {memory.mb:.0f} MiB of GPU memory ({origin})")
    problems = {}
    for group in groups:
        decision = gpu_preflight(config, group.models, memory.mb, (runtimes, gpus))
        if not decision.ok:
            problems[group.models] = f"GPU pre-flight: {decision.reason}"
            say(f"[gpu] {group.models} replicas skipped: {decision.reason}")
    return problems


_readiness: dict[tuple[str, int], dict] = {}  # (project, replicas) -> the record's readiness of that stack size
_told_no_healthcheck: set[str] = set()  # projects whose missing health check was said


def bring_up(config: Config, stack: ComposeStack, models: int, outcome: GridOutcome,
             say: Callable[[str], None]) -> str | None:
    """Scale to `models` and establish readiness (health checks where the service has them, then warm-up
    requests through host, see readiness.py); None when ready, else why not (the points fail with it).

    The time goes to timings.scale_s and one outcome.scale_steps entry; the readiness to every record of
    this stack size; the warm-up's median latency is the unloaded baseline that quiesce compares with.
    """
    key = (stack.project, models)
    t0 = time.monotonic()
    step = {"project": stack.project, "models": models}
    try:
        try:
            found = stack.scale(models, config.startup_timeout_s)
        except StackError as exc:
            _readiness[key] = {"method": "healthcheck", "ready": False, "waited_s": round(time.monotonic() - t0, 2),
                               "requests": 0, "detail": str(exc)}
            _baselines[key] = None
            return f"stack not ready: {exc}"
        method = "healthcheck" if any(r.health is not None for r in found) else "requests"
        if method == "requests" and stack.project not in _told_no_healthcheck:
            _told_no_healthcheck.add(stack.project)
            say(readiness.console_line(config.service, config.startup_timeout_s))
        t1 = time.monotonic()
        send = _sender(config, answer=True)
        if send is None:
            ready = {"method": method, "ready": True, "waited_s": 0.0, "requests": 0,
                     "detail": "no warm-up requests: the payload could not be loaded"}
        else:
            left = max(1.0, config.startup_timeout_s - (t1 - t0))
            ready = readiness.wait_ready(send, models, left, method, {r.container_id[:12] for r in found})
        # waited_s: from the start of the scale step (containers, health checks, warm-up); requests_s: the
        # warm-up requests alone
        ready = {**ready, "requests_s": ready["waited_s"], "waited_s": round(time.monotonic() - t0, 2)}
        _readiness[key] = ready
        _baselines[key] = ready.get("median_ms") if ready["ready"] else None
        step.update(ready=ready["ready"], readiness_s=ready["waited_s"], method=method)
        return None if ready["ready"] else readiness.reason(ready, config.host)
    finally:
        seconds = time.monotonic() - t0
        outcome.timings.scale_s += seconds
        outcome.scale_steps.append({**step, "seconds": round(seconds, 2)})


def _stack_whole(record: RunRecord) -> bool:
    return not any("replica" in reason for reason in record.validity.reasons)


def _finish(config: Config, outcome: GridOutcome, record: RunRecord, say, progress: Progress) -> None:
    spec = _spec_of(record)
    files = load.RunFiles.for_run(spec, config.output_dir)
    record.fingerprint = plan_mod.fingerprint(config, spec)
    record.bottleneck = bottleneck.diagnose(record)
    store.write(record, files.record)
    outcome.records.append(record)
    say(f"{progress.end(spec)}: {summary_line(record)}")


def _spec_of(record: RunRecord) -> RunSpec:
    return RunSpec(record.variant, record.models, record.users, record.spawn_rate, record.run_time_s, record.repeat,
                   arrival_rate=record.arrival_rate or 0.0, probe=record.capacity_probe)


def run_fields(config: Config, spec: RunSpec) -> dict:
    """The record's fields that say how the load was made: open loop, request count, target, payload."""
    return {"arrival_rate": spec.arrival_rate if spec.open_loop else None,
            "arrival": config.arrival if spec.open_loop else None, "capacity_probe": spec.probe,
            "requests_per_user": config.requests_per_user if config.requests_per_user and not spec.open_loop
            else None, "target": config.target_url, "payload": payload_description(config)}


_payload_cache: dict[tuple, dict] = {}


def payload_description(config: Config) -> dict:
    key = (config.payload_source, config.send_as, config.expect, config.payload_url)
    if key not in _payload_cache:
        try:
            described = payload_mod.load(config.payload_source, config.send_as).describe()
        except payload_mod.PayloadError as exc:
            described = {"source": config.payload_source, "error": str(exc)}
        described["expect"] = payload_mod.describe_expect(config.expect) if config.expect \
            else payload_mod.default_expect(described.get("kind", ""))
        if config.payload_url:
            described["url"] = config.payload_url
        _payload_cache[key] = described
    return dict(_payload_cache[key])


def summary_line(record: RunRecord) -> str:
    if record.load is None or record.status != "completed":
        return f"{record.status.upper()}: {record.error}"
    lat = record.load.latency_ms
    verdict = "valid" if record.validity.valid else "INVALID: " + "; ".join(record.validity.reasons)
    return (f"{record.load.requests} requests, {record.load.failures} failures, {record.load.rps:.1f} req/s, "
            f"p50 {lat.get('p50', 0):.0f} ms, p95 {lat.get('p95', 0):.0f} ms [{verdict}]")


def _stack_report(config: Config, spec: RunSpec, stack: ComposeStack, replicas: list[Replica],
                  reports: list[ReplicaReport]) -> StackReport:
    return StackReport(
        project=stack.project,
        compose_files=[str(p) for p in stack.files],
        replicas_expected=spec.models,
        replicas_seen=sum(1 for r in replicas if r.ready),
        images=dict(sorted({r.name: r.image_id for r in replicas}.items())),
        replicas=reports,
    )


def _failed_record(config: Config, spec: RunSpec, stack: ComposeStack | None, error: str,
                   ready: dict | None = None) -> RunRecord:
    stamp = now()
    return RunRecord(
        id=spec.id, variant=spec.variant, models=spec.models, users=spec.users, spawn_rate=spec.spawn_rate,
        run_time_s=spec.run_time_s, host=config.host, status="failed", started_at=stamp, ended_at=stamp,
        stack=_no_stack(spec) if stack is None else
        StackReport(project=stack.project, compose_files=[str(p) for p in stack.files], replicas_expected=spec.models),
        load=None, validity=Validity(valid=False, reasons=[error]), error=error, repeat=spec.repeat,
        readiness=dict(ready or {}), **run_fields(config, spec),
    )


def _no_stack(spec: RunSpec) -> StackReport:
    """Target mode: no compose project, no replicas to see."""
    return StackReport(project="", compose_files=[], replicas_expected=0)


def _probe_all(config: Config, stack: ComposeStack, replicas: list[Replica]) -> dict[str, dict]:
    return {r.container_id: (stack.probe(r, config.replica_port, config.replica_health_path) or {})
            for r in replicas if r.status == "running"}


_baselines: dict[tuple[str, int], float | None] = {}  # (project, replicas) -> unloaded median latency, ms


def _sender(config: Config, answer: bool = False):
    """One unloaded request with the configured payload through the host, judged by the run's `expect`
    (None when the payload cannot load); `answer`: the whole quiesce.Answer, else the latency (or None)."""
    try:
        loaded = payload_mod.load(config.payload_source, config.send_as)
        body = loaded.bodies[0]
    except (payload_mod.PayloadError, OSError, IndexError):
        return None
    url = config.target_url or config.host.rstrip("/") + config.predict_path
    expect = config.expect or payload_mod.default_expect(loaded.kind)
    send = quiesce.http_answer(url, body.data, body.content_type, expect)
    return send if answer else (lambda: send().latency_ms)


def _measure_baseline(config: Config, project: str, models: int) -> None:
    """The unloaded latency of this stack size, right after it became ready: what `quiesce` compares with."""
    send = _sender(config)
    _baselines[(project, models)] = quiesce.baseline_ms(send) if send else None


def _quiesce(config: Config, spec: RunSpec, stack: ComposeStack | None) -> dict:
    """Wait (bounded) for an idle stack: replica gauges where exposed (stack runs), unloaded requests always."""
    gauges = None
    if stack is not None:
        def gauges():
            return {r.name: quiesce.parse_gauges(stack.get_text(r, config.replica_port, "/metrics"))
                    for r in stack.replicas() if r.status == "running"}
    key = (stack.project if stack else TARGET_VARIANT, spec.models)
    return quiesce.wait_idle(gauges, _sender(config), _baselines.get(key))


def _run_point(config: Config, spec: RunSpec, stack: ComposeStack | None, t: Timings, say,
               progress: Progress) -> RunRecord:
    """Measure one point; on Ctrl-C or SIGTERM, record it as interrupted (whatever the phase) and re-raise."""
    try:
        return _measure(config, spec, stack, t, say, progress)
    except KeyboardInterrupt:
        record = _failed_record(config, spec, stack, "interrupted by the user")
        record.status = "interrupted"
        record.fingerprint = plan_mod.fingerprint(config, spec)
        store.write(record, load.RunFiles.for_run(spec, config.output_dir).record)
        raise


def _measure(config: Config, spec: RunSpec, stack: ComposeStack | None, t: Timings, say,
             progress: Progress) -> RunRecord:
    """One point; `stack` is None in target mode (no replicas to probe, no containers to watch)."""
    files = load.RunFiles.for_run(spec, config.output_dir)
    t0 = time.monotonic()
    quiet = _quiesce(config, spec, stack)
    before = stack.replicas() if stack else []
    probes_before = _probe_all(config, stack, before) if stack else {}
    t.probe_s += time.monotonic() - t0
    cap = "at most " if config.requests_per_user and not spec.open_loop else ""
    say(f"{progress.begin(spec)}: {_load_words(config, spec)}, {cap}{spec.run_time_s}s")
    started_at = now()
    t0 = time.monotonic()
    options = load_options(config, spec)
    monitor = Monitor(stack.project, stack.service, gpu=spec.variant == "gpu") if stack else None
    try:
        with monitor or contextlib.nullcontext():
            result = load.run(spec, config.host, config.locustfile, files,
                              load.locust_env(config.payload_source, config.predict_path, files, options, spec),
                              options, on_tick=lambda seconds, live=None: progress.tick(spec, seconds, live))
    finally:
        progress.clear()
        t.load_s += time.monotonic() - t0
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
        incidents = _incidents(stack, monitor, after)
        stack.logs(files.stack_log)
        store.write_atomic(files.telemetry_json, json.dumps({
            "containers": monitor.telemetry.containers, "gpus": monitor.telemetry.gpus, "host": monitor.telemetry.host,
            "events": [e.__dict__ for e in monitor.events]}) + "\n")
        t.probe_s += time.monotonic() - t0
        reports = [_replica_report(r, probes_before.get(r.container_id, {}), probes_after.get(r.container_id, {}))
                   for r in after]
        names.update(containers_log=files.stack_log.name, telemetry=files.telemetry_json.name)
    load_report = None
    if result.locust_exit is not None and not (result.error and not result.requests):
        load_report = LoadReport(result.locust_exit, result.requests, result.failures, result.rps,
                                 result.duration_s, result.latency_ms, result.failure_messages,
                                 window=result.window, whole_run=result.whole_run, generator=result.generator,
                                 open_loop=result.open_loop, stop=result.stop,
                                 latency_locust_ms=result.latency_locust_ms, window_thirds=result.window_thirds)
    verdict = validity.judge(spec.variant, spec.models if stack else 0, load_report, error, before, after, reports,
                             incidents, config.client_cpu_limit_pct, run_time_s=spec.run_time_s,
                             ramp_up_s=0.0 if spec.open_loop else spec.users / spec.spawn_rate,
                             measured_whole=bool(spec.open_loop or config.requests_per_user))
    busy = quiesce.reason(quiet)
    if busy:
        verdict.valid = False
        verdict.reasons.append(busy)
    return RunRecord(
        id=spec.id, variant=spec.variant, models=spec.models, users=spec.users, spawn_rate=spec.spawn_rate,
        run_time_s=spec.run_time_s, host=config.host, status=status, started_at=started_at, ended_at=ended_at,
        stack=_stack_report(config, spec, stack, after, reports) if stack else _no_stack(spec), load=load_report,
        validity=verdict, error=error, files=names, repeat=spec.repeat, incidents=incidents,
        telemetry=monitor.telemetry.summary(_window_bounds(load_report)) if monitor else {}, quiesce=quiet,
        readiness=dict(_readiness.get((stack.project, spec.models), {})) if stack else {},
        **run_fields(config, spec),
    )


def _window_bounds(load_report: LoadReport | None) -> tuple[float, float] | None:
    """The measurement window (epoch seconds), so the stack's CPU is summarised over what the figures cover."""
    window = (load_report.window if load_report else None) or {}
    if window.get("start_at") is None or window.get("end_at") is None:
        return None
    return window["start_at"], window["end_at"]


def _load_words(config: Config, spec: RunSpec) -> str:
    if spec.open_loop:
        return (f"open loop {spec.arrival_rate:g} req/s ({config.arrival}{', capacity probe' if spec.probe else ''}), "
                f"{spec.users} Locust process(es)")
    words = f"{spec.users} users, spawn rate {spec.spawn_rate:g}/s"
    if config.requests_per_user:
        words += f", {config.requests_per_user} requests each"
    return words


def load_options(config: Config, spec: RunSpec | None = None) -> load.LoadOptions:
    # auto: one core of two for Locust, the rest for the stack; an open-loop run has one user per process.
    processes = spec.users if spec is not None and spec.open_loop else plan_mod.generator_processes(config)
    return load.LoadOptions(processes=processes, warmup_s=config.warmup_s, send_as=config.send_as,
                            expect=config.expect, requests_per_user=config.requests_per_user, arrival=config.arrival,
                            max_in_flight=config.max_in_flight)


SEVERITY = ("oom", "die", "kill", "restart", "health_status: unhealthy")
PHRASES = {"oom": "was OOM-killed", "die": "died", "kill": "was killed", "restart": "restarted",
           "health_status: unhealthy": "turned unhealthy"}


def _incidents(stack: ComposeStack, monitor: Monitor, after: list[Replica]) -> list[Incident]:
    """One incident per replica that Docker reported dying, OOM-killed, restarting or unhealthy."""
    by_container: dict[str, list] = {}
    for event in monitor.replica_events():
        by_container.setdefault(event.container, []).append(event)
    state = {r.container_id[:12]: r for r in after}
    incidents = []
    for container, events in by_container.items():
        worst = min(events, key=lambda e: next(i for i, a in enumerate(SEVERITY) if e.action.startswith(a)))
        action = next(a for a in SEVERITY if worst.action.startswith(a))
        exit_code = next((e.exit_code for e in events if e.exit_code is not None), None)
        replica = state.get(container)
        if exit_code is None and replica and replica.status != "running":
            exit_code = replica.exit_code
        oom = bool(replica and replica.oom_killed) or any(e.action == "oom" for e in events)
        incidents.append(Incident(container=container, name=worst.name, action=PHRASES[action],
                                  at=min(e.time for e in events), exit_code=exit_code, oom_killed=oom,
                                  last_logs=stack.last_logs(container)))
    return incidents


def _replica_report(replica: Replica, before: dict, after: dict) -> ReplicaReport:
    served = None
    if isinstance(after.get("requests"), int) and isinstance(before.get("requests"), int):
        served = after["requests"] - before["requests"]
    return ReplicaReport(
        container=replica.container_id[:12], name=replica.name, status=replica.status, health=replica.health,
        restart_count=replica.restart_count, provider=after.get("provider"), device=after.get("device"),
        device_name=after.get("device_name"), requests_served=served,
        cpu_threads=after.get("cpu_threads") if isinstance(after.get("cpu_threads"), int) else None,
    )


def write_session(config: Config, outcome: GridOutcome) -> Path:
    path = config.output_dir / "session.json"
    store.write_atomic(path, json.dumps({
        "finished_at": now(), "config": str(config.source), "latency_target_ms": config.latency_target_ms,
        "expected_rps": config.expected_rps, "cost_per_replica": dict(config.cost_per_replica) or None,
        "runs": len(outcome.records),
        "failed": len(outcome.failed), "skipped_variants": outcome.skipped_variants,
        "timings_s": {k: round(v, 1) for k, v in outcome.timings.__dict__.items()},
        "scale_steps": outcome.scale_steps,
    }, indent=2) + "\n")
    return path


