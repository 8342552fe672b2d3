"""What the stack did during a run, watched alongside Locust: Docker events, container stats, host CPU, GPU samples.

`Monitor` is a context manager around one load run. Threads stream from the Docker engine (SDK for
Python), poll the host's CPU from /proc/stat and, when a GPU is in use, poll NVML about once a second; on
exit they stop and the results are summarised for the run's record. Nothing here decides validity:
`validity` judges what is gathered, `bottleneck` names what limited the run.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .stack import PROJECT_LABEL, SERVICE_LABEL, Replica, cpu_limit_cores
from .store import Incident

# Container events that mean a replica was not whole during the run (an action starts with one of these),
# worst first, with how an incident says it: the one list both the watcher and `incidents` read.
SEVERITY = {"oom": "was OOM-killed", "die": "died", "kill": "was killed", "restart": "restarted",
            "health_status: unhealthy": "turned unhealthy"}


@dataclass
class ContainerEvent:
    time: float
    container: str
    name: str
    service: str
    action: str
    exit_code: int | None = None


@dataclass
class Telemetry:
    """Per-container samples: {name: [(t, cpu_pct, mem_bytes)]}, per-GPU samples: {index: [..]}, host CPU samples
    [(began, ended, pct of all cores)], and per container what it may use: {name: {"service", "cpu_limit_cores"}}."""

    containers: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    gpus: dict[str, list[dict]] = field(default_factory=dict)
    gpu_absent_reason: str | None = None
    host: list[tuple[float, float, float]] = field(default_factory=list)
    host_cores: int | None = None
    host_absent_reason: str | None = None
    limits: dict[str, dict] = field(default_factory=dict)
    # containers of the stack this engine cannot sample (a swarm task on another node): {name: why}
    unreached: dict[str, str] = field(default_factory=dict)

    def summary(self, window: tuple[float, float] | None = None) -> dict:
        """Means and maxima; with `window` (start, end as epoch seconds: the measurement window) only the CPU
        samples inside it count, so ramp-up and stop do not dilute the figures a bottleneck is judged on.
        Without a window, or when no sample fell inside it, the whole run is used; `interval` says which."""
        out: dict = {"containers": {}, "gpus": {}}
        # Every container watched is listed, also one that sent no stats frame yet (samples 0).
        for name in sorted(set(self.containers) | set(self.limits)):
            samples = self.containers.get(name, [])
            inside = _inside(samples, window, lambda s: s[0])
            cpu = [s[1] for s in inside or samples]
            mem = [s[2] for s in samples]
            limit = self.limits.get(name, {})
            out["containers"][name] = {
                "samples": len(samples),
                "cpu_pct_mean": round(sum(cpu) / len(cpu), 1) if cpu else None,
                "cpu_pct_max": round(max(cpu), 1) if cpu else None,
                "mem_mb_mean": round(sum(mem) / len(mem) / 2**20, 1) if mem else None,
                "mem_mb_max": round(max(mem) / 2**20, 1) if mem else None,
                # in cores (cpu_pct_* / 100 is in cores too); the host's cores when the container has no limit
                "cpu_limit_cores": limit.get("cpu_limit_cores"),
                "service": limit.get("service"),
                "cpu_interval": "measurement window" if inside else "whole run",
            }
        for index, samples in sorted(self.gpus.items()):
            out["gpus"][index] = summarise_gpu(samples)
        if self.gpu_absent_reason:
            out["gpu_absent"] = self.gpu_absent_reason
        if self.host or self.host_cores:
            # A host sample covers (began, ended); it counts when its middle is inside the window.
            inside = _inside(self.host, window, lambda s: (s[0] + s[1]) / 2)
            pct = [s[2] for s in inside or self.host]
            out["host"] = {"cores": self.host_cores, "cpu_pct_mean": round(sum(pct) / len(pct), 1) if pct else None,
                           "cpu_pct_max": round(max(pct), 1) if pct else None, "samples": len(pct),
                           "interval": "measurement window" if inside else "whole run"}
        if self.host_absent_reason:
            out["host_absent"] = self.host_absent_reason
        if self.unreached:
            out["containers_unreached"] = dict(sorted(self.unreached.items()))
        return out


def _inside(samples: list, window: tuple[float, float] | None, when) -> list:
    if not window or window[0] is None or window[1] is None:
        return []
    return [s for s in samples if window[0] <= when(s) <= window[1]]


def read_proc_stat(text: str) -> tuple[int, int, int]:
    """(busy, total, cores) in clock ticks from /proc/stat: the `cpu` line sums every core; idle and iowait are
    not busy (a core waiting on I/O could run something else)."""
    busy = total = cores = 0
    for line in text.splitlines():
        name, *ticks = line.split()
        if name == "cpu":
            values = [int(v) for v in ticks[:8]]  # user nice system idle iowait irq softirq steal (guest is in user)
            total = sum(values)
            busy = total - values[3] - (values[4] if len(values) > 4 else 0)
        elif name.startswith("cpu") and name[3:].isdigit():
            cores += 1
    return busy, total, cores


def host_cpu_pct(before: tuple[int, int, int], after: tuple[int, int, int]) -> float | None:
    """Percent of all the host's cores busy between two /proc/stat readings (100 = every core busy)."""
    total = after[1] - before[1]
    return None if total <= 0 else 100.0 * (after[0] - before[0]) / total


