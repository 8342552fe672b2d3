"""Per stack size state, owned by the run loop: how each size became ready, and its unloaded latency.

`bring_up` scales a stack to N and establishes readiness (health checks where the service has them, then
warm-up requests through host, see readiness.py). What it learns is kept per (project, replicas): the
readiness goes into every record of that size, and the warm-up's median latency is the unloaded baseline
that quiesce compares with before each run. A grid's `StackSizes` lives as long as the grid, no longer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import payload as payload_mod
from . import quiesce, readiness
from .backend import Stack
from .config import Config
from .session import GridOutcome
from .stack import StackError


@dataclass
class SizeState:
    readiness: dict = field(default_factory=dict)  # the record's readiness of this size; empty: not established
    baseline_ms: float | None = None  # unloaded median latency; None: not known (quiesce then checks gauges only)


def unloaded_sender(config: Config, answer: bool = False):
    """One unloaded request with the configured payload through the host, judged by the run's `expect`
    (None when the payload cannot load); `answer`: the whole quiesce.Answer, else the latency (or None)."""
    try:
        loaded = payload_mod.load(config.payload_source, config.send_as)
        body = loaded.bodies[0]
    except (payload_mod.PayloadError, OSError, IndexError):
        return None
    url = config.target_url or config.host.rstrip("/") + config.predict_path
    expect = config.expect or payload_mod.default_expect(loaded.kind)
    send = quiesce.http_answer(url, body.data, body.content_type, expect)
    return send if answer else (lambda: send().latency_ms)


class StackSizes:
    """(project, replicas) -> SizeState, for one grid; in target mode the project is the target variant."""

    def __init__(self) -> None:
        self._sizes: dict[tuple[str, int], SizeState] = {}
        self._told_no_healthcheck: set[str] = set()  # projects whose missing health check was said

    def of(self, project: str, models: int) -> SizeState:
        return self._sizes.setdefault((project, models), SizeState())

    def measure_baseline(self, config: Config, project: str, models: int) -> None:
        """The unloaded latency of a size that needs no scaling (target mode): what `quiesce` compares with."""
        send = unloaded_sender(config)
        self.of(project, models).baseline_ms = quiesce.baseline_ms(send) if send else None

    def bring_up(self, config: Config, stack: Stack, models: int, outcome: GridOutcome,
                 say: Callable[[str], None]) -> str | None:
        """Scale to `models` and establish readiness; None when ready, else why not (the points fail with it).

        The time goes to timings.scale_s and one outcome.scale_steps entry.
        """
        size = self.of(stack.project, models)
        t0 = time.monotonic()
        step = {"project": stack.project, "models": models}
        try:
            try:
                found = stack.scale(models, config.startup_timeout_s)
            except StackError as exc:
                size.readiness = {"method": "healthcheck", "ready": False,
                                  "waited_s": round(time.monotonic() - t0, 2), "requests": 0, "detail": str(exc)}
                size.baseline_ms = None
                return f"stack not ready: {exc}"
            method = "healthcheck" if any(r.health is not None for r in found) else "requests"
            if method == "requests" and stack.project not in self._told_no_healthcheck:
                self._told_no_healthcheck.add(stack.project)
                say(readiness.console_line(config.service, config.startup_timeout_s))
            t1 = time.monotonic()
            send = unloaded_sender(config, answer=True)
            if send is None:
                ready = {"method": method, "ready": True, "waited_s": 0.0, "requests": 0,
                         "detail": "no warm-up requests: the payload could not be loaded"}
            else:
                left = max(1.0, config.startup_timeout_s - (t1 - t0))
                ready = readiness.wait_ready(send, models, left, method, {r.container_id[:12] for r in found})
            # waited_s: from the start of the scale step (containers, health checks, warm-up); requests_s: the
            # warm-up requests alone
            ready = {**ready, "requests_s": ready["waited_s"], "waited_s": round(time.monotonic() - t0, 2)}
            size.readiness = ready
            size.baseline_ms = ready.get("median_ms") if ready["ready"] else None
            step.update(ready=ready["ready"], readiness_s=ready["waited_s"], method=method)
            return None if ready["ready"] else readiness.reason(ready, config.host)
        finally:
            seconds = time.monotonic() - t0
            outcome.timings.scale_s += seconds
            outcome.scale_steps.append({**step, "seconds": round(seconds, 2)})
