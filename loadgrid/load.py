"""One Locust run as a subprocess (its gevent patching stays out of the orchestrator), and its totals.

Totals come from Locust's final JSON (`--json-file`), written at shutdown: the periodic `_stats.csv`
is written once a second and not at the end, so it falls a few percent short of the real count.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import __version__, procs, redact, safefile, settings
from .plan import RunSpec, format_number
from .store import Generator, GeneratorLag, GeneratorWorker, OpenLoop, Stop, WholeRun, Window, Workers, _Coerced
from .validity import lag_limit_ms

WINDOW_PLUGIN = Path(__file__).with_name("locust_window.py")
LATENCY_PLUGIN = Path(__file__).with_name("locust_latency.py")
DIST_PLUGIN = Path(__file__).with_name("locust_dist.py")
PLUGINS = (WINDOW_PLUGIN, LATENCY_PLUGIN, DIST_PLUGIN)
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
    def stats_history(self) -> Path:
        """Locust's live figures (with --csv): a row a second, flushed to the file every few seconds
        (Locust's CSV_STATS_FLUSH_INTERVAL_SEC, 5 in 2.47)."""
        return self.folder / f"{self.stem}_stats_history.csv"

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

    @property
    def latency_prefix(self) -> Path:
        """Each Locust process with users writes `<stem>.latency.<pid>.part` (exact latencies); merged, removed."""
        return self.folder / f"{self.stem}.latency"

    def latency_parts(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.stem}.latency.*.part"))

    @property
    def workers_json(self) -> Path:
        """The master's list of workers (locust_dist.py): who joined, whose parts arrived; merged, removed."""
        return self.folder / f"{self.stem}.workers.json"

    def written_by_name(self) -> list[Path]:
        """The files Locust (and its log) open by these fixed names, following a symlink found there."""
        kinds = ("stats", "stats_history", "failures", "exceptions")
        csvs = [self.folder / f"{self.stem}_{kind}.csv" for kind in kinds]
        return [self.html, self.stats_json, self.window_json, self.workers_json, self.locust_log, *csvs]


@dataclass
class LoadResult(_Coerced):
    """Totals of the measurement window (steady state); `whole_run` adds the ramp-up and warm-up back."""

    locust_exit: int | None
    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    duration_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    failure_messages: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    # The record's typed sub-records (store.py); a dict assigned becomes the type, None: not measured.
    window: Window | None = None
    whole_run: WholeRun | None = None
    generator: Generator | None = None
    open_loop: OpenLoop | None = None
    stop: Stop | None = None
    latency_locust_ms: dict[str, float] = field(default_factory=dict)  # Locust's rounded buckets, for reference
    window_thirds: list[dict] = field(default_factory=list)  # requests, p50, p95, rps per third of the window


@dataclass(frozen=True)
class LiveFigures:
    """The run in progress as Locust measures it (its latest stats-history row, all requests together):
    current requests per second, p95 so far (None before the first response), failures so far."""

    rps: float
    p95_ms: float | None
    failures: int
    requests: int


def live_figures(path: Path) -> LiveFigures | None:
    """The last complete row of a `_stats_history.csv`, read from the file's two ends (the header and the
    last few KB, so a long run costs the same); None while the file holds no row yet."""
    import csv

    try:
        with open(path, "rb") as fh:
            header = fh.readline().decode("utf-8", "replace")
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(len(header), size - 4096))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    rows = [line for line in tail.splitlines(keepends=True) if line.endswith("\n") and line.strip()]
    if not header.endswith("\n") or not rows:
        return None
    try:
        row = dict(zip(next(csv.reader([header])), next(csv.reader([rows[-1]])), strict=True))
        p95 = row.get("95%", "N/A")
        return LiveFigures(rps=float(row["Requests/s"]), p95_ms=None if p95 in ("N/A", "") else float(p95),
                           failures=int(row["Total Failure Count"]), requests=int(row["Total Request Count"]))
    except (KeyError, ValueError, StopIteration):
        return None  # a row cut short, or a Locust whose columns differ: no live figures, the run goes on


