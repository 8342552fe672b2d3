"""What limited a run: a pure judgement over its record (telemetry, incidents, verdict), no I/O.

`diagnose(record)` returns {"kind", "detail", "checked"}: the kind is one of KINDS, the detail one sentence
with the figures it was decided on, and `checked` every check made with its figures, whatever the verdict
("a verdict lists what it checked"). The grid stores it in the record; reports call `of(record)`, which
diagnoses stored records written before it existed.

Precedence, first match wins, and why:

1. failing replica: a replica that died, restarted, turned unhealthy or was missing measured a different
   stack; its share of the load went elsewhere, so every other figure is a consequence of that.
2. generator: a client-bound or lagging load generator measured itself; nothing on the server side can be
   read from the numbers, whatever the server's CPU says.
3. host: with every core busy, replicas, gateway and Locust compete for the same cores, so a replica or the
   gateway near its own limit is a symptom of the machine, not the cause. This must win over `replicas`, or
   a machine's ceiling would read as the stack's scaling.
4. replicas: the replicas used what they may use (their CPU limit, or the host's cores without one): the
   expected limit of a stack, the one more replicas (on more cores) lift.
5. gateway: the one container every request crosses; judged after the replicas because a busy gateway next
   to saturated replicas is mostly the cost of proxying their work, and more replicas is the first remedy.
6. none found: every check was made and none was near its limit (think time, latency, a lock, I/O ...).
   "unknown" instead when a check that could have named the limit had nothing recorded to judge from.

CPU figures: containers and Locust in percent of one core (100 = one full core), the host in percent of all
its cores (100 = every core busy), all over the measurement window where the monitor had it.
"""

from __future__ import annotations

import re

from .store import Bottleneck, Generator, RunRecord, Telemetry
from .validity import describe_incident, generator_bound, lag_limit_ms

KINDS = ("failing replica", "generator", "host", "replicas", "gateway", "none found", "unknown")

# Busy means at least this share of what could be used, on average over the window: sampled about once a
# second, CPU that is the limit averages 90-100%, and 85% leaves room for sampling noise and brief idle gaps
# (health checks, GC) without calling a half-idle machine busy.
HOST_BUSY_PCT = 85.0  # host CPU, % of all cores
REPLICAS_BUSY_SHARE = 0.85  # the replicas' CPU together, of their CPU limits (capped at the host's cores)
GATEWAY_BUSY_SHARE = 0.85  # the gateway's CPU, of its limit: gateway/nginx.conf runs `worker_processes auto`
# (one worker per core), so without a CPU limit it may use every core of the host.
# Generator lag is material by validity's own rule (validity.generator_bound: p99 lag above max(8 ms, 5% of
# the window's p50), at least 5 wake-ups over it), so the bottleneck and the verdict cannot disagree.
GATEWAY_SERVICE = "gateway"

# Verdict reasons that say a replica was not whole (validity.py's wording); "replicas' counters" (another
# client) and "ran on ..., not on the GPU" are about something else.
_REPLICA_REASON = re.compile(r"^replica \S+ (?!ran on)|replicas running and (healthy|ready)")


