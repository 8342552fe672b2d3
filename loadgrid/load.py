"""One Locust run as a subprocess (its gevent patching stays out of the orchestrator), and its totals.

Totals come from Locust's final JSON (`--json-file`), written at shutdown: the periodic `_stats.csv`
is written once a second and not at the end, so it falls a few percent short of the real count.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .plan import RunSpec, format_number

WINDOW_PLUGIN = Path(__file__).with_name("locust_window.py")
PERCENTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}


@dataclass(frozen=True)
class RunFiles:
    """Where one run's files go: `<output>/<variant>/<models>_<users>_<spawn>.*`."""

    folder: Path
    stem: str

    @classmethod
    def for_run(cls, spec: RunSpec, output_dir: Path) -> RunFiles:
        return cls(output_dir / spec.variant, spec.name)

    @property
    def html(self) -> Path:
        return self.folder / f"{self.stem}.html"

    @property
    def csv_prefix(self) -> Path:
        return self.folder / self.stem

    @property
    def stats_json(self) -> Path:  # Locust appends .json to --json-file
        return self.folder / f"{self.stem}.stats.json"

    @property
    def record(self) -> Path:
        return self.folder / f"{self.stem}.json"

    @property
    def window_json(self) -> Path:
        return self.folder / f"{self.stem}.window.json"

    @property
    def telemetry_json(self) -> Path:
        return self.folder / f"{self.stem}.telemetry.json"

    @property
    def locust_log(self) -> Path:
        return self.folder / f"{self.stem}.locust.log"

    @property
    def stack_log(self) -> Path:
        return self.folder / f"{self.stem}.containers.log"

    @property
    def counts_prefix(self) -> Path:
        """Each Locust process with users writes `<stem>.counts.<pid>.part`; merged into the record, removed."""
        return self.folder / f"{self.stem}.counts"

    def count_parts(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.stem}.counts.*.part"))


@dataclass
class LoadResult:
    """Totals of the measurement window (steady state); `whole_run` adds the ramp-up and warm-up back."""

    locust_exit: int | None
    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    duration_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    failure_messages: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    window: dict = field(default_factory=dict)
    whole_run: dict = field(default_factory=dict)
    generator: dict = field(default_factory=dict)
    open_loop: dict = field(default_factory=dict)
    stop: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LoadOptions:
    """How Locust is run: processes (each one core at most), warm-up excluded from the window, and how the
    locustfile's users pace and stop (see loadgrid/locust_users.py)."""

    processes: int = 1
    warmup_s: int = 0
    send_as: str = "raw"
    expect: str = ""  # "" = the locustfile's default for the payload's kind
    requests_per_user: int = 0  # closed-loop runs only
    arrival: str = "constant"  # open-loop runs only
    max_in_flight: int = 0
    open_loop_timeout_s: float = 10.0
    late_ms: float = 20.0


def locust_command(spec: RunSpec, host: str, locustfile: Path, files: RunFiles,
                   options: LoadOptions = LoadOptions()) -> list[str]:
    extra = ["--processes", str(options.processes)] if options.processes > 1 else []
    return [
        sys.executable, "-m", "locust",
        "-f", f"{locustfile.resolve()},{WINDOW_PLUGIN}",
        *extra,
        "--headless",
        "--users", str(spec.users),
        "--spawn-rate", format_number(spec.spawn_rate),
        "--run-time", f"{spec.run_time_s}s",
        "--host", host,
        "--html", str(files.html),
        "--csv", str(files.csv_prefix),
        "--json-file", str(files.stats_json.with_suffix("")),
        "--only-summary",
        # Users finish their request in flight at the end instead of counting it as an error.
        "--stop-timeout", "10",
        "--loglevel", "WARNING",
    ]