@dataclass(frozen=True)
class LoadOptions:
    """How Locust is run: processes (each one core at most), warm-up excluded from the window, and how the
    locustfile's users pace and stop (see loadgrid/locust_users.py)."""

    processes: int = 1
    warmup_s: int = settings.default("warmup")
    send_as: str = settings.default("send_as")
    expect: str = settings.default("expect")  # "" = the locustfile's default for the payload's kind
    requests_per_user: int = settings.default("requests_per_user")  # closed-loop runs only
    arrival: str = settings.default("arrival")  # open-loop runs only
    max_in_flight: int = settings.default("max_in_flight")
    open_loop_timeout_s: float = 10.0
    late_ms: float = 20.0
    # Distributed load (README: load workers): the master runs here with no users of its own and waits, at
    # most worker_wait_s, for this many workers (engine-placed and joined by hand together) before it starts.
    workers: int = 0
    master_bind: str = "127.0.0.1"
    master_port: int = 5557
    worker_wait_s: float = 60.0

    @property
    def distributed(self) -> bool:
        return self.workers > 0


def locust_command(spec: RunSpec, host: str, locustfile: Path, files: RunFiles,
                   options: LoadOptions = LoadOptions()) -> list[str]:
    """Locust's command line. A host with credentials (a password, a secret query value) is left off it:
    any user's `ps` shows a command line; `host_env` hands it over in the environment instead."""
    if options.distributed:
        # The master runs no users; `--expect-workers-max-wait` bounds the wait (Locust then exits 1).
        extra = ["--master", "--master-bind-host", options.master_bind, "--master-bind-port", str(options.master_port),
                 "--expect-workers", str(options.workers), "--expect-workers-max-wait",
                 format_number(options.worker_wait_s)]
    else:
        extra = ["--processes", str(options.processes)] if options.processes > 1 else []
    target = [] if redact.has_credentials(host) else ["--host", host]
    return [
        sys.executable, "-m", "locust",
        "-f", ",".join(str(p) for p in (locustfile.resolve(), *PLUGINS)),
        *extra,
        "--headless",
        "--users", str(spec.users),
        "--spawn-rate", format_number(spec.spawn_rate),
        "--run-time", f"{spec.run_time_s}s",
        *target,
        "--html", str(files.html),
        "--csv", str(files.csv_prefix),
        "--json-file", str(files.stats_json.with_suffix("")),
        "--only-summary",
        # Users finish their request in flight at the end instead of counting it as an error.
        "--stop-timeout", "10",
        "--loglevel", "WARNING",
    ]


def host_env(host: str) -> dict[str, str]:
    """The host as Locust's LOCUST_HOST when it carries credentials (see `locust_command`): the environment
    of a process is readable by its owner only (/proc/<pid>/environ), its command line by everyone."""
    return {"LOCUST_HOST": host} if redact.has_credentials(host) else {}


def locust_env(images_dir: Path | str, predict_path: str, files: RunFiles | None = None,
               options: LoadOptions = LoadOptions(), spec: RunSpec | None = None) -> dict[str, str]:
    """The locustfile's settings. `images_dir` is the payload: a folder of images, an image or JSON file."""
    payload = str(Path(images_dir).resolve())
    open_loop = spec is not None and spec.open_loop
    per_user = options.requests_per_user if spec is not None and not open_loop else 0
    # The config keys the locustfile reads, under the variable names of the settings table.
    keys = settings.locust_vars({"payload": payload, "predict_path": predict_path, "warmup": options.warmup_s,
                                 "send_as": options.send_as, "expect": options.expect,
                                 "requests_per_user": per_user, "arrival": options.arrival,
                                 "max_in_flight": options.max_in_flight})
    env = {**os.environ, **keys, "LOADGRID_IMAGES_DIR": payload,
           # A run that stops after N requests per user is measured whole: no ramp-up to cut off.
           "LOADGRID_WINDOW_RESET": "0" if per_user else "1",
           "LOADGRID_ARRIVAL_RATE": format_number(spec.arrival_rate) if open_loop else "0",
           "LOADGRID_USERS": str(spec.users if spec else 1), "LOADGRID_LATE_MS": format_number(options.late_ms),
           "LOADGRID_TIMEOUT_S": format_number(options.open_loop_timeout_s) if open_loop else "60"}
    if files is not None:
        env["LOADGRID_WINDOW_FILE"] = str(files.window_json)
        env["LOADGRID_COUNTS_FILE"] = str(files.counts_prefix)
        env["LOADGRID_LATENCY_FILE"] = str(files.latency_prefix)
        env["LOADGRID_WORKERS_FILE"] = str(files.workers_json)
    # A worker joining by hand checks it runs the same loadgrid (the plugins it gets are the master's).
    env["LOADGRID_VERSION"] = __version__
    env["LOADGRID_RUN_ID"] = uuid.uuid4().hex
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
        self.children: set = set()  # every Locust worker process seen, to wait for after the master exits
        self._last = (time.time(), self._cpu_seconds())

    def _cpu_seconds(self) -> float:
        total = 0.0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except self._psutil.Error:
            return self._last[1] if hasattr(self, "_last") else 0.0
        self.children.update(procs[1:])
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

    def wait_for_children(self, timeout_s: float = 15.0) -> None:
        """Locust's master can exit before its worker processes have written their parts (their counts and
        latencies, at quit): wait for every worker it had, bounded, so none is read missing."""
        self._psutil.wait_procs(list(self.children), timeout=timeout_s)

    def summary(self, since: float | None, cores: int) -> dict:
        """Mean and max CPU over the window, as a percentage of the cores the generator may use.

        Only intervals that began inside the window count: the one spanning Locust's start-up (imports,
        spawning) would make a short run look client-bound.
        """
        window = [c for began, _, c in self.samples if since is None or began >= since]
        if not window:
            return {"cores": cores, "cpu_pct_mean": None, "cpu_pct_max": None, "samples": 0}
        series = [[round(end, 2), round(100 * c / cores, 1)] for began, end, c in self.samples
                  if since is None or began >= since]
        return {"cores": cores, "cpu_pct_mean": round(100 * sum(window) / len(window) / cores, 1),
                "cpu_pct_max": round(100 * max(window) / cores, 1), "samples": len(window),
                "cpu_series": series}


