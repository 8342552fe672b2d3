"""Load and validate config.yaml into a frozen `Config`, before anything is started.

Every problem is a line naming the key and the fix, so a typo never costs a half-built stack. Validation
goes on past a mistake (each key's check runs with a placeholder for what failed before it), and every
mistake found is raised at the end in one `UserError`, one line each. Relative paths are resolved against
the config file's folder. The file must be UTF-8 YAML with each key once at any depth (as Compose demands);
`service` must be a service of the compose files, read here with PyYAML so that --dry-run needs no Docker.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from . import compose_lint, settings
from . import payload as payload_mod
from .errors import UserError, key_of

# The checks shared with the settings table, under the names the rest of the package (and the tests) use.
from .settings import ARRIVALS, VARIANTS, parse_duration, url_problem  # noqa: F401  (re-exported)
from .settings import bad as _bad
from .settings import positive_int as _positive_int
from .settings import positive_list as _positive_list
from .settings import positive_number as _positive_number
from .settings import string as _string
from .settings import string_list as _string_list

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Target mode: an existing endpoint, benchmarked as it is. Its records use this variant and models 1 (the
# endpoint is one unit; there is no replica axis and no replica is seen: stack.replicas_expected is 0).
TARGET_VARIANT = "target"
# The environment variables a config falls back to (the throughput testers' names), from the settings table.
ENDPOINT = settings.BY_KEY["target"].env
PAYLOAD_VAR = settings.BY_KEY["payload"].env


@dataclass(frozen=True)
class CapacitySearch:
    """Per stack size: the highest open-loop arrival rate whose p95 stays under latency_target_ms."""

    start: float = 10.0  # the first rate probed (req/s)
    max: float = 1000.0  # never probe above this
    steps: int = 8  # at most this many probe runs per stack size
    run_time_s: int = 30  # each probe's run time
    factor: float = 2.0  # stepped phase: multiply the rate by this until a probe fails, then bisect


@dataclass(frozen=True)
class Config:
    """A checked config. Each default is the settings table's (loadgrid/settings.py), the one place it is
    written; from_mapping fills every field from the file, the flags and the environment."""

    num_models_list: tuple[int, ...]
    num_users_list: tuple[int, ...]
    spawn_rate_list: tuple[float, ...]
    run_time_s: int
    host: str
    variants: tuple[str, ...] = settings.default("variants")
    compose_files: tuple[Path, ...] = settings.default("compose_files")
    gpu_compose_files: tuple[Path, ...] = settings.default("gpu_compose_files")
    service: str = settings.default("service")
    project: str = settings.default("project")
    backend: str = settings.default("backend")  # compose, or swarm (loadgrid/swarm.py)
    registry: str | None = settings.default("registry")  # swarm with more than one node: images pushed here
    output_dir: Path = settings.default("output_dir")
    # from_mapping: the key, a locustfile.py beside the config, or ours
    locustfile: Path = settings.default("locustfile")
    images_dir: Path = settings.default("images_dir")
    predict_path: str = settings.default("predict_path")
    # Replicas are probed from inside (docker exec) at this path for their device and request count.
    replica_health_path: str = settings.default("replica_health_path")
    replica_port: int = settings.default("replica_port")
    startup_timeout_s: int = settings.default("startup_timeout")
    # The comparison report's capacity: the highest throughput whose p95 stays under this target.
    latency_target_ms: float = settings.default("latency_target_ms")
    # The load to plan for (req/s) and the cost of one replica per variant (any unit): see answer.py.
    expected_rps: float | None = settings.default("expected_rps")
    cost_per_replica: dict[str, float] = field(default_factory=lambda: dict(settings.default("cost_per_replica")))
    # Honest runs: statistics start when every user is spawned, plus this warm-up.
    warmup_s: int = settings.default("warmup")
    repeats: int = settings.default("repeats")
    # Locust processes (one core each at most); 0 = auto: what the cores allow beside the stack.
    locust_processes: int = settings.default("locust_processes")
    # Distributed load: workers started beside the stack, workers joined by hand, and the master's address.
    load_workers: int = settings.default("load_workers")
    expect_workers: int = settings.default("expect_workers")
    worker_wait_s: int = settings.default("worker_wait")
    master_bind: str = settings.default("master_bind")
    master_port: int = settings.default("master_port")
    # A run whose load generator used more than this share of its cores is client-bound, not capacity.
    client_cpu_limit_pct: float = settings.default("client_cpu_limit_pct")
    # GPU variant: GPUs reserved per replica (a number or "all") or explicit device ids (not both), and
    # whether a machine without a usable GPU fails the grid instead of skipping the gpu variant.
    gpu_count: int | str = settings.default("gpu_count")
    gpu_device_ids: tuple[str, ...] = settings.default("gpu_device_ids")
    gpu_required: bool = settings.default("gpu_required")
    # Target mode: benchmark this URL (no compose stack, no replica axis); None: the compose grid.
    target_url: str | None = settings.default("target")
    # What each request carries: a folder of images, an image, JSON documents (.json, .jsonl); a path, or
    # an http(s) URL fetched once before the runs. Resolved from payload, images_dir or $PAYLOAD.
    payload: str = settings.default("payload")
    payload_url: str | None = None  # where payload was fetched from, once the orchestrator has fetched it
    # images: raw (JPEG body, application/octet-stream) or multipart (field `file`)
    send_as: str = settings.default("send_as")
    # Served means: prediction (a valid prediction body), status (any 2xx), or a JSON check's canonical text
    # ({"status": [200], "json": {"success": true}}, see payload.parse_expect); "": by payload kind.
    expect: str = settings.default("expect")
    # > 0: each closed-loop user stops after this many requests (run_time: a cap)
    requests_per_user: int = settings.default("requests_per_user")
    # open loop: target arrival rates (req/s), one run each
    arrival_rate_list: tuple[float, ...] = settings.default("arrival_rate_list")
    arrival: str = settings.default("arrival")  # open-loop arrivals: constant (even gaps) or poisson (exponential gaps)
    # open loop, per Locust process; 0 = rate x 10 s request timeout (10..1000)
    max_in_flight: int = settings.default("max_in_flight")
    capacity_search: CapacitySearch | None = settings.default("capacity_search")
    source: Path = field(default=Path("config.yaml"), compare=False)
    # Said once before the runs (compose lint: host not published, deploy.replicas overridden); not errors.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def target_mode(self) -> bool:
        return self.target_url is not None

    @property
    def payload_source(self) -> str:
        return self.payload or str(self.images_dir)

    def compose_files_for(self, variant: str) -> tuple[Path, ...]:
        return self.compose_files + (self.gpu_compose_files if variant == "gpu" else ())


def _existing_files(raw: dict, key: str, base: Path) -> tuple[Path, ...]:
    paths = tuple((base / p).resolve() for p in _string_list(raw, key))
    for path in paths:
        if not path.is_file():
            raise UserError(f"config: {key}: file {path} does not exist; fix the path (relative to {base})")
    return paths


def _gpu_settings(raw: dict) -> dict:
    out: dict = {}
    if "gpu_count" in raw and "gpu_device_ids" in raw:
        raise UserError("config: gpu_count and gpu_device_ids: give one of them (Compose takes a count or device "
                        "ids, not both)")
    if "gpu_count" in raw:
        value = raw["gpu_count"]
        if value != "all" and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise _bad("gpu_count", value, "all or a whole number of GPUs per replica above zero")
        out["gpu_count"] = value
    if "gpu_device_ids" in raw:
        value = raw["gpu_device_ids"]
        ids = [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value
        if not isinstance(ids, list) or not ids or not all(isinstance(i, (str, int)) and not isinstance(i, bool)
                                                           for i in ids):
            raise _bad("gpu_device_ids", value, "a list of GPU indexes or UUIDs, e.g. [0] or ['GPU-3b2f...']")
        out["gpu_device_ids"] = tuple(str(i) for i in ids)
    if "gpu_required" in raw:
        out["gpu_required"] = settings.check("gpu_required")(raw, "gpu_required")
    return out


# Keys that describe the compose stack: meaningless with target (an endpoint that is already deployed).
COMPOSE_KEYS = settings.COMPOSE_KEYS
# Keys that set the load axis: a CLI flag for one of them replaces all of them.
LOAD_AXIS_KEYS = settings.LOAD_AXIS_KEYS
DEFAULT_REQUEST_CAP_S = 600  # run_time when a run stops after requests_per_user and no run_time is set


# --- reading YAML ------------------------------------------------------------------------------------------

_MERGE_TAG = "tag:yaml.org,2002:merge"
_KEY_ON_LINE = re.compile(r"^\s*(?:-\s+)?([^\s:#'\"][^:#]*?)\s*:(?:\s|$)")


class DuplicateKeys(yaml.YAMLError):
    """Keys given twice: one message each; `data` is the document as YAML would read it (the last wins)."""

    def __init__(self, messages: list[str], data: Any):
        super().__init__(messages[0])
        self.messages = messages
        self.data = data


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping key given twice at any depth (YAML would keep the last).

    The node tree is checked before it is built into Python objects, so every duplicate is named with its
    dotted path and both lines. Keys brought in by a merge (`<<: *anchor`) may be overridden, as YAML means.
    """

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        messages = [f"config: {where}: given twice (lines {first} and {second}); keep one (YAML would silently "
                    f"take the last)" for where, first, second in _duplicate_keys(node, "", set())]
        data = self.construct_document(node)
        if messages:
            raise DuplicateKeys(messages, data)
        return data


