"""Faults found before anything starts, and the stacks that passed: the run uses exactly these.

Before the grid: each variant's stack is made and validated once (invalid compose files, a service that is
not there), a gateway port already taken, an unreachable target, no usable GPU. After a GPU variant's
build, `gpu_fit` says which stack sizes will not fit the GPU memory.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from . import gpu
from .backend import Stack, make_stack
from .config import Config
from .errors import UserError
from .plan import Plan, StackGroup
from .stack import StackError


@dataclass
class Checked:
    """What pre-flight found: the validated stack of each variant, and the variants to skip with why."""

    stacks: dict[str, Stack] = field(default_factory=dict)
    skip: dict[str, str] = field(default_factory=dict)


def preflight_master_port(config: Config) -> None:
    """The Locust master's port must be free here: every run binds it, and a taken one fails every run."""
    if port_taken(config.master_port):
        raise UserError(f"config: master_port: port {config.master_port} is already in use on this machine (another "
                        "Locust master?); stop what listens there or set master_port to a free port", exit_code=1)


def validated_stack(config: Config, variant: str) -> Stack:
    stack = make_stack(config, variant)
    stack.validate()
    return stack


def preflight(config: Config, plan: Plan) -> Checked:
    """Every variant's stack, validated, and the variants to skip, with why (a missing GPU fails instead with
    gpu_required). Target mode: the endpoint must accept connections; there is no stack."""
    if config.load_workers or config.expect_workers:
        preflight_master_port(config)
    if config.target_mode:
        preflight_target(config)
        return Checked()
    checked = Checked()
    for variant in plan.variants:
        stack = checked.stacks[variant] = validated_stack(config, variant)
        port = stack.env.get("LOADGRID_GATEWAY_PORT")
        if port and not stack.container_ids() and port_taken(int(port)):
            raise UserError(f"host: port {port} is already in use on this machine; stop what listens there "
                            f"or set host to another port (the gateway is published on host's port)", exit_code=1)
        if variant == "gpu":
            decision = gpu_preflight(config, max(g.models for g in plan.groups if g.variant == "gpu"))
            if not decision.gpus or not decision.ok and decision.fits is None:
                if config.gpu_required:
                    raise UserError(f"gpu variant: {decision.reason} (gpu_required is set; remove gpu from "
                                    f"variants to run the CPU variant alone)", exit_code=1)
                checked.skip[variant] = decision.reason
    return checked


def preflight_target(config: Config) -> None:
    """The target must accept connections before any run starts (a TCP connect: nothing is sent)."""
    parsed = urlparse(config.host)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=5):
            pass
    except OSError as exc:
        raise UserError(f"target: cannot connect to {parsed.hostname}:{port} ({exc.strerror or exc}); "
                        f"is the endpoint up?", exit_code=1) from None


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def replica_memory_cache(config: Config) -> Path:
    """One GPU replica's memory, measured once per image, GPU model and settings, kept beside the results."""
    return config.output_dir / "gpu" / "replica-memory.json"


def gpu_preflight(config: Config, replicas: int, per_replica_mb: float | None = None,
                  facts: tuple[dict, list] | None = None) -> gpu.GpuPreflight:
    """Can `replicas` GPU replicas run here? Facts from the machine unless given (tests, re-checks)."""
    runtimes, gpus = facts if facts is not None else gpu.probe(os.environ.get("LOADGRID_BASE_IMAGE"))
    count = None if config.gpu_device_ids else config.gpu_count
    return gpu.preflight(replicas, per_replica_mb, runtimes, gpus, list(config.gpu_device_ids) or None, count)


def gpu_fit(config: Config, stack: Stack, groups: list[StackGroup], say: Callable[[str], None]) -> dict[int, str]:
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
