"""Quiesce: before every run, wait (bounded, recorded) until the stack is idle, so one run's backlog is not
measured by the next.

Two checks, both polled against one deadline (QUIESCE_TIMEOUT_S), never a plain sleep as synchronisation:
  metrics:  where replicas expose `loadgrid_queue_depth` / `loadgrid_in_flight_requests` on /metrics (the
            bundled service does), every replica must read 0 on both;
  requests: for any stack, REQUESTS unloaded requests with the configured payload through the host must each
            answer within BASELINE_RATIO x the unloaded baseline + BASELINE_MARGIN_MS. The baseline is the
            median of REQUESTS such requests measured once per stack size, right after it became ready.
The outcome goes into the record as `quiesce`: {"method", "waited_s", "idle", "detail"}; a run that started
on a stack still busy is invalid (see `reason`).

The logic (`wait_idle`) takes its probes as callables, so it is tested with fakes.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from . import payload
from .store import Quiesce

QUIESCE_TIMEOUT_S = 30.0  # the most a run waits for the stack to become idle
POLL_S = 0.25  # pause between polls of the bounded loop
REQUESTS = 3  # unloaded requests per check (and for the baseline)
BASELINE_RATIO = 1.5  # "near the baseline": within 1.5x the baseline ...
BASELINE_MARGIN_MS = 20.0  # ... + 20 ms (so a 5 ms service is not failed on jitter)
GAUGES = ("loadgrid_queue_depth", "loadgrid_in_flight_requests")


def parse_gauges(text: str | None) -> dict[str, float] | None:
    """The loadgrid gauges from a Prometheus text page (summed over labels); None when it has neither."""
    if not text:
        return None
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in GAUGES:
            try:
                found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return found or None


def near(latency_ms: float, baseline_ms: float) -> bool:
    return latency_ms <= baseline_ms * BASELINE_RATIO + BASELINE_MARGIN_MS


def baseline_ms(send: Callable[[], float | None], requests: int = REQUESTS) -> float | None:
    """Median latency of `requests` unloaded requests (None when any failed: no baseline to judge against)."""
    times = [send() for _ in range(requests)]
    return None if any(t is None for t in times) else statistics.median(times)


def wait_idle(gauges: Callable[[], dict[str, dict[str, float] | None]] | None,
              send: Callable[[], float | None] | None, baseline: float | None,
              timeout_s: float = QUIESCE_TIMEOUT_S, clock: Callable[[], float] = time.monotonic,
              pause: Callable[[float], None] = time.sleep) -> dict:
    """Poll until idle or `timeout_s`. `gauges()` -> {replica: parsed gauges or None}; `send()` -> one unloaded
    request's latency in ms (None: it failed). Returns the record's `quiesce` dict."""
    start = clock()
    methods: list[str] = []
    first = gauges() if gauges else {}
    use_metrics = bool(first) and any(v is not None for v in first.values())
    if use_metrics:
        methods.append("metrics")
    use_requests = send is not None and baseline is not None
    if use_requests:
        methods.append("requests")
    if not methods:
        return {"method": "none", "waited_s": 0.0, "idle": True,
                "detail": "not checked: no replica gauges and no unloaded baseline"}
    current = first
    detail = ""
    while True:
        busy = ""
        if use_metrics:
            loaded = {name: g for name, g in current.items() if g and any(g.get(k, 0) > 0 for k in GAUGES)}
            if loaded:
                name, g = max(loaded.items(), key=lambda kv: sum(kv[1].values()))
                busy = (f"queue {g.get('loadgrid_queue_depth', 0):g}, in flight "
                        f"{g.get('loadgrid_in_flight_requests', 0):g} on {name}")
        if not busy and use_requests:
            times = [send() for _ in range(REQUESTS)]
            slow = [t for t in times if t is None or not near(t, baseline)]
            if slow:
                shown = ", ".join("failed" if t is None else f"{t:.0f}" for t in times)
                busy = (f"unloaded requests took {shown} ms against a baseline of {baseline:.0f} ms "
                        f"(limit {baseline * BASELINE_RATIO + BASELINE_MARGIN_MS:.0f} ms)")
            else:
                detail = f"unloaded requests {', '.join(f'{t:.0f}' for t in times)} ms, baseline {baseline:.0f} ms"
        waited = clock() - start
        if not busy:
            words = ("every replica's queue and in-flight gauges read 0" if use_metrics else "") + \
                    ("; " if use_metrics and detail else "") + detail
            return {"method": "+".join(methods), "waited_s": round(waited, 2), "idle": True, "detail": words}
        if waited >= timeout_s:
            return {"method": "+".join(methods), "waited_s": round(waited, 2), "idle": False, "detail": busy}
        pause(POLL_S)  # pacing between polls of a bounded loop, not synchronisation
        if use_metrics:
            current = gauges()


def reason(quiesce: Quiesce | dict | None) -> str | None:
    """The validity reason of a run that started on a busy stack; None when idle (or not checked)."""
    quiesce = Quiesce.of(quiesce)
    if not quiesce or quiesce.idle in (None, True):
        return None
    return (f"the stack was still busy before the run ({quiesce.detail or ''} after "
            f"{quiesce.waited_s or 0:.0f} s): the previous run's backlog would be measured")


@dataclass(frozen=True)
class Answer:
    """One unloaded request's outcome: latency (ms) when served, else what went wrong; who answered, when the
    stack says so (an X-Replica header, or a "replica" field in a JSON answer)."""

    latency_ms: float | None
    problem: str = ""
    replica: str | None = None


def http_answer(url: str, body: bytes, content_type: str, expect: str = "status",
                timeout_s: float = 10) -> Callable[[], Answer]:
    """One unloaded POST of the configured payload to `url`, judged like the locustfile judges it (`expect`).
    It carries `X-Loadgrid-Quiesce: 1`, so a server (or a test's sink) can tell these checks from the load."""
    def send() -> Answer:
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type,
                                                                             "X-Loadgrid-Quiesce": "1"})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                status, data, replica = resp.status, resp.read(), resp.headers.get("X-Replica")
        except urllib.error.HTTPError as exc:
            status, data, replica = exc.code, b"", exc.headers.get("X-Replica") if exc.headers else None
        except (urllib.error.URLError, OSError) as exc:
            return Answer(None, f"{getattr(exc, 'reason', exc)}")
        latency = (time.perf_counter() - t0) * 1000
        parsed: list = []

        def body_json():
            if not parsed:
                parsed.append(json.loads(data))
            return parsed[0]
        problem = payload.response_problem(status, body_json, expect)
        if replica is None:
            with contextlib.suppress(ValueError):
                found = body_json()
                replica = found.get("replica") if isinstance(found, dict) else None
        return Answer(None if problem else latency, problem or "", str(replica) if replica else None)
    return send


def http_sender(url: str, body: bytes, content_type: str, timeout_s: float = 10,
                expect: str = "status") -> Callable[[], float | None]:
    """One unloaded request's latency in ms, None when it failed (see http_answer)."""
    answer = http_answer(url, body, content_type, expect, timeout_s)
    return lambda: answer().latency_ms