def _duplicate_keys(node: yaml.Node, path: str, seen_nodes: set[int]):
    """(dotted key, first line, second line) for each key repeated in a mapping under `node`."""
    if id(node) in seen_nodes:  # an alias: already walked where its anchor is
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            here = f"{path}.{name}" if path else str(name)
            if name is not None:
                line = key_node.start_mark.line + 1
                ident = (key_node.tag, name)
                if ident in lines:
                    yield here, lines[ident], line
                else:
                    lines[ident] = line
            yield from _duplicate_keys(value_node, here, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{path}[{index}]", seen_nodes)


def _read_text(path: Path, prefix: str = "config: ") -> str:
    """The file's text; a file that is not UTF-8 is one line naming the line (and the key on it)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{prefix}cannot read {path} ({exc.strerror}); fix the path or its permissions") \
            from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_no = data[:exc.start].count(b"\n") + 1
        line = data.split(b"\n")[line_no - 1].decode("utf-8", errors="replace")
        key = _KEY_ON_LINE.match(line)
        on = f", key {key.group(1)}" if key else ""
        raise UserError(f"{prefix}{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at line "
                        f"{line_no}{on}); save the file as UTF-8") from None


def read_yaml(path: Path) -> tuple[Any, list[str]]:
    """The config file's YAML, and a message per key given twice (checked on, so all mistakes are listed).

    A file that is not UTF-8 or not valid YAML is a `UserError`.
    """
    text = _read_text(path)
    try:
        return yaml.load(text, Loader=StrictLoader), []
    except DuplicateKeys as exc:
        return exc.data, exc.messages
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"config: {path} is not valid YAML{where}; fix the syntax") from None


def load(path: str | Path, overrides: dict | None = None, allow_missing: bool = False,
         environ: dict | None = None) -> Config:
    """Read the config file, apply CLI `overrides` (see `apply_overrides`) and validate it all.

    With `allow_missing` (no --config given), a missing file is an empty config based in the current folder:
    enough for target mode, where every other key has a default or comes from the command line.
    """
    path = Path(path)
    environ = os.environ if environ is None else environ
    if not path.is_file():
        if not (allow_missing and ((overrides or {}).get("target") is not None or environ.get(ENDPOINT))):
            raise UserError(f"config file {path} does not exist; pass --config PATH to a YAML file")
        raw: Any = {}
        duplicates: list[str] = []
        base = Path.cwd()
    else:
        raw, duplicates = read_yaml(path)
        raw = raw if raw is not None else {}
        base = path.resolve().parent
    if overrides or (allow_missing and environ.get(ENDPOINT)):
        raw = apply_overrides(raw, overrides or {}, endpoint_default=allow_missing, environ=environ)
    try:
        config = from_mapping(raw, base=base, source=path, environ=environ)
    except UserError as exc:
        raise UserError.of([*duplicates, *exc.items]) from None
    if duplicates:
        raise UserError.of(duplicates)
    return config


def apply_overrides(raw: Any, overrides: dict, endpoint_default: bool = False, environ: dict | None = None) -> Any:
    """Config keys set on the command line win over the file's.

    A target (`--target URL`, or $ENDPOINT when no --config was given) drops the file's compose keys; a load
    axis flag (--users, --threads, --arrival-rate) drops the file's other load axes; --payload drops images_dir.
    """
    if not isinstance(raw, dict):
        return raw
    environ = os.environ if environ is None else environ
    out = dict(raw)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "target" not in overrides and endpoint_default and environ.get(ENDPOINT):
        overrides["target"] = environ[ENDPOINT]
    if "target" in overrides:
        for key in COMPOSE_KEYS:
            out.pop(key, None)
    if any(k in overrides for k in LOAD_AXIS_KEYS):
        for key in LOAD_AXIS_KEYS:
            out.pop(key, None)
        if "processes" in overrides or "threads" in overrides:
            out.pop("locust_processes", None)
    if "payload" in overrides:
        out.pop("images_dir", None)
    if "processes" in overrides:
        out.pop("locust_processes", None)
    out.update(overrides)
    return out


class Collector:
    """Gathers every key's `UserError`, so one attempt lists all the mistakes of a config.

    `take(check, ...)` runs one key's check and returns its value, or `default` (a placeholder the later
    checks can live with) when it raised; `raise_all` raises every message gathered, one line each.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.keys: dict[str, str | None] = {}  # message -> the key it is about (UserError.keys)

    def add(self, message: str, key: str | None = None) -> None:
        self.messages.append(message)
        self.keys.setdefault(message, key or key_of(message))

    def take(self, check: Callable[..., Any], *args: Any, default: Any = None, **kwargs: Any) -> Any:
        try:
            return check(*args, **kwargs)
        except UserError as exc:
            for message, key in exc.items:
                self.add(message, key)
            return default

    def setting(self, raw: dict, key: str, default: Any = None) -> Any:
        """raw[key] checked by its check in the settings table; its default (or `default`) when absent or
        wrong."""
        fallback = settings.default(key) if default is None else default
        return self.option(raw, key, settings.check(key), fallback)

    def option(self, raw: dict, key: str, check: Callable[[dict, str], Any], default: Any) -> Any:
        """raw[key] checked by `check(raw, key)`, or `default` when the key is absent or wrong."""
        return self.take(check, raw, key, default=default) if key in raw else default

    def raise_all(self, keys: list | None = None) -> None:
        """Raise every message gathered; with `keys` (the file's, in order), in the order of their keys."""
        if self.messages:
            ordered = _in_key_order(self.messages, keys) if keys else self.messages
            raise UserError.of([(m, self.keys.get(m)) for m in ordered])