def locust_env(images_dir: Path | str, predict_path: str, files: RunFiles | None = None,
               options: LoadOptions = LoadOptions(), spec: RunSpec | None = None) -> dict[str, str]:
    """The locustfile's settings. `images_dir` is the payload: a folder of images, an image or JSON file."""
    payload = str(Path(images_dir).resolve())
    open_loop = spec is not None and spec.open_loop
    per_user = options.requests_per_user if spec is not None and not open_loop else 0
    env = {**os.environ, "LOADGRID_PAYLOAD": payload, "LOADGRID_IMAGES_DIR": payload,
           "LOADGRID_PREDICT_PATH": predict_path, "LOADGRID_WARMUP_S": str(options.warmup_s),
           "LOADGRID_SEND_AS": options.send_as, "LOADGRID_EXPECT": options.expect,
           "LOADGRID_REQUESTS_PER_USER": str(per_user),
           # A run that stops after N requests per user is measured whole: no ramp-up to cut off.
           "LOADGRID_WINDOW_RESET": "0" if per_user else "1",
           "LOADGRID_ARRIVAL_RATE": format_number(spec.arrival_rate) if open_loop else "0",
           "LOADGRID_ARRIVAL": options.arrival, "LOADGRID_USERS": str(spec.users if spec else 1),
           "LOADGRID_MAX_IN_FLIGHT": str(options.max_in_flight), "LOADGRID_LATE_MS": format_number(options.late_ms),
           "LOADGRID_TIMEOUT_S": format_number(options.open_loop_timeout_s) if open_loop else "60"}
    if files is not None:
        env["LOADGRID_WINDOW_FILE"] = str(files.window_json)
        env["LOADGRID_COUNTS_FILE"] = str(files.counts_prefix)
    return env


class CpuMeter:
    """CPU use of the Locust process tree, sampled about once a second by loadgrid itself.

    Locust's own 90% warning checks every 10 s and never fires in short runs, so it cannot be relied on.
    """

    def __init__(self, pid: int):
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        # (unix time the interval began, unix time it ended, CPU seconds per second of the whole tree)
        self.samples: list[tuple[float, float, float]] = []
        self._last = (time.time(), self._cpu_seconds())

    def _cpu_seconds(self) -> float:
        total = 0.0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except self._psutil.Error:
            return self._last[1] if hasattr(self, "_last") else 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except self._psutil.Error:
                continue
        return total

    def sample(self) -> None:
        now, cpu = time.time(), self._cpu_seconds()
        then, before = self._last
        if now - then > 0.2 and cpu >= before:
            self.samples.append((then, now, (cpu - before) / (now - then)))
            self._last = (now, cpu)

    def summary(self, since: float | None, cores: int) -> dict:
        """Mean and max CPU over the window, as a percentage of the cores the generator may use.

        Only intervals that began inside the window count: the one spanning Locust's start-up (imports,
        spawning) would make a short run look client-bound.
        """
        window = [c for began, _, c in self.samples if since is None or began >= since]
        if not window:
            return {"cores": cores, "cpu_pct_mean": None, "cpu_pct_max": None, "samples": 0}
        return {"cores": cores, "cpu_pct_mean": round(100 * sum(window) / len(window) / cores, 1),
                "cpu_pct_max": round(100 * max(window) / cores, 1), "samples": len(window)}


def run(spec: RunSpec, host: str, locustfile: Path, files: RunFiles, env: dict[str, str],
        options: LoadOptions = LoadOptions(), on_tick=None) -> LoadResult:
    """Run Locust for one point; `on_tick(seconds_elapsed)` is called about once a second (live progress)."""
    files.folder.mkdir(parents=True, exist_ok=True)
    for stale in files.count_parts():
        stale.unlink()
    cmd = locust_command(spec, host, locustfile, files, options)
    # Bounded: run time + stop timeout + (open loop) the wait for requests in flight + a margin for start-up
    # and writing the report.
    limit = spec.run_time_s + 10 + (options.open_loop_timeout_s if spec.open_loop else 0) + 60
    with open(files.locust_log, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=files.folder,
                                stdin=subprocess.DEVNULL)
        meter = CpuMeter(proc.pid)
        began = time.monotonic()
        deadline = began + limit
        try:
            while True:
                try:
                    exit_code = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    meter.sample()
                    if on_tick:
                        on_tick(time.monotonic() - began)
                    if time.monotonic() > deadline:
                        raise
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return LoadResult(locust_exit=None, error=f"Locust did not finish within {limit}s (see {files.locust_log})")
        except BaseException:  # Ctrl-C or SIGTERM: stop Locust too, then let the caller tear down
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            raise
    result = parse_result(exit_code, files, spec, options)
    result.generator = {"processes": options.processes,
                        **meter.summary(result.window.get("start_at"), cores=options.processes),
                        "locust_cpu_warning": "CPU usage above" in _read(files.locust_log)}
    result.generator.update(self_delay(result.generator, result.requests, result.duration_s, spec.users))
    return result


