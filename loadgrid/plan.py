"""Config -> the list of runs, as a pure function: `--dry-run` prints it and tests cover it without Docker.

Order reuses the stack: each variant's images are built once, each (variant, replicas) stack is brought
up once, and all of its users x spawn-rate points run against it before the next stack size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import Config


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

    @property
    def point(self) -> str:
        """`<models>_<users>_<spawn>`: the grid point, shared by its repeats."""
        return f"{self.models}_{self.users}_{format_number(self.spawn_rate)}"

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


def build(config: Config) -> Plan:
    groups = []
    for variant in config.variants:
        for models in config.num_models_list:
            runs = tuple(
                RunSpec(variant, models, users, spawn, config.run_time_s, repeat)
                for users in config.num_users_list
                for spawn in config.spawn_rate_list
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
        files = " ".join(str(p) for p in config.compose_files_for(variant))
        lines.append(f"variant {variant}: build images once from {files}")
        for group in (g for g in plan.groups if g.variant == variant):
            lines.append(f"  stack: {config.service} x {group.models} (project {config.project}-{variant})")
            for run in group.runs:
                k += 1
                lines.append(
                    f"    run {k}/{total}: {run.id}  users={run.users} spawn_rate={format_number(run.spawn_rate)}"
                    f" run_time={run.run_time_s}s -> {run.html_path(config.output_dir)}"
                )
    minutes, seconds = divmod(plan.load_time_s, 60)
    est_min, est_s = divmod(estimated_total_s(plan), 60)
    lines.append(
        f"{total} runs, {len(plan.groups)} stack sizes; load time {minutes}m{seconds:02d}s, "
        f"estimated total about {est_min}m{est_s:02d}s with builds, scaling and probes"
    )
    return "\n".join(lines)


# Overheads measured on the reference stack (2 cores, warm build cache): see the README's figures.
BUILD_S, SCALE_S, PER_RUN_S = 30, 8, 4


def estimated_total_s(plan: Plan) -> int:
    """Load time plus typical overheads: a build per variant, a re-scale per stack size, probes per run."""
    return int(plan.load_time_s + BUILD_S * len(plan.variants) + SCALE_S * len(plan.groups)
               + PER_RUN_S * len(plan.runs))


def fingerprint(config: Config, spec: RunSpec) -> str:
    """What makes a stored run the same point as a planned one, for --resume.

    Beyond the grid point itself: run time, host, endpoint, and the contents of the compose files,
    locustfile and images. Changing any of them makes it a new point, run again rather than skipped.
    """
    import hashlib
    import json

    digest = hashlib.sha256()
    digest.update(json.dumps([spec.variant, spec.models, spec.users, spec.spawn_rate, spec.run_time_s, spec.repeat,
                              config.host, config.predict_path, config.service, config.warmup_s,
                              config.locust_processes]).encode())
    files = list(config.compose_files_for(spec.variant)) + [config.locustfile]
    files += sorted(p for p in config.images_dir.iterdir() if p.is_file())
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def remaining(plan: Plan, done: set[str]) -> Plan:
    """The plan without the runs whose ids are in `done` (stack sizes left with no run are dropped)."""
    groups = []
    for group in plan.groups:
        runs = tuple(r for r in group.runs if r.id not in done)
        if runs:
            groups.append(StackGroup(group.variant, group.models, group.compose_files, runs))
    return Plan(tuple(groups))