_MESSAGE_KEY = re.compile(r"^config: (?:unknown key '([^']+)'|missing key |([A-Za-z_]\w*)[.: ])")


def _in_key_order(messages: list[str], keys: list) -> list[str]:
    """Messages sorted by where their key is in the file (stable; missing keys and the rest last)."""
    where = {str(k): i for i, k in enumerate(keys)}

    def rank(message: str) -> int:
        match = _MESSAGE_KEY.match(message)
        key = (match.group(1) or match.group(2)) if match else None
        return where.get(key, len(where)) if key else len(where)

    return sorted(messages, key=rank)


_BAD = object()  # the placeholder of a value whose check failed, where later checks must know it failed


def from_mapping(raw: Any, base: Path, source: Path = Path("config.yaml"), environ: dict | None = None) -> Config:
    environ = os.environ if environ is None else environ
    if not isinstance(raw, dict):
        raise UserError("config: the file must be a mapping of keys such as num_models_list, run_time, host")
    errors = Collector()
    known = settings.KEYS
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(known)}"
            errors.add(f"config: unknown key {key!r}{hint}")
    wants_target = "target" in raw or ("num_models_list" not in raw and bool(environ.get(ENDPOINT)))
    target = errors.take(_target, raw, environ, default=("http://invalid", "/", "") if wants_target else None)
    if target is not None:
        for key in COMPOSE_KEYS:
            if key in raw:
                why = " (the target URL names the host and path)" if key in ("host", "predict_path") else ""
                errors.add(f"config: {key}: not used with target, which has no compose stack{why}; remove it")
    else:
        for key in ("num_models_list", "host"):
            if key not in raw:
                errors.add(f"config: missing key {key}; add it (see config.yaml in the project for an example)")
    load_keys = _load_settings(raw, base, environ, errors)

    variants = errors.setting(raw, "variants", _BAD) if "variants" in raw else settings.default("variants")
    before_files = len(errors.messages)
    compose_files: tuple[Path, ...] = ()
    if target is None:
        compose_files = errors.take(
            _existing_files, raw, "compose_files", base, default=()
        ) if "compose_files" in raw else errors.take(_default_file, base, "docker-compose.yml", "compose_files",
                                                     default=())
    gpu_files: tuple[Path, ...] = ()
    if target is not None:
        variants = (TARGET_VARIANT,)
    elif variants is not _BAD and "gpu" in variants:
        gpu_files = errors.take(
            _existing_files, raw, "gpu_compose_files", base, default=()
        ) if "gpu_compose_files" in raw else errors.take(_default_file, base, "docker-compose.gpu.yml",
                                                         "gpu_compose_files", default=())
    elif "gpu_compose_files" in raw:
        gpu_files = errors.take(lambda: tuple((base / p).resolve() for p in _string_list(raw, "gpu_compose_files")),
                                default=())
    files_ok = len(errors.messages) == before_files

    locustfile = errors.take(_locustfile, raw, base, default=PACKAGED_LOCUSTFILE)
    images_dir = errors.setting(raw, "images_dir")
    project = errors.setting(raw, "project")
    service = errors.setting(raw, "service", _BAD) if "service" in raw else settings.default("service")
    warnings: list[str] = []
    if target is None and files_ok and variants is not _BAD and service is not _BAD:
        for variant in sorted(variants, key=VARIANTS.index):  # cpu's files first: gpu's add to them
            if not errors.take(check_service, service, compose_files, gpu_files if variant == "gpu" else (),
                               variant if len(variants) > 1 else "", default=False):
                break
            host = raw.get("host") if isinstance(raw.get("host"), str) else None
            found = lint_compose(compose_files + (gpu_files if variant == "gpu" else ()), service, host, variant,
                                 environ)
            for line in found.errors:
                if line not in errors.messages:
                    errors.add(line)
            warnings += [line for line in found.warnings if line not in warnings]
    warmup_s = errors.take(settings.check("warmup"), raw, "warmup", default=None) if "warmup" in raw \
        else settings.default("warmup")
    if warmup_s:
        errors.take(_check_warmup, raw, warmup_s, load_keys)

    fields = dict(
        # Missing in compose mode: said above ("missing key"); (1,) is the placeholder.
        num_models_list=errors.setting(raw, "num_models_list", (1,)) if target is None else (1,),
        host=errors.take(settings.check("host"), raw, "host", default="") if target is None and "host" in raw
        else (target[0] if target is not None else ""),
        predict_path=errors.setting(raw, "predict_path") if target is None else target[1],
        output_dir=base / errors.setting(raw, "output_dir"),
        backend=errors.setting(raw, "backend"),
        registry=errors.setting(raw, "registry"),
        replica_health_path=errors.setting(raw, "replica_health_path"),
        replica_port=errors.setting(raw, "replica_port"),
        startup_timeout_s=errors.setting(raw, "startup_timeout"),
        latency_target_ms=errors.setting(raw, "latency_target_ms"),
        expected_rps=errors.setting(raw, "expected_rps"),
        cost_per_replica=errors.take(_cost_per_replica, raw, variants, default={})
        if "cost_per_replica" in raw and target is None else {},
        repeats=errors.setting(raw, "repeats"),
        client_cpu_limit_pct=errors.setting(raw, "client_cpu_limit_pct"),
        **_worker_settings(raw, errors, target is not None),
        **errors.take(_gpu_settings, raw, default={}),
    )
    errors.raise_all(keys=list(raw))
    return Config(
        num_users_list=load_keys.pop("num_users_list"),
        spawn_rate_list=load_keys.pop("spawn_rate_list"),
        run_time_s=load_keys.pop("run_time_s"),
        variants=variants,
        compose_files=compose_files,
        gpu_compose_files=gpu_files,
        service=service,
        project=project,
        locustfile=locustfile.resolve(),
        images_dir=(base / images_dir).resolve(),
        warmup_s=warmup_s,
        target_url=target[2] if target is not None else None,
        source=source,
        warnings=tuple(warnings),
        **fields,
        **load_keys,
    )


