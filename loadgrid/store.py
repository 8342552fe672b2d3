"""Run records: versioned JSON next to each Locust report, written atomically, read through one function.

Reports are rendered only from what is stored here, so they can be rebuilt without re-running anything.
A results folder is untrusted input (a CI artifact, a colleague's run): `load` checks every field's type,
every file name and the run's id before anything else sees the record, and a bad record is one line.

Format history (the `schema` key; `update_to_N` migrates a record of schema N-1 forward on read):

  1  (up to loadgrid 2026-12-02) sub-records are plain objects, `{}` when absent: load.window,
     load.whole_run, load.generator (with lag_ms), load.open_loop, load.stop, telemetry, payload,
     quiesce, readiness, bottleneck.
  2  the same keys, each sub-record typed (the dataclasses below) and `null` when absent; every field's
     type is checked on read; `files` names are plain names inside the run's folder; `id` and `variant`
     have the planner's shapes (plan.RunSpec.id); host, target and payload URLs are stored with their
     credentials masked (redact.url). Keys a sub-record does not name are kept (`extra`).

A record of a newer schema than this loadgrid reads is refused with "made by a newer loadgrid".
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import re
import stat
import sys
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union

from . import redact, safefile
from .errors import UserError

SCHEMA_VERSION = 2

# Values of telemetry and generator summaries: numbers, words, flags, or nothing.
Scalar = Union[float, str, bool, None]  # noqa: UP007 (a runtime object, read by _check)


class SubRecord:
    """A typed sub-record: built from its JSON object, written back as one; keys it does not name kept in
    `extra` (a record written by a loadgrid that added one keeps it through a rewrite).

    Read by attribute (`window.start_at`); a key the type does not name is in `extra`."""

    extra: dict

    @classmethod
    def of(cls, value: Any):
        """`value` as this type: None for None or an empty object (an absent sub-record)."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, dict):
            if not value:
                return None
            names = {f.name for f in fields(cls)} - {"extra"}
            known = {k: v for k, v in value.items() if k in names}
            return cls(**known, extra={k: v for k, v in value.items() if k not in names})
        raise TypeError(f"{cls.__name__} from {type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "extra"}
        return {**out, **self.extra}

    def __eq__(self, other: object) -> bool:
        """Field by field, against the same type only. Against a dict it raises rather than answer False, so
        a reader or test still written for schema 1's dicts fails loudly (an `!=` would otherwise always pass)."""
        if isinstance(other, dict):
            raise TypeError(f"{type(self).__name__} compared with a dict: compare its to_dict() or its fields")
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None


def _plain(value: Any) -> Any:
    if isinstance(value, SubRecord):
        return value.to_dict()
    if is_dataclass(value):
        return _record_dict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _record_dict(obj: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}


class _Coerced:
    """Dataclasses holding sub-records: a dict given for one (a test's builder, a producer) becomes the type."""

    def __setattr__(self, name: str, value: Any) -> None:
        kind = _subrecord_fields(type(self)).get(name)
        super().__setattr__(name, kind.of(value) if kind is not None else value)


# ---- the typed sub-records ------------------------------------------------------------------------------


@dataclass(eq=False)
class Window(SubRecord):
    """The measurement window (load.py `_window`): epoch seconds; bounds says how they were measured."""

    start_at: float | None = None
    end_at: float | None = None
    spawn_complete_at: float | None = None
    warmup_s: float | None = None
    duration_s: float | None = None
    locust_duration_s: float | None = None
    bounds: str | None = None
    latency_from: str | None = None  # "exact": latency_ms from loadgrid's per-request times
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class WholeRun(SubRecord):
    """Ramp-up and window together."""

    requests: int | None = None
    failures: int | None = None
    rps: float | None = None
    duration_s: float | None = None
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    failures_before_window: dict[str, int] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class GeneratorLag(SubRecord):
    """How late the generator's hub woke (locust_latency.py's sampler), see load.generator_lag."""

    p50: float | None = None
    p99: float | None = None
    limit_ms: float | None = None
    over_limit: int | None = None
    max: float | None = None
    mean: float | None = None
    samples: int | None = None
    interval_ms: float | None = None
    per_process: list[dict[str, Scalar]] = field(default_factory=list)
    series: list[list[float | None]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class GeneratorWorker(SubRecord):
    """One Locust worker process (a `--processes` child here, or `loadgrid worker` anywhere), as it measured
    itself over the window (load.worker_summaries): where it ran, its users and requests, its CPU (of the one
    core a Locust process can use) and lag; validity.worker_bound judges each one."""

    id: str | None = None  # Locust's worker id (host name and a random part), as a file name
    name: str | None = None
    hostname: str | None = None
    container: str | None = None
    pid: int | None = None
    cores: int | None = None
    users: int | None = None
    requests: int | None = None
    failures: int | None = None
    window_start_at: float | None = None
    stopped_at: float | None = None
    cpu_pct_mean: float | None = None  # CPU seconds over the window's wall seconds, of one core
    cpu_pct_max: float | None = None  # the busiest whole second of the window
    lag_p99_ms: float | None = None
    lag_max_ms: float | None = None
    lag_samples: int | None = None
    lag_over_limit: int | None = None
    # Its clock against the master's, measured when the window opened (within half the round trip): its times
    # above are on the master's clock, this offset taken out.
    clock_offset_ms: float | None = None
    round_trip_ms: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class Workers(SubRecord):
    """The master's side of a distributed run (locust_dist.py): workers expected, joined, whose parts came
    back, and the master's window totals against the sum of its workers' own counts."""

    expected: int | None = None
    joined: int | None = None
    reported: int | None = None  # workers whose parts and last statistics arrived before the master quit
    missing: list[str] = field(default_factory=list)
    stop_waited_s: float | None = None
    master_requests: int | None = None
    workers_requests: int | None = None
    tolerance: int | None = None  # |master - sum of workers| allowed, in requests
    reconciled: bool | None = None
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class Generator(SubRecord):
    """The load generator itself: its processes, CPU, and lag; with workers, each worker's."""

    processes: int | None = None
    usable_cores: int | None = None
    cores: int | None = None
    cpu_pct_mean: float | None = None
    cpu_pct_max: float | None = None
    samples: int | None = None
    cpu_series: list[list[float | None]] = field(default_factory=list)
    locust_cpu_warning: bool | None = None
    lag_ms: GeneratorLag | None = None
    cpu_ms_per_request: float | None = None
    self_delay_worst_ms: float | None = None
    # "local" (Locust's processes on this machine: the CPU figures are the whole tree's) or "distributed"
    # (a master here with workers anywhere: the CPU figures are the master's, the workers' are their own).
    mode: str | None = None
    workers: list[GeneratorWorker] = field(default_factory=list)
    distributed: Workers | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.lag_ms = GeneratorLag.of(self.lag_ms)
        self.workers = [GeneratorWorker.of(w) for w in self.workers or [] if w]
        self.distributed = Workers.of(self.distributed)


@dataclass(eq=False)
class OpenLoop(SubRecord):
    """Open-loop runs (load.open_loop_counts): intended vs scheduled vs achieved rate, late and dropped."""

    arrival: str | None = None
    intended_rate: float | None = None
    processes: int | None = None
    scheduled_rate: float | None = None
    achieved_rate: float | None = None
    achieved_from: str | None = None
    scheduled: int | None = None
    sent: int | None = None
    late: int | None = None
    dropped: int | None = None
    late_tolerance_ms: float | None = None
    max_late_ms: float | None = None
    max_in_flight: int | None = None
    window_s: float | None = None
    send_late_ms: dict[str, float | None] = field(default_factory=dict)
    latency_intended_ms: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class Stop(SubRecord):
    """Runs that stop after a number of requests per user; by: "requests" (every user finished) or "time"."""

    requests_per_user: int | None = None
    users: int | None = None
    users_finished: int | None = None
    requests_sent: int | None = None
    by: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class Telemetry(SubRecord):
    """Per container and GPU mean and max over the window (monitor.Telemetry.summary); series in a file."""

    containers: dict[str, dict[str, Scalar]] = field(default_factory=dict)
    gpus: dict[str, dict[str, Scalar]] = field(default_factory=dict)
    gpu_absent: str | None = None
    host: dict[str, Scalar] = field(default_factory=dict)
    host_absent: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class Payload(SubRecord):
    """What each request carried (measure.payload_description)."""

    kind: str | None = None
    source: str | None = None
    url: str | None = None
    send_as: str | None = None
    items: int | None = None
    content_type: str | None = None
    expect: str | dict | None = None  # a word, or the JSON check as a mapping (payload.describe_expect)
    error: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class Quiesce(SubRecord):
    """How loadgrid waited for an idle stack before the run (quiesce.py)."""

    method: str | None = None
    waited_s: float | None = None
    idle: bool | None = None
    detail: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class Readiness(SubRecord):
    """How loadgrid knew the stack size was ready (readiness.py)."""

    method: str | None = None
    ready: bool | None = None
    waited_s: float | None = None
    requests: int | None = None
    median_ms: float | None = None
    detail: str | None = None
    requests_s: float | None = None
    reached: bool | None = None  # a time-out: did any request get an HTTP answer?
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class Bottleneck(SubRecord):
    """What limited the run (bottleneck.diagnose): kind, detail, and what was checked."""

    kind: str | None = None
    detail: str | None = None
    checked: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


# ---- the record -------------------------------------------------------------------------------------------


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
    node: str | None = None  # backend swarm: the node its task ran on (None on Compose: this machine)


@dataclass
class StackReport:
    project: str
    compose_files: list[str]
    replicas_expected: int
    replicas_seen: int = 0
    images: dict[str, str] = field(default_factory=dict)
    replicas: list[ReplicaReport] = field(default_factory=list)


@dataclass
class LoadReport(_Coerced):
    locust_exit: int | None
    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    duration_s: float = 0.0
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    failure_messages: dict[str, int] = field(default_factory=dict)
    # The figures above cover the window (steady state); these say where it was and add the ramp-up back.
    window: Window | None = None
    whole_run: WholeRun | None = None
    generator: Generator | None = None
    open_loop: OpenLoop | None = None  # open-loop runs only
    stop: Stop | None = None  # runs that stop after a number of requests per user
    # latency_ms comes from exact per-request times (0.1% buckets) when recorded; Locust's rounded figures here.
    latency_locust_ms: dict[str, float | None] = field(default_factory=dict)
    # The window in three equal spans of request end time: [{"requests", "p50", "p95", "rps"}] x 3.
    window_thirds: list[dict[str, float | None]] = field(default_factory=list)


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
class RunRecord(_Coerced):
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
    telemetry: Telemetry | None = None  # per container/GPU mean and max; series in files["telemetry"]
    # Open loop: the intended arrival rate (req/s) and its process (constant, poisson); None: closed loop.
    arrival_rate: float | None = None
    arrival: str | None = None
    capacity_probe: bool = False  # a capacity-search probe (see capacity.json)
    requests_per_user: int | None = None  # each user stopped after this many requests (run_time was a cap)
    target: str | None = None  # target mode: the endpoint's URL (variant "target", models 0, no stack)
    payload: Payload | None = None
    quiesce: Quiesce | None = None  # before the run: how loadgrid waited for an idle stack
    # After the scale step before this stack size's runs: how loadgrid knew it was ready. None: not established.
    readiness: Readiness | None = None
    # What limited the run (bottleneck.diagnose). None in records written before it; reports diagnose those
    # from their telemetry (bottleneck.of).
    bottleneck: Bottleneck | None = None
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, **{k: v for k, v in _record_dict(self).items() if k != "schema"}}

    @classmethod
    def from_dict(cls, data: Any, source: str = "record") -> RunRecord:
        """A record from its JSON object, migrated to this schema and checked field by field."""
        if not isinstance(data, dict):
            raise _bad(source, "the record", "a JSON object", data)
        schema = data.get("schema")
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            raise _bad(source, "schema", f"a schema number (1 to {SCHEMA_VERSION})", schema)
        if schema > SCHEMA_VERSION:
            raise UserError(f"{source}: made by a newer loadgrid (schema {schema}): upgrade loadgrid to read it "
                            f"(schema {schema} is not supported by this one, which reads 1 to {SCHEMA_VERSION})",
                            exit_code=1)
        data = migrate(data)
        record = _build(cls, data, source, "")
        _check_shapes(record, source)
        return record


# ---- migrations: update_to_N takes a schema N-1 record's dict to schema N ------------------------------------


def update_to_2(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 -> 2: an absent sub-record was `{}`, now `null`; the keys and their meaning are the same."""
    out = dict(data)
    for key in ("telemetry", "payload", "quiesce", "readiness", "bottleneck"):
        out[key] = out.get(key) or None
    if isinstance(out.get("load"), dict):
        load = dict(out["load"])
        for key in ("window", "whole_run", "generator", "open_loop", "stop"):
            load[key] = load.get(key) or None
        out["load"] = load
    out["schema"] = 2
    return out


MIGRATIONS = {2: update_to_2}


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    while data["schema"] < SCHEMA_VERSION:
        data = MIGRATIONS[data["schema"] + 1](data)
    return data


# ---- checking what a folder holds ------------------------------------------------------------------------


def _bad(source: str, where: str, wanted: str, got: Any) -> UserError:
    shown = repr(got)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return UserError(f"{source}: {where}: expected {wanted}, found {shown}; not a loadgrid run record of this "
                     f"version (remove it or re-run that point)", exit_code=1)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls, globals())
    return _HINTS[cls]


_SUBRECORD_FIELDS: dict[type, dict[str, type]] = {}


def _subrecord_fields(cls: type) -> dict[str, type]:
    """Fields of `cls` whose type is `X | None` with X a SubRecord."""
    if cls not in _SUBRECORD_FIELDS:
        _SUBRECORD_FIELDS[cls] = {name: arm for name, hint in _hints(cls).items()
                                  for arm in typing.get_args(hint) or (hint,)
                                  if isinstance(arm, type) and issubclass(arm, SubRecord)}
    return _SUBRECORD_FIELDS[cls]


def _build(cls: type, data: Any, source: str, where: str) -> Any:
    """An instance of dataclass `cls` from `data`, every field's type checked (`where`: its path)."""
    if not isinstance(data, dict):
        raise _bad(source, where or "the record", "a JSON object", data)
    names = {f.name: f for f in fields(cls)}
    open_ended = issubclass(cls, SubRecord)
    values, extra = {}, {}
    for key, value in data.items():
        if key not in names or key == "extra":
            if not open_ended:
                raise _bad(source, f"{where}{key}", "no such key", value)
            extra[key] = value
            continue
        values[key] = _check(value, _hints(cls)[key], source, f"{where}{key}")
    for name, f in names.items():
        if name not in values and name != "extra" and f.default is MISSING and f.default_factory is MISSING:
            raise UserError(f"{source}: {where}{name}: missing; not a loadgrid run record of this version "
                            f"(remove it or re-run that point)", exit_code=1)
    if open_ended:
        values["extra"] = extra
    return cls(**values)


_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
          type(None): "null"}


def _check(value: Any, hint: Any, source: str, where: str) -> Any:
    """`value` as `hint` says (a dataclass from its dict), or a one-line UserError naming the field."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        for arm in arms:
            try:
                return _check(value, arm, source, where)
            except UserError:
                if len(arms) == 1:
                    raise
        raise _bad(source, where, " or ".join(_describe(a) for a in args), value)
    if origin is list:
        if not isinstance(value, list):
            raise _bad(source, where, _describe(hint), value)
        return [_check(v, args[0], source, f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(source, where, _describe(hint), value)
        return {k: _check(v, args[1], source, f"{where}.{k}") for k, v in value.items()} if args else value
    if hint is dict or hint is list:
        if not isinstance(value, hint):
            raise _bad(source, where, _describe(hint), value)
        return value
    if is_dataclass(hint):
        return _build(hint, value, source, f"{where}.")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is type(None):
        if value is None:
            return None
    elif isinstance(value, hint):
        return value
    raise _bad(source, where, _describe(hint), value)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is list or hint is list:
        return "a list"
    if origin is dict or hint is dict or is_dataclass(hint):
        return "an object"
    return _WORDS.get(hint, str(hint))


# A run's id is `<variant>/<name>` as plan.RunSpec makes it: compose `<m>_<u>_<s>`, open loop `<m>_r<rate>`,
# probes `<m>_cap_r<rate>`, target mode without `<m>_`; repeats after the first add `_r<k>`.
VARIANTS = ("cpu", "gpu", "target")
_NUMBER = r"\d+(?:\.\d+)?(?:e[+-]?\d+)?"
_POINT = rf"(?:(?:cap_)?r{_NUMBER}|\d+_{_NUMBER})"
_RUN_NAME = {"target": re.compile(rf"{_POINT}(?:_r\d+)?"),
             "compose": re.compile(rf"\d+_{_POINT}(?:_r\d+)?")}
# What loadgrid names a run's files: `<name>.html`, `<name>.stats.json`, ... (no folder, no dot-dot).
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _check_shapes(record: RunRecord, source: str) -> None:
    if record.variant not in VARIANTS:
        raise _bad(source, "variant", f"one of {', '.join(VARIANTS)}", record.variant)
    name = record.id.removeprefix(f"{record.variant}/")
    shape = _RUN_NAME["target" if record.variant == "target" else "compose"]
    if name == record.id or not shape.fullmatch(name):
        raise _bad(source, "id", f"'{record.variant}/<run name>' as loadgrid plans it", record.id)
    for key, value in record.files.items():
        if not plain_file_name(value):
            raise _bad(source, f"files.{key}", "a plain file name inside the run's folder", value)


def plain_file_name(name: str) -> bool:
    """A name, not a path: no folder part, no '..', nothing absolute, no NUL or control characters."""
    return bool(_FILE_NAME.fullmatch(name)) and name not in (".", "..") and ".." not in name


# ---- writing and reading -----------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written file under `path`
    (safefile.replace: a random name opened O_EXCL|O_NOFOLLOW, text as UTF-8).

    The file keeps the mode of the file it replaces, else gets the one a plain open() would give it (0666
    less the umask, applied by the kernel): mkstemp's own 0600 hid reports from a web server or a colleague."""
    try:
        found = os.lstat(path)
        mode = stat.S_IMODE(found.st_mode) if stat.S_ISREG(found.st_mode) else None
    except OSError:
        mode = None
    safefile.replace(path, text, mode=mode)


def redacted(data: dict[str, Any]) -> dict[str, Any]:
    """The record's dict with credentials in its URLs masked: host, target, payload url/source, error."""
    out = {**data, "host": redact.url(data.get("host")), "target": redact.url(data.get("target"))}
    if out.get("error"):
        out["error"] = redact.text(out["error"])
    if isinstance(out.get("payload"), dict):
        payload = dict(out["payload"])
        for key in ("url", "source"):
            if isinstance(payload.get(key), str):
                payload[key] = redact.url(payload[key])
        out["payload"] = payload
    return out


def write(record: RunRecord, path: Path) -> None:
    """The record as JSON, credentials masked. One that would not read back is still written (the run is not
    lost) and said loudly: the reader's checks and what loadgrid writes must agree."""
    data = redacted(record.to_dict())
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    try:
        RunRecord.from_dict(json.loads(json.dumps(data)), source=str(path))
    except UserError as exc:
        print(f"loadgrid: warning: a loadgrid bug: the record written does not read back: {exc}", file=sys.stderr,
              flush=True)


def load(path: Path) -> RunRecord:
    """One record, or a one-line UserError naming the file and what is wrong (never a traceback)."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read run record ({exc.strerror or exc})", exit_code=1) from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a loadgrid run record (not UTF-8 text: byte {exc.start}); remove it "
                        f"or re-run that point", exit_code=1) from None
    except (json.JSONDecodeError, RecursionError) as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deep"
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise UserError(f"{path}: not a loadgrid run record (invalid JSON{where}: {message}); remove it "
                        f"or re-run that point", exit_code=1) from None
    return RunRecord.from_dict(data, source=str(path))


# JSON files that sit beside a run's record but are not records (Locust's stats, window, telemetry series).
COMPANION_SUFFIXES = (".stats.json", ".window.json", ".telemetry.json")


def record_paths(output_dir: Path) -> list[Path]:
    """Every run record under `output_dir/<variant>/`: `<m>_<u>_<s>.json`, not its companions."""
    return sorted(p for p in output_dir.glob("*/*.json")
                  if not p.name.endswith(COMPANION_SUFFIXES) and not p.name.startswith(".") and p.is_file())


def finished_points(output_dir: Path, fingerprints: dict[str, str], retry_failed: bool) -> set[str]:
    """Ids of planned points that need no new run: a finished record with the same fingerprint.

    --resume keeps every finished measurement (valid or not, and failed ones); --retry-failed keeps only
    the valid ones, so failed and invalid points run again. Interrupted runs always run again, and so does
    a point whose record does not load (another schema, wrong types, not JSON): it is not trusted as done.
    """
    done = set()
    for path in record_paths(output_dir) if output_dir.is_dir() else []:
        try:
            record = load(path)
        except UserError:
            continue
        if fingerprints.get(record.id) != record.fingerprint or record.status == "interrupted":
            continue
        if retry_failed and not (record.status == "completed" and record.validity.valid):
            continue
        done.add(record.id)
    return done


@dataclass
class Loaded:
    """What a folder held: the records that loaded, and one line for each that did not."""

    records: list[RunRecord]
    problems: list[str]


def load_folder(output_dir: Path) -> Loaded:
    """Every readable record, and a line per unreadable one; a folder with records none of which load is
    bad input (exit 2): there is nothing to report from."""
    if not output_dir.is_dir():
        raise UserError(f"{output_dir}: no such output folder; run the grid first or pass the right folder",
                        exit_code=1)
    records, problems = [], []
    for path in record_paths(output_dir):
        try:
            records.append(load(path))
        except UserError as exc:
            problems.append(str(exc))
    if problems and not records:
        raise UserError(problems[0], exit_code=2,
                        more=[*problems[1:], f"{output_dir}: no readable run record; nothing to report"])
    return Loaded(records, problems)


_skipping = contextvars.ContextVar("skipping_bad_records", default=False)


@contextlib.contextmanager
def skipping_bad_records():
    """Inside: `load_all` skips a record that does not load, with one warning line on stderr, and renders the
    rest (`loadgrid report`, the pages after a run). Outside it a bad record is an error (`compare`)."""
    token = _skipping.set(True)
    try:
        yield
    finally:
        _skipping.reset(token)


def load_all(output_dir: Path) -> list[RunRecord]:
    """The folder's records: a bad one raises its one-line UserError, or inside `skipping_bad_records` is
    skipped with a warning line (a folder where none loads is still an error, exit 2)."""
    if not _skipping.get():
        if not output_dir.is_dir():
            load_folder(output_dir)  # its message
        return [load(p) for p in record_paths(output_dir)]
    found = load_folder(output_dir)
    for line in found.problems:
        print(f"loadgrid: warning: skipped {line}", file=sys.stderr, flush=True)
    return found.records


__all__ = ["SCHEMA_VERSION", "RunRecord", "LoadReport", "StackReport", "ReplicaReport", "Incident", "Validity",
           "Window", "WholeRun", "Generator", "GeneratorLag", "OpenLoop", "Stop", "Telemetry", "Payload",
           "Quiesce", "Readiness", "Bottleneck", "write", "write_atomic", "load", "load_all",
           "load_folder", "finished_points", "record_paths", "update_to_2", "plain_file_name"]
