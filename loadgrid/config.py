"""Load and validate config.yaml into a frozen `Config`, before anything is started.

Every problem is raised as a `UserError` whose one line names the key and the fix, so a typo never
costs a half-built stack. Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from .errors import UserError

VARIANTS = ("cpu", "gpu")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Config:
    num_models_list: tuple[int, ...]
    num_users_list: tuple[int, ...]
    spawn_rate_list: tuple[float, ...]
    run_time_s: int
    host: str
    variants: tuple[str, ...] = ("cpu",)
    compose_files: tuple[Path, ...] = ()
    gpu_compose_files: tuple[Path, ...] = ()
    service: str = "model"
    project: str = "loadgrid"
    output_dir: Path = Path("reports")
    locustfile: Path = Path("locustfile.py")
    images_dir: Path = Path("images")
    predict_path: str = "/predict"
    # Replicas are probed from inside (docker exec) at this path for their device and request count.
    replica_health_path: str = "/health"
    replica_port: int = 8000
    startup_timeout_s: int = 300
    # The comparison report's capacity: the highest throughput whose p95 stays under this target.
    latency_target_ms: float = 500.0
    # Honest runs: statistics start when every user is spawned, plus this warm-up.
    warmup_s: int = 0
    repeats: int = 1
    # Locust processes (one core each at most); 0 = auto: what the cores allow beside the stack.
    locust_processes: int = 0
    # A run whose load generator used more than this share of its cores is client-bound, not capacity.
    client_cpu_limit_pct: float = 60.0
    source: Path = field(default=Path("config.yaml"), compare=False)

    def compose_files_for(self, variant: str) -> tuple[Path, ...]:
        return self.compose_files + (self.gpu_compose_files if variant == "gpu" else ())


_DURATION_PART = re.compile(r"(\d+)\s*(h|m|s)")


def parse_duration(value: Any, key: str = "run_time", allow_zero: bool = False) -> int:
    """'90', 90, '30s', '1m', '1h30m' -> whole seconds (> 0, or >= 0 with allow_zero)."""
    if isinstance(value, bool):
        raise _bad(key, value, "a duration such as 30s, 1m or 1h30m")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise _bad(key, value, "a duration such as 30s, 1m or 1h30m")
        scale = {"h": 3600, "m": 60, "s": 1}
        seconds = sum(int(n) * scale[u] for n, u in parts)
    else:
        raise _bad(key, value, "a duration such as 30s, 1m or 1h30m")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise _bad(key, value, "a duration above zero, such as 30s")
    return seconds


def _bad(key: str, value: Any, expected: str) -> UserError:
    return UserError(f"config: {key}: got {value!r}; expected {expected}")


def _positive_list(raw: dict, key: str, kind: type) -> tuple:
    value = raw[key]
    what = "whole numbers" if kind is int else "numbers"
    expected = f"a non-empty list of positive {what}, e.g. [1, 2]"
    if not isinstance(value, list):
        # A lone number is the commonest slip: say how to write it as a list.
        raise _bad(key, value, expected + (f" (write [{value}])" if isinstance(value, (int, float)) else ""))
    if not value:
        raise _bad(key, value, expected)
    out = []
    for item in value:
        ok_type = isinstance(item, int) if kind is int else isinstance(item, (int, float))
        if isinstance(item, bool) or not ok_type:
            raise _bad(key, value, expected + f"; {item!r} is not a {'whole ' if kind is int else ''}number")
        if item <= 0:
            raise _bad(key, value, expected + f"; {item!r} is not above zero")
        out.append(kind(item))
    dupes = sorted({x for x in out if out.count(x) > 1})
    if dupes:
        raise _bad(key, value, expected + f" with no repeats; {dupes[0]!r} is listed twice")
    return tuple(out)


def _string(raw: dict, key: str) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        raise _bad(key, value, "a non-empty string")
    return value.strip()


def _string_list(raw: dict, key: str) -> tuple[str, ...]:
    value = raw[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _bad(key, value, "a list of strings")
    return tuple(value)


def _existing_files(raw: dict, key: str, base: Path) -> tuple[Path, ...]:
    paths = tuple((base / p).resolve() for p in _string_list(raw, key))
    for path in paths:
        if not path.is_file():
            raise UserError(f"config: {key}: file {path} does not exist; fix the path (relative to {base})")
    return paths


def _positive_int(raw: dict, key: str) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(key, value, "a whole number above zero")
    return value


def _positive_number(raw: dict, key: str) -> float:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise _bad(key, value, "a number above zero")
    return float(value)


def _processes(raw: dict, key: str) -> int:
    value = raw[key]
    if value == "auto":
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(key, value, "auto or a whole number of processes above zero")
    return value


def _percent(raw: dict, key: str) -> float:
    value = _positive_number(raw, key)
    if value > 100:
        raise _bad(key, value, "a percentage between 0 and 100")
    return value


def _host(raw: dict, key: str) -> str:
    value = _string(raw, key)
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise _bad(key, value, "an http(s) URL such as http://localhost:8080")
    return value.rstrip("/")


def _url_path(raw: dict, key: str) -> str:
    value = _string(raw, key)
    if not value.startswith("/"):
        raise _bad(key, value, "a path starting with /, e.g. /predict")
    return value


def _variants(raw: dict, key: str) -> tuple[str, ...]:
    values = _string_list(raw, key)
    if not values:
        raise _bad(key, raw[key], "a non-empty list from " + ", ".join(VARIANTS))
    for v in values:
        if v not in VARIANTS:
            raise _bad(key, raw[key], f"a list from {', '.join(VARIANTS)}; {v!r} is not one")
    if len(set(values)) != len(values):
        raise _bad(key, raw[key], "each variant once")
    return values


_REQUIRED = ("num_models_list", "num_users_list", "spawn_rate_list", "run_time", "host")
_OPTIONAL = (
    "variants", "compose_files", "gpu_compose_files", "service", "project", "output_dir", "locustfile",
    "images_dir", "predict_path", "replica_health_path", "replica_port", "startup_timeout", "latency_target_ms",
    "warmup", "repeats", "locust_processes", "client_cpu_limit_pct",
)
_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def load(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass --config PATH to a YAML file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"config: {path} is not valid YAML{where}; fix the syntax") from None
    return from_mapping(raw if raw is not None else {}, base=path.resolve().parent, source=path)


def from_mapping(raw: Any, base: Path, source: Path = Path("config.yaml")) -> Config:
    if not isinstance(raw, dict):
        raise UserError("config: the file must be a mapping of keys such as num_models_list, run_time, host")
    known = _REQUIRED + _OPTIONAL
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(known)}"
            raise UserError(f"config: unknown key {key!r}{hint}")
    for key in _REQUIRED:
        if key not in raw:
            raise UserError(f"config: missing key {key}; add it (see config.yaml in the project for an example)")

    variants = _variants(raw, "variants") if "variants" in raw else ("cpu",)
    compose_files = (
        _existing_files(raw, "compose_files", base)
        if "compose_files" in raw else _default_file(base, "docker-compose.yml", "compose_files")
    )
    gpu_files: tuple[Path, ...] = ()
    if "gpu" in variants:
        gpu_files = (
            _existing_files(raw, "gpu_compose_files", base)
            if "gpu_compose_files" in raw else _default_file(base, "docker-compose.gpu.yml", "gpu_compose_files")
        )
    elif "gpu_compose_files" in raw:
        gpu_files = tuple((base / p).resolve() for p in _string_list(raw, "gpu_compose_files"))

    locustfile = (base / _string(raw, "locustfile")) if "locustfile" in raw else base / "locustfile.py"
    if not locustfile.is_file():
        raise UserError(f"config: locustfile: file {locustfile} does not exist; fix the path")
    images_dir = (base / _string(raw, "images_dir")) if "images_dir" in raw else base / "images"
    if not images_dir.is_dir() or not any(p.suffix.lower() in IMAGE_SUFFIXES for p in images_dir.iterdir()):
        raise UserError(f"config: images_dir: {images_dir} has no .jpg/.jpeg/.png images; point it at a folder of them")

    project = _string(raw, "project") if "project" in raw else "loadgrid"
    if not _PROJECT_NAME.match(project):
        raise _bad("project", project, "lower-case letters, digits, '-' and '_' (a Compose project name)")

    return Config(
        num_models_list=_positive_list(raw, "num_models_list", int),
        num_users_list=_positive_list(raw, "num_users_list", int),
        spawn_rate_list=_positive_list(raw, "spawn_rate_list", float),
        run_time_s=parse_duration(raw["run_time"]),
        host=_host(raw, "host"),
        variants=variants,
        compose_files=compose_files,
        gpu_compose_files=gpu_files,
        service=_string(raw, "service") if "service" in raw else "model",
        project=project,
        output_dir=(base / _string(raw, "output_dir")) if "output_dir" in raw else base / "reports",
        locustfile=locustfile.resolve(),
        images_dir=images_dir.resolve(),
        predict_path=_url_path(raw, "predict_path") if "predict_path" in raw else "/predict",
        replica_health_path=_url_path(raw, "replica_health_path") if "replica_health_path" in raw else "/health",
        replica_port=_positive_int(raw, "replica_port") if "replica_port" in raw else 8000,
        startup_timeout_s=parse_duration(raw["startup_timeout"], "startup_timeout") if "startup_timeout" in raw
        else 300,
        latency_target_ms=_positive_number(raw, "latency_target_ms") if "latency_target_ms" in raw else 500.0,
        warmup_s=parse_duration(raw["warmup"], "warmup", allow_zero=True) if "warmup" in raw else 0,
        repeats=_positive_int(raw, "repeats") if "repeats" in raw else 1,
        locust_processes=_processes(raw, "locust_processes") if "locust_processes" in raw else 0,
        client_cpu_limit_pct=_percent(raw, "client_cpu_limit_pct") if "client_cpu_limit_pct" in raw else 60.0,
        source=source,
    )


def _default_file(base: Path, name: str, key: str) -> tuple[Path, ...]:
    path = (base / name).resolve()
    if not path.is_file():
        raise UserError(f"config: {key}: default file {path} does not exist; set {key} to your compose file(s)")
    return (path,)
