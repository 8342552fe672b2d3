"""Run a plan: for each variant build once, for each stack size scale once, then every load point.

Each point goes prepare -> measure -> judge -> store, and ends as a record on disk whatever happened:
completed, failed (with why) or interrupted. The stack of a variant is the one pre-flight validated; it is
torn down when the variant ends, also on error, Ctrl-C and SIGTERM. In target mode there is no stack: every
point runs against the configured endpoint as it is. Where the pieces live: preflight.py (the checks and
the stacks), backend.py (the stack interface), sizes.py (readiness and baseline per stack size),
measure.py (one run's facts), judge.py (verdict and bottleneck), session.py (outcome and session file).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from . import capacity, load, loadgen, redact, store
from . import judge as judge_mod
from . import measure as measure_mod
from . import plan as plan_mod
from .backend import Stack
from .config import TARGET_VARIANT, Config
from .errors import UserError
from .measure import Measured
from .plan import Plan, RunSpec, StackGroup
from .preflight import Checked, gpu_fit, preflight, validated_stack
from .progress import Progress
from .session import GridOutcome, Timings, now
from .session import write as write_session
from .sizes import StackSizes
from .stack import StackError
from .store import RunRecord

__all__ = ["GridOutcome", "Timings", "preflight", "run_grid", "summary_line", "write_session"]


def run_grid(config: Config, plan: Plan, say: Callable[[str], None] = print,
             skip: Checked | dict[str, str] | None = None) -> GridOutcome:
    """Run every group of the plan on the stacks `preflight` validated (`skip`: its result); the variants it
    skips are left out with one line each. A plain {variant: why} (or None) validates the stacks here."""
    checked = skip if isinstance(skip, Checked) else Checked(skip=dict(skip or {}))
    return Grid(config, plan, say, checked).run()


def summary_line(record: RunRecord) -> str:
    if record.load is None or record.status != "completed":
        return f"{record.status.upper()}: {record.error}"
    lat = record.load.latency_ms
    verdict = "valid" if record.validity.valid else "INVALID: " + "; ".join(record.validity.reasons)
    return (f"{record.load.requests} requests, {record.load.failures} failures, {record.load.rps:.1f} req/s, "
            f"p50 {lat.get('p50', 0):.0f} ms, p95 {lat.get('p95', 0):.0f} ms [{verdict}]")


def stack_whole(record: RunRecord) -> bool:
    return not any("replica" in reason for reason in record.validity.reasons)


class Grid:
    """One grid run: the loop, and the state it owns while it runs (progress, stack sizes, outcome)."""

    def __init__(self, config: Config, plan: Plan, say: Callable[[str], None], checked: Checked):
        self.config, self.plan, self.say, self.checked = config, plan, say, checked
        self.outcome = GridOutcome()
        self.progress = Progress(plan)
        self.sizes = StackSizes()
        self.cpus = plan_mod.machine_cpus()  # sizes capacity probes' Locust processes, as the plan's were
        self._payload: dict | None = None  # the payload as records state it, described once per grid
        self._inputs: dict[str, str] = {}  # variant -> plan.inputs_digest, hashed once per variant

    def run(self) -> GridOutcome:
        started = time.monotonic()
        try:
            for variant in self.plan.variants:
                groups = [g for g in self.plan.groups if g.variant == variant]
                if variant == TARGET_VARIANT:
                    self.target(groups)
                elif variant in self.checked.skip:
                    self.skip(variant, groups)
                else:
                    self.variant(variant, groups)
        finally:
            self.outcome.timings.wall_s = time.monotonic() - started
        return self.outcome

    def variant(self, variant: str, groups: list[StackGroup]) -> None:
        stack = self.checked.stacks.get(variant) or validated_stack(self.config, variant)
        t = self.outcome.timings
        with stack.running(), contextlib.ExitStack() as beside:
            error = self.build(variant, stack) or self.start_workers(variant, stack, beside)
            if error:
                for spec in (r for g in groups for r in g.runs):
                    self.store(spec, self.judge(self.unmeasured(spec, stack, error)))
                return
            fit_problems = gpu_fit(self.config, stack, groups, self.say) if variant == "gpu" else {}
            for group in groups:
                if group.models in fit_problems:
                    for spec in group.runs:
                        self.store(spec, self.judge(self.unmeasured(spec, stack, fit_problems[group.models])))
                    continue
                self.stack_size(group, stack)
            t0 = time.monotonic()
        t.teardown_s += time.monotonic() - t0

    def start_workers(self, variant: str, stack: Stack, beside: contextlib.ExitStack) -> str | None:
        """load_workers: the engine's Locust workers for this variant (removed when it ends); None, or why they
        could not start (the variant's points fail with it)."""
        workers = loadgen.for_stack(self.config, stack, self.say)
        if workers is None:
            return None
        log = self.config.output_dir / variant / "workers.log"
        self.say(f"[{variant}] starting {self.config.load_workers} Locust worker(s) (log: {log})")
        try:
            beside.enter_context(loadgen.running(workers, log))
        except UserError as exc:
            self.say(f"[{variant}] Locust workers did not start: {exc}")
            return f"Locust workers did not start: {exc}"
        return None

    def stack_size(self, group: StackGroup, stack: Stack) -> None:
        """Prepare one size (scale, readiness), then every point: measure -> judge -> store."""
        self.say(f"[{group.variant}] scaling {self.config.service} to {group.models}")
        error = self.sizes.bring_up(self.config, stack, group.models, self.outcome, self.say)
        for spec in group.runs:
            if error:
                measured = self.unmeasured(spec, stack, error, self.sizes.of(stack.project, group.models).readiness)
            else:
                measured = self.measure(spec, stack)
            record = self.judge(measured)
            self.store(spec, record)
            error = error or self.restore(stack, group, record)
        if self.config.capacity_search and not error:
            self.capacity_search(group, stack)

    def target(self, groups: list[StackGroup]) -> None:
        """Target mode: every point against the endpoint as it is; no stack to build, scale or tear down."""
        (self.config.output_dir / TARGET_VARIANT).mkdir(parents=True, exist_ok=True)
        runs = sum(len(g.runs) for g in groups)
        self.say(f"[target] {redact.url(self.config.target_url)}: {runs} runs, no compose stack")
        for group in groups:
            self.sizes.measure_baseline(self.config, TARGET_VARIANT, group.models)
        for group in groups:
            for spec in group.runs:
                self.store(spec, self.judge(self.measure(spec, None)))
            if self.config.capacity_search:
                self.capacity_search(group, None)

    def skip(self, variant: str, groups: list[StackGroup]) -> None:
        why = self.checked.skip[variant]
        self.outcome.skipped_variants[variant] = why
        self.say(f"{variant} variant skipped: {why}")
        for spec in (r for g in groups for r in g.runs):
            self.progress.end(spec)

    def build(self, variant: str, stack: Stack) -> str | None:
        """Build the variant's images once; None, or why the build failed (its points fail with it)."""
        out = self.config.output_dir / variant
        out.mkdir(parents=True, exist_ok=True)
        self.say(f"[{variant}] building images (log: {out / 'build.log'})")
        t0 = time.monotonic()
        try:
            stack.build(out / "build.log")
        except StackError as exc:
            self.say(f"[{variant}] image build failed: {exc}")
            return f"image build failed: {exc}"
        finally:
            self.outcome.timings.build_s += time.monotonic() - t0
        return None

    def restore(self, stack: Stack, group: StackGroup, record: RunRecord) -> str | None:
        """A replica died during this run: bring the stack back to N ready before the next one. None when it
        needed nothing or is back, else why not (the size's later points fail with it)."""
        if record.status != "completed" or stack_whole(record):
            return None
        error = self.sizes.bring_up(self.config, stack, group.models, self.outcome, self.say)
        return f"could not restore {group.models} replicas: {error}" if error else None

    def capacity_search(self, group: StackGroup, stack: Stack | None) -> capacity.Result:
        """Probe open-loop rates on this stack size; every probe is stored as a run, the result in capacity.json."""
        config, cs = self.config, self.config.capacity_search
        assert cs is not None
        self.progress.extend(cs.steps, cs.steps * cs.run_time_s)
        self.say(f"[{group.variant}] capacity search on "
                 f"{'the target' if stack is None else f'{group.models} replicas'}: "
                 f"up to {cs.steps} probes of {cs.run_time_s}s, p95 under {config.latency_target_ms:g} ms")

        def run_probe(rate: float) -> capacity.Probe:
            spec = plan_mod.open_loop_spec(config, group.variant, group.models, rate, cs.run_time_s, probe=True,
                                           cpus=self.cpus)
            record = self.judge(self.measure(spec, stack))
            self.store(spec, record)
            error = self.restore(stack, group, record) if stack is not None else None
            if error:  # the next probe runs anyway, and says why it is not valid
                self.say(f"[{group.variant}] {error}")
            return capacity.judge_probe(record, config.latency_target_ms)

        result = capacity.search(cs, run_probe, group.variant, group.models, config.latency_target_ms, config.arrival)
        result.searched_at = now()
        unused = cs.steps - len(result.probes)
        self.progress.extend(-unused, -unused * cs.run_time_s)
        capacity.write(config.output_dir, result)
        self.say(capacity.summary_line(result))
        return result

    # The steps of one point, and what they share.

    @property
    def payload(self) -> dict:
        if self._payload is None:
            self._payload = measure_mod.payload_description(self.config)
        return self._payload

    def measure(self, spec: RunSpec, stack: Stack | None) -> Measured:
        """Measure one point; on Ctrl-C or SIGTERM, store it as interrupted (whatever the phase) and re-raise."""
        project = stack.project if stack else TARGET_VARIANT
        try:
            return measure_mod.measure(self.config, spec, stack, self.sizes.of(project, spec.models),
                                       self.outcome.timings, self.say, self.progress, self.payload, self.cpus)
        except KeyboardInterrupt:
            interrupted = measure_mod.unmeasured(self.config, spec, stack, "interrupted by the user", self.payload,
                                                 status="interrupted")
            self.store(spec, self.judge(interrupted), finished=False)
            raise

    def unmeasured(self, spec: RunSpec, stack: Stack, error: str, readiness: dict | None = None) -> Measured:
        return measure_mod.unmeasured(self.config, spec, stack, error, self.payload, readiness)

    def judge(self, measured: Measured) -> RunRecord:
        return judge_mod.judge(measured, self.config.client_cpu_limit_pct, self.config.requests_per_user)

    def store(self, spec: RunSpec, record: RunRecord, finished: bool = True) -> None:
        """Write the record (with the point's fingerprint, for --resume); a finished one counts and is said."""
        if spec.variant not in self._inputs:
            self._inputs[spec.variant] = plan_mod.inputs_digest(self.config, spec.variant)
        record.fingerprint = plan_mod.fingerprint(self.config, spec, self._inputs[spec.variant])
        store.write(record, load.RunFiles.for_run(spec, self.config.output_dir).record)
        if finished:
            self.outcome.records.append(record)
            self.say(f"{self.progress.end(spec)}: {summary_line(record)}")