def summarise_gpu(samples: list[dict]) -> dict:
    def stat(key):
        values = [s[key] for s in samples if s.get(key) is not None]
        return (round(sum(values) / len(values), 1), round(max(values), 1)) if values else (None, None)

    util, mem, power = stat("util_pct"), stat("mem_used_mb"), stat("power_w")
    return {"samples": len(samples), "name": samples[0].get("name") if samples else None,
            "util_pct_mean": util[0], "util_pct_max": util[1], "mem_used_mb_mean": mem[0],
            "mem_used_mb_max": mem[1], "power_w_mean": power[0], "power_w_max": power[1]}


def cpu_percent(stats: dict) -> float | None:
    """CPU % of one core from one Docker stats frame (100 = one full core), as `docker stats` computes it."""
    try:
        cpu, pre = stats["cpu_stats"], stats["precpu_stats"]
        cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        sys_delta = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
        cores = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or [1])
    except (KeyError, TypeError):
        return None
    if sys_delta <= 0 or cpu_delta < 0:
        return None
    return cpu_delta / sys_delta * cores * 100.0


def memory_bytes(stats: dict) -> int | None:
    mem = stats.get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is None:
        return None
    detail = mem.get("stats") or {}
    # As `docker stats`: page cache the kernel can drop is not the container's working set. On cgroup v1
    # the hierarchy's total_inactive_file counts, on v2 inactive_file; never subtract more than usage.
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return int(usage - cache) if cache < usage else int(usage)


class NvmlSampler:
    """GPU utilisation, memory used and power per GPU from NVML (nvidia-ml-py), about once a second."""

    def __init__(self, nvml=None):
        if nvml is None:
            import pynvml as nvml  # from nvidia-ml-py; imported only for GPU runs
        self.nvml = nvml
        nvml.nvmlInit()
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]

    def sample(self) -> dict[str, dict]:
        nvml, now = self.nvml, time.time()
        out = {}
        for index, handle in enumerate(self.handles):
            name = nvml.nvmlDeviceGetName(handle)
            out[str(index)] = {
                "t": now,
                "name": name.decode("utf-8", "replace") if isinstance(name, bytes) else name,
                "util_pct": float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                "mem_used_mb": nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20,
                "power_w": nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            }
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):  # shutting down a library that is going away anyway
            self.nvml.nvmlShutdown()


