"""Docker Compose control for one variant's stack: build, scale, inspect replicas, tear down.

Everything here shells out to `docker compose` / `docker` (the CLI a user would type), so what the tool
does can be replayed by hand. Every container and network carries the compose project label, which is
how `down`, the tests and crash checks find them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import compose_lint, redact
from .errors import UserError

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
HEALTH_POLL_S = 0.25  # loadgrid's own health polling while replicas start (Docker's interval stays as set)


class StackError(UserError):
    """The stack could not be brought to the state a run needs (build, start, health)."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=1)


@dataclass(frozen=True)
class Replica:
    """One container of the scaled service, as `docker inspect` sees it."""

    container_id: str
    name: str
    status: str  # running, exited, restarting, ...
    health: str | None  # healthy, unhealthy, starting, or None without a health check
    started_at: str
    restart_count: int
    exit_code: int
    oom_killed: bool
    image_id: str
    health_test: tuple[str, ...] = ()  # the container's health check command (Config.Healthcheck.Test)
    health_timeout_s: float = 30.0
    # loadgrid ran that command itself in the container and it passed, while Docker still says "starting"
    # (Docker's first check comes one interval after start; see ComposeStack.wait_healthy).
    checked: bool = False
    node: str | None = None  # the swarm node its task runs on (None on Compose: this machine)

    @property
    def ready(self) -> bool:
        return self.status == "running" and (self.health in ("healthy", None)
                                             or self.health == "starting" and self.checked)


def _run(cmd: list[str], *, timeout: float, env: dict | None = None, check: bool = True,
         log_path: Path | None = None) -> subprocess.CompletedProcess:
    try:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "w", encoding="utf-8") as log:
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
                                      timeout=timeout, stdin=subprocess.DEVNULL)
        else:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise StackError("docker: command not found; install Docker (or run ./setup.sh)") from None
    except subprocess.TimeoutExpired:
        raise StackError(f"{' '.join(cmd[:4])} ...: no answer within {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        detail = _last_line(proc.stderr if log_path is None else log_path.read_text())
        where = f" (full log: {log_path})" if log_path else ""
        raise StackError(f"{' '.join(cmd[:2])} {_verb(cmd)} failed: {detail}{where}")
    return proc


def wait_gone(leftovers: Callable[[], list], timeout_s: float, poll_s: float = 0.25) -> list:
    """Poll `leftovers()` until it lists nothing or `timeout_s` has passed; what was still there (empty: gone)."""
    deadline = time.monotonic() + timeout_s
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(poll_s)  # pacing between polls of a bounded loop, not synchronisation
    return left


def _verb(cmd: list[str]) -> str:
    for word in cmd[2:]:
        if not word.startswith("-") and word in ("build", "up", "down", "ps", "restart", "config", "logs"):
            return word
    return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def check_engine() -> None:
    """Fail early, in one line, when Docker or Compose v2 is not usable."""
    proc = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20, check=False)
    if proc.returncode != 0:
        raise StackError("Docker daemon not reachable (docker info failed): start it, or run ./setup.sh")
    proc = _run(["docker", "compose", "version", "--short"], timeout=20, check=False)
    if proc.returncode != 0:
        raise StackError("Docker Compose v2 missing (`docker compose version` failed): install the compose plugin, "
                         "or run ./setup.sh")


