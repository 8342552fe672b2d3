"""Whether a run's numbers can be reported: pure judgement over what was measured and observed.

A run is invalid when it measured something other than the stack at the planned size: a replica that
died or restarted, fewer replicas than planned, failed requests, or a GPU run whose replicas said CPU.
"""

from __future__ import annotations

from .stack import Replica
from .store import Generator, Incident, LoadReport, OpenLoop, ReplicaReport, Stop, Validity

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def judge(variant: str, expected_replicas: int, load: LoadReport | None, error: str | None,
          before: list[Replica], after: list[Replica], reports: list[ReplicaReport],
          incidents: list[Incident] = (), client_cpu_limit_pct: float = 60.0, run_time_s: float | None = None,
          ramp_up_s: float = 0.0, measured_whole: bool = False) -> Validity:
    reasons: list[str] = []
    client_bound = False
    if error:
        reasons.append(error)
    reasons += replicas_before_problems(expected_replicas, before)
    if load is not None:
        reasons += outside_window_failures(load)
        reasons += window_too_short(load, run_time_s, ramp_up_s, measured_whole)
        if load.requests == 0:
            reasons.append("no request completed")
        elif load.failures:
            share = 100.0 * load.failures / load.requests
            top = max(load.failure_messages, key=load.failure_messages.get) if load.failure_messages else "?"
            reasons.append(f"{load.failures} of {load.requests} requests failed ({share:.1f}%), mostly: {top}")
        if load.window and load.window.start_at is None and load.requests:
            reasons.append("users were still spawning when the run ended, so no steady state was measured; "
                           "lengthen run_time or raise the spawn rate")
        client_bound, why = generator_bound(load.generator, client_cpu_limit_pct,
                                             (load.latency_ms or {}).get("p50"))
        if client_bound:
            reasons.append(why)
        reasons += distributed_problems(load.generator)
        open_reasons, behind = open_loop_problems(load.open_loop)
        reasons += open_reasons
        client_bound = client_bound or behind
        reasons += stop_problems(load.stop)
    described = set()
    for incident in incidents:
        described.add(incident.container)
        reasons.append(describe_incident(incident))
    reasons += [r for cid, r in crashed_replicas_by_id(before, after) if cid[:12] not in described]
    running = [r for r in after if r.ready]
    if len(running) != expected_replicas:
        reasons.append(f"{len(running)} of {expected_replicas} replicas running and healthy at the end of the run")
    if variant == "gpu":
        for rep in reports:
            if rep.provider not in GPU_PROVIDERS:
                reasons.append(f"replica {rep.name} ran on {rep.provider or 'an unknown provider'}, not on the GPU")
    unjudged: list[str] = []
    if load is not None and expected_replicas:
        foreign, note = another_client(load, reports)
        reasons += foreign
        unjudged += [note] if note else []
    return Validity(valid=not reasons, reasons=reasons, client_bound=client_bound, unjudged=unjudged)


# The replicas' own counters (the bundled service counts POST /predict answers only, so loadgrid's GET /health
# probes and Docker's health checks do not count) may exceed what Locust sent by this share plus this many
# requests before the run is judged to have had another client: requests Locust sent whose answers it never
# recorded (cancelled at the stop) and loadgrid's own few idle-check requests fit inside it.
SERVED_TOLERANCE_SHARE = 0.05
SERVED_TOLERANCE_ABS = 10


def another_client(load: LoadReport, reports: list[ReplicaReport]) -> tuple[list[str], str]:
    """Did the stack serve materially more than loadgrid sent over the whole run (ramp-up included)?"""
    counted = [r.requests_served for r in reports if r.requests_served is not None]
    if not counted:
        return [], "another client: not judged (replicas report no request counter)"
    whole = load.whole_run
    sent = whole.requests if whole and whole.requests is not None else load.requests
    served = sum(counted)
    extra = served - sent
    if served > sent * (1 + SERVED_TOLERANCE_SHARE) + SERVED_TOLERANCE_ABS:
        return [f"the stack served {extra} requests loadgrid did not send: another client is loading it "
                f"(replicas' counters {served}, Locust sent {sent} over the whole run; tolerance "
                f"{SERVED_TOLERANCE_SHARE:.0%} + {SERVED_TOLERANCE_ABS})"], ""
    return [], ""


