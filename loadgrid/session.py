"""What one grid session did, beside its records: the outcome the loop collects and the session file it leaves.

`session.json` (in the output folder) says when the grid finished, from which config, how many runs failed,
which variants were skipped and why, where the wall time went and every scale step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import store
from .config import Config
from .store import RunRecord


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Timings:
    """Where the wall time of a grid went, so users see the cost outside the load runs."""

    build_s: float = 0.0
    scale_s: float = 0.0
    load_s: float = 0.0
    probe_s: float = 0.0
    teardown_s: float = 0.0
    wall_s: float = 0.0

    def line(self) -> str:
        other = self.wall_s - self.build_s - self.scale_s - self.load_s - self.probe_s - self.teardown_s
        return (f"wall {self.wall_s:.0f}s: Locust runs {self.load_s:.0f}s, image builds {self.build_s:.0f}s, "
                f"scaling and start-up {self.scale_s:.0f}s, replica probes and logs {self.probe_s:.0f}s, "
                f"teardown {self.teardown_s:.0f}s, other {other:.0f}s")


@dataclass
class GridOutcome:
    records: list[RunRecord] = field(default_factory=list)
    skipped_variants: dict[str, str] = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)
    # One per scale step: {project, models, seconds (scaling and start-up), ready, readiness_s, method}.
    scale_steps: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.records if r.status != "completed"]


def write(config: Config, outcome: GridOutcome) -> Path:
    path = config.output_dir / "session.json"
    store.write_atomic(path, json.dumps({
        "finished_at": now(), "config": str(config.source), "latency_target_ms": config.latency_target_ms,
        "expected_rps": config.expected_rps, "cost_per_replica": dict(config.cost_per_replica) or None,
        "runs": len(outcome.records),
        "failed": len(outcome.failed), "skipped_variants": outcome.skipped_variants,
        "timings_s": {k: round(v, 1) for k, v in outcome.timings.__dict__.items()},
        "scale_steps": outcome.scale_steps,
    }, indent=2) + "\n")
    return path
