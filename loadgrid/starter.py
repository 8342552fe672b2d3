"""`loadgrid init [COMPOSE_FILE...]`: a starter config.yaml for an existing compose project, every key commented.

Guessed from the compose files as written (merged and interpolated like Compose, no Docker):
  service   the one service `--scale` can multiply: no container_name and no fixed host port (data stores such
            as redis or postgres are left out). Several candidates or none: `service: TODO`, and one line says so.
  host      http://localhost:<port> from the service that publishes a fixed host port (several: the first,
            with the others named in a TODO).
  payload   a folder of .jpg/.jpeg/.png images beside the compose file (images/ first, two levels deep at most).
When the service guess succeeds the config passes --dry-run as written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import compose_lint, safefile
from . import config as config_mod
from .errors import UserError

COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
# Images of services that hold state or queue work: never the one to scale for a benchmark.
DATA_STORES = ("redis", "valkey", "postgres", "mysql", "mariadb", "mongo", "rabbitmq", "memcached", "kafka",
               "zookeeper", "elasticsearch", "opensearch", "minio", "nats", "etcd", "consul")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_SKIP_DIRS = {"node_modules", "venv", "__pycache__", "reports", "site-packages"}


@dataclass(frozen=True)
class Guess:
    services: tuple[str, ...]
    service: str | None  # None: unclear (see candidates)
    candidates: tuple[str, ...]
    host: str | None
    host_from: str | None  # the service whose published port `host` is
    other_publishers: tuple[str, ...] = ()
    payload: Path | None = None
    images: int = 0
    notes: tuple[str, ...] = field(default=())  # one line each for what could not be guessed


def default_compose_files(folder: Path) -> tuple[Path, ...]:
    for name in COMPOSE_NAMES:
        if (folder / name).is_file():
            return ((folder / name).resolve(),)
    raise UserError(f"init: no compose file in {folder} ({', '.join(COMPOSE_NAMES)}); pass its path: "
                    f"loadgrid init path/to/docker-compose.yml")


def read_services(files: tuple[Path, ...]) -> dict:
    docs = []
    for path in files:
        if not path.is_file():
            raise UserError(f"init: compose file {path} does not exist; fix the path")
        config_mod.compose_services(path, "init")  # a file that is not a compose file is one line, here
        docs.append(yaml.load(config_mod._read_text(path, "init: "), Loader=config_mod._ComposeLoader))
    return compose_lint.read_model(docs, files[0].parent, compose_lint.loadgrid_variables("", "cpu"))


def _is_data_store(service: dict) -> bool:
    image = str(service.get("image") or "").rsplit("/", 1)[-1].split(":", 1)[0].lower()
    return any(image == name or image.startswith(name + "-") for name in DATA_STORES)


def guess(files: tuple[Path, ...]) -> Guess:
    services = read_services(files)
    names = tuple(sorted(services))
    candidates = tuple(name for name in names if not services[name].get("container_name")
                       and not any(p.published is not None for p in compose_lint.ports(services[name]))
                       and not _is_data_store(services[name]))
    notes = []
    service = candidates[0] if len(candidates) == 1 else None
    if service is None:
        why = (f"several services could be scaled ({', '.join(candidates)})" if candidates else
               "no service can be scaled (each has a container_name or a fixed host port)")
        notes.append(f"service: {why}; set service in the config to the one to scale")
    publishers = [(name, port) for name in names if name != service
                  for port in compose_lint.ports(services[name])[:1] if port.published is not None]
    publishers.sort(key=lambda item: _is_data_store(services[item[0]]))  # a gateway before a database's port
    host = host_from = None
    if publishers:
        host_from, port = publishers[0]
        host = f"http://localhost:{port.published}"
    else:
        notes.append("host: no service publishes a fixed host port; set host to the URL that reaches the replicas")
    payload, count = find_images(files[0].parent)
    if payload is None:
        notes.append(f"payload: no folder of {'/'.join(IMAGE_SUFFIXES)} images near {files[0].name}; set payload "
                     f"to an image, a folder of images or a .json/.jsonl file")
    return Guess(names, service, candidates, host, host_from, tuple(n for n, _ in publishers[1:]), payload, count,
                 tuple(notes))


def find_images(folder: Path, depth: int = 2) -> tuple[Path | None, int]:
    """The folder of images nearest `folder` (images/ first, then by depth and name), and how many it holds."""
    found: list[tuple[int, int, str, Path, int]] = []
    for root, dirs, filenames in os.walk(folder):
        here = Path(root)
        level = len(here.relative_to(folder).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS) if level < depth else []
        count = sum(1 for f in filenames if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith("."))
        if level and count:
            found.append((here.name != "images", level, str(here), here, count))
    if not found:
        return None, 0
    best = min(found)
    return best[3], best[4]


def _project_name(folder: Path) -> str:
    name = re.sub(r"[^a-z0-9_-]+", "-", folder.name.lower()).strip("-_")
    return name if name and name[0].isalnum() else "loadgrid"


def _rel(path: Path, base: Path) -> str:
    """Relative to the config when it is below the config's folder or next to it; else absolute."""
    rel = os.path.relpath(path.resolve(), base.resolve())
    return str(path.resolve()) if rel.startswith(os.path.join("..", "..")) else rel