def diagnose(record: RunRecord) -> Bottleneck:
    checked: list[str] = []
    found: dict[str, str] = {}  # kind -> detail, for every check that matched
    missing: list[str] = []  # what could not be judged, and why

    failing = _failing(record)
    checked.append("replicas whole: " + ("; ".join(failing) if failing else
                                         "no incident, no replica problem in the verdict"))
    if failing:
        found["failing replica"] = failing[0] + (f" (and {len(failing) - 1} more)" if len(failing) > 1 else "")

    load = record.load
    if record.status != "completed" or load is None:
        detail = found.get("failing replica") or f"no measurement to judge ({record.status}: {record.error or '?'})"
        return _result("failing replica" if failing else "unknown", detail, checked)

    generator = _generator(record, checked)
    if generator:
        found["generator"] = generator

    telemetry = record.telemetry or Telemetry()
    containers = telemetry.containers
    host = telemetry.host
    replicas, gateway = _roles(record, containers)
    shares = _shares(record, replicas, gateway, containers)

    if host.get("cpu_pct_mean") is not None and host.get("cores"):
        interval = host.get("interval", "whole run")
        line = f"host CPU {_pct(host['cpu_pct_mean'])} of {host['cores']} cores over the {interval}"
        checked.append(f"{line} (busy at {HOST_BUSY_PCT:.0f}%)")
        if host["cpu_pct_mean"] >= HOST_BUSY_PCT:
            found["host"] = f"{line} ({shares}; 100% = one core)" if shares else line
    else:
        why = telemetry.host_absent or ("target mode: the endpoint's machine is not watched" if record.target
                                               else "not recorded")
        checked.append(f"host CPU: {why}")
        missing.append(f"host CPU ({why})")

    if replicas:
        threads = {r.name: r.cpu_threads for r in record.stack.replicas if r.cpu_threads}
        limit = _replica_detail(replicas, containers, host.get("cores"), checked, missing, threads)
        if limit:
            found["replicas"] = limit
    else:
        checked.append("replicas' CPU: no replica container in the telemetry")
        missing.append("replicas' CPU (no replica container in the telemetry)")

    if gateway:
        limit = _gateway_detail(gateway, containers[gateway], checked, missing)
        if limit:
            found["gateway"] = limit
    else:
        checked.append("gateway CPU: no gateway container in the telemetry")

    for kind in KINDS[:5]:
        if kind in found:
            return _result(kind, found[kind], checked)
    if missing:
        return _result("unknown", "nothing found near its limit, but not recorded: " + "; ".join(missing), checked)
    return _result("none found", "no replica, gateway, host or generator limit found" +
                   (f" ({shares}; 100% = one core)" if shares else ""), checked)


def of(record: RunRecord) -> Bottleneck:
    """The stored diagnosis, or one made now for a record written before diagnoses were stored."""
    return record.bottleneck or diagnose(record)


def _pct(value: float) -> str:
    """One decimal where it has one: 84.9% must not read as the 85% threshold it missed."""
    return f"{round(value, 1):g}%"


def _result(kind: str, detail: str, checked: list[str]) -> Bottleneck:
    return Bottleneck(kind=kind, detail=detail, checked=checked)


def _failing(record: RunRecord) -> list[str]:
    problems = [describe_incident(i) for i in record.incidents]
    problems += [r for r in record.validity.reasons if _REPLICA_REASON.search(r) and r not in problems]
    return problems


def _generator(record: RunRecord, checked: list[str]) -> str:
    gen = (record.load.generator if record.load else None) or Generator()
    lag = gen.lag_ms
    p99 = lag.p99 if lag else None
    cpu = gen.cpu_pct_mean
    words = [f"Locust CPU {cpu:.0f}% of its {gen.cores or 1} core(s)" if cpu is not None else
             "Locust CPU not recorded"]
    words.append(f"lag p99 {p99:g} ms" if p99 is not None else "lag not recorded")
    p50 = (record.load.latency_ms or {}).get("p50") if record.load else None
    material = p99 is not None and generator_bound(Generator(lag_ms=lag), float("inf"), p50)[0]
    checked.append(f"generator: {', '.join(words)}"
                   + (f" (lag material above {lag_limit_ms(p50):g} ms for p50 {p50:g} ms)" if p99 is not None and p50
                      else "")
                   + ("; the verdict says client-bound" if record.validity.client_bound else ""))
    if not (record.validity.client_bound or material):
        return ""
    why = next((r for r in record.validity.reasons if r.startswith("client-bound")), "")
    text = "the load generator was the limit: " + ", ".join(words)
    if material and p50:
        text += f" against a p50 of {p50:g} ms"
    return text + (f" ({why})" if why else "")


