"""Lint a user's compose files before anything is built: what `--scale` and `host` need, one line each.

Errors (the run would fail later, so it stops now): the scaled service has a `container_name` or publishes
a fixed host port (`docker compose up --scale service=N` cannot give N containers one name or one port).
Warnings (loadgrid goes on): `host` names a port no service publishes, and the scaled service sets
`deploy.replicas` or `scale` (loadgrid's --scale overrides it). Other services may have names and ports.

It reads the compose model in either form: `docker compose config --format json` (what the engine will run:
ports in long syntax, variables interpolated), or the files as written, merged and interpolated here with
PyYAML (`read_model`), so that --dry-run needs no Docker.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


@dataclass(frozen=True)
class Port:
    """One `ports:` entry: the host port it publishes (None: the engine picks one, or a range)."""

    published: int | None
    target: str
    text: str  # as written, for messages


@dataclass(frozen=True)
class Lint:
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def loadgrid_variables(host: str, variant: str) -> dict[str, str]:
    """The variables loadgrid sets for `docker compose`: the bundled compose file publishes its gateway on
    LOADGRID_GATEWAY_PORT, which follows the configured host when it is local."""
    env = {"LOADGRID_VARIANT": variant}
    try:
        parsed = urlparse(host)
        port = parsed.port
    except ValueError:
        return env
    if parsed.hostname in ("localhost", "127.0.0.1", "::1") and port:
        env["LOADGRID_GATEWAY_PORT"] = str(port)
    return env


def ports(service: dict) -> list[Port]:
    """A service's published ports, from short syntax ("127.0.0.1:8080:80/tcp", "80", 80) or long syntax
    ({target, published, host_ip}, as `docker compose config` writes them)."""
    out = []
    entries = service.get("ports") if isinstance(service, dict) else None
    # A malformed `ports` (not a list) is Compose's to name: `docker compose config` refuses the file.
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            published = str(entry.get("published") or "")
            target = str(entry.get("target", ""))
            text = f"{published}:{target}" if published else target
        else:
            text = str(entry)
            spec = text.split("/", 1)[0]
            if spec.startswith("["):  # [::1]:8080:80
                spec = spec.split("]", 1)[1].lstrip(":")
            parts = spec.split(":")
            target = parts[-1]
            published = parts[-2] if len(parts) >= 2 else ""
        out.append(Port(int(published) if published.isdigit() else None, target, text))
    return out


def _replicas(service: dict) -> tuple[str, Any] | None:
    deploy = service.get("deploy") if isinstance(service.get("deploy"), dict) else {}
    if deploy.get("replicas") is not None:
        return "deploy.replicas", deploy["replicas"]
    if service.get("scale") is not None:
        return "scale", service["scale"]
    return None


def lint(services: dict, service: str, host: str | None, files: str) -> Lint:
    """The lines for the compose model's `services` mapping; `files` names the compose files in messages."""
    scaled = services.get(service)
    if not isinstance(scaled, dict):
        return Lint()  # not a service of the files: config.check_service says so
    errors, warnings = [], []
    if scaled.get("container_name"):
        errors.append(f"config: service: {service}.container_name is {scaled['container_name']!r} in {files}: "
                      f"--scale {service}=N would fail (one name for N containers); remove container_name from "
                      f"{service}")
    for port in ports(scaled):
        if port.published is not None:
            errors.append(f"config: service: {service}.ports publishes fixed host port {port.published} "
                          f"({port.text!r}) in {files}: --scale {service}=N would fail (one host port for N "
                          f"containers); publish no host port on {service} (ports: [{port.target!r}], or none) "
                          f"and reach it through a service in front of it")
    replicas = _replicas(scaled)
    if replicas:
        warnings.append(f"config: service: {service}.{replicas[0]} is {replicas[1]} in {files}; loadgrid ignores "
                        f"it and runs --scale {service}=N for each entry of num_models_list")
    problem = host_problem(services, host, files) if host else None
    if problem:
        warnings.append(problem)
    return Lint(tuple(errors), tuple(warnings))


def host_problem(services: dict, host: str, files: str) -> str | None:
    """`host`'s port must be published by a service of the files, if host is this machine."""
    try:
        parsed = urlparse(host)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        return None  # config's own check of host says what is wrong
    if parsed.hostname not in ("localhost", "127.0.0.1", "::1", "0.0.0.0"):
        return None  # another machine: its ports are not these files' to publish
    if any(isinstance(svc, dict) and svc.get("ports") is not None and not isinstance(svc.get("ports"), list)
           for svc in services.values()):
        return None  # a malformed `ports` cannot be read: Compose refuses the file and says why, alone
    published = {name: [p.published for p in ports(svc) if p.published is not None]
                 for name, svc in sorted(services.items()) if isinstance(svc, dict)}
    if any(port in found for found in published.values()):
        return None
    listed = ", ".join(f"{name} {'/'.join(str(p) for p in found)}" for name, found in published.items() if found)
    hint = f"; set host to http://localhost:{next(p for f in published.values() for p in f)}" if listed else ""
    return (f"config: host: port {port} is published by no service of {files} (published: {listed or 'none'})"
            f"{hint}, or publish {port} on the service in front of the replicas")


# --- the files as written: merged and interpolated, without Docker -----------------------------------------

_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}"
                       r"|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:+alt}, $VAR and $$, in every string."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str) or "$" not in value:
        return value

    def one(match: re.Match) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(5)
        op, arg = match.group(3), match.group(4) or ""
        current = env.get(name)
        if op in (":-", ":?"):
            return current if current else interpolate(arg, env) if op == ":-" else ""
        if op in ("-", "?"):
            return current if current is not None else interpolate(arg, env) if op == "-" else ""
        if op == ":+":
            return interpolate(arg, env) if current else ""
        if op == "+":
            return interpolate(arg, env) if current is not None else ""
        return current or ""

    return _VARIABLE.sub(one, value)


def dotenv(folder: Path) -> dict[str, str]:
    """The project folder's .env (KEY=VALUE lines), which Compose reads for interpolation."""
    path = folder / ".env"
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def merge(base: Any, extra: Any, key: str = "") -> Any:
    """Compose's merge of a later file over an earlier one: mappings merge, ports add up, the rest replaces."""
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for k, v in extra.items():
            out[k] = merge(out[k], v, str(k)) if k in out else v
        return out
    if key in ("ports", "expose") and isinstance(base, list) and isinstance(extra, list):
        return base + [p for p in extra if p not in base]
    return extra


def read_model(docs: list[dict], folder: Path, extra_env: dict[str, str], environ=None) -> dict:
    """The services of compose documents (already read, in order), merged and interpolated like Compose:
    variables from the process environment, then loadgrid's own, over the project folder's .env."""
    env = {**dotenv(folder), **(os.environ if environ is None else environ), **extra_env}
    services: dict = {}
    for doc in docs:
        found = doc.get("services") if isinstance(doc, dict) else None
        if isinstance(found, dict):
            services = merge(services, {str(k): v if isinstance(v, dict) else {} for k, v in found.items()})
    return interpolate(services, env)