COMMENT_AT = 32


def _line(setting: str, *comment: str) -> str:
    """`setting` with its comment from column 32 (continued on the next lines, aligned)."""
    head = f"{setting:<{COMMENT_AT - 1}} # {comment[0]}" if comment else setting
    return "\n".join([head, *(f"{'':{COMMENT_AT}}# {more}" for more in comment[1:])])


def render(found: Guess, files: tuple[Path, ...], out: Path) -> str:
    base = out.resolve().parent
    compose = ", ".join(_rel(p, base) for p in files)
    if found.service:
        service = _line(f"service: {found.service}", f"scaled with docker compose up --scale {found.service}=N "
                        f"(guessed: the only service", "with no container_name, no fixed host port, not a data store)")
    else:
        service = _line("service: TODO", "TODO: the service to scale with --scale SERVICE=N, one of "
                        f"{', '.join(found.candidates or found.services)}",
                        "(it must have no container_name and no fixed host port)")
    if found.host:
        others = f" (TODO: or {', '.join(found.other_publishers)}'s)" if found.other_publishers else ""
        host = _line(f"host: {found.host}", f"where Locust sends the load: the port {found.host_from} "
                     f"publishes{others}")
    else:
        host = _line("host: http://localhost:8080", "TODO: the URL that reaches the replicas (none is published)")
    if found.payload:
        payload = _line(f"payload: {_rel(found.payload, base)}", f"what each request carries: {found.images} "
                        f"images, one picked at", "random per request (or an image, a .json or .jsonl file)")
    else:
        payload = _line("# payload: TODO", "TODO: an image, a folder of images, or a .json/.jsonl file",
                        "(none found near the compose file)")
    lines = [
        f"# loadgrid config for {compose}, written by `loadgrid init`.",
        f"# {'Fix each TODO, then check' if found.notes else 'Check'} it with: loadgrid --config {out.name} "
        f"--dry-run (starts nothing).",
        "# Paths are relative to this file. Every key is described in loadgrid's README, section Config.",
        "",
        "# --- the stack ---",
        _line(f"compose_files: [{compose}]", "your project's compose files (later ones override earlier ones)"),
        service,
        host,
        _line("predict_path: /predict", "the path each request is posted to, on host"),
        _line(f"project: {_project_name(files[0].parent)}", "compose project prefix: the stack runs as "
              "<project>-cpu"),
        _line("startup_timeout: 5m", "how long replicas may take to become ready after each scale step"),
        "",
        "# --- the grid: every combination runs once ---",
        _line("num_models_list: [1, 2]", "replicas of service"),
        _line("num_users_list: [4, 16]", "Locust users: concurrent clients, each sending back to back"),
        _line("spawn_rate_list: [4]", "users started per second"),
        _line("run_time: 30s", "per run: 30s, 1m, 1h30m ..."),
        "",
        "# --- what each request carries, and what counts as served ---",
        payload,
        _line("send_as: raw", "images: raw (the JPEG as the body) or multipart (a form, field `file`)"),
        "# expect: {status: 200, json: {success: true}}",
        "\n".join(f"{'':{COMMENT_AT}}# {text}" for text in (
            "served means: prediction (a {predictions: [{label, score}]} answer,",
            "the default for images), status (any 2xx, the default for JSON), or",
            "a JSON check: status code(s), and field paths (result.label,",
            "predictions.0.label) with a value, {pattern: REGEX} or {exists: true}")),
        _line("# locustfile: my_locustfile.py", "your own users (subclass loadgrid.locust_users.LoadgridUser);",
              "default: loadgrid's, which posts payload to predict_path"),
        "",
        "# --- results ---",
        _line("output_dir: reports", "records, HTML reports, summary.csv and index.html"),
        _line("latency_target_ms: 500", "capacity = the highest throughput with p95 under this"),
        _line("# warmup: 0s", "excluded from statistics after all users are spawned"),
        _line("# repeats: 1", "runs per grid point"),
        _line("# locust_processes: auto", "Locust processes (one core each at most)"),
        _line("# client_cpu_limit_pct: 60", "above this share of its cores, a run is client-bound"),
        "",
    ]
    return "\n".join(lines)


def init(compose_files: list[str], output: Path, force: bool, cwd: Path | None = None) -> tuple[Path, Guess]:
    """Write the starter config (nothing is written when a check fails). Returns the path and the guesses."""
    cwd = cwd or Path.cwd()
    if output.exists() and not force:
        raise UserError(f"init: {output} exists; pass --force to overwrite it, or --output another path")
    files = tuple((cwd / f).resolve() for f in compose_files) if compose_files else default_compose_files(cwd)
    found = guess(files)
    text = render(found, files, output)
    safefile.replace(output, text)  # a fresh temporary name: a symlink at `<output>.part` is never followed
    return output, found
