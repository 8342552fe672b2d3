"""The Locust workers loadgrid starts itself (`load_workers: N`), placed by the engine the stack runs on.

Compose: N containers of the worker image (loadgrid/worker_image) on this machine's host network, each
running `loadgrid worker --master 127.0.0.1:PORT`. The host network gives them the route the master's own
Locust would have (the stack's published port, as `host` names it) and lets the master listen on loopback
only; their CPU is this machine's, beside the replicas', and the record says where each one ran.
Swarm: one service of N tasks (host network on each node) that join the master at the manager's address.

The workers serve run after run (every run has its own master) and are removed when the variant ends, also
on errors, Ctrl-C and SIGTERM, like the stack. Crash and restart of a worker are not incidents of the stack:
a worker that dies mid-run sends no final counts, and the run is invalid for that (validity.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import compose_lint, worker_image
from .stack import StackError, _run, _signals_held, wait_gone

LABEL = "org.loadgrid.workers"


def base_image(compose_files: tuple[Path, ...] = ()) -> str:
    """The base the worker image builds on: LOADGRID_BASE_IMAGE from the environment or the stack's .env (the
    base the stack's own images use, so a machine without a registry has it), else python:3.11-slim."""
    if os.environ.get("LOADGRID_BASE_IMAGE"):
        return os.environ["LOADGRID_BASE_IMAGE"]
    for folder in dict.fromkeys(f.parent for f in compose_files):
        found = compose_lint.dotenv(folder).get("LOADGRID_BASE_IMAGE")
        if found:
            return found
    return "python:3.11-slim"


@dataclass
class EngineWorkers:
    """What the engines' workers share: N workers of one project, joining a master on `master_port`, running the
    worker image built on the stack's base (`image`, once started). `start(log)` and `remove()` are the engine's."""

    project: str
    count: int
    master_port: int
    compose_files: tuple[Path, ...] = ()
    say: Callable[[str], None] = print
    image: str | None = None

    def build_image(self, log: Path | None = None) -> str:
        self.image = worker_image.build(base_image(self.compose_files), log=log)
        return self.image


@dataclass
class ContainerWorkers(EngineWorkers):
    """N worker containers of one project on this machine's Docker engine (Compose's load_workers)."""

    def _name(self, i: int) -> str:
        return f"{self.project}-loadgrid-worker-{i}"

    def start(self, log: Path | None = None) -> None:
        self.remove()  # a crashed earlier run's workers would join this master too
        self.build_image(log)
        for i in range(1, self.count + 1):
            name = self._name(i)
            _run(["docker", "run", "--detach", "--rm", "--name", name, "--network", "host", "--label",
                  f"{LABEL}={self.project}", self.image, "--master", f"127.0.0.1:{self.master_port}", "--name", name],
                 timeout=60)
        self.say(f"started {self.count} Locust worker container(s) ({self.image}) on this machine")

    def container_ids(self) -> list[str]:
        proc = _run(["docker", "ps", "--all", "--quiet", "--no-trunc", "--filter", f"label={LABEL}={self.project}"],
                    timeout=30, check=False)
        return proc.stdout.split() if proc.returncode == 0 else []

    def remove(self, timeout_s: float = 60) -> None:
        """Remove every worker container of the project, waiting until `docker ps` lists none."""
        ids = self.container_ids()
        if ids:
            _run(["docker", "rm", "--force", *ids], timeout=timeout_s, check=False)
        left = wait_gone(self.container_ids, timeout_s, 0.2)
        if left:
            raise StackError(f"could not remove Locust worker containers {', '.join(c[:12] for c in left)}; "
                             "remove them with docker rm -f")


@contextlib.contextmanager
def running(workers: EngineWorkers | None, log: Path | None = None) -> Iterator[EngineWorkers | None]:
    """Workers started for the body and always removed after it (also on Ctrl-C/SIGTERM)."""
    if workers is None:
        yield None
        return
    try:
        workers.start(log)
        yield workers
    finally:
        with _signals_held():
            workers.remove()


def for_stack(config, stack, say: Callable[[str], None]) -> EngineWorkers | None:
    """The engine's workers for this stack, or None without load_workers."""
    if not config.load_workers:
        return None
    if config.backend == "swarm":
        from .swarm import SwarmWorkers

        return SwarmWorkers(project=stack.project, count=config.load_workers, master_port=config.master_port,
                            compose_files=tuple(stack.files), say=say, registry=config.registry)
    return ContainerWorkers(project=stack.project, count=config.load_workers, master_port=config.master_port,
                            compose_files=tuple(stack.files), say=say)


__all__ = ["ContainerWorkers", "EngineWorkers", "base_image", "for_stack", "running"]