# A window holding fewer requests than this cannot place a p95 (the 95th of 20 is the first one not the max).
MIN_WINDOW_REQUESTS = 20
# A timed run's window must last at least this share of the run time left after the ramp-up.
MIN_WINDOW_SHARE = 0.5


def replicas_before_problems(expected: int, before: list[Replica]) -> list[str]:
    """Before the window opens exactly `expected` replicas must be running and ready; name any that is not."""
    if not expected:
        return []
    reasons = [f"replica {r.name} was {r.status}{'' if r.health in (None, 'healthy') else ', ' + str(r.health)} "
               f"before the run, not running and ready" for r in before if not r.ready]
    ready = sum(1 for r in before if r.ready)
    if ready != expected:
        reasons.append(f"{ready} of {expected} replicas running and ready before the run")
    return reasons


def outside_window_failures(load: LoadReport) -> list[str]:
    """Failures outside the window (ramp-up, warm-up) are whole_run's failures minus the window's."""
    whole = load.whole_run
    if whole is None or whole.failures is None:
        return []
    outside = whole.failures - load.failures
    if outside <= 0:
        return []
    messages = whole.failures_before_window
    top = f", mostly: {max(messages, key=messages.get)}" if messages else ""
    return [f"{outside} requests failed before the measurement window (ramp-up/warm-up){top}"]


def window_too_short(load: LoadReport, run_time_s: float | None, ramp_up_s: float, measured_whole: bool) -> list[str]:
    """A window too short or too small to report: under half the run after ramp-up, or under MIN_WINDOW_REQUESTS."""
    if run_time_s is None or not load.requests or (load.window and load.window.start_at is None):
        return []
    duration = (load.window.duration_s if load.window else None) or load.duration_s
    need_s = 0.0 if measured_whole else MIN_WINDOW_SHARE * max(0.0, run_time_s - ramp_up_s)
    if load.requests >= MIN_WINDOW_REQUESTS and duration >= need_s:
        return []
    if measured_whole:
        return [f"the run measured only {load.requests} requests; at least {MIN_WINDOW_REQUESTS} are needed "
                f"(a p95 needs {MIN_WINDOW_REQUESTS})"]
    return [f"the measurement window lasted {duration:.1f} s with {load.requests} requests; at least {need_s:.1f} s "
            f"and {MIN_WINDOW_REQUESTS} requests are needed (half the run after ramp-up; a p95 needs "
            f"{MIN_WINDOW_REQUESTS})"]


# The generator's lag is material when its p99 is above LAG_SHARE of the measured p50 latency or
# LAG_FLOOR_MS, whichever is larger: a response that arrives while the hub is late is timestamped late by
# that much, so a p99 lag of 5% of the p50 moves the reported tail by about as much. The floor keeps
# timer jitter on a busy but healthy machine (bench/accuracy.py: p99 3-6 ms with the target alone, and
# beside the bundled stack) from failing runs whose latencies are tens of ms. Fewer than LAG_MIN_SAMPLES
# wake-ups (one second at the 20 ms interval) cannot place a p99, and fewer than LAG_MIN_OVER wake-ups
# over the limit are a few hiccups (in a 3 s run the p99 of 150 wake-ups is its second worst; on a shared 2-core
# machine beside the bundled stack 5 late of 400 was seen with nothing starved), not a
# generator that lagged.
LAG_SHARE = 0.05
LAG_FLOOR_MS = 8.0
LAG_MIN_SAMPLES = 50
LAG_MIN_OVER = 10


def lag_limit_ms(latency_p50_ms: float | None) -> float:
    return max(LAG_FLOOR_MS, LAG_SHARE * (latency_p50_ms or 0.0))