def _worker_settings(raw: dict, errors: Collector, target_mode: bool) -> dict:
    """load_workers, expect_workers and the master's address; with workers, Locust runs no processes here."""
    out = {key: errors.setting(raw, key) for key in ("load_workers", "expect_workers", "master_bind", "master_port")}
    out["worker_wait_s"] = errors.setting(raw, "worker_wait")
    if target_mode and raw.get("load_workers"):
        errors.add("config: load_workers: needs a compose stack to start them beside; in target mode start workers "
                   "by hand (`loadgrid worker --master HOST:PORT`) and set expect_workers")
    if raw.get("load_workers") or raw.get("expect_workers"):
        for key in ("locust_processes", "processes", "threads"):
            if key in raw:
                errors.add(f"config: {key}: not used with load_workers/expect_workers (each worker is one Locust "
                           "process and the master runs none); remove it")
    return out


# The default user: shipped in the package, so a config anywhere finds it. The project's root locustfile.py
# only re-exports it (kept for `locust -f locustfile.py`), so it does not count as a config's own file.
PACKAGED_LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
_ROOT_SHIM = Path(__file__).resolve().parent.parent / "locustfile.py"


def _cost_per_replica(raw: dict, variants: Any) -> dict[str, float]:
    """{variant: cost of one replica} (any unit, 0 or more), for variants that are run."""
    value = raw["cost_per_replica"]
    if not isinstance(value, dict) or not value:
        raise _bad("cost_per_replica", value, "a mapping of variant to the cost of one replica, e.g. "
                                              "{cpu: 0.10, gpu: 1.20}")
    run = variants if isinstance(variants, tuple) else VARIANTS
    out = {}
    for key, cost in value.items():
        if key not in run:
            raise UserError(f"config: cost_per_replica: {key!r} is not a variant that is run; use one of "
                            f"{', '.join(run)}")
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or cost < 0 or cost != cost:
            raise _bad(f"cost_per_replica.{key}", cost, "a cost of 0 or more (any unit), e.g. 0.10")
        out[str(key)] = float(cost)
    return out