class ComposeStack:
    def __init__(self, project: str, files: tuple[Path, ...], service: str, *,
                 env: dict[str, str] | None = None, gateway_service: str | None = "gateway"):
        self.project = project
        self.files = files
        self.service = service
        self.gateway_service = gateway_service
        self.env = {**os.environ, **(env or {})}
        self._checked: dict[str, str] = {}  # container id -> StartedAt when loadgrid's run of its health test passed

    def command(self, *args: str) -> list[str]:
        cmd = ["docker", "compose", "--project-name", self.project,
               "--project-directory", str(self.files[0].parent)]
        for path in self.files:
            cmd += ["-f", str(path)]
        return cmd + list(args)

    def validate(self) -> list[str]:
        """`compose config`: fails with the file named when a compose file is invalid; returns the services.

        What Compose resolved (includes, extends, variables) is linted before anything is built: a
        container_name or a fixed host port on the scaled service is an error (see compose_lint).
        """
        proc = _run(self.command("config", "--format", "json"), timeout=60, env=self.env, check=False)
        if proc.returncode != 0:
            files = ", ".join(str(p) for p in self.files)
            raise UserError(f"compose file invalid ({files}): {_last_line(proc.stderr)}")
        model = json.loads(proc.stdout).get("services") or {}
        services = sorted(model)
        found = compose_lint.lint(model, self.service, None, ", ".join(p.name for p in self.files))
        if found.errors:
            raise UserError.of(list(found.errors))
        if self.service not in services:
            raise UserError(f"config: service: {self.service!r} is not a service of {self.files[0].name} "
                            f"(it has {', '.join(services)}); set service to the one to scale")
        if self.gateway_service not in services:
            self.gateway_service = None
        return services

    def service_image_id(self) -> str:
        """The image id the scaled service runs (after `build`): what a replica's measurements are keyed by."""
        proc = _run(self.command("config", "--format", "json"), timeout=60, env=self.env)
        image = json.loads(proc.stdout)["services"][self.service].get("image")
        if not image:
            raise StackError(f"service {self.service} names no image; cannot key its GPU memory")
        return _run(["docker", "image", "inspect", "--format", "{{.Id}}", image], timeout=30).stdout.strip()

    def build(self, log_path: Path, timeout_s: float = 3600) -> None:
        _run(self.command("build"), timeout=timeout_s, env=self.env, log_path=log_path)

    def scale(self, replicas: int, timeout_s: int, clock: Callable[[], float] = time.monotonic) -> list[Replica]:
        """Bring the service to exactly `replicas` ready containers, fast.

        `up` without --wait, then loadgrid runs each new replica's own health check command itself (docker
        exec, every HEALTH_POLL_S) until it passes: Docker's first check would come only one interval (5 s on
        the bundled stack) after start, and a shorter interval would cost CPU during the runs too. Replicas
        without a health check are ready when running; the warm-up requests (readiness.py) decide then.
        """
        deadline = clock() + timeout_s
        try:
            _run(self.command("up", "--detach", "--no-build", "--remove-orphans", "--scale",
                              f"{self.service}={replicas}"), timeout=timeout_s + 60, env=self.env)
        except StackError as exc:
            raise self._explain(exc) from None
        if self.gateway_service:
            # A gateway may cache the replicas' addresses; a restart makes it see the new set now instead of
            # sending the first seconds of the next run to a removed replica. Its readiness is judged by the
            # warm-up requests through host that follow, not by waiting for its health check.
            _run(self.command("restart", "--timeout", "10", self.gateway_service), timeout=120, env=self.env)
        return self.wait_healthy(replicas, max(1.0, deadline - clock()), clock=clock)

    def wait_healthy(self, replicas: int, timeout_s: float, clock: Callable[[], float] = time.monotonic,
                     pause: Callable[[float], None] = time.sleep) -> list[Replica]:
        """Poll until exactly `replicas` replicas are running and ready, running each one's health check
        command while Docker says "starting"; a replica that exits fails at once, with why."""
        deadline = clock() + timeout_s
        while True:
            found = self.replicas()
            for replica in found:
                starting = replica.status == "running" and replica.health == "starting" and not replica.checked
                if starting and self.run_health_test(replica):
                    self._checked[replica.container_id] = replica.started_at
            found = [self._mark(r) for r in found]
            if len(found) == replicas and all(r.ready for r in found):
                return found
            dead = [r for r in found if r.status in ("exited", "dead") or r.health == "unhealthy"]
            if dead or clock() >= deadline:
                states = ", ".join(describe(r) for r in found) or "none"
                ready = sum(1 for r in found if r.ready)
                why = "" if dead else f" after {timeout_s:.0f} s (startup_timeout)"
                raise StackError(f"expected {replicas} healthy {self.service} replicas, found {ready}{why} ({states})")
            pause(HEALTH_POLL_S)  # pacing between polls of a bounded loop, not synchronisation

    def run_health_test(self, replica: Replica) -> bool:
        """Run the replica's health check command (as Docker would: in the container, as its user)."""
        test = list(replica.health_test)
        if not test or test[0] == "NONE":
            return False
        command = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
        try:
            proc = _run(["docker", "exec", replica.container_id, *command],
                        timeout=min(replica.health_timeout_s, 10.0), check=False)
        except StackError:  # the check timed out: not healthy yet
            return False
        return proc.returncode == 0

    def _mark(self, replica: Replica) -> Replica:
        if self._checked.get(replica.container_id) == replica.started_at and not replica.checked:
            return dataclasses.replace(replica, checked=True)
        return replica

    def _explain(self, exc: StackError) -> StackError:
        """A failed `up` names the replicas that did not come up, with exit code and OOM kill."""
        broken = [describe(r) for r in self.replicas() if not r.ready]
        return StackError(f"{exc}; replicas: {', '.join(broken)}") if broken else exc

    def container_ids(self, service: str | None = None) -> list[str]:
        cmd = ["docker", "ps", "--all", "--quiet", "--no-trunc", "--filter", f"label={PROJECT_LABEL}={self.project}"]
        if service:
            cmd += ["--filter", f"label={SERVICE_LABEL}={service}"]
        return _run(cmd, timeout=30).stdout.split()

    def replicas(self) -> list[Replica]:
        ids = self.container_ids(self.service)
        if not ids:
            return []
        proc = _run(["docker", "inspect", *ids], timeout=30, check=False)
        if proc.returncode != 0:  # a container vanished between ps and inspect: ask again once
            ids = self.container_ids(self.service)
            proc = _run(["docker", "inspect", *ids], timeout=30) if ids else None
        found = (_replica(item) for item in json.loads(proc.stdout)) if proc else []
        return sorted((self._mark(r) for r in found), key=lambda r: r.name)

    def probe(self, replica: Replica, port: int, path: str) -> dict | None:
        """GET a replica's own endpoint from inside its container (replicas publish no port).

        Tries python3, then curl, then wget, so it works on most images; None when none answers.
        """
        url = f"http://127.0.0.1:{port}{path}"
        code = ("import sys,urllib.request as u\n"
                "try: r=u.urlopen(sys.argv[1],timeout=5)\n"
                "except Exception as e: r=getattr(e,'fp',None)\n"
                "sys.stdout.write(r.read().decode() if r else '')")
        attempts = [["python3", "-c", code, url], ["curl", "-sS", url], ["wget", "-qO-", url]]
        for attempt in attempts:
            proc = _run(["docker", "exec", replica.container_id, *attempt], timeout=20, check=False)
            if proc.returncode == 0 and proc.stdout.strip():
                try:
                    answer = json.loads(proc.stdout)
                except json.JSONDecodeError:
                    return None
                return answer if isinstance(answer, dict) else None
        return None

    def get_text(self, replica: Replica, port: int, path: str) -> str | None:
        """GET a replica's own endpoint from inside its container, as text (e.g. /metrics); None when none answers
        with 200 (python3, then curl, then wget, like `probe`)."""
        url = f"http://127.0.0.1:{port}{path}"
        code = ("import sys,urllib.request as u\n"
                "sys.stdout.write(u.urlopen(sys.argv[1],timeout=5).read().decode())")
        for attempt in (["python3", "-c", code, url], ["curl", "-sSf", url], ["wget", "-qO-", url]):
            proc = _run(["docker", "exec", replica.container_id, *attempt], timeout=20, check=False)
            if proc.returncode == 0 and proc.stdout.strip():
                return proc.stdout
        return None

    def last_logs(self, container_id: str, lines: int = 20) -> list[str]:
        proc = _run(["docker", "logs", "--tail", str(lines), container_id], timeout=30, check=False)
        return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()][-lines:]

    def logs(self, path: Path, tail: int = 500) -> None:
        _run(self.command("logs", "--no-color", "--timestamps", "--tail", str(tail)), timeout=60, env=self.env,
             check=False, log_path=path)

    def monitor(self, gpu: bool = False):
        """A `monitor.Monitor` for one run: this project's container events and stats (GPU samples with `gpu`)."""
        from .monitor import Monitor  # monitor imports this module's labels

        return Monitor(self.project, self.service, gpu=gpu)

    def running(self) -> contextlib.AbstractContextManager[ComposeStack]:
        """`with stack.running():` a clean slate on entry, `down` on exit whatever happened (see `running`)."""
        return running(self)

    def down(self) -> None:
        """Remove every container, network and volume of the project; safe to call when nothing runs."""
        _run(self.command("down", "--volumes", "--remove-orphans", "--timeout", "10"), timeout=180, env=self.env,
             check=False)
        left = self.container_ids()
        if left:  # `down` only knows the services of these files: remove the rest of our label too
            _run(["docker", "rm", "--force", "--volumes", *left], timeout=60, check=False)


