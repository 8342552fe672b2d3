"""Docker Swarm as the stack's engine (`backend: swarm`): the same compose files, deployed with
`docker stack deploy` under the project name, each size reached with `docker service scale`.

Swarm reads only the v3 compose format and ignores `build:`, so loadgrid builds as on Compose (`docker compose
build`), then renders a v3 file from what Compose resolved (`docker compose config`): no build, no depends_on
(stack deploy refuses its long form), ports in `mode: host` long form and every service with `endpoint_mode:
dnsrr`. Service VIPs and the ingress routing mesh do not route on every engine, while the service's DNS name
answering every task's address (dnsrr) and host-mode ports do; the bundled gateway resolves `model` through
Docker's DNS per request, so it follows the tasks as they come and go.

On one node the images just built serve; on more, `registry:` names where they are pushed and deployed from.
loadgrid never creates or leaves a swarm itself: `docker swarm init` is the user's step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import store
from .errors import UserError
from .loadgen import EngineWorkers
from .monitor import ContainerEvent, Monitor
from .stack import ComposeStack, Replica, StackError, _replica, _run, describe, wait_gone

STACK_LABEL = "com.docker.stack.namespace"  # on every service, network and task container of a stack
SWARM_SERVICE_LABEL = "com.docker.swarm.service.name"  # on task containers: <stack>_<service>
STACK_VERSION = "3.8"  # the compose file format `docker stack deploy` of Engine 20.10 reads
DOWN_TIMEOUT_S = 120  # `docker stack rm` returns at once; its services, networks and containers go after it
POLL_S = 0.25

# Service keys a v3 stack file takes as Compose resolved them.
KEPT = {"image", "command", "entrypoint", "environment", "healthcheck", "networks", "volumes", "working_dir",
        "user", "labels", "deploy", "configs", "secrets", "hostname", "stop_grace_period", "stop_signal",
        "ulimits", "sysctls", "cap_add", "cap_drop", "init", "read_only", "tmpfs", "extra_hosts", "dns",
        "logging", "ports", "tty", "stdin_open"}
# Keys Swarm has no use for: loadgrid does their work itself (build, start order) or Swarm does it its way.
# (`expose` only documents a port: every port is open on the stack's network.)
DROPPED = {"build", "depends_on", "pull_policy", "restart", "profiles", "container_name", "expose"}
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}
LOOPBACK = ("localhost",)


# --- the rendered file and what Swarm cannot do: pure ------------------------------------------------------

def refusals(model: dict, files: str) -> list[str]:
    """What Swarm cannot run in a resolved compose model (`docker compose config --format json`), one line
    each with what to do instead; empty when it can run."""
    found = []
    for name, service in sorted((model.get("services") or {}).items()):
        where = f"{files}: service {name}"
        reservations = ((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
        if reservations.get("devices"):
            found.append(f"{where}: GPU device reservations (deploy.resources.reservations.devices) do not run on "
                         "Swarm; advertise the GPUs as node generic resources (dockerd --node-generic-resource) "
                         "and reserve them with deploy.resources.reservations.generic_resources, or use "
                         "backend: compose")
        if service.get("container_name"):
            found.append(f"{where}: container_name {service['container_name']!r} does not run on Swarm (it names "
                         "task containers itself); remove container_name")
        for port in service.get("ports") or []:
            host_ip = port.get("host_ip") if isinstance(port, dict) else None
            if host_ip and not _loopback(host_ip):
                found.append(f"{where}: port {host_ip}:{port.get('published')} binds a host address, which Swarm "
                             f"cannot; publish it without the address (\"{port.get('published')}:"
                             f"{port.get('target')}\") and restrict who reaches it with a firewall")
        unknown = sorted(set(service) - KEPT - DROPPED - {"cpus", "mem_limit"})
        if unknown:
            found.append(f"{where}: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not read by "
                         "docker stack deploy; remove, or move under deploy: (see the compose file reference)")
    return found


def dropped_addresses(model: dict) -> list[str]:
    """The loopback port bindings Swarm cannot honour (rendered without their address), one warning line each."""
    return [f"backend: swarm: service {name} publishes {port['host_ip']}:{port.get('published')}; Swarm cannot bind "
            f"an address, so port {port.get('published')} is published on every interface of the node"
            for name, service in sorted((model.get("services") or {}).items())
            for port in service.get("ports") or [] if isinstance(port, dict) and port.get("host_ip")
            and _loopback(port["host_ip"])]


def _loopback(host_ip: str) -> bool:
    if host_ip in LOOPBACK:
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host_ip).is_loopback
    return False


def render(model: dict, service: str, replicas: int, registry: str | None = None) -> dict:
    """The v3 stack file of a resolved compose model, with `replicas` tasks of `service`; image names prefixed
    with `registry` when given (a swarm of more than one node pulls them from there)."""
    services = {}
    for name, spec in sorted((model.get("services") or {}).items()):
        out = {key: value for key, value in spec.items() if key in KEPT and value is not None}
        if registry and out.get("image"):
            out["image"] = registry_image(registry, out["image"])
        if "healthcheck" in out:
            out["healthcheck"] = {k: v for k, v in out["healthcheck"].items() if k in HEALTHCHECK_KEYS}
        if "ports" in out:
            out["ports"] = [_host_port(p) for p in out["ports"]]
        if "volumes" in out:
            out["volumes"] = [_volume(v) for v in out["volumes"]]
        deploy = dict(out.get("deploy") or {})
        # dnsrr: the service's name answers every task's address (a VIP does not route everywhere); with it,
        # ports must be published in host mode (above)
        deploy["endpoint_mode"] = "dnsrr"
        if name == service:
            deploy["replicas"] = replicas
        limits = _limits(spec)
        if limits:
            resources = dict(deploy.get("resources") or {})
            resources["limits"] = {**limits, **(resources.get("limits") or {})}
            deploy["resources"] = resources
        out["deploy"] = deploy
        services[name] = out
    rendered: dict[str, Any] = {"version": STACK_VERSION, "services": services}
    for section in ("networks", "volumes"):
        kept = {name: _top_level(spec) for name, spec in (model.get(section) or {}).items()}
        if kept:
            rendered[section] = kept
    return rendered


def registry_image(registry: str, image: str) -> str:
    """`registry/image`: the name a node pulls an image by (the image's own registry part, if any, replaced)."""
    first, _, rest = image.partition("/")
    local = rest if rest and ("." in first or ":" in first or first == "localhost") else image
    return f"{registry.rstrip('/')}/{local}"


def _host_port(port: Any) -> dict:
    """A long-form port in host mode (the ingress mesh does not route everywhere); a loopback host_ip, which
    Swarm cannot bind, is dropped (`refusals` refuses any other address)."""
    if not isinstance(port, dict):  # compose config writes the long form; a short one is read as target[:published]
        published, _, target = str(port).rpartition(":")
        port = {"target": target, "published": published or None}
    out: dict[str, Any] = {"target": int(port["target"]), "protocol": port.get("protocol") or "tcp", "mode": "host"}
    published = port.get("published")
    if published not in (None, ""):
        out["published"] = int(published) if str(published).isdigit() else published
    return out


def _volume(volume: Any) -> Any:
    if isinstance(volume, dict) and isinstance(volume.get("bind"), dict):
        bind = {k: v for k, v in volume["bind"].items() if k == "propagation"}  # v3 knows no create_host_path
        volume = {k: v for k, v in volume.items() if k != "bind"} | ({"bind": bind} if bind else {})
    return volume


def _limits(spec: dict) -> dict:
    """Compose's service-level cpus / mem_limit as Swarm's deploy.resources.limits, so a replica's share of the
    machine is the same on both engines."""
    limits = {}
    if spec.get("cpus"):
        limits["cpus"] = str(spec["cpus"])
    if spec.get("mem_limit"):
        limits["memory"] = str(spec["mem_limit"])
    return limits


def _top_level(spec: Any) -> dict:
    """A network or volume of the stack: Swarm names it <stack>_<name> itself (Compose's resolved name dropped),
    an external one keeps its name."""
    spec = dict(spec or {})
    if not spec.get("external"):
        spec.pop("name", None)
    if spec.get("ipam") == {}:
        spec.pop("ipam")
    return spec


def manager_problem(info: str) -> str | None:
    """Why this engine cannot deploy a stack, from `docker info --format '{{.Swarm.LocalNodeState}}
    {{.Swarm.ControlAvailable}}'`; None when it is a swarm manager."""
    state, _, manager = info.strip().partition(" ")
    if state == "active" and manager == "true":
        return None
    if state == "active":
        return ("backend: swarm: this Docker engine is a swarm worker, not a manager; run loadgrid on a manager "
                "node (docker node ls there), or promote this one (docker node promote)")
    return (f"backend: swarm: this Docker engine is not in a swarm (state {state or 'unknown'}); make it a "
            "manager with `docker swarm init` (one node: docker swarm init --advertise-addr 127.0.0.1), or use "
            "backend: compose")


# --- the stack on the engine ----------------------------------------------------------------------------------

class SwarmStack(ComposeStack):
    """One variant's stack as a swarm stack named after the project. Building, the health-check runs, probes and
    logs of one container reuse ComposeStack's (docker exec / docker logs: task containers on this node)."""

    def __init__(self, project: str, files: tuple[Path, ...], service: str, *, env: dict[str, str] | None = None,
                 registry: str | None = None, work_dir: Path | None = None):
        super().__init__(project, files, service, env=env)
        self.registry = registry
        self.work_dir = work_dir or Path(".")
        self.swarm_service = f"{project}_{service}"
        self._model: dict | None = None
        self._nodes = 1
        self._tasks_before: set[str] = set()

    @property
    def stack_file(self) -> Path:
        return self.work_dir / f"{self.project}.stack.yml"

    def validate(self) -> list[str]:
        """Compose's own checks, then, before anything is built: a swarm manager, and nothing Swarm cannot run."""
        services = super().validate()
        problem = manager_problem(_run(["docker", "info", "--format",
                                        "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"],
                                       timeout=30).stdout)
        if problem:
            raise UserError(problem)
        model = self.model()
        found = refusals(model, ", ".join(p.name for p in self.files))
        if found:
            raise UserError.of(found)
        self._nodes = len(_run(["docker", "node", "ls", "--quiet"], timeout=30).stdout.split())
        for line in dropped_addresses(model):  # the run goes on: said once, as the compose lint's warnings are
            print(f"loadgrid: warning: {line}", file=sys.stderr, flush=True)
        if self._nodes > 1 and not self.registry:
            raise UserError(f"backend: swarm: the swarm has {self._nodes} nodes and the images are only on this "
                            "one; set registry: to a registry every node can pull from (e.g. registry:5000)")
        return services

    def model(self) -> dict:
        if self._model is None:
            proc = _run(self.command("config", "--format", "json"), timeout=60, env=self.env)
            self._model = json.loads(proc.stdout)
        return self._model

    @property
    def deploy_registry(self) -> str | None:
        """The registry images are deployed from: only for more than one node (on one, local images serve)."""
        return self.registry if self._nodes > 1 else None

    def build(self, log_path: Path, timeout_s: float = 3600) -> None:
        super().build(log_path, timeout_s)
        if self.deploy_registry:
            # every node pulls what it runs from the registry: tag and push each service's image there
            for name, spec in sorted((self.model().get("services") or {}).items()):
                if spec.get("image"):
                    target = registry_image(self.deploy_registry, spec["image"])
                    _run(["docker", "tag", spec["image"], target], timeout=60)
                    _run(["docker", "push", target], timeout=timeout_s,
                         log_path=log_path.with_name(f"push-{name}.log"))

    def deploy(self, replicas: int) -> None:
        rendered = render(self.model(), self.service, replicas, self.deploy_registry)
        self.stack_file.parent.mkdir(parents=True, exist_ok=True)
        store.write_atomic(self.stack_file, yaml.safe_dump(rendered, sort_keys=False))
        resolve = ["--with-registry-auth", "--resolve-image", "always"] if self.deploy_registry \
            else ["--resolve-image", "never"]  # local images: no registry to ask for a digest
        _run(["docker", "stack", "deploy", "--prune", *resolve, "--compose-file", str(self.stack_file),
              self.project], timeout=300, env=self.env)

    def scale(self, replicas: int, timeout_s: int, clock: Callable[[], float] = time.monotonic) -> list[Replica]:
        """Deploy the stack (first size) or `docker service scale` the service, then wait, bounded, until exactly
        `replicas` tasks run and are healthy (a task's health: its container's health check, see
        run_health_test). No gateway restart as on Compose: the gateway resolves the service's name every 2 s,
        and the warm-up requests that follow wait until every task answers through it."""
        deadline = clock() + timeout_s
        self._tasks_before = {t["ID"] for t in self.tasks()}
        if not self._service_exists():
            self.deploy(replicas)
        else:
            _run(["docker", "service", "scale", "--detach", f"{self.swarm_service}={replicas}"], timeout=120)
        return self.wait_healthy(replicas, max(1.0, deadline - clock()), clock=clock)

    def wait_healthy(self, replicas: int, timeout_s: float, clock: Callable[[], float] = time.monotonic,
                     pause: Callable[[float], None] = time.sleep) -> list[Replica]:
        """Poll until exactly `replicas` tasks run and are ready; a task of this step that fails or is rejected
        fails it at once with Swarm's reason (Swarm would replace it and try again, hiding why)."""
        deadline = clock() + timeout_s
        while True:
            found = self.replicas()
            if len(found) == replicas and all(r.ready for r in found):
                return found
            failed = self.failed_tasks()
            if failed or clock() >= deadline:
                states = ", ".join(describe(r) for r in found) or "none"
                why = f"; failed tasks: {'; '.join(failed)}" if failed \
                    else f" after {timeout_s:.0f} s (startup_timeout)"
                raise StackError(f"expected {replicas} healthy {self.service} tasks, found "
                                 f"{sum(1 for r in found if r.ready)} ({states}){why}")
            pause(POLL_S)  # pacing between polls of a bounded loop, not synchronisation

    def run_health_test(self, replica: Replica) -> bool:
        """Not run ahead of Docker here: Swarm adds a task to its service's DNS (what the gateway resolves) only
        once Docker's own check said healthy, so a task is ready when Docker says so (its first check comes one
        healthcheck interval after start)."""
        return False

    def _service_exists(self) -> bool:
        # the name filter matches prefixes (lg-cpu_model2 too): compare the names
        names = _run(["docker", "service", "ls", "--format", "{{.Name}}", "--filter", f"name={self.swarm_service}"],
                     timeout=30).stdout.split()
        return self.swarm_service in names

    def tasks(self) -> list[dict]:
        """The scaled service's tasks, as `docker inspect` sees them (any desired state)."""
        ids = _run(["docker", "service", "ps", "--quiet", "--no-trunc", self.swarm_service], timeout=30,
                   check=False).stdout.split()
        if not ids:
            return []
        proc = _run(["docker", "inspect", "--type", "task", *ids], timeout=30, check=False)
        return json.loads(proc.stdout or "[]") if proc.returncode == 0 else []

    def failed_tasks(self) -> list[str]:
        """Tasks started by this scale step that failed or were rejected, with Swarm's reason."""
        return [f"{t['ID'][:12]} {t['Status'].get('State')}: {t['Status'].get('Err') or t['Status'].get('Message')}"
                for t in self.tasks() if t["ID"] not in self._tasks_before
                and (t.get("Status") or {}).get("State") in ("failed", "rejected")]

    def replicas(self) -> list[Replica]:
        """One Replica per task Swarm wants running, from its container (inspected on this node; a task on
        another node from the task alone: Swarm keeps a task with a health check "starting" until it is healthy,
        so "running" there means healthy), each with the node it runs on."""
        nodes = self._node_names()
        found = []
        for task in self.tasks():
            if task.get("DesiredState") != "running":
                continue
            status = task.get("Status") or {}
            container = (status.get("ContainerStatus") or {}).get("ContainerID") or ""
            node = nodes.get(task.get("NodeID", ""), task.get("NodeID", ""))
            replica = self._local_replica(container) if container else None
            if replica is None:
                replica = Replica(container_id=container or task["ID"], name=f"{self.swarm_service}.{task.get('Slot')}",
                                  status="running" if status.get("State") == "running" else status.get("State", "?"),
                                  health=None, started_at=status.get("Timestamp", ""), restart_count=0,
                                  exit_code=int((status.get("ContainerStatus") or {}).get("ExitCode") or 0),
                                  oom_killed=False, image_id="")
            found.append(self._mark(dataclasses.replace(replica, node=node)))
        return sorted(found, key=lambda r: r.name)

    def _local_replica(self, container: str) -> Replica | None:
        proc = _run(["docker", "inspect", "--type", "container", container], timeout=30, check=False)
        return _replica(json.loads(proc.stdout)[0]) if proc.returncode == 0 else None

    def _node_names(self) -> dict[str, str]:
        proc = _run(["docker", "node", "ls", "--format", "{{.ID}} {{.Hostname}}"], timeout=30, check=False)
        return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)

    def container_ids(self, service: str | None = None) -> list[str]:
        label = f"label={SWARM_SERVICE_LABEL}={self.project}_{service}" if service \
            else f"label={STACK_LABEL}={self.project}"
        return _run(["docker", "ps", "--all", "--quiet", "--no-trunc", "--filter", label], timeout=30).stdout.split()

    def logs(self, path: Path, tail: int = 500) -> None:
        """Every service's recent lines (`docker service logs`: the tasks' on every node)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        names = _run(["docker", "service", "ls", "--format", "{{.Name}}", "--filter",
                      f"label={STACK_LABEL}={self.project}"], timeout=30, check=False).stdout.split()
        with open(path, "w", encoding="utf-8") as out:
            for name in sorted(names):
                proc = _run(["docker", "service", "logs", "--no-trunc", "--timestamps", "--tail", str(tail), name],
                            timeout=60, check=False)
                out.write(proc.stdout + proc.stderr)

    def monitor(self, gpu: bool = False):
        """Events and stats of this stack's task containers on this node (their labels are Swarm's)."""
        monitor = SwarmMonitor(self, gpu)
        monitor.telemetry.unreached = self.unreached()
        return monitor

    def unreached(self) -> dict[str, str]:
        """The stack's running tasks on other nodes: their containers' stats and events are that node's engine's,
        which loadgrid does not reach (the record says so instead of leaving them out silently)."""
        here = _run(["docker", "info", "--format", "{{.Swarm.NodeID}}"], timeout=30, check=False).stdout.strip()
        nodes = self._node_names()
        proc = _run(["docker", "stack", "ps", "--no-trunc", "--filter", "desired-state=running", "--format",
                     "{{.Name}} {{.Node}}", self.project], timeout=30, check=False)
        here_name = nodes.get(here, here)
        return {name: f"runs on node {node}, whose engine loadgrid does not reach (only {here_name}'s)"
                for name, _, node in (line.partition(" ") for line in proc.stdout.splitlines())
                if node and node != here_name}

    def down(self) -> None:
        """`docker stack rm`, waited until no service, network or container of the stack is left (bounded);
        safe when nothing runs."""
        self._model = None  # the next deploy renders from the files again
        _run(["docker", "stack", "rm", self.project], timeout=120, check=False)
        left = wait_gone(self.leftovers, DOWN_TIMEOUT_S, POLL_S)
        if left:
            raise StackError(f"docker stack rm {self.project}: still there after {DOWN_TIMEOUT_S}s: "
                             f"{', '.join(left)}; remove them with docker stack rm / docker rm -f")

    def leftovers(self) -> list[str]:
        """What of the stack the engine still has: services, networks, containers."""
        label = f"label={STACK_LABEL}={self.project}"
        found = []
        for kind, cmd in (("service", ["docker", "service", "ls"]), ("network", ["docker", "network", "ls"]),
                          ("container", ["docker", "ps", "--all"])):
            proc = _run([*cmd, "--quiet", "--filter", label], timeout=30, check=False)
            if proc.returncode != 0 and kind == "service":
                continue  # not a manager (any more): no services to wait for
            found += [f"{kind} {item[:12]}" for item in proc.stdout.split()]
        return found


class SwarmMonitor(Monitor):
    """The engine's events and stats of the task containers on this node (Swarm's labels), and on exit the task
    state changes of the scaled service on every node: a task that failed during the run is an incident even
    where its container's events are another engine's."""

    def __init__(self, stack: SwarmStack, gpu: bool = False, **kwargs):
        super().__init__(stack.project, stack.service, gpu=gpu, project_label=STACK_LABEL,
                         service_label=SWARM_SERVICE_LABEL, **kwargs)
        self.stack = stack

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        found = task_events(self.stack.tasks(), self.started_at, self.service, self.stack.swarm_service)
        with self._lock:
            seen = {e.container for e in self.events}
            self.events += [e for e in found if e.container not in seen]


def task_events(tasks: list[dict], since: float, service: str, swarm_service: str) -> list[ContainerEvent]:
    """One "die" event per task that failed (or was rejected) at or after `since` (epoch seconds), from Swarm's
    task state: its container, slot and exit code."""
    found = []
    for task in tasks:
        status = task.get("Status") or {}
        at = _epoch(status.get("Timestamp", ""))
        if status.get("State") not in ("failed", "rejected") or at is None or at < since:
            continue
        container = status.get("ContainerStatus") or {}
        code = container.get("ExitCode")
        found.append(ContainerEvent(time=at, container=(container.get("ContainerID") or task.get("ID", ""))[:12],
                                    name=f"{swarm_service}.{task.get('Slot')}", service=service,
                                    action="die", exit_code=int(code) if code not in (None, "") else None))
    return found


def _epoch(stamp: str) -> float | None:
    """An engine timestamp (RFC 3339 with nanoseconds, e.g. 2026-12-02T20:29:10.123456789Z) as epoch seconds."""
    from datetime import datetime

    head, _, frac = stamp.rstrip("Z").partition(".")
    try:
        whole = datetime.fromisoformat(head + "+00:00").timestamp()
    except ValueError:
        return None
    digits = "".join(ch for ch in frac if ch.isdigit())
    return whole + (int(digits) / 10 ** len(digits) if digits else 0.0)


# --- the load generator's workers as a service (load_workers) ----------------------------------------------

WORKERS_SERVICE = "loadgrid-worker"


@dataclasses.dataclass
class SwarmWorkers(EngineWorkers):
    """load_workers on Swarm: one service of N tasks of the worker image, spread over the nodes by Swarm, on each
    node's host network, joining the master at the manager's address (`docker info`: Swarm.NodeAddr). With more
    than one node the image is pushed to `registry` first, as the stack's are. Removed with `docker service rm`,
    waited until its containers are gone."""

    registry: str | None = None

    @property
    def service(self) -> str:
        return f"{self.project}_{WORKERS_SERVICE}"

    def start(self, log: Path | None = None) -> None:
        self.remove()
        image = self.build_image(log)
        nodes = len(_run(["docker", "node", "ls", "--quiet"], timeout=30).stdout.split())
        if nodes > 1:
            if not self.registry:
                raise UserError(f"load_workers: the swarm has {nodes} nodes and the worker image is only on this "
                                "one; set registry: (the registry every node pulls from)", exit_code=1)
            image = registry_image(self.registry, self.image)
            _run(["docker", "tag", self.image, image], timeout=60)
            _run(["docker", "push", image], timeout=1800)
        address = _run(["docker", "info", "--format", "{{.Swarm.NodeAddr}}"], timeout=30).stdout.strip()
        if not address:
            raise UserError("load_workers: docker info gives no swarm address for this node: make it a manager "
                            "(docker swarm init)", exit_code=1)
        _run(["docker", "service", "create", "--detach", "--name", self.service, "--replicas", str(self.count),
              # Not the stack's namespace label: `docker stack deploy --prune` would remove the service.
              "--network", "host", "--label", f"org.loadgrid.workers={self.project}",
              "--container-label", f"org.loadgrid.workers={self.project}",
              "--env", "LOADGRID_WORKER_NAME={{.Task.Name}}@{{.Node.Hostname}}",
              image, "--master", f"{address}:{self.master_port}"], timeout=120)
        self.say(f"started the service {self.service}: {self.count} Locust worker task(s) ({image}), master at "
                 f"{address}:{self.master_port}")

    def leftovers(self) -> list[str]:
        service = _run(["docker", "service", "ls", "--quiet", "--filter", f"name={self.service}"], timeout=30,
                       check=False).stdout.split()
        label = f"label={SWARM_SERVICE_LABEL}={self.service}"
        containers = _run(["docker", "ps", "--all", "--quiet", "--filter", label], timeout=30,
                          check=False).stdout.split()
        return [f"service {s[:12]}" for s in service] + [f"container {c[:12]}" for c in containers]

    def remove(self, timeout_s: float = DOWN_TIMEOUT_S) -> None:
        _run(["docker", "service", "rm", self.service], timeout=60, check=False)
        left = wait_gone(self.leftovers, timeout_s, POLL_S)
        if left:
            raise StackError(f"docker service rm {self.service}: still there after {timeout_s:.0f}s: "
                             f"{', '.join(left)}; remove it with docker service rm")