def _roles(record: RunRecord, containers: dict) -> tuple[list[str], str | None]:
    """The replicas' containers (named in the record's stack, or of their service) and the gateway's."""
    named = {r.name for r in record.stack.replicas}
    services = {containers[n].get("service") for n in named if n in containers} - {None}
    replicas = sorted(n for n, c in containers.items() if n in named or c.get("service") in services)
    gateways = [n for n, c in sorted(containers.items()) if n not in replicas and
                (c.get("service") == GATEWAY_SERVICE or (not c.get("service") and GATEWAY_SERVICE in n))]
    return replicas, gateways[0] if gateways else None


def _shares(record: RunRecord, replicas: list[str], gateway: str | None, containers: dict) -> str:
    """Who used the CPU, in percent of one core: "replicas 120%, gateway 30%, Locust 45%"."""
    parts = []
    used = [containers[n].get("cpu_pct_mean") for n in replicas]
    if used and None not in used:
        parts.append(f"replicas {sum(used):.0f}%")
    if gateway and containers[gateway].get("cpu_pct_mean") is not None:
        parts.append(f"gateway {containers[gateway]['cpu_pct_mean']:.0f}%")
    gen = (record.load.generator if record.load else None) or Generator()
    if gen.cpu_pct_mean is not None:
        parts.append(f"Locust {gen.cpu_pct_mean * (gen.cores or 1):.0f}%")
    return ", ".join(parts)


def _replica_detail(replicas: list[str], containers: dict, host_cores: int | None, checked: list[str],
                    missing: list[str], threads: dict[str, int] | None = None) -> str:
    """`threads`: replicas that report how many threads run their inferences (the bundled service does) can
    keep at most that many cores busy, so a single-threaded replica at 95% of one core is at its limit."""
    threads = threads or {}
    used = [containers[n].get("cpu_pct_mean") for n in replicas]
    limits = [containers[n].get("cpu_limit_cores") for n in replicas]
    limits = [min(lim, threads[n]) if lim is not None and n in threads else lim for n, lim in zip(replicas, limits,
                                                                                                   strict=True)]
    if None in used or None in limits:
        what = "CPU" if None in used else "CPU limit"
        checked.append(f"replicas' CPU: {what} not recorded for every replica")
        missing.append(f"replicas' {what} (not recorded for every replica)")
        return ""
    # Together the replicas cannot use more than the host has, whatever each one's limit.
    usable = min(sum(limits), host_cores) if host_cores else sum(limits)
    share = sum(used) / 100 / usable if usable else 0.0
    each = ", ".join(f"{u:.0f}%" for u in used)
    line = (f"replicas' CPU {sum(used):.0f}% ({each}), {_pct(100 * share)} of the {usable:g} cores they may use "
            f"(limits {'+'.join(f'{lim:g}' for lim in limits)}"
            f"{', inference threads included' if threads else ''})")
    checked.append(f"{line} (busy at {REPLICAS_BUSY_SHARE:.0%})")
    return f"the replicas were at their CPU limit: {line}" if share >= REPLICAS_BUSY_SHARE else ""


def _gateway_detail(name: str, container: dict, checked: list[str], missing: list[str]) -> str:
    used, limit = container.get("cpu_pct_mean"), container.get("cpu_limit_cores")
    if used is None or not limit:
        what = "CPU" if used is None else "CPU limit"
        checked.append(f"gateway CPU: {what} of {name} not recorded")
        missing.append(f"gateway {what} (not recorded)")
        return ""
    share = used / 100 / limit
    line = f"gateway {name} CPU {used:.0f}%, {_pct(100 * share)} of the {limit:g} cores it may use"
    checked.append(f"{line} (busy at {GATEWAY_BUSY_SHARE:.0%})")
    return f"the gateway was at its CPU limit: {line}" if share >= GATEWAY_BUSY_SHARE else ""
