"""Whether a run's numbers can be reported: pure judgement over what was measured and observed.

A run is invalid when it measured something other than the stack at the planned size: a replica that
died or restarted, fewer replicas than planned, failed requests, or a GPU run whose replicas said CPU.
"""

from __future__ import annotations

from .stack import Replica
from .store import LoadReport, ReplicaReport, Validity

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def judge(variant: str, expected_replicas: int, load: LoadReport | None, error: str | None,
          before: list[Replica], after: list[Replica], reports: list[ReplicaReport]) -> Validity:
    reasons: list[str] = []
    if error:
        reasons.append(error)
    if load is not None:
        if load.requests == 0:
            reasons.append("no request completed")
        elif load.failures:
            share = 100.0 * load.failures / load.requests
            top = max(load.failure_messages, key=load.failure_messages.get) if load.failure_messages else "?"
            reasons.append(f"{load.failures} of {load.requests} requests failed ({share:.1f}%), mostly: {top}")
    reasons += crashed_replicas(before, after)
    running = [r for r in after if r.ready]
    if len(running) != expected_replicas:
        reasons.append(f"{len(running)} of {expected_replicas} replicas running and healthy at the end of the run")
    if variant == "gpu":
        for rep in reports:
            if rep.provider not in GPU_PROVIDERS:
                reasons.append(f"replica {rep.name} ran on {rep.provider or 'an unknown provider'}, not on the GPU")
    return Validity(valid=not reasons, reasons=reasons)


def crashed_replicas(before: list[Replica], after: list[Replica]) -> list[str]:
    """Replicas that died, restarted or were replaced between two snapshots of the service."""
    reasons = []
    now = {r.container_id: r for r in after}
    for old in before:
        new = now.get(old.container_id)
        if new is None:
            reasons.append(f"replica {old.name} disappeared during the run")
        elif new.status != "running":
            oom = ", OOM-killed" if new.oom_killed else ""
            reasons.append(f"replica {new.name} {new.status} during the run (exit code {new.exit_code}{oom})")
        elif new.restart_count != old.restart_count or new.started_at != old.started_at:
            oom = ", OOM-killed" if new.oom_killed else ""
            reasons.append(f"replica {new.name} restarted during the run (exit code {new.exit_code}{oom})")
        elif new.health == "unhealthy":
            reasons.append(f"replica {new.name} turned unhealthy during the run")
    return reasons
