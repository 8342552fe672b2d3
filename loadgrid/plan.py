"""Config -> the list of runs, as a pure function: `--dry-run` prints it and tests cover it without Docker.

Order reuses the stack: each variant's images are built once, each (variant, replicas) stack is brought
up once, and all of its users x spawn-rate points (then its open-loop arrival rates) run against it before
the next stack size. In target mode there is one "stack", the endpoint, with no replica axis (models 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import redact
from .config import TARGET_VARIANT, Config


def format_number(value: float) -> str:
    """10.0 -> '10', 0.5 -> '0.5': the form used in run names and file names."""
    return f"{value:g}"


@dataclass(frozen=True)
class RunSpec:
    variant: str
    models: int
    users: int
    spawn_rate: float
    run_time_s: int
    repeat: int = 1  # 1..repeats; every repeat is its own run with its own files
    arrival_rate: float = 0.0  # > 0: open loop at this many requests per second (users = Locust processes)
    probe: bool = False  # a capacity-search probe (open loop)

    @property
    def open_loop(self) -> bool:
        return self.arrival_rate > 0

    @property
    def point(self) -> str:
        """The grid point, shared by its repeats: `<models>_<users>_<spawn>`; open loop `<models>_r<rate>`,
        capacity probes `<models>_cap_r<rate>`; in target mode the same without `<models>_`."""
        parts = [] if self.variant == TARGET_VARIANT else [str(self.models)]
        if self.open_loop:
            parts += (["cap"] if self.probe else []) + [f"r{format_number(self.arrival_rate)}"]
        else:
            parts += [str(self.users), format_number(self.spawn_rate)]
        return "_".join(parts)

    @property
    def name(self) -> str:
        """The stem of this run's files: the point, with `_r<k>` for repeats after the first."""
        return self.point if self.repeat == 1 else f"{self.point}_r{self.repeat}"

    @property
    def id(self) -> str:
        return f"{self.variant}/{self.name}"

    def html_path(self, output_dir: Path) -> Path:
        return output_dir / self.variant / f"{self.name}.html"


@dataclass(frozen=True)
class StackGroup:
    """One stack size of one variant, and the load points run against it."""

    variant: str
    models: int
    compose_files: tuple[Path, ...]
    runs: tuple[RunSpec, ...]


@dataclass(frozen=True)
class Plan:
    groups: tuple[StackGroup, ...]

    @property
    def runs(self) -> tuple[RunSpec, ...]:
        return tuple(run for group in self.groups for run in group.runs)

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(group.variant for group in self.groups))

    @property
    def load_time_s(self) -> int:
        return sum(run.run_time_s for run in self.runs)