def generator_bound(generator: Generator | dict | None, limit_pct: float,
                    latency_p50_ms: float | None = None) -> tuple[bool, str]:
    """Was the load generator itself the bottleneck? Its CPU over the window against the limit (as a share
    of the cores it can use), and its own lag (how late its event loop woke) against the measured latency."""
    generator = Generator.of(generator) or Generator()
    used = generator.cpu_pct_mean
    cores = generator.cores if generator.cores is not None else 1
    distributed = generator.mode == "distributed"
    if used is not None and used > limit_pct:
        if distributed:
            return True, (f"client-bound: Locust's master used {used:.0f}% of its core (limit {limit_pct:.0f}%) "
                          "gathering its workers' statistics; give the master a core of its own")
        return True, (f"client-bound: Locust used {used:.0f}% of the {cores} core(s) it can use (limit "
                      f"{limit_pct:.0f}%), so the numbers measure the load generator; raise locust_processes "
                      "or give it more cores")
    bound, why = worker_bound(generator.workers, limit_pct, latency_p50_ms)
    if bound:
        return True, why
    lag = generator.lag_ms
    if lag is not None and lag.p99 is not None and (lag.samples or 0) >= LAG_MIN_SAMPLES:
        limit = lag_limit_ms(latency_p50_ms)
        over = lag.over_limit if lag.limit_ms == round(limit, 2) else None
        if lag.p99 > limit and (over is None or over >= LAG_MIN_OVER):
            cpu = f"{used:.0f}%" if used is not None else "unmeasured"
            late = f"{over} of {lag.samples}" if over is not None else f"p99 of {lag.samples}"
            return True, (f"client-bound: Locust's event loop woke late (lag p99 {lag.p99:.1f} ms, max "
                          f"{lag.max or 0:.1f} ms; {late} wake-ups later than {limit:.1f} ms, the limit "
                          f"max({LAG_FLOOR_MS:g} ms, {LAG_SHARE:.0%} of p50 {latency_p50_ms or 0:.1f} ms)) while "
                          f"its CPU was {cpu}: it was starved or busy, so its timestamps are late; give it a core "
                          "of its own or raise locust_processes")
    if generator.locust_cpu_warning:
        return True, "client-bound: Locust warned that its CPU usage was above 90%"
    return False, ""


def worker_bound(workers, limit_pct: float, latency_p50_ms: float | None) -> tuple[bool, str]:
    """Each worker judged on its own (one starved worker among several is hidden in a mean): its CPU over its
    window against the limit (a Locust process uses one core at most), and its lag by the same rule as above;
    then the workers of each machine together, against the cores they may use (their CPU affinity)."""
    limit = lag_limit_ms(latency_p50_ms)
    for w in workers:
        label = f"worker {w.name or w.hostname or w.id}" + (f" (pid {w.pid})" if w.pid else "")
        if w.cpu_pct_mean is not None and w.cpu_pct_mean > limit_pct:
            return True, (f"client-bound: Locust {label} used {w.cpu_pct_mean:.0f}% of its core (limit "
                          f"{limit_pct:.0f}%), so the numbers measure the load generator; add workers or give "
                          "them more cores")
        if (w.lag_p99_ms is not None and (w.lag_samples or 0) >= LAG_MIN_SAMPLES and w.lag_p99_ms > limit
                and (w.lag_over_limit or 0) >= LAG_MIN_OVER):
            cpu = f"{w.cpu_pct_mean:.0f}%" if w.cpu_pct_mean is not None else "unmeasured"
            return True, (f"client-bound: Locust {label} woke late (lag p99 {w.lag_p99_ms:.1f} ms, max "
                          f"{w.lag_max_ms or 0:.1f} ms; {w.lag_over_limit} of {w.lag_samples} wake-ups later than "
                          f"{limit:.1f} ms) while its CPU was {cpu}: it was starved or busy; give it a core of its "
                          "own or add workers")
    # Workers on one machine share its cores: two at 50% each on one core fill it, which neither shows alone.
    by_host: dict[str, list] = {}
    for w in workers:
        if w.hostname and w.cpu_pct_mean is not None:
            by_host.setdefault(w.hostname, []).append(w)
    for host, group in by_host.items():
        if len(group) < 2:
            continue
        cores = max(1, min(len(group), max(w.cores or 1 for w in group)))
        share = sum(w.cpu_pct_mean for w in group) / cores
        if share > limit_pct:
            return True, (f"client-bound: the {len(group)} Locust workers on {host} together used {share:.0f}% of "
                          f"the {cores} core(s) they can use (limit {limit_pct:.0f}%); spread them over more "
                          "machines or cores")
    return False, ""