def describe(replica: Replica) -> str:
    text = f"{replica.name} {replica.status}"
    if replica.health:
        text += f"/{replica.health}"
    if replica.status != "running":
        text += f" (exit code {replica.exit_code}{', OOM-killed' if replica.oom_killed else ''})"
    return text


def _replica(item: dict) -> Replica:
    state = item.get("State", {})
    health = (state.get("Health") or {}).get("Status")
    check = (item.get("Config") or {}).get("Healthcheck") or {}
    return Replica(
        container_id=item["Id"],
        name=item.get("Name", "").lstrip("/"),
        status=state.get("Status", "unknown"),
        health=health,
        started_at=state.get("StartedAt", ""),
        restart_count=int(item.get("RestartCount", 0)),
        exit_code=int(state.get("ExitCode", 0)),
        oom_killed=bool(state.get("OOMKilled", False)),
        image_id=item.get("Image", ""),
        health_test=tuple(check.get("Test") or ()),
        health_timeout_s=(check.get("Timeout") or 30_000_000_000) / 1e9,
    )


def cpu_limit_cores(item: dict, host_cores: int | None) -> float | None:
    """The cores a container may use, from its `docker inspect` HostConfig: the tightest of `--cpus` (NanoCpus),
    a CFS quota (CpuQuota / CpuPeriod) and a cpuset (CpusetCpus, e.g. "0-1,3"); the host's cores when none is set.

    None when neither a limit nor the host's cores are known: "at its limit" cannot be judged then.
    """
    config = item.get("HostConfig") or {}
    limits = []
    if config.get("NanoCpus"):
        limits.append(config["NanoCpus"] / 1e9)
    if (config.get("CpuQuota") or 0) > 0:
        limits.append(config["CpuQuota"] / (config.get("CpuPeriod") or 100_000))  # the kernel's default period
    if config.get("CpusetCpus"):
        limits.append(float(_cpuset_size(config["CpusetCpus"])))
    if host_cores:
        limits.append(float(host_cores))
    return round(min(limits), 3) if limits else None


def _cpuset_size(cpuset: str) -> int:
    count = 0
    for part in cpuset.split(","):
        low, _, high = part.strip().partition("-")
        if low:
            count += int(high or low) - int(low) + 1
    return count


@contextmanager
def running(stack: ComposeStack) -> Iterator[ComposeStack]:
    """Start from a clean slate and always tear down: on success, error, Ctrl-C or SIGTERM."""
    stack.down()
    try:
        yield stack
    finally:
        with _signals_held():
            stack.down()


@contextmanager
def _signals_held() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while tearing down, so a second Ctrl-C cannot leave containers behind.

    Ignored signals stay ignored in the `docker compose down` child too, so it also runs to the end.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def wait_reachable(url: str, timeout_s: float = 30) -> None:
    """Poll `url` until it gives any HTTP answer below 500, bounded by `timeout_s`."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(0.2)  # pacing between polls of a bounded loop, not synchronisation
    raise StackError(f"host {redact.url(url)} not reachable {timeout_s:.0f}s after the stack was up ({last}); "
                     "check host and the gateway's published port in the config")