class Monitor:
    """Watch a stack's containers while one load run goes on: by Compose's labels, or the engine's own
    (`project_label`, `service_label`: a swarm stack's task containers carry Swarm's, see swarm.SwarmStack)."""

    def __init__(self, project: str, service: str, gpu: bool = False, client=None, nvml=None,
                 interval_s: float = 1.0, proc_stat: str | None = "/proc/stat", project_label: str = PROJECT_LABEL,
                 service_label: str = SERVICE_LABEL):
        import docker

        self.project_label = project_label
        self.service_label = service_label

        self.project = project
        self.service = service
        self.client = client or docker.from_env(timeout=30)
        self.interval_s = interval_s
        self.events: list[ContainerEvent] = []
        self.telemetry = Telemetry()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._streams: list = []
        self._lock = threading.Lock()
        self._gpu = gpu
        self._nvml = nvml
        self._proc_stat = proc_stat
        self.started_at = 0.0

    def __enter__(self) -> Monitor:
        self.started_at = time.time()
        events = self.client.events(since=int(self.started_at) - 1, decode=True,
                                    filters={"type": "container", "label": f"{self.project_label}={self.project}"})
        self._streams.append(events)
        self._spawn(self._watch_events, events)
        host = self._host_stat()
        for container in self.client.containers.list(filters={"label": f"{self.project_label}={self.project}"}):
            attrs = getattr(container, "attrs", None) or {}  # the SDK's list() inspects each container
            self.telemetry.limits[container.name] = {
                "service": self._short(((attrs.get("Config") or {}).get("Labels") or {}).get(self.service_label)),
                "cpu_limit_cores": cpu_limit_cores(attrs, self.telemetry.host_cores) if attrs else None}
            self._spawn(self._watch_stats, container)
        if host is not None:
            self._spawn(self._poll_host, host)
        if self._gpu:
            try:
                sampler = NvmlSampler(self._nvml)
            except Exception as exc:  # no driver, no library, no device: recorded, not fatal
                self.telemetry.gpu_absent_reason = f"NVML unavailable: {exc}"
            else:
                self._spawn(self._poll_gpu, sampler)
        else:
            self.telemetry.gpu_absent_reason = "not a GPU run"
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for stream in self._streams:
            with contextlib.suppress(Exception):  # a stream already closed, or a generator mid-frame
                stream.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _short(self, service: str | None) -> str | None:
        """The compose service a container belongs to: a swarm task's service label is <stack>_<service>."""
        if service and self.project_label != PROJECT_LABEL:
            return service.removeprefix(f"{self.project}_")
        return service

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"monitor-{target.__name__}")
        thread.start()
        self._threads.append(thread)

    def _watch_events(self, stream) -> None:
        try:
            for event in stream:
                if self._stop.is_set():
                    return
                attrs = (event.get("Actor") or {}).get("Attributes") or {}
                action = event.get("Action") or event.get("status") or ""
                if _severity(action) is None:
                    continue
                code = attrs.get("exitCode")
                with self._lock:
                    self.events.append(ContainerEvent(
                        time=event.get("timeNano", 0) / 1e9 or time.time(), container=(event.get("id") or "")[:12],
                        name=attrs.get("name", ""), service=self._short(attrs.get(self.service_label, "")) or "",
                        action=action,
                        exit_code=int(code) if code not in (None, "") else None))
        except Exception:  # the stream is closed on exit; anything else ends watching, not the run
            return

    def _watch_stats(self, container) -> None:
        name = container.name
        try:
            stream = container.stats(stream=True, decode=True)
            self._streams.append(stream)
            for frame in stream:
                if self._stop.is_set():
                    return
                cpu, mem = cpu_percent(frame), memory_bytes(frame)
                if cpu is None or mem is None:
                    continue
                with self._lock:
                    self.telemetry.containers.setdefault(name, []).append((time.time(), round(cpu, 1), mem))
        except Exception:  # container went away mid-run: its samples so far are kept
            return

    def _host_stat(self) -> tuple[int, int, int] | None:
        """The first /proc/stat reading, or None with why host CPU is not sampled: only the engine's own machine
        says what the containers competed for."""
        base_url = str(getattr(getattr(self.client, "api", None), "base_url", "http+docker://localhost"))
        if not any(local in base_url for local in ("http+docker://localhost", "localnpipe", "127.0.0.1", "[::1]")):
            self.telemetry.host_absent_reason = f"the Docker engine ({base_url}) is not this machine"
            return None
        try:
            first = read_proc_stat(Path(self._proc_stat).read_text(encoding="utf-8")) if self._proc_stat else None
        except OSError as exc:  # no /proc (macOS, Windows): recorded, not fatal
            first = None
            self.telemetry.host_absent_reason = f"host CPU not sampled: {exc}"
        if first is None or not first[2]:
            self.telemetry.host_absent_reason = self.telemetry.host_absent_reason or "host CPU not sampled"
            return None
        self.telemetry.host_cores = first[2]
        return first

    def _poll_host(self, last: tuple[int, int, int]) -> None:
        then = time.time()
        while not self._stop.wait(self.interval_s):
            try:
                now, reading = time.time(), read_proc_stat(Path(self._proc_stat).read_text(encoding="utf-8"))
            except (OSError, ValueError):  # /proc went away or read oddly: the samples so far are kept
                return
            pct = host_cpu_pct(last, reading)
            if pct is not None:
                with self._lock:
                    self.telemetry.host.append((then, now, round(pct, 1)))
            then, last = now, reading

    def _poll_gpu(self, sampler: NvmlSampler) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                for index, sample in sampler.sample().items():
                    with self._lock:
                        self.telemetry.gpus.setdefault(index, []).append(sample)
        finally:
            sampler.close()

    def replica_events(self) -> list[ContainerEvent]:
        with self._lock:
            return [e for e in self.events if e.service == self.service]


def _severity(action: str) -> int | None:
    """The rank of an event's action in SEVERITY (0: the worst), None when it is not a bad one."""
    return next((rank for rank, bad in enumerate(SEVERITY) if action.startswith(bad)), None)


def incidents(events: list[ContainerEvent], after: list[Replica],
              last_logs: Callable[[str], list[str]]) -> list[Incident]:
    """One incident per replica that Docker reported dying, OOM-killed, restarting or unhealthy: its worst event
    (SEVERITY), the first time, the exit code (from the events, else from its state after the run when it is not
    running), whether it was OOM-killed, and its last log lines (`last_logs(container)`)."""
    by_container: dict[str, list[ContainerEvent]] = {}
    for event in events:
        by_container.setdefault(event.container, []).append(event)
    state = {r.container_id[:12]: r for r in after}
    found = []
    for container, seen in by_container.items():
        worst = min(seen, key=lambda e: _severity(e.action))
        phrase = SEVERITY[list(SEVERITY)[_severity(worst.action)]]
        exit_code = next((e.exit_code for e in seen if e.exit_code is not None), None)
        replica = state.get(container)
        if exit_code is None and replica and replica.status != "running":
            exit_code = replica.exit_code
        oom = bool(replica and replica.oom_killed) or any(e.action == "oom" for e in seen)
        found.append(Incident(container=container, name=worst.name, action=phrase, at=min(e.time for e in seen),
                              exit_code=exit_code, oom_killed=oom, last_logs=last_logs(container)))
    return found