def self_delay(generator: dict, requests: int, window_s: float, users: int) -> dict:
    """Locust's CPU per request, and how long a request can wait inside Locust behind the others.

    Locust runs each process's users on one thread: when responses arrive together, the last one waits
    for the CPU spent on every other user of that process. Measured against a fixed 50 ms target
    (bench/accuracy.py), the median grew by about half this worst case, at CPU shares far below the
    client-bound limit. Recorded as information beside the CPU share; not a validity rule (yet).
    """
    pct, cores = generator.get("cpu_pct_mean"), generator.get("cores") or 1
    if pct is None or not requests or window_s <= 0:
        return {}
    cpu_ms_per_request = pct / 100 * cores * window_s * 1000 / requests
    users_per_process = max(1, users // max(1, generator.get("processes") or 1))
    return {"cpu_ms_per_request": round(cpu_ms_per_request, 3),
            "self_delay_worst_ms": round(users_per_process * cpu_ms_per_request, 1)}


def parse_result(exit_code: int, files: RunFiles, spec: RunSpec | None = None,
                 options: LoadOptions = LoadOptions()) -> LoadResult:
    parts = _count_parts(files)
    try:
        entries = json.loads(files.stats_json.read_text())
    except (OSError, json.JSONDecodeError):
        log_tail = _tail(files.locust_log)
        return LoadResult(locust_exit=exit_code, error=f"Locust wrote no final stats (exit {exit_code}): {log_tail}")
    result = totals(entries)
    result.locust_exit = exit_code
    result.failure_messages = _failures(files)
    result.window, result.whole_run = _window(files, entries, result)
    if spec is not None and spec.open_loop:
        result.open_loop = open_loop_counts(parts, spec, options)
    elif spec is not None and options.requests_per_user:
        result.stop = stop_counts(parts, spec, options.requests_per_user)
    # Locust exits 1 when any request failed; that is a measured outcome, not a broken run.
    if exit_code not in (0, 1):
        result.error = f"Locust exited with {exit_code}: {_tail(files.locust_log)}"
    return result


def totals(entries: list[dict]) -> LoadResult:
    """Aggregate Locust's per-endpoint JSON stats into one result (percentiles from the merged histogram)."""
    histogram: dict[int, int] = {}
    requests = failures = 0
    start = math.inf
    end = 0.0
    max_ms = 0.0
    for entry in entries:
        requests += entry["num_requests"]
        failures += entry["num_failures"]
        max_ms = max(max_ms, entry.get("max_response_time") or 0.0)
        if entry["num_requests"]:
            start = min(start, entry["start_time"])
            end = max(end, entry["last_request_timestamp"])
        for ms, count in entry["response_times"].items():
            histogram[int(float(ms))] = histogram.get(int(float(ms)), 0) + count
    duration = end - start if requests and end > start else 0.0
    latency = {name: percentile(histogram, q) for name, q in PERCENTILES.items()}
    latency["max"] = round(max_ms, 1)
    latency["mean"] = round(sum(ms * n for ms, n in histogram.items()) / requests, 1) if requests else 0.0
    return LoadResult(locust_exit=0, requests=requests, failures=failures,
                      rps=round(requests / duration, 2) if duration else 0.0,
                      duration_s=round(duration, 2), latency_ms=latency)


def _window(files: RunFiles, entries: list[dict], window_totals: LoadResult) -> tuple[dict, dict]:
    """The window's bounds, and whole-run totals = what came before the window + the window."""
    try:
        info = json.loads(files.window_json.read_text())
    except (OSError, json.JSONDecodeError):
        return {"start_at": None, "spawn_complete_at": None, "warmup_s": None}, {}
    window = {"start_at": info.get("window_start_at"), "spawn_complete_at": info.get("spawn_complete_at"),
              "warmup_s": info.get("warmup_s"), "duration_s": window_totals.duration_s}
    whole = totals(list(info.get("before_window") or []) + entries)
    whole_run = {"requests": whole.requests, "failures": whole.failures, "rps": whole.rps,
                 "duration_s": whole.duration_s, "latency_ms": whole.latency_ms}
    return window, whole_run


def _count_parts(files: RunFiles) -> list[dict]:
    """The per-process counts of the locustfile's users, read once and removed (the record keeps the sums)."""
    parts = []
    for path in files.count_parts():
        try:
            parts.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
        path.unlink(missing_ok=True)
    return parts


def open_loop_counts(parts: list[dict], spec: RunSpec, options: LoadOptions) -> dict:
    """Intended vs scheduled vs achieved arrival rate over the window, and what was late or dropped.

    Each process counts from the window's start to its last slot; rates add up over processes.
    """
    out = {"arrival": options.arrival, "intended_rate": spec.arrival_rate, "processes": len(parts)}
    if not parts:
        return {**out, "error": "the locustfile wrote no open-loop counts (is it a LoadgridUser?)"}
    scheduled_rate = achieved_rate = 0.0
    spans = []
    for part in parts:
        start = part.get("window_start_at") or part.get("first_slot_at")
        end = part.get("last_slot_at")
        span = end - start if start and end and end > start else 0.0
        spans.append(span)
        if span:
            scheduled_rate += part["scheduled"] / span
            achieved_rate += part["sent"] / span
    out.update({
        "scheduled_rate": round(scheduled_rate, 2), "achieved_rate": round(achieved_rate, 2),
        "scheduled": sum(p["scheduled"] for p in parts), "sent": sum(p["sent"] for p in parts),
        "late": sum(p["late"] for p in parts), "dropped": sum(p["dropped"] for p in parts),
        "late_tolerance_ms": parts[0].get("late_tolerance_ms"), "max_late_ms": max(p["max_late_ms"] for p in parts),
        "max_in_flight": parts[0].get("max_in_flight"), "window_s": round(max(spans), 2),
    })
    return out


def stop_counts(parts: list[dict], spec: RunSpec, per_user: int) -> dict:
    finished = sum(p.get("users_finished", 0) for p in parts)
    return {"requests_per_user": per_user, "users": spec.users, "users_finished": finished,
            "requests_sent": sum(p.get("requests_sent", 0) for p in parts),
            "by": "requests" if parts and finished >= spec.users else "time"}


def percentile(histogram: dict[int, int], q: float) -> float:
    """The smallest bucket at or below which a fraction `q` of the requests fall (Locust's rounding)."""
    total = sum(histogram.values())
    if not total:
        return 0.0
    needed = math.ceil(q * total)
    seen = 0
    for ms in sorted(histogram):
        seen += histogram[ms]
        if seen >= needed:
            return float(ms)
    return float(max(histogram))


def _failures(files: RunFiles) -> dict[str, int]:
    """Failures by message: the window plugin's final count, else Locust's CSV (rewritten once a second)."""
    try:
        errors = json.loads(files.window_json.read_text()).get("errors")
        if isinstance(errors, dict):
            return {str(k): int(v) for k, v in errors.items()}
    except (OSError, json.JSONDecodeError, ValueError, AttributeError):
        pass
    path = files.folder / f"{files.stem}_failures.csv"
    out: dict[str, int] = {}
    try:
        import csv

        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                out[row.get("Error", "?")] = out.get(row.get("Error", "?"), 0) + int(row.get("Occurrences", 0))
    except (OSError, ValueError):
        pass
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return "no log"
    return " | ".join(text[-lines:]) or "empty log"
