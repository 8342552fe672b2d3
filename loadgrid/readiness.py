"""Readiness after every scale step: is the stack answering the benchmark's own request, at its settled speed?

A health check says a replica's process is up; it does not say its first inference is done, and a stack
without one says nothing at all (`up --wait` returns at once while workers still load their model). So after
each scale step loadgrid sends warm-up requests through `host`, the configured payload judged as the
locustfile judges it (quiesce.http_answer), until IN_A_ROW requests in a row succeed and their latencies
settle, bounded by `startup_timeout`:
  in a row: at least max(IN_A_ROW, replicas + 2), so a round-robin gateway sends one to every replica; where
            answers name their replica (X-Replica, or "replica" in the JSON) and those names are the
            containers', every replica must be among the last ones;
  settled:  each of them within SETTLE_RATIO x their median + SETTLE_MARGIN_MS (a replica's slow first
            inference, or a request held while a model loads, keeps the stack "not ready").
The outcome is the record's `readiness`: {method, ready, waited_s (from the start of the scale step),
requests_s (the warm-up requests alone), requests, median_ms, detail}; method "healthcheck"
when Docker's health checks (polled fast by loadgrid, see stack.ComposeStack.scale) said the replicas were up
first, "requests" when the service has none and the requests alone decide.

The logic (`wait_ready`) takes its request as a callable, so it is tested with fakes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from . import redact
from .quiesce import Answer
from .store import Readiness

IN_A_ROW = 3
SETTLE_RATIO = 1.5
SETTLE_MARGIN_MS = 20.0
POLL_S = 0.2  # pause after a failed request (a refused connection answers at once)


def needed(replicas: int) -> int:
    return max(IN_A_ROW, replicas + 2)


def settled(latencies: list[float]) -> bool:
    middle = statistics.median(latencies)
    return all(t <= middle * SETTLE_RATIO + SETTLE_MARGIN_MS for t in latencies)


def wait_ready(send: Callable[[], Answer], replicas: int, timeout_s: float, method: str,
               names: set[str] | None = None, clock: Callable[[], float] = time.monotonic,
               pause: Callable[[float], None] = time.sleep) -> dict:
    """Send until ready or `timeout_s`; `names`: the replicas' container names/ids (12 hex) to be covered."""
    need = needed(replicas)
    start = clock()
    streak: list[Answer] = []
    sent = 0
    last_problem = "no answer yet"
    reached = False  # did any request get an HTTP answer (served or not)?
    while True:
        answer = send()
        sent += 1
        reached = reached or answer.latency_ms is not None or not unreachable(answer.problem)
        if answer.latency_ms is None:
            streak = []
            last_problem = answer.problem or "failed"
        else:
            streak.append(answer)
        waited = clock() - start
        if len(streak) >= need:
            window = streak[-need:]
            times = [a.latency_ms for a in window if a.latency_ms is not None]
            missing = _uncovered(window, names)
            if settled(times) and not missing:
                shown = ", ".join(f"{t:.0f}" for t in times)
                return {"method": method, "ready": True, "waited_s": round(waited, 2), "requests": sent,
                        "median_ms": round(statistics.median(times), 1),
                        "detail": f"{need} requests in a row served ({shown} ms)"
                                  + (", every replica answered" if names and _named(window, names) else "")}
            last_problem = (f"replica(s) {', '.join(sorted(missing))} not among the last {need} answers"
                            if missing else f"latency not settled: last {need} took "
                                            f"{', '.join(f'{t:.0f}' for t in times)} ms")
        if waited >= timeout_s:
            return {"method": method, "ready": False, "waited_s": round(waited, 2), "requests": sent,
                    "reached": reached,
                    "detail": f"no {need} requests in a row served with settled latency within "
                              f"{timeout_s:.0f} s (startup_timeout); last: {last_problem}"}
        if answer.latency_ms is None:
            pause(POLL_S)  # pacing between attempts of a bounded loop, not synchronisation


def _named(window: list[Answer], names: set[str]) -> bool:
    """Do the answers name replicas by their container (hostname = the id's first 12 characters, or name)?"""
    return any(a.replica in names for a in window if a.replica)


def _uncovered(window: list[Answer], names: set[str] | None) -> set[str]:
    """Replicas (short container ids, which are their hostnames) that did not answer among the window, when
    the answers name them; empty when the answers cannot tell replicas apart."""
    if not names or not _named(window, names):
        return set()
    seen = {a.replica for a in window}
    return {n for n in names if n not in seen}


# What a request that never reached an HTTP server says (quiesce.http_answer passes the OS error on). A time-out
# is not among them: a stack that accepts and holds requests while its model loads times out, and is not ready.
_UNREACHABLE = ("connection refused", "name or service", "unreachable", "no route")


def unreachable(problem: str) -> bool:
    return any(word in (problem or "").lower() for word in _UNREACHABLE)


def reason(readiness: Readiness | dict | None, host: str = "") -> str:
    readiness = Readiness.of(readiness) or Readiness()
    if host and readiness.reached is False:
        # Not one request got an HTTP answer: the stack may be up, but nothing serves on `host`.
        return f"host {redact.url(host)} not reachable after the stack is up: {readiness.detail or ''}"
    return f"stack not ready: {readiness.detail or ''}"


def console_line(service: str, timeout_s: float, replicas_hint: str = "replicas + 2") -> str:
    """Said once per grid when the scaled service has no health check."""
    return (f"{service} has no health check: loadgrid sends warm-up requests through host after each scale step "
            f"until {replicas_hint} (at least {IN_A_ROW}) in a row succeed with settled latency "
            f"(at most startup_timeout, {timeout_s:g} s)")
