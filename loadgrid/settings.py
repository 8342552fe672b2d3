"""Every config key, once: its default, its check, its CLI flag, the environment variable it falls back to,
the LOADGRID_* variable that carries it to the locustfile, and its help line.

`config.from_mapping` reads defaults and checks from here (keys whose check depends on other keys are checked
there, with the others: `check` None), `cli` builds its load flags from here, `load.locust_env` names the
locustfile's variables from here, and the README's config reference lists these keys (a test holds them
equal). A check is `check(raw, key) -> value` and raises a `UserError` naming the key, with the fix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from . import payload as payload_mod
from . import redact
from .errors import UserError

VARIANTS = ("cpu", "gpu")
ARRIVALS = ("constant", "poisson")
REQUIRED = object()  # the default of a key the config must give (in compose mode)


# --- checks: (raw, key) -> value, or a UserError naming the key --------------------------------------------

def bad(key: str, value: Any, expected: str) -> UserError:
    return UserError(f"config: {key}: got {redact.text(repr(value))}; expected {expected}", key=key)


_DURATION_PART = re.compile(r"(\d+)\s*(h|m|s)")


def parse_duration(value: Any, key: str = "run_time", allow_zero: bool = False) -> int:
    """'90', 90, '30s', '1m', '1h30m' -> whole seconds (> 0, or >= 0 with allow_zero)."""
    if isinstance(value, bool):
        raise bad(key, value, "a duration such as 30s, 1m or 1h30m")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise bad(key, value, "a duration such as 30s, 1m or 1h30m")
        scale = {"h": 3600, "m": 60, "s": 1}
        seconds = sum(int(n) * scale[u] for n, u in parts)
    else:
        raise bad(key, value, "a duration such as 30s, 1m or 1h30m")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise bad(key, value, "a duration above zero, such as 30s")
    return seconds


def duration(raw: dict, key: str) -> int:
    return parse_duration(raw[key], key)


def duration_or_zero(raw: dict, key: str) -> int:
    return parse_duration(raw[key], key, allow_zero=True)


def positive_list(raw: dict, key: str, kind: type) -> tuple:
    value = raw[key]
    what = "whole numbers" if kind is int else "numbers"
    expected = f"a non-empty list of positive {what}, e.g. [1, 2]"
    if not isinstance(value, list):
        # A lone number is the commonest slip: say how to write it as a list.
        raise bad(key, value, expected + (f" (write [{value}])" if isinstance(value, (int, float)) else ""))
    if not value:
        raise bad(key, value, expected)
    out = []
    for item in value:
        ok_type = isinstance(item, int) if kind is int else isinstance(item, (int, float))
        if isinstance(item, bool) or not ok_type:
            raise bad(key, value, expected + f"; {item!r} is not a {'whole ' if kind is int else ''}number")
        if item <= 0:
            raise bad(key, value, expected + f"; {item!r} is not above zero")
        out.append(kind(item))
    dupes = sorted({x for x in out if out.count(x) > 1})
    if dupes:
        raise bad(key, value, expected + f" with no repeats; {dupes[0]!r} is listed twice")
    return tuple(out)


def int_list(raw: dict, key: str) -> tuple[int, ...]:
    return positive_list(raw, key, int)


def number_list(raw: dict, key: str) -> tuple[float, ...]:
    return positive_list(raw, key, float)


def string(raw: dict, key: str) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        raise bad(key, value, "a non-empty string")
    return value.strip()


def string_list(raw: dict, key: str) -> tuple[str, ...]:
    value = raw[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise bad(key, value, "a list of strings")
    return tuple(value)


def positive_int(raw: dict, key: str) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise bad(key, value, "a whole number above zero")
    return value


def count(raw: dict, key: str) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad(key, value, "a whole number, 0 or more")
    return value


def port(raw: dict, key: str) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise bad(key, value, "a TCP port from 1 to 65535")
    return value


def positive_number(raw: dict, key: str) -> float:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise bad(key, value, "a number above zero")
    return float(value)


def processes(raw: dict, key: str) -> int:
    value = raw[key]
    if value == "auto":
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise bad(key, value, "auto or a whole number of processes above zero")
    return value


def percent(raw: dict, key: str) -> float:
    value = positive_number(raw, key)
    if value > 100:
        raise bad(key, value, "a percentage between 0 and 100")
    return value


def boolean(raw: dict, key: str) -> bool:
    if not isinstance(raw[key], bool):
        raise bad(key, raw[key], "true or false")
    return raw[key]


_HOST_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?$")


def url_problem(url: str) -> str | None:
    """What makes `url` unusable as an http(s) URL to load (a few words), or None when it is fine."""
    if any(ch.isspace() for ch in url):
        return "it contains a space"
    try:
        parsed = urlparse(url)
        host, port = parsed.hostname, parsed.port
    except ValueError:  # a bad [IPv6] host, or a port that is not a number from 0 to 65535
        return "its [host] is not an IPv6 address" if "[" in url or "]" in url \
            else "its port is not a number from 1 to 65535"
    if parsed.scheme not in ("http", "https"):
        return "it does not start with http:// or https://"
    if not host:
        return "it names no host"
    if port == 0:
        return "its port is not a number from 1 to 65535"
    if "[" in parsed.netloc:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "its [host] is not an IPv6 address"
        return None
    labels = host.removesuffix(".").split(".")
    if not all(_HOST_LABEL.match(label) for label in labels):
        return f"{host!r} is not a host name or IP address"
    return None


def host(raw: dict, key: str) -> str:
    value = string(raw, key)
    problem = url_problem(value)
    if problem:
        raise bad(key, value, f"an http(s) URL such as http://localhost:8080 ({problem})")
    return value.rstrip("/")


def url_path(raw: dict, key: str) -> str:
    value = string(raw, key)
    if not value.startswith("/"):
        raise bad(key, value, "a path starting with /, e.g. /predict")
    return value


def variants(raw: dict, key: str) -> tuple[str, ...]:
    values = string_list(raw, key)
    if not values:
        raise bad(key, raw[key], "a non-empty list from " + ", ".join(VARIANTS))
    for v in values:
        if v not in VARIANTS:
            raise bad(key, raw[key], f"a list from {', '.join(VARIANTS)}; {v!r} is not one")
    if len(set(values)) != len(values):
        raise bad(key, raw[key], "each variant once")
    return values


_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def project(raw: dict, key: str) -> str:
    value = string(raw, key)
    if not _PROJECT_NAME.match(value):
        raise bad(key, value, "lower-case letters, digits, '-' and '_' (a Compose project name)")
    return value


_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:\d+)?(/[a-z0-9._/-]+)?$")


def registry(raw: dict, key: str) -> str:
    """A registry host[:port][/path] that image names are prefixed with (no scheme, no trailing slash)."""
    value = raw[key]
    if not isinstance(value, str) or not _REGISTRY.match(value.strip()):
        raise bad(key, value, "a registry such as registry.example.com:5000 (no http://, no trailing /)")
    return value.strip()


def choice(choices: tuple[str, ...]) -> Callable[[dict, str], str]:
    def check(raw: dict, key: str) -> str:
        if raw[key] not in choices:
            raise bad(key, raw[key], " or ".join(choices))
        return raw[key]
    return check


def expect(raw: dict, key: str) -> str:
    """prediction, status, or a JSON check kept as its canonical text: the form LOADGRID_EXPECT carries to
    Locust, and a plain value for the frozen Config, the fingerprint and the plan."""
    value = raw[key]
    if isinstance(value, dict):
        try:
            return payload_mod.parse_expect(value, key).to_text()
        except payload_mod.ExpectError as exc:
            raise UserError.of([f"config: {m}" for m in exc.messages], key=key) from None
    if value not in payload_mod.EXPECT:
        raise bad(key, value, "prediction or status, or a check such as {status: 200, json: {success: true}}")
    return value


# --- the table ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """One config key. `check` None: config.from_mapping checks it together with the keys it depends on."""

    key: str
    default: Any
    help: str
    check: Callable[[dict, str], Any] | None = None
    field: str = ""  # the Config field, when it is not named like the key
    flag: str | None = None  # the `run` command's flag that sets the key
    metavar: str = ""
    flag_value: str = "yaml"  # how the flag's text is read: yaml, list (as [text]), path (made absolute), text
    env: str | None = None  # the environment variable used when the key is not set
    locust: str | None = None  # the LOADGRID_* variable that hands the value to the locustfile
    compose: bool = False  # describes the compose stack: meaningless (an error) with target
    load_axis: bool = False  # sets the load axis: a flag for one of them replaces all of them

    @property
    def name(self) -> str:
        return self.field or self.key


SETTINGS: tuple[Setting, ...] = (
    # The grid: stack sizes x load x spawn rate, each run so long.
    Setting("num_models_list", REQUIRED, "replicas of the service to run, one stack size each, e.g. [1, 2, 4]",
            int_list, compose=True),
    Setting("num_users_list", (), "closed-loop users", int_list, flag="--users", metavar="N[,N..]",
            flag_value="list", load_axis=True),
    Setting("spawn_rate_list", (), "users started per second (default: all at once, the largest user count)",
            number_list, flag="--spawn-rate", metavar="R[,R..]", flag_value="list"),
    Setting("run_time", REQUIRED, "per run, e.g. 30s, 1m (with --requests-per-user: the cap)", duration,
            field="run_time_s", flag="--run-time", metavar="DURATION"),
    Setting("host", REQUIRED, "the stack's published URL, e.g. http://localhost:8080", host, compose=True),
    # The stack.
    Setting("variants", ("cpu",), "the variants to run: cpu, gpu (gpu adds gpu_compose_files)", variants,
            compose=True),
    Setting("compose_files", (), "the stack's compose files (default: docker-compose.yml beside the config)",
            compose=True),
    Setting("gpu_compose_files", (), "added for the gpu variant (default: docker-compose.gpu.yml)", compose=True),
    Setting("service", "model", "the compose service to scale", string, compose=True),
    Setting("project", "loadgrid", "Compose project name prefix (a -cpu or -gpu suffix is added)", project,
            compose=True),
    Setting("backend", "compose", "the engine the stack runs on: compose, or swarm (docker stack deploy; README: "
            "backend: swarm)", choice(("compose", "swarm")), compose=True),
    Setting("registry", None, "swarm: the registry images are pushed to and deployed from when the swarm has more "
            "than one node, e.g. registry.example.com:5000", registry, compose=True),
    Setting("output_dir", Path("reports"), "output folder", string, flag="--output", metavar="DIR",
            flag_value="path"),
    Setting("locustfile", Path("locustfile.py"), "the Locust user (default: a locustfile.py beside the config, "
            "else loadgrid's own)"),
    Setting("images_dir", Path("images"), "a folder of images to send (older name of payload)", string),
    Setting("predict_path", "/predict", "the path each request is sent to", url_path, compose=True,
            locust="LOADGRID_PREDICT_PATH"),
    Setting("replica_health_path", "/health", "each replica is probed here (docker exec) for its device and "
            "request count", url_path, compose=True),
    Setting("replica_port", 8000, "the port replicas listen on inside the container", positive_int, compose=True),
    Setting("startup_timeout", 300, "how long the stack may take to become ready", duration,
            field="startup_timeout_s", compose=True),
    Setting("latency_target_ms", 500.0, "p95 target for capacity", positive_number, flag="--latency-target",
            metavar="MS"),
    Setting("warmup", 0, "seconds after the last user is spawned that are not measured", duration_or_zero,
            field="warmup_s", locust="LOADGRID_WARMUP_S"),
    Setting("repeats", 1, "runs of each point (2 or more: spread and Welch's test in compare)", positive_int),
    Setting("locust_processes", 0, "Locust processes, or auto (what the cores allow beside the stack)", processes),
    # Distributed load (README: load workers).
    Setting("load_workers", 0, "Locust workers loadgrid starts beside the stack (Compose: containers on this "
            "machine; swarm: a service over the nodes); the master here runs no users", count, flag="--load-workers",
            metavar="N"),
    Setting("expect_workers", 0, "Locust workers joined by hand (`loadgrid worker --master HOST:PORT`) that each run "
            "waits for, beside load_workers", count, flag="--expect-workers", metavar="N"),
    Setting("worker_wait", 60, "how long each run waits for its workers to join before it fails, saying how many "
            "did", duration, field="worker_wait_s"),
    Setting("master_bind", "", "the address the Locust master listens on for workers (default: 127.0.0.1 when every "
            "worker runs on this machine, else every interface)", string),
    Setting("master_port", 5557, "the port the Locust master listens on for workers", port),
    Setting("client_cpu_limit_pct", 60.0, "a run whose load generator used more of its cores is client-bound",
            percent),
    # GPU.
    Setting("gpu_count", 1, "GPUs per replica for the gpu variant, or all", compose=True),
    Setting("gpu_device_ids", (), "explicit GPU ids for the gpu variant (instead of gpu_count)", compose=True),
    Setting("gpu_required", False, "fail instead of skipping the gpu variant on a machine without a GPU", boolean,
            compose=True),
    # The answer.
    Setting("expected_rps", None, "the load to plan for: the answer names the smallest size that holds it with "
            "p95 under the target", positive_number, flag="--expected-rps", metavar="RPS"),
    Setting("cost_per_replica", {}, "the cost of one replica per variant (any unit), for the cheapest answer",
            flag="--cost-per-replica", metavar="{cpu: C, gpu: C}", compose=True),
    # Target mode, payload, and how the load is paced and stopped.
    Setting("target", None, "benchmark this endpoint as it is: no compose stack, no replica axis "
            "(default without --config: $ENDPOINT)", field="target_url", flag="--target", metavar="URL",
            flag_value="text", env="ENDPOINT"),
    Setting("payload", "", "a folder of images, an image, a .json or .jsonl file, or an http(s) URL fetched once "
            "(default: $PAYLOAD, then images_dir)", flag="--payload", metavar="PATH|URL", flag_value="path",
            env="PAYLOAD", locust="LOADGRID_PAYLOAD"),
    Setting("send_as", "raw", "images as a raw JPEG body (application/octet-stream) or multipart",
            choice(payload_mod.SEND_AS), flag="--send-as", metavar="raw|multipart", locust="LOADGRID_SEND_AS"),
    Setting("expect", "", "served means a valid prediction body, any 2xx, or a JSON check such as "
            "'{status: 200, json: {success: true}}'", expect, flag="--expect", metavar="prediction|status|{...}",
            locust="LOADGRID_EXPECT"),
    Setting("processes", 0, "Locust processes", positive_int, field="locust_processes", flag="--processes",
            metavar="N"),
    Setting("threads", (), "users per Locust process: users = processes x threads", field="num_users_list",
            flag="--threads", metavar="N[,N..]", flag_value="list", load_axis=True),
    Setting("requests_per_user", 0, "each user stops after N requests", positive_int, flag="--requests-per-user",
            metavar="N", locust="LOADGRID_REQUESTS_PER_USER"),
    Setting("arrival_rate_list", (), "open loop: requests per second, instead of users", number_list,
            flag="--arrival-rate", metavar="R[,R..]", flag_value="list", load_axis=True),
    Setting("arrival", "constant", "open-loop arrivals", choice(ARRIVALS), flag="--arrival",
            metavar="constant|poisson", locust="LOADGRID_ARRIVAL"),
    Setting("max_in_flight", 0, "open loop: requests in flight per Locust process", positive_int,
            flag="--max-in-flight", metavar="N", locust="LOADGRID_MAX_IN_FLIGHT"),
    Setting("capacity_search", None, "per stack size, the highest arrival rate whose p95 holds the target: "
            "{start, max, steps, run_time, factor}"),
)

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
KEYS: tuple[str, ...] = tuple(BY_KEY)
FLAGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.flag)
COMPOSE_KEYS: tuple[str, ...] = tuple(s.key for s in SETTINGS if s.compose)
LOAD_AXIS_KEYS: tuple[str, ...] = tuple(s.key for s in SETTINGS if s.load_axis)
REQUIRED_KEYS: tuple[str, ...] = tuple(s.key for s in SETTINGS if s.default is REQUIRED)
LOCUST_KEYS: tuple[str, ...] = tuple(s.key for s in SETTINGS if s.locust)


def default(key: str) -> Any:
    """The key's default (a required key has none)."""
    value = BY_KEY[key].default
    if value is REQUIRED:
        raise KeyError(f"{key} has no default: the config must give it")
    return value


