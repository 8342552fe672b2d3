"""From a run's facts to its record: the verdict (valid, and every reason it is not) and what limited it.

Pure: no Docker, no clock, no files; the rules themselves live in validity.py (and quiesce.reason,
bottleneck.diagnose), this is the one step that applies them all to what `measure` found.
"""

from __future__ import annotations

from . import bottleneck, quiesce, validity
from .measure import Measured, record
from .store import RunRecord, Validity


def verdict(measured: Measured, client_cpu_limit_pct: float = 60.0, requests_per_user: int = 0) -> Validity:
    """Valid or not, with every reason. A point that never ran is invalid with the reason it did not."""
    if not measured.ran:
        return Validity(valid=False, reasons=[measured.error or "not run"])
    spec = measured.spec
    ramp_up_s = 0.0 if spec.open_loop else spec.users / spec.spawn_rate  # open loop: every user at once
    found = validity.judge(spec.variant, measured.expected_replicas, measured.load, measured.error, measured.before,
                           measured.after, measured.stack.replicas, measured.incidents, client_cpu_limit_pct,
                           run_time_s=spec.run_time_s, ramp_up_s=ramp_up_s,
                           # a run stopped by a request count, or an open-loop one, is measured whole
                           measured_whole=bool(spec.open_loop or requests_per_user))
    busy = quiesce.reason(measured.quiesce)  # the stack was not idle before the run
    if busy:
        found.valid = False
        found.reasons.append(busy)
    return found


def judge(measured: Measured, client_cpu_limit_pct: float = 60.0, requests_per_user: int = 0) -> RunRecord:
    """The run's record with its verdict and bottleneck; an interrupted point is not diagnosed (it runs again)."""
    made = record(measured, verdict(measured, client_cpu_limit_pct, requests_per_user))
    if measured.status != "interrupted":
        made.bottleneck = bottleneck.diagnose(made)
    return made