def _locustfile(raw: dict, base: Path) -> Path:
    """The `locustfile` key (relative to the config's folder); else a locustfile.py beside the config; else the
    packaged default."""
    if "locustfile" in raw:
        locustfile = base / _string(raw, "locustfile")
        if not locustfile.is_file():
            raise UserError(f"config: locustfile: file {locustfile} does not exist; fix the path (relative to "
                            f"{base}), or remove the key to use loadgrid's own")
        return locustfile
    beside = base / "locustfile.py"
    if beside.is_file() and beside.resolve() != _ROOT_SHIM:
        return beside
    return PACKAGED_LOCUSTFILE


def _check_warmup(raw: dict, warmup_s: int, load_keys: dict) -> None:
    """Warm-up ends before the run does, in every run and probe: else no request is ever measured."""
    run_time_s, search = load_keys["run_time_s"], load_keys["capacity_search"]
    has_grid = bool(load_keys["num_users_list"] or load_keys["arrival_rate_list"])
    limits = []
    if run_time_s is not None and (has_grid or search is None):
        limits.append(("run_time", run_time_s))
    if search is not None and not (limits and search.run_time_s == run_time_s):
        limits.append(("capacity_search.run_time" if isinstance(raw.get("capacity_search"), dict)
                       and "run_time" in raw["capacity_search"] else "run_time", search.run_time_s))
    for key, seconds in limits:
        if seconds is not None and warmup_s >= seconds:
            raise UserError(f"config: warmup: {warmup_s}s is not shorter than {key} ({seconds}s), so no request "
                            f"would be measured; shorten warmup or lengthen {key}")