def check(key: str) -> Callable[[dict, str], Any]:
    found = BY_KEY[key].check
    if found is None:
        raise KeyError(f"{key} is checked in config.from_mapping, with the keys it depends on")
    return found


def locust_vars(values: dict[str, Any]) -> dict[str, str]:
    """{LOADGRID_* name: text} for the keys the locustfile reads, from {key: value} (every one of them)."""
    if set(values) != set(LOCUST_KEYS):
        raise ValueError(f"locust_vars needs exactly {', '.join(LOCUST_KEYS)}; got {', '.join(values)}")
    return {BY_KEY[key].locust: _text(value) for key, value in values.items()}


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def reference() -> str:
    """The README's config reference: a Markdown table, one row per key."""
    rows = ["| key | default | flag | environment | what it sets |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        shown = "required" if s.default is REQUIRED else "" if s.default in (None, "", (), {}) \
            else f"`{_default_text(s.default)}`"
        rows.append(f"| `{s.key}` | {shown} | {f'`{s.flag}`' if s.flag else ''} | "
                    f"{f'`{s.env}`' if s.env else ''} | {s.help.replace('|', '/')} |")
    return "\n".join(rows)


def _default_text(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


if __name__ == "__main__":  # python -m loadgrid.settings: the README's reference, to paste between its markers
    print(reference())