def run(spec: RunSpec, host: str, locustfile: Path, files: RunFiles, env: dict[str, str],
        options: LoadOptions = LoadOptions(), on_tick=None) -> LoadResult:
    """Run Locust for one point; `on_tick(seconds_elapsed, live)` is called about once a second (live
    progress), `live` being Locust's latest `LiveFigures` or None before its first row."""
    files.folder.mkdir(parents=True, exist_ok=True)
    for stale in [*files.count_parts(), *files.latency_parts(), files.workers_json]:
        stale.unlink(missing_ok=True)
    # A results folder may be shared (--resume into a colleague's folder): a symlink planted at one of this
    # run's names would have Locust write through it, outside the folder. The run's own files replace it.
    for planted in files.written_by_name():
        if planted.is_symlink():
            planted.unlink()
    cmd = locust_command(spec, host, locustfile, files, options)
    env = {**env, **host_env(host)}
    # Bounded: run time + stop timeout + (open loop) the wait for requests in flight + a margin for start-up
    # and writing the report.
    limit = spec.run_time_s + 10 + (options.open_loop_timeout_s if spec.open_loop else 0) + 60
    with open(files.locust_log, "w", encoding="utf-8") as log:
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
                        on_tick(time.monotonic() - began, live_figures(files.stats_history))
                    if time.monotonic() > deadline:
                        raise
        except subprocess.TimeoutExpired:
            procs.stop(proc)
            return LoadResult(locust_exit=None, error=f"Locust did not finish within {limit}s (see {files.locust_log})")
        except BaseException:  # Ctrl-C or SIGTERM: stop Locust too, then let the caller tear down
            procs.stop(proc)
            raise
    meter.wait_for_children()
    mask_host(files.html, host)
    result = parse_result(exit_code, files, spec, options)
    usable = usable_cores(proc.pid)
    # One Locust process runs on one thread, so it can use one core at most; N processes can use N cores,
    # but no more than the cores the generator may run on (4 processes on 2 cores are at most 200%). A
    # distributed master is one process with no users: its CPU is its own, each worker's is in `workers`.
    local = 1 if options.distributed else options.processes
    cores = max(1, min(local, usable))
    before = result.generator or Generator()
    gen = Generator(processes=local, usable_cores=usable, lag_ms=before.lag_ms, workers=before.workers,
                    distributed=before.distributed, mode="distributed" if options.distributed else "local",
                    locust_cpu_warning="CPU usage above" in _read(files.locust_log),
                    **meter.summary(result.window.start_at if result.window else None, cores=cores))
    result.generator = replace(gen, **self_delay(gen, result.requests, result.duration_s, spec.users))
    return result


def mask_host(html: Path, host: str) -> None:
    """Locust's HTML report names the host as Locust had it: with its credentials. Masked there (redact.url),
    as it appears in the report's JSON, so the page can be shared."""
    shown = redact.url(host)
    if shown == host or not html.is_file():
        return
    text = html.read_text(encoding="utf-8", errors="surrogateescape")
    for form in {host: shown, json.dumps(host)[1:-1]: json.dumps(shown)[1:-1]}.items():
        text = text.replace(*form)
    safefile.replace(html, text.encode("utf-8", "surrogateescape"))


