"""Progress: run k of n with elapsed and ETA; a live status line only on a terminal."""

from __future__ import annotations

from test_plan import make_config

from loadgrid import plan
from loadgrid.progress import Progress


def test_progress_lines_and_eta(capsys):
    p = plan.build(make_config(variants=("cpu",)))
    progress = Progress(p, live=False)
    first = p.runs[0]
    assert progress.begin(first).startswith("run 1/8 cpu/1_10_1 (elapsed 0m00s, ETA 8m00s)")
    assert progress.end(first) == "run 1/8 cpu/1_10_1"
    assert "ETA 7m0" in progress.begin(p.runs[1])
    progress.tick(p.runs[1], 3)
    progress.clear()
    assert capsys.readouterr().out == ""  # not a terminal: whole lines only, printed by the caller


def test_live_status_line_on_a_terminal(capsys):
    p = plan.build(make_config(variants=("cpu",)))
    progress = Progress(p, live=True)
    progress.tick(p.runs[0], 12.4)
    progress.clear()
    out = capsys.readouterr().out
    assert out.startswith("\r  cpu/1_10_1: 12/60s of this run, run 1/8") and out.endswith("\r\033[K")


def test_dry_run_estimate_includes_overheads():
    p = plan.build(make_config(variants=("cpu",)))
    assert plan.estimated_total_s(p) == 8 * 60 + plan.BUILD_S + 2 * plan.SCALE_S + 8 * plan.PER_RUN_S