def generator_processes(config: Config, cpus: int) -> int:
    """Locust processes: as configured, or auto: one core of two (of the machine's `cpus`) for Locust, the rest
    for the stack; with workers, one per worker."""
    workers = config.load_workers + config.expect_workers
    if workers:
        return workers  # distributed: one Locust process per worker (an open-loop run: one user each)
    return config.locust_processes or max(1, cpus // 2)


def open_loop_spec(config: Config, variant: str, models: int, rate: float, run_time_s: int, repeat: int = 1,
                   probe: bool = False, *, cpus: int) -> RunSpec:
    """An open-loop run: one user per Locust process shares the rate; all start at once."""
    users = generator_processes(config, cpus)
    return RunSpec(variant, models, users, float(users), run_time_s, repeat, arrival_rate=float(rate), probe=probe)


def machine_cpus() -> int:
    """This machine's CPU count: what a caller passes as `cpus` (the planner itself never asks the machine)."""
    import os

    return os.cpu_count() or 1


def build(config: Config, cpus: int | None = None) -> Plan:
    """The plan for `config` on a machine with `cpus` CPUs (they size open-loop runs' Locust processes).

    `cpus` None is for callers that do not pass it yet (the CLI): the machine's count, read here once.
    """
    cpus = machine_cpus() if cpus is None else cpus
    groups = []
    for variant in config.variants:
        for models in config.num_models_list:
            runs = tuple(
                RunSpec(variant, models, users, spawn, config.run_time_s, repeat)
                for users in config.num_users_list
                for spawn in config.spawn_rate_list
                for repeat in range(1, config.repeats + 1)
            ) + tuple(
                open_loop_spec(config, variant, models, rate, config.run_time_s, repeat, cpus=cpus)
                for rate in config.arrival_rate_list
                for repeat in range(1, config.repeats + 1)
            )
            groups.append(StackGroup(variant, models, config.compose_files_for(variant), runs))
    return Plan(tuple(groups))


def describe(plan: Plan, config: Config) -> str:
    """Human-readable plan for --dry-run: every run, its report path, and the time Locust will take."""
    lines = []
    total = len(plan.runs)
    k = 0
    for variant in plan.variants:
        if variant == TARGET_VARIANT:
            lines.append(f"target {redact.url(config.target_url)}: no compose stack, no replica axis")
        else:
            files = " ".join(str(p) for p in config.compose_files_for(variant))
            lines.append(f"variant {variant}: build images once from {files}")
        for group in (g for g in plan.groups if g.variant == variant):
            if variant != TARGET_VARIANT:
                lines.append(f"  stack: {config.service} x {group.models} (project {config.project}-{variant})")
            for run in group.runs:
                k += 1
                lines.append(f"    run {k}/{total}: {run.id}  {_load_words(run, config)}"
                             f" run_time={run.run_time_s}s -> {run.html_path(config.output_dir)}")
            if config.capacity_search:
                cs = config.capacity_search
                lines.append(f"    capacity search: up to {cs.steps} open-loop probes of {cs.run_time_s}s from "
                             f"{format_number(cs.start)} to at most {format_number(cs.max)} req/s, for the highest "
                             f"rate with p95 under {format_number(config.latency_target_ms)} ms")
    lines.append(f"payload: {config.payload_source} (sent as {config.send_as}"
                 f"{'; served means ' + config.expect if config.expect else ''})")
    if config.load_workers or config.expect_workers:
        placed = [f"{config.load_workers} started beside the stack ({config.backend})"] if config.load_workers else []
        placed += [f"{config.expect_workers} joined by hand (loadgrid worker --master HOST:{config.master_port})"] \
            if config.expect_workers else []
        lines.append(f"load: Locust workers, {' + '.join(placed)}; the master listens here on port "
                     f"{config.master_port} and each run waits up to {config.worker_wait_s}s for them")
    load_s = plan.load_time_s + capacity_time_s(plan, config)
    minutes, seconds = divmod(load_s, 60)
    est_min, est_s = divmod(estimated_total_s(plan) + capacity_time_s(plan, config), 60)
    lines.append(
        f"{total} runs, {len(plan.groups)} stack sizes; load time {minutes}m{seconds:02d}s, "
        f"estimated total about {est_min}m{est_s:02d}s with builds, scaling and probes"
    )
    return "\n".join(lines)


def _load_words(run: RunSpec, config: Config) -> str:
    if run.open_loop:
        return f"open loop {format_number(run.arrival_rate)} req/s ({config.arrival}, {run.users} Locust process(es))"
    words = f"users={run.users} spawn_rate={format_number(run.spawn_rate)}"
    if config.requests_per_user:
        words += f" requests_per_user={config.requests_per_user} (run_time is the cap)"
    return words


def capacity_time_s(plan: Plan, config: Config) -> int:
    """The most the capacity search can add: every probe of every stack size."""
    cs = config.capacity_search
    return cs.steps * cs.run_time_s * len(plan.groups) if cs else 0


# Overheads measured on the reference stack (2 cores, warm build cache): see the README's figures.
BUILD_S, SCALE_S, PER_RUN_S = 30, 8, 4


def estimated_total_s(plan: Plan) -> int:
    """Load time plus typical overheads: a build per variant, a re-scale per stack size, probes per run."""
    return int(plan.load_time_s + BUILD_S * len(plan.variants) + SCALE_S * len(plan.groups)
               + PER_RUN_S * len(plan.runs))


def inputs_digest(config: Config, variant: str) -> str:
    """The contents of what every run of `variant` reads: its compose files, the locustfile and the payload
    (each file of a payload folder; a URL not fetched yet, as in --dry-run, stands for itself by its address).

    Hashed once per variant, not per point: every point of the variant shares it (see `fingerprint`).
    """
    import hashlib

    digest = hashlib.sha256()
    files = list(config.compose_files_for(variant)) + [config.locustfile]
    source = Path(config.payload_source)
    if source.is_dir():
        files += sorted(p for p in source.iterdir() if p.is_file())
    elif source.is_file():
        files.append(source)
    else:
        digest.update(config.payload_source.encode())
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(config: Config, spec: RunSpec, inputs: str | None = None) -> str:
    """What makes a stored run the same point as a planned one, for --resume.

    Beyond the grid point itself: run time, host, endpoint, and the contents of the compose files,
    locustfile and payload (`inputs`: `inputs_digest` of the spec's variant, computed here when not given).
    Changing any of them makes it a new point, run again rather than skipped. Pure when `inputs` is given.
    """
    import hashlib
    import json

    digest = hashlib.sha256()
    digest.update(json.dumps([spec.variant, spec.models, spec.users, spec.spawn_rate, spec.run_time_s, spec.repeat,
                              config.host, config.predict_path, config.service, config.warmup_s,
                              config.locust_processes]).encode())
    # Settings added later count only when they differ from their defaults, so older fingerprints still match.
    extra = {"arrival_rate": spec.arrival_rate, "probe": spec.probe, "target": config.target_url,
             "send_as": config.send_as, "expect": config.expect, "requests_per_user": config.requests_per_user,
             "arrival": config.arrival if spec.open_loop else "constant", "max_in_flight": config.max_in_flight}
    defaults = {"arrival_rate": 0.0, "probe": False, "target": None, "send_as": "raw", "expect": "",
                "requests_per_user": 0, "arrival": "constant", "max_in_flight": 0}
    changed = {k: v for k, v in extra.items() if defaults[k] != v}
    if changed:
        digest.update(json.dumps(changed, sort_keys=True).encode())
    digest.update((inputs if inputs is not None else inputs_digest(config, spec.variant)).encode())
    return digest.hexdigest()[:16]


def fingerprints(config: Config, runs: tuple[RunSpec, ...] | list[RunSpec]) -> dict[str, str]:
    """Every run's fingerprint by id, reading and hashing each input file once per variant."""
    inputs = {variant: inputs_digest(config, variant) for variant in dict.fromkeys(r.variant for r in runs)}
    return {spec.id: fingerprint(config, spec, inputs[spec.variant]) for spec in runs}


def remaining(plan: Plan, done: set[str], keep_empty: bool = False) -> Plan:
    """The plan without the runs whose ids are in `done` (stack sizes left with no run are dropped, unless
    `keep_empty`: a capacity search still has to run on them)."""
    groups = []
    for group in plan.groups:
        runs = tuple(r for r in group.runs if r.id not in done)
        if runs or keep_empty:
            groups.append(StackGroup(group.variant, group.models, group.compose_files, runs))
    return Plan(tuple(groups))
