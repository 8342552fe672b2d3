"""The stack a grid runs against, behind one small interface, and the factory that picks its engine.

The run loop (grid.py), pre-flight and the measurement talk to a `Stack` only; Docker Compose implements it
today (stack.ComposeStack). Another engine (Docker Swarm: `docker stack deploy`, `docker service scale`) is a
class beside it with the same methods, registered in ENGINES: the loop does not change.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from . import compose_lint, gpu, store
from .config import Config
from .errors import UserError
from .stack import ComposeStack, Replica

if TYPE_CHECKING:
    from .monitor import Monitor


@runtime_checkable
class Stack(Protocol):
    """What the loop needs of one variant's stack. Replicas are the containers (or tasks) of the scaled service."""

    project: str  # the engine's name for this stack (compose project, swarm stack): labels, locks, records
    service: str  # the scaled service
    files: tuple[Path, ...]  # the compose files it is made from (in records)
    env: dict[str, str]  # the environment its files are resolved with (LOADGRID_GATEWAY_PORT, ...)

    def validate(self) -> list[str]:
        """Refuse, as a UserError, what cannot run (invalid files, a service that is not there); the services."""

    def build(self, log_path: Path) -> None:
        """Build the images, the whole log to `log_path`; StackError when it fails."""

    def service_image_id(self) -> str:
        """The image id the scaled service runs, after `build`."""

    def scale(self, replicas: int, timeout_s: int) -> list[Replica]:
        """Bring the service to exactly `replicas` and wait (bounded) until each is ready; StackError with why not."""

    def replicas(self) -> list[Replica]:
        """The scaled service's replicas as the engine sees them now."""

    def container_ids(self) -> list[str]:
        """Every container of this stack, any service, any state (pre-flight: is it already up?)."""

    def probe(self, replica: Replica, port: int, path: str) -> dict | None:
        """GET a replica's own JSON endpoint (e.g. /health) from inside it; None when none answers."""

    def get_text(self, replica: Replica, port: int, path: str) -> str | None:
        """GET a replica's own endpoint as text (e.g. /metrics); None when none answers."""

    def logs(self, path: Path) -> None:
        """Every service's recent log lines to `path`."""

    def last_logs(self, container_id: str, lines: int = 20) -> list[str]:
        """One replica's last log lines (for an incident)."""

    def monitor(self, gpu: bool = False) -> Monitor:
        """The events and telemetry source watched alongside one run (a context manager)."""

    def running(self) -> AbstractContextManager[Stack]:
        """A clean slate on entry, `down` on exit whatever happened (error, Ctrl-C, SIGTERM)."""

    def down(self) -> None:
        """Remove everything of this stack; safe when nothing runs."""


def stack_env(config: Config, variant: str) -> dict[str, str]:
    # The bundled compose file publishes the gateway on LOADGRID_GATEWAY_PORT: it follows the configured host.
    return compose_lint.loadgrid_variables(config.host, variant)


def compose_stack(config: Config, variant: str) -> ComposeStack:
    files = config.compose_files_for(variant)
    env = stack_env(config, variant)
    if variant == "gpu":
        if config.gpu_device_ids:
            # Compose takes a count or device ids: ids replace the count of docker-compose.gpu.yml via an override.
            override = config.output_dir / "gpu" / "compose.gpu-devices.yml"
            override.parent.mkdir(parents=True, exist_ok=True)
            store.write_atomic(override, gpu.compose_override(None, list(config.gpu_device_ids), config.service))
            files = files + (override,)
        else:
            env.update(gpu.compose_env(config.gpu_count))
    return ComposeStack(f"{config.project}-{variant}", files, config.service, env=env)


def swarm_stack(config: Config, variant: str) -> Stack:
    """The same files and environment as on Compose, deployed as a swarm stack (swarm.py)."""
    from .swarm import SwarmStack

    base = compose_stack(config, variant)
    return SwarmStack(base.project, base.files, base.service, env=base.env, registry=config.registry,
                      work_dir=config.output_dir / "swarm")


# The engines a stack can run on, by the name a config's `backend` key gives.
ENGINES: dict[str, Callable[[Config, str], Stack]] = {"compose": compose_stack, "swarm": swarm_stack}


def make_stack(config: Config, variant: str) -> Stack:
    """The stack of one variant on the configured engine (not validated yet: see preflight)."""
    name = config.backend
    if name not in ENGINES:
        raise UserError(f"config: backend: {name!r} is not one of {', '.join(ENGINES)}", exit_code=2)
    return ENGINES[name](config, variant)
