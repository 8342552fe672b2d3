"""Where a grid's wall time went, from its session.json: prints figures; asserts nothing.

  overhead            (wall - Locust) / wall: what the grid costs beyond the load runs themselves (goal <= 15%
                      on the default grid, issue 13.3)
  per stack size      scaling and start-up of each scale step (up, health, gateway, warm-up requests; goal
                      <= 5 s on the default grid), with how readiness was established
  the rest            image builds, replica probes and logs (idle checks, /health probes, container logs,
                      telemetry), teardown, other

    .venv/bin/python orchestrate.py --config config.yaml     # the default grid, about 2 minutes
    .venv/bin/python bench/overhead.py reports/session.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OVERHEAD_GOAL = 0.15
SCALE_GOAL_S = 5.0


def figures(session: dict) -> list[str]:
    t = session["timings_s"]
    wall, load = t["wall_s"], t["load_s"]
    parts = ("build_s", "scale_s", "load_s", "probe_s", "teardown_s")
    other = wall - sum(t.get(k, 0.0) for k in parts)
    overhead = (wall - load) / wall if wall else 0.0
    lines = [f"wall {wall:.1f} s, Locust {load:.1f} s: overhead {overhead:.1%} (goal <= {OVERHEAD_GOAL:.0%}"
             f"{', met' if overhead <= OVERHEAD_GOAL else ', NOT met'})",
             f"  image builds {t.get('build_s', 0):.1f} s, scaling and start-up {t.get('scale_s', 0):.1f} s, "
             f"replica probes and logs {t.get('probe_s', 0):.1f} s, teardown {t.get('teardown_s', 0):.1f} s, "
             f"other {other:.1f} s"]
    steps = session.get("scale_steps")
    if steps is None:
        lines.append("  no scale_steps in this session.json (written before loadgrid recorded them)")
        return lines
    for step in steps:
        how = (f"{step.get('method')}, ready in {step.get('readiness_s', 0):.2f} s" if "method" in step
               else "not ready")
        lines.append(f"  {step['models']} replica(s): {step['seconds']:.2f} s ({how})"
                     f"{'' if step['seconds'] <= SCALE_GOAL_S else f'  over the {SCALE_GOAL_S:g} s goal'}")
    if steps:
        worst = max(s["seconds"] for s in steps)
        lines.append(f"  slowest scale step {worst:.2f} s (goal <= {SCALE_GOAL_S:g} s per stack size)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("session", nargs="?", default="reports/session.json", type=Path)
    args = parser.parse_args(argv)
    try:
        session = json.loads(args.session.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"{args.session}: cannot read ({exc}); run the grid first", file=sys.stderr)
        return 2
    print("\n".join(figures(session)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