def distributed_problems(generator: Generator | None) -> list[str]:
    """A distributed run whose master and workers disagree, or whose workers did not all report, is not whole."""
    dist = generator.distributed if generator is not None else None
    if dist is None:
        return []
    reasons = []
    if dist.missing:
        reasons.append(f"{len(dist.missing)} Locust worker(s) sent no final counts before the master quit "
                       f"({', '.join(dist.missing[:3])}): a worker died or its network was too slow")
    if dist.reconciled is False:
        reasons.append(f"the master counted {dist.master_requests} requests in the window, its workers "
                       f"{dist.workers_requests} (tolerance {dist.tolerance}): statistics were lost on the way")
    return reasons


# An open-loop generator is behind its schedule when it sends less than this share of the scheduled rate,
# or sends more than LATE_SHARE of its requests (and at least LATE_MIN) later than the tolerance after their slot.
ACHIEVED_SHARE = 0.95
LATE_SHARE = 0.10
LATE_MIN = 10


def open_loop_problems(open_loop: OpenLoop | dict | None) -> tuple[list[str], bool]:
    """Reasons an open-loop run does not show the server at its intended rate; True when the generator lagged."""
    open_loop = OpenLoop.of(open_loop)
    if not open_loop:
        return [], False
    if open_loop.error:
        return [f"open loop: {open_loop.error}"], False
    reasons = []
    behind = False
    rate = open_loop.intended_rate or 0
    scheduled = open_loop.scheduled or 0
    if open_loop.dropped:
        reasons.append(f"{open_loop.dropped} of {scheduled} scheduled requests were dropped, not sent: all "
                       f"{open_loop.max_in_flight} in-flight slots were busy (the server fell behind "
                       f"{rate:g} req/s)")
    sent = open_loop.sent or 0
    late = open_loop.late or 0
    achieved, planned = open_loop.achieved_rate or 0.0, open_loop.scheduled_rate or 0.0
    lagged = late > LATE_SHARE * sent and late >= LATE_MIN
    if sent and (lagged or (not open_loop.dropped and achieved < ACHIEVED_SHARE * planned)):
        behind = True
        reasons.append(f"client-bound: the load generator fell behind its schedule ({achieved:g} of {planned:g} "
                       f"req/s sent, {late} of {sent} requests more than {open_loop.late_tolerance_ms:g} ms "
                       f"late); raise locust_processes or lower the rate")
    return reasons, behind


def stop_problems(stop: Stop | dict | None) -> list[str]:
    """A run that should have stopped after N requests per user, but the run_time cap ended it first."""
    stop = Stop.of(stop)
    if not stop or stop.by != "time":
        return []
    return [f"the run_time cap ended the run before every user sent its {stop.requests_per_user} requests "
            f"({stop.users_finished} of {stop.users} users finished, {stop.requests_sent} requests sent); "
            f"raise run_time"]


def describe_incident(incident: Incident) -> str:
    detail = []
    if incident.exit_code is not None:
        detail.append(f"exit code {incident.exit_code}")
    if incident.oom_killed:
        detail.append("OOM-killed")
    suffix = f" ({', '.join(detail)})" if detail else ""
    return f"replica {incident.name} {incident.action} during the run{suffix}"


def crashed_replicas_by_id(before: list[Replica], after: list[Replica]) -> list[tuple[str, str]]:
    """Replicas that died, restarted or were replaced between two snapshots of the service."""
    reasons = []
    now = {r.container_id: r for r in after}
    for old in before:
        new = now.get(old.container_id)
        if new is None:
            reasons.append((old.container_id, f"replica {old.name} disappeared during the run"))
        elif new.status != "running":
            oom = ", OOM-killed" if new.oom_killed else ""
            reasons.append((old.container_id,
                            f"replica {new.name} {new.status} during the run (exit code {new.exit_code}{oom})"))
        elif new.restart_count != old.restart_count or new.started_at != old.started_at:
            oom = ", OOM-killed" if new.oom_killed else ""
            reasons.append((old.container_id,
                            f"replica {new.name} restarted during the run (exit code {new.exit_code}{oom})"))
        elif new.health == "unhealthy":
            reasons.append((old.container_id, f"replica {new.name} turned unhealthy during the run"))
    return reasons