# --- compose files: their services, read without Docker ----------------------------------------------------

class _ComposeLoader(yaml.SafeLoader):
    """Compose YAML: Compose's own tags (!reset, !override) are read as the value they tag."""


def _compose_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_ComposeLoader.add_multi_constructor("!", _compose_tag)


def compose_services(path: Path, key: str, seen: frozenset[Path] = frozenset()) -> set[str] | None:
    """The `services:` keys of a compose file and of the local files it includes; None when it includes
    something that cannot be read here (a remote or interpolated path): then Compose alone can tell."""
    prefix = f"config: {key}: "
    try:
        doc = yaml.load(_read_text(path, prefix), Loader=_ComposeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{prefix}{path} is not valid YAML{where}; fix the file") from None
    if doc is None:
        return set()
    if not isinstance(doc, dict):
        raise UserError(f"{prefix}{path} is not a compose file (a mapping with services:); fix the path")
    services = doc.get("services") or {}
    if not isinstance(services, dict):
        raise UserError(f"{prefix}{path}: services is not a mapping of service names; fix the file")
    found = {str(name) for name in services}
    includes = doc.get("include") or []
    for item in includes if isinstance(includes, list) else [includes]:
        paths = item.get("path") if isinstance(item, dict) else item
        for name in paths if isinstance(paths, list) else [paths]:
            if not isinstance(name, str) or "$" in name or "://" in name or name.startswith("git@"):
                return None
            included = (path.parent / name).resolve()
            if included in seen or not included.is_file():
                return None  # a cycle or a missing file: Compose's own message says it better
            more = compose_services(included, key, seen | {path})
            if more is None:
                return None
            found |= more
    return found


def check_service(service: str, compose_files: tuple[Path, ...], gpu_files: tuple[Path, ...] = (),
                  variant: str = "") -> bool:
    """`service` must be a service of the variant's compose files (the union of their services)."""
    found: set[str] = set()
    for path, key in [(p, "compose_files") for p in compose_files] + [(p, "gpu_compose_files") for p in gpu_files]:
        services = compose_services(path, key)
        if services is None:
            return True
        found |= services
    if service in found:
        return True
    names = ", ".join(f.name for f in compose_files + gpu_files)
    which = f", the {variant} variant's files" if variant else ""
    close = difflib.get_close_matches(service, sorted(found), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise UserError(f"config: service: {service!r} is not a service of {names} (services: "
                    f"{', '.join(sorted(found)) or 'none'}{which}); set service to the one to scale{hint}")


def lint_compose(files: tuple[Path, ...], service: str, host: str | None, variant: str,
                 environ=None) -> compose_lint.Lint:
    """The compose lint on the files as written (no Docker), for one variant; nothing when a file includes
    others (then `docker compose config`, before building, lints what Compose resolved)."""
    docs = []
    for path in files:
        doc = yaml.load(_read_text(path), Loader=_ComposeLoader)  # valid: check_service has read it
        if isinstance(doc, dict) and doc.get("include"):
            return compose_lint.Lint()
        docs.append(doc)
    env = compose_lint.loadgrid_variables(host or "", variant)
    services = compose_lint.read_model(docs, files[0].parent, env, environ)
    return compose_lint.lint(services, service, host, ", ".join(p.name for p in files))


# --- target, payload and load settings ----------------------------------------------------------------------

def _target(raw: dict, environ) -> tuple[str, str, str] | None:
    """(host, path, url) of the endpoint in target mode, else None.

    Target mode: `target` is set (a URL, or {url: URL}; a missing url falls back to $ENDPOINT), or the config
    has no num_models_list and $ENDPOINT is set.
    """
    if "target" not in raw:
        if "num_models_list" in raw or not environ.get(ENDPOINT):
            return None
        value: Any = environ[ENDPOINT]
        key = "ENDPOINT"
    else:
        value, key = raw["target"], "target"
        if isinstance(value, dict):
            extra = sorted(set(value) - {"url"})
            if extra:
                raise UserError(f"config: target: unknown key {extra[0]!r}; target takes url")
            value, key = value.get("url"), "target.url"
        if value is None and environ.get(ENDPOINT):
            value, key = environ[ENDPOINT], "ENDPOINT"
    expected = "an http(s) URL such as http://127.0.0.1:9000/predict"
    if not isinstance(value, str) or not value.strip():
        raise _bad(key, value, expected + (" (or set ENDPOINT)" if key != "ENDPOINT" else ""))
    url = value.strip()
    problem = url_problem(url)
    if problem:
        raise _bad(key, value, f"{expected} ({problem})")
    parsed = urlparse(url)
    path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    return f"{parsed.scheme}://{parsed.netloc}", path, url


def _payload(raw: dict, base: Path, environ, send_as: str) -> str:
    """The payload's source, checked: an http(s) URL (fetched before the runs), or a local file or folder."""
    if "payload" in raw and "images_dir" in raw:
        raise UserError("config: images_dir: set payload or images_dir, not both (payload takes a folder too)")
    if "payload" in raw:
        key, value, where = "payload", _string(raw, "payload"), base
    elif "images_dir" in raw:
        key, value, where = "images_dir", _string(raw, "images_dir"), base
    elif environ.get(PAYLOAD_VAR):
        key, value, where = "PAYLOAD", environ[PAYLOAD_VAR].strip(), Path.cwd()
    else:
        key, value, where = "images_dir", "images", base
        if not (base / value).is_dir():
            raise UserError(f"config: payload: none given and {base / value} does not exist; set payload (or the "
                            f"PAYLOAD variable) to an image, a folder of images or a JSON file")
    if payload_mod.is_url(value):
        problem = url_problem(value)
        if problem:
            raise _bad(key, value, f"an http(s) URL with a host, or a path ({problem})")
        return value
    path = (where / value).resolve()
    if not path.exists():
        hint = "point payload at an image, a folder of images or a JSON file" if key != "images_dir" \
            else "point it at a folder of .jpg/.jpeg/.png images (or set payload)"
        raise UserError(f"config: {key}: {path} does not exist; {hint} (relative to {where})")
    try:
        loaded = payload_mod.load(path, send_as)
    except payload_mod.PayloadError as exc:
        raise UserError(f"config: {key}: {exc}") from None
    if loaded.kind == "json" and "send_as" in raw and raw["send_as"] == "multipart":
        raise UserError("config: send_as: multipart is for images; JSON documents are sent as application/json")
    return str(path)


def _load_settings(raw: dict, base: Path, environ, errors: Collector | None = None) -> dict:
    """The load axis and how each run is paced and stopped: the fields shared by both modes.

    Mistakes go to `errors` (raised at once without it); what failed is a placeholder: run_time_s None.
    """
    own = errors is None
    errors = Collector() if errors is None else errors
    if "num_users_list" in raw and "threads" in raw:
        errors.add("config: threads: set either num_users_list or processes x threads, not both")
    if "processes" in raw and "locust_processes" in raw:
        errors.add("config: processes: the same setting as locust_processes; set only one of them")
    if not any(k in raw for k in (*LOAD_AXIS_KEYS, "capacity_search")):
        errors.add("config: missing key num_users_list; add it (or processes x threads, arrival_rate_list "
                   "or capacity_search)")
    processes = 0
    if "processes" in raw:
        processes = errors.take(_positive_int, raw, "processes", default=1)
    elif "locust_processes" in raw:
        processes = errors.setting(raw, "locust_processes")
    users: tuple[int, ...] = ()
    if "num_users_list" in raw:
        users = errors.setting(raw, "num_users_list")
    elif "threads" in raw:
        threads = raw["threads"] if isinstance(raw["threads"], list) else [raw["threads"]]
        per_process = errors.take(_positive_list, {"threads": threads}, "threads", int, default=())
        processes = processes or 1
        users = tuple(processes * t for t in per_process)
    spawn = errors.take(_positive_list, raw, "spawn_rate_list", float, default=(1.0,)) if "spawn_rate_list" in raw \
        else ((float(max(users)),) if users else ())
    rates = errors.setting(raw, "arrival_rate_list")
    per_user = errors.setting(raw, "requests_per_user")
    if per_user and not users and not any(k in raw for k in ("num_users_list", "threads")):
        errors.add("config: requests_per_user: applies to closed-loop users (num_users_list or processes x "
                   "threads); open-loop runs last run_time")
    run_time_s: int | None = None
    if "run_time" in raw:
        run_time_s = errors.take(parse_duration, raw["run_time"], default=None)
    elif per_user and not rates and "capacity_search" not in raw:
        run_time_s = DEFAULT_REQUEST_CAP_S
    else:
        errors.add("config: missing key run_time; add it (e.g. run_time: 1m)"
                   + ("" if not per_user else "; open-loop runs and capacity search need it"))
    send_as = errors.setting(raw, "send_as")
    out = {
        "num_users_list": users, "spawn_rate_list": spawn, "run_time_s": run_time_s, "locust_processes": processes,
        "payload": errors.take(_payload, raw, base, environ, send_as, default=""), "send_as": send_as,
        "expect": errors.setting(raw, "expect"),
        "requests_per_user": per_user, "arrival_rate_list": rates,
        "arrival": errors.setting(raw, "arrival"),
        "max_in_flight": errors.setting(raw, "max_in_flight"),
        "capacity_search": errors.take(_capacity_search, raw, run_time_s, default=None)
        if "capacity_search" in raw else None,
    }
    if own:
        errors.raise_all()
    return out


def _capacity_search(raw: dict, run_time_s: int | None) -> CapacitySearch:
    value = raw["capacity_search"]
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise _bad("capacity_search", value, "a mapping such as {start: 10, max: 500, steps: 8}")
    errors = Collector()
    known = ("start", "max", "steps", "run_time", "factor")
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            errors.add(f"config: capacity_search: unknown key {key!r}; {hint}known: {', '.join(known)}")
    sub = {f"capacity_search.{k}": v for k, v in value.items()}
    start = errors.option(sub, "capacity_search.start", _positive_number, 10.0)
    top = errors.option(sub, "capacity_search.max", _positive_number, None)
    top = max(1000.0, start) if top is None else top
    if top < start:
        errors.add(str(_bad("capacity_search.max", value["max"], f"a rate at or above start ({start:g})")))
    steps = errors.option(sub, "capacity_search.steps", _positive_int, 8)
    if not 2 <= steps <= 50:
        errors.add(str(_bad("capacity_search.steps", steps, "a whole number of probe runs from 2 to 50")))
    factor = errors.option(sub, "capacity_search.factor", _positive_number, 2.0)
    if factor <= 1:
        errors.add(str(_bad("capacity_search.factor", value["factor"], "a number above 1, e.g. 2")))
    probe_s = errors.take(parse_duration, value["run_time"], "capacity_search.run_time", default=run_time_s) \
        if "run_time" in value else run_time_s
    errors.raise_all()
    return CapacitySearch(start=start, max=top, steps=steps, run_time_s=probe_s, factor=factor)


def _default_file(base: Path, name: str, key: str) -> tuple[Path, ...]:
    path = (base / name).resolve()
    if not path.is_file():
        raise UserError(f"config: {key}: default file {path} does not exist; set {key} to your compose file(s)")
    return (path,)