def usable_cores(pid: int | None = None) -> int:
    """Cores the process may run on: its CPU affinity (taskset, cpusets), else the machine's count."""
    try:
        return len(os.sched_getaffinity(pid or 0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def self_delay(generator: Generator | dict, requests: int, window_s: float, users: int) -> dict:
    """Locust's CPU per request, and how long a request can wait inside Locust behind the others.

    Locust runs each process's users on one thread: when responses arrive together, the last one waits
    for the CPU spent on every other user of that process. Measured against a fixed 50 ms target
    (bench/accuracy.py), the median grew by about half this worst case, at CPU shares far below the
    client-bound limit. Recorded as information beside the CPU share; not a validity rule (yet).
    """
    generator = Generator.of(generator) or Generator()
    pct, cores = generator.cpu_pct_mean, generator.cores or 1
    if pct is None or not requests or window_s <= 0 or generator.mode == "distributed":
        return {}  # distributed: the CPU measured here is the master's, which sends nothing
    cpu_ms_per_request = pct / 100 * cores * window_s * 1000 / requests
    users_per_process = max(1, users // max(1, generator.processes or 1))
    return {"cpu_ms_per_request": round(cpu_ms_per_request, 3),
            "self_delay_worst_ms": round(users_per_process * cpu_ms_per_request, 1)}


# Times a worker's part gives, on its own clock (moments, epoch seconds), and its per-time-bin series.
TIME_FIELDS = ("window_start_at", "stopped_at", "test_start_at", "first_user_at", "last_finished_at",
               "first_slot_at", "last_slot_at", "first_send_at", "last_send_at", "written_at")


def window_info(files: RunFiles) -> dict | None:
    """The window plugin's file (locust_window.py), read once per run; None when it wrote none (or not an object)."""
    try:
        info = json.loads(files.window_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def worker_clocks(info: dict | None) -> dict[str, dict]:
    """{worker id: {offset_s, round_trip_s}} as the master measured them when the window opened (locust_window)."""
    clocks = (info or {}).get("worker_clocks")
    return clocks if isinstance(clocks, dict) else {}


def to_master_clock(parts: list[dict], clocks: dict[str, dict]) -> list[dict]:
    """Each worker's times moved onto the master's clock (its offset subtracted), so a window that starts on the
    master's clock ends on it too: a worker whose clock is a second ahead would otherwise add a second to it."""
    out = []
    for part in parts:
        offset = (clocks.get(part.get("worker_id") or "") or {}).get("offset_s")
        if not isinstance(offset, (int, float)) or abs(offset) < 0.001:
            out.append(part)
            continue
        part = dict(part)
        for name in TIME_FIELDS:
            if isinstance(part.get(name), (int, float)):
                part[name] -= offset
        bin_s = part.get("bin_s") or 0.25
        if isinstance(part.get("bins"), dict):
            part["bins"] = {str(int(k) - round(offset / bin_s)): v for k, v in part["bins"].items()}
        for series in ("lag", "cpu"):
            inner = dict(part.get(series) or {})
            if isinstance(inner.get("per_s"), dict):
                inner["per_s"] = {str(int(k) - round(offset)): v for k, v in inner["per_s"].items()}
                part[series] = inner
        out.append(part)
    return out


def parse_result(exit_code: int, files: RunFiles, spec: RunSpec | None = None,
                 options: LoadOptions = LoadOptions()) -> LoadResult:
    info = window_info(files)
    clocks = worker_clocks(info)
    parts = to_master_clock(_count_parts(files), clocks)
    latency_parts = to_master_clock(_read_parts(files.latency_parts()), clocks)
    try:
        entries = json.loads(files.stats_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        log_tail = _tail(files.locust_log)
        # A master that gave up waiting for its workers exits before it writes any stats (Locust's sys.exit).
        joined = _workers_file(files) if options.distributed else None
        if joined is not None and "Gave up waiting for workers" in _read(files.locust_log):
            files.workers_json.unlink(missing_ok=True)
            return LoadResult(locust_exit=exit_code, error=too_few_workers(len(joined.get("joined") or {}), options))
        return LoadResult(locust_exit=exit_code, error=f"Locust wrote no final stats (exit {exit_code}): {log_tail}")
    result = totals(entries)
    result.locust_exit = exit_code
    result.failure_messages = _failures(files, info)
    result.window, result.whole_run = _window(info, entries, result, parts, latency_parts)
    exact = exact_latency(latency_parts)
    result.latency_locust_ms = dict(result.latency_ms)
    if exact:
        result.latency_ms = exact
        result.window = result.window or Window()
        result.window.latency_from = "exact"
    if result.window and result.window.end_at and result.window.start_at:
        result.window_thirds = window_thirds(latency_parts, result.window.start_at, result.window.end_at)
    lag = generator_lag(latency_parts, result.latency_ms.get("p50"))
    workers = worker_summaries(latency_parts, parts, lag_limit_ms(result.latency_ms.get("p50")), clocks)
    distributed = distributed_summary(files, options, result.requests, workers) if options.distributed else None
    if lag or workers or distributed:
        result.generator = Generator(lag_ms=GeneratorLag.of(lag) if lag else None, workers=workers,
                                     distributed=distributed)
    if spec is not None and spec.open_loop:
        result.open_loop = open_loop_counts(parts, spec, options, latency_parts)
    elif spec is not None and options.requests_per_user:
        result.stop = stop_counts(parts, spec, options.requests_per_user)
    # Locust exits 1 when any request failed; that is a measured outcome, not a broken run.
    if exit_code not in (0, 1):
        result.error = f"Locust exited with {exit_code}: {_tail(files.locust_log)}"
    return result


def too_few_workers(joined: int, options: LoadOptions) -> str:
    return (f"{joined} of {options.workers} Locust workers joined within {format_number(options.worker_wait_s)}s "
            f"(worker_wait): workers loadgrid starts (load_workers) log to workers.log and docker logs; workers "
            f"joined by hand (expect_workers) run `loadgrid worker --master HOST:{options.master_port}` and must "
            "reach this machine's port")


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


def _window(info: dict | None, entries: list[dict], window_totals: LoadResult, parts: list[dict] = (),
            latency_parts: list[dict] = ()) -> tuple[Window, WholeRun | None]:
    """The window's measured bounds, and whole-run totals = what came before the window + the window.

    req/s = requests / (window end - window start), both moments measured, not the span between the first
    and the last answer (that leaves out the first request's own latency: +4% for 1 user x 20 x 100 ms):
      timed runs        start: the stats reset (every user spawned, plus the warm-up); end: the moment the
                        run ended in the processes with users (Locust's test_stop there: their users stopped,
                        their requests in flight answered)
      requests_per_user start: the first user started (its on_start: the earliest moment a request could
                        leave); end: the last user sent its last request and had its answer (else test_stop)
    The rates the window overrides are set on `window_totals`; Locust's own span is kept as locust_duration_s.
    """
    if info is None:
        return Window(), None  # present, with no start: no window was measured
    stopped = [p["stopped_at"] for p in latency_parts if p.get("stopped_at")]
    end = max(stopped) if stopped else info.get("window_end_at")
    first_user = [p["first_user_at"] for p in parts if p.get("first_user_at")]
    run_start = min(first_user) if first_user else info.get("test_start_at") or info.get("window_start_at")
    if info.get("reset", True):
        start, bounds = info.get("window_start_at"), "stats reset to test_stop"
    else:
        start, bounds = run_start, "first user started to test_stop"
        finished = [p["last_finished_at"] for p in parts if p.get("last_finished_at")]
        if parts and finished and sum(p.get("users_finished", 0) for p in parts) >= sum(
                p.get("users_started", 0) for p in parts):
            end, bounds = max(finished), "first user started to last user finished"
    locust_duration = window_totals.duration_s
    if start and end and end > start:
        duration = end - start
        window_totals.duration_s = round(duration, 3)
        window_totals.rps = round(window_totals.requests / duration, 2)
    else:
        end, bounds = None, "Locust's first to last answer (no measured bounds)"
    window = Window(start_at=start, end_at=end, spawn_complete_at=info.get("spawn_complete_at"),
                    warmup_s=info.get("warmup_s"), duration_s=window_totals.duration_s,
                    locust_duration_s=locust_duration, bounds=bounds)
    whole = totals(list(info.get("before_window") or []) + entries)
    if run_start and end and end > run_start:
        whole.duration_s = round(end - run_start, 3)
        whole.rps = round(whole.requests / (end - run_start), 2)
    whole_run = WholeRun(requests=whole.requests, failures=whole.failures, rps=whole.rps,
                         duration_s=whole.duration_s, latency_ms=whole.latency_ms,
                         failures_before_window=dict(info.get("before_window_errors") or {}))
    return window, whole_run


def _read_parts(paths: list[Path]) -> list[dict]:
    """Per-process JSON parts, read once and removed (the record keeps what is merged from them)."""
    parts = []
    for path in paths:
        try:
            parts.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
        path.unlink(missing_ok=True)
    return parts


# Exact latencies (loadgrid/locust_latency.py): log-linear histograms, key = round(ln(ms) / ln(step)); a key's
# value step**key is within half a step (0.05% for the 1.001 step) of every time counted under it.
EXACT_STEP = 1.001
COARSE_STEP = 1.01


def merge_histograms(hists) -> dict[int, int]:
    out: dict[int, int] = {}
    for hist in hists:
        for k, n in (hist or {}).items():
            out[int(k)] = out.get(int(k), 0) + int(n)
    return out


def log_percentile(hist: dict[int, int], q: float, step: float = EXACT_STEP) -> float:
    """The value of the bucket holding the ceil(q * n)-th smallest time (same rank rule as `percentile`)."""
    total = sum(hist.values())
    if not total:
        return 0.0
    needed, seen = math.ceil(q * total), 0
    for k in sorted(hist):
        seen += hist[k]
        if seen >= needed:
            return step ** k
    return step ** max(hist)


def _summary(hists, count: int, sum_ms: float, max_ms: float, step: float = EXACT_STEP) -> dict[str, float]:
    hist = merge_histograms(hists)
    if not count or not hist:
        return {}
    out = {name: round(log_percentile(hist, q, step), 1) for name, q in PERCENTILES.items()}
    out["max"] = round(max_ms, 1)
    out["mean"] = round(sum_ms / count, 1)
    return out


def exact_latency(latency_parts: list[dict]) -> dict[str, float]:
    """p50/p90/p95/p99 (within 0.05%), exact max and mean of the window's requests, over every process."""
    return _summary([p.get("hist") for p in latency_parts], sum(p.get("count", 0) for p in latency_parts),
                    sum(p.get("sum_ms", 0.0) for p in latency_parts),
                    max((p.get("max_ms", 0.0) for p in latency_parts), default=0.0))


def intended_latency(latency_parts: list[dict]) -> dict[str, float]:
    """Open loop: from each request's slot (intended send time) to its response, as wrk2 measures."""
    parts = [p.get("intended") or {} for p in latency_parts]
    return _summary([p.get("hist") for p in parts], sum(p.get("count", 0) for p in parts),
                    sum(p.get("sum_ms", 0.0) for p in parts), max((p.get("max_ms", 0.0) for p in parts), default=0.0))


def generator_lag(latency_parts: list[dict], latency_p50_ms: float | None = None) -> dict:
    """The generator's own lag over the window (locust_latency.py's sampler): how late each process's hub
    woke when it asked to every interval_ms. p50/p99 within 0.05%, over all processes' samples; per process
    too (one starved process among several shows there); the worst lag per second as a series; and how many
    wake-ups were later than the limit that makes lag material against this run's p50 (validity.py)."""
    lags = [(p.get("pid"), p.get("lag")) for p in latency_parts if (p.get("lag") or {}).get("count")]
    if not lags:
        return {}
    hist = merge_histograms(lag.get("hist") for _, lag in lags)
    samples = sum(lag["count"] for _, lag in lags)
    per_second: dict[int, float] = {}
    for _, lag in lags:
        for second, worst in (lag.get("per_s") or {}).items():
            per_second[int(second)] = max(per_second.get(int(second), 0.0), float(worst))
    limit = lag_limit_ms(latency_p50_ms)
    over = sum(n for k, n in hist.items() if EXACT_STEP ** k > limit)
    return {"p50": round(log_percentile(hist, 0.5), 2), "p99": round(log_percentile(hist, 0.99), 2),
            "limit_ms": round(limit, 2), "over_limit": over,
            "max": round(max(lag.get("max_ms", 0.0) for _, lag in lags), 2),
            "mean": round(sum(lag.get("sum_ms", 0.0) for _, lag in lags) / samples, 2), "samples": samples,
            "interval_ms": lags[0][1].get("interval_ms"),
            "per_process": [{"pid": pid, "samples": lag["count"],
                             "p99": round(log_percentile(merge_histograms([lag.get("hist")]), 0.99), 2),
                             "max": round(lag.get("max_ms", 0.0), 2)} for pid, lag in lags],
            "series": [[second, worst] for second, worst in sorted(per_second.items())]}


# The master's window totals and the sum of its workers' own counts must agree within this many requests
# (the larger of the two): both count the same requests over the same window (locust_window.py aligns the
# workers' windows on the master's and drops reports sent before a worker's opened; locust_dist.py waits for
# each worker's last statistics), so a difference means statistics were lost on the way.
RECONCILE_ABS = 5
RECONCILE_SHARE = 0.002


def reconcile_tolerance(requests: int) -> int:
    return max(RECONCILE_ABS, math.ceil(RECONCILE_SHARE * requests))


def _workers_file(files: RunFiles) -> dict | None:
    try:
        data = json.loads(files.workers_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def distributed_summary(files: RunFiles, options: LoadOptions, master_requests: int,
                        workers: list[GeneratorWorker]) -> Workers:
    """Who the master expected, who joined and reported (the master's workers file, read once and removed), and
    the master's window total against the sum of the workers' counts."""
    info = _workers_file(files) or {}
    files.workers_json.unlink(missing_ok=True)
    stop = info.get("stop") or {}
    counted = sum(w.requests or 0 for w in workers)
    tolerance = reconcile_tolerance(max(master_requests, counted))
    return Workers(expected=options.workers, joined=len(info.get("joined") or {}),
                   reported=len([w for w, kinds in (info.get("parts") or {}).items() if "done" in kinds]),
                   missing=[str(m) for m in stop.get("missing") or []], stop_waited_s=stop.get("waited_s"),
                   master_requests=master_requests, workers_requests=counted, tolerance=tolerance,
                   reconciled=abs(master_requests - counted) <= tolerance)


def worker_summaries(latency_parts: list[dict], count_parts: list[dict], lag_limit: float,
                     clocks: dict[str, dict] | None = None) -> list[GeneratorWorker]:
    """One entry per worker (the parts a master wrote carry `worker_id`): where it ran, what it sent, and its
    own CPU and lag over its window. CPU: its CPU seconds over the wall seconds from its window's opening to its
    users' stop, of the one core a Locust process can use; max: its busiest whole second inside the window."""
    users = {p.get("worker_id"): p.get("users_started") for p in count_parts if p.get("worker_id")}
    out = []
    for part in latency_parts:
        worker = part.get("worker_id")
        if not worker:
            continue  # a single local process: described by the generator's own figures
        where, cpu, lag = part.get("where") or {}, part.get("cpu") or {}, part.get("lag") or {}
        start, stop = part.get("window_start_at"), part.get("stopped_at")
        wall = cpu.get("wall_s") or 0.0
        per_s = {int(k): v for k, v in (cpu.get("per_s") or {}).items()}
        inside = [v for k, v in per_s.items() if start and stop and start <= k and k + 1 <= stop]
        hist = merge_histograms([lag.get("hist")])
        clock = (clocks or {}).get(str(worker)) or {}
        out.append(GeneratorWorker(
            id=str(worker), name=where.get("name") or None, hostname=where.get("hostname"),
            container=where.get("container") or None, pid=where.get("pid", part.get("pid")), cores=where.get("cores"),
            users=users.get(worker), requests=part.get("count", 0), failures=part.get("failures"),
            window_start_at=start, stopped_at=stop,
            cpu_pct_mean=round(100 * cpu["seconds"] / wall, 1) if wall > 0 and cpu.get("seconds") is not None
            else None,
            cpu_pct_max=round(100 * max(inside), 1) if inside else None,
            lag_p99_ms=round(log_percentile(hist, 0.99), 2) if hist else None,
            lag_max_ms=round(lag.get("max_ms", 0.0), 2) if hist else None, lag_samples=lag.get("count"),
            lag_over_limit=sum(n for k, n in hist.items() if EXACT_STEP ** k > lag_limit) if hist else None,
            clock_offset_ms=_ms(clock.get("offset_s")), round_trip_ms=_ms(clock.get("round_trip_s"))))
    return out


def _ms(seconds) -> float | None:
    return round(seconds * 1000, 2) if isinstance(seconds, (int, float)) else None


def window_thirds(latency_parts: list[dict], start: float, end: float) -> list[dict]:
    """The window cut in three equal spans of request end time (0.25 s bins, 1% latency buckets):
    requests, p50, p95 and req/s of each, so a latency that trends up across the window shows."""
    if not latency_parts or end <= start:
        return []
    third = (end - start) / 3
    hists: list[dict[int, int]] = [{}, {}, {}]
    for part in latency_parts:
        bin_s = part.get("bin_s", 0.25)
        for b, hist in (part.get("bins") or {}).items():
            middle = (int(b) + 0.5) * bin_s
            i = min(2, max(0, int((middle - start) // third)))
            hists[i] = merge_histograms([hists[i], hist])
    out = []
    for hist in hists:
        n = sum(hist.values())
        out.append({"requests": n, "p50": round(log_percentile(hist, 0.5, COARSE_STEP), 1) if n else None,
                    "p95": round(log_percentile(hist, 0.95, COARSE_STEP), 1) if n else None,
                    "rps": round(n / third, 2)})
    return out


def _count_parts(files: RunFiles) -> list[dict]:
    """The per-process counts of the locustfile's users, read once and removed (the record keeps the sums)."""
    return _read_parts(files.count_parts())


def open_loop_counts(parts: list[dict], spec: RunSpec, options: LoadOptions,
                     latency_parts: list[dict] = ()) -> OpenLoop:
    """Intended vs scheduled vs achieved arrival rate over the window, and what was late or dropped.

    scheduled_rate: slots per second of the schedule (slots / span from the window's start to the last slot).
    achieved_rate: requests actually sent per second, over measured bounds: from the window's start to the
    moment the process stopped sending (its user stopped); a generator that sends late sends fewer in that
    time. Rates add up over processes. send_late_ms: how late each send left its slot; latency_intended_ms:
    from the slot to the response (includes the generator's lateness; latency_ms starts at the actual send).
    """
    out = {"arrival": options.arrival, "intended_rate": spec.arrival_rate, "processes": len(parts)}
    if not parts:
        return OpenLoop.of({**out, "error": "the locustfile wrote no open-loop counts (is it a LoadgridUser?)"})
    scheduled_rate = achieved_rate = 0.0
    spans = []
    measured = True
    for part in parts:
        start = part.get("window_start_at") or part.get("first_slot_at")
        end = part.get("last_slot_at")
        span = end - start if start and end and end > start else 0.0
        if span:
            scheduled_rate += part["scheduled"] / span
        stopped = part.get("stopped_at") or part.get("last_send_at")
        send_start = part.get("window_start_at") or part.get("first_send_at")
        if stopped and send_start and stopped > send_start:
            span = stopped - send_start
        else:
            measured = False  # an older part without send times: the slot span
        spans.append(span)
        if span:
            achieved_rate += part["sent"] / span
    late_hist = merge_histograms(p.get("send_late_hist") for p in parts)
    max_late = max(p["max_late_ms"] for p in parts)
    out.update({
        "scheduled_rate": round(scheduled_rate, 2), "achieved_rate": round(achieved_rate, 2),
        "achieved_from": "send times" if measured else "slots",
        "scheduled": sum(p["scheduled"] for p in parts), "sent": sum(p["sent"] for p in parts),
        "late": sum(p["late"] for p in parts), "dropped": sum(p["dropped"] for p in parts),
        "late_tolerance_ms": parts[0].get("late_tolerance_ms"), "max_late_ms": max_late,
        "max_in_flight": parts[0].get("max_in_flight"), "window_s": round(max(spans), 2),
    })
    if late_hist:
        out["send_late_ms"] = {"p50": round(log_percentile(late_hist, 0.5), 2),
                               "p99": round(log_percentile(late_hist, 0.99), 2), "max": max_late}
    intended = intended_latency(list(latency_parts))
    if intended:
        out["latency_intended_ms"] = intended
    return OpenLoop.of(out)


def stop_counts(parts: list[dict], spec: RunSpec, per_user: int) -> Stop:
    finished = sum(p.get("users_finished", 0) for p in parts)
    return Stop(requests_per_user=per_user, users=spec.users, users_finished=finished,
                requests_sent=sum(p.get("requests_sent", 0) for p in parts),
                by="requests" if parts and finished >= spec.users else "time")


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


def _failures(files: RunFiles, info: dict | None) -> dict[str, int]:
    """Failures by message: the window plugin's final count (`info`), else Locust's CSV (rewritten once a
    second)."""
    errors = (info or {}).get("errors")
    if isinstance(errors, dict):
        try:
            return {str(k): int(v) for k, v in errors.items()}
        except (TypeError, ValueError):
            pass
    path = files.folder / f"{files.stem}_failures.csv"
    out: dict[str, int] = {}
    try:
        import csv

        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            for row in csv.DictReader(fh):
                out[row.get("Error", "?")] = out.get(row.get("Error", "?"), 0) + int(row.get("Occurrences", 0))
    except (OSError, ValueError):
        pass
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    # Quoted in console lines and records: a URL with credentials in Locust's log is masked.
    return redact.text(" | ".join(text[-lines:])) or "empty log"
