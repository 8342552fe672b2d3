"""Progress: run k of n with elapsed and ETA; a live status line only on a terminal."""

from __future__ import annotations

import re

from support.records import make_config

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


# --- the live display on a terminal (rich) -------------------------------------------------------------------

def _console():
    import io

    from rich.console import Console

    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=140, color_system=None), buffer


def test_rich_display_shows_the_grid_bar_and_locust_live_figures(capsys):
    from loadgrid.load import LiveFigures

    p = plan.build(make_config(variants=("cpu",)))
    console, buffer = _console()
    progress = Progress(p, console=console)
    assert progress.live
    first = p.runs[0]
    progress.tick(first, 1.0, None)
    assert "waiting for Locust's first figures" in buffer.getvalue()
    progress.tick(first, 12.4, LiveFigures(rps=48.26, p95_ms=120.4, failures=3, requests=500))
    out = buffer.getvalue()
    last = out[out.rindex("grid"):]  # the latest frame
    assert re.search(r"run 1/8, elapsed 0m0\ds, ETA 7m47s", last)  # 8 x 60 s of load, 12 s of it done
    assert "cpu/1_10_1" in last and "12/60s" in last
    assert "48.3 req/s" in last and "p95 120 ms" in last and "3 failures" in last
    assert "━" in last  # the bars
    progress.clear()
    assert out.count("\x1b[?25l") == 1 and buffer.getvalue().endswith("\x1b[2K")  # shown once, then taken away
    assert capsys.readouterr().out == ""  # nothing on stdout itself: the display is on its console
    # The next run starts a fresh display; the lines the caller prints are the same as in plain mode.
    assert progress.end(first) == "run 1/8 cpu/1_10_1"
    assert re.match(r"run 2/8 cpu/1_10_10 \(elapsed 0m0\ds, ETA 7m00s\)", progress.begin(p.runs[1]))
    progress.tick(p.runs[1], 2.0, LiveFigures(rps=0.0, p95_ms=None, failures=1, requests=0))
    frame = buffer.getvalue()[buffer.getvalue().rindex("grid"):]
    assert "run 2/8" in frame and "p95 -" in frame and "1 failure" in frame and "1 failures" not in frame
    progress.clear()


def test_not_a_terminal_prints_only_the_lines_as_before(capsys):
    from loadgrid.load import LiveFigures

    p = plan.build(make_config(variants=("cpu",)))
    progress = Progress(p)  # stdout is captured: not a terminal
    assert not progress.live
    progress.tick(p.runs[0], 3, LiveFigures(rps=5.0, p95_ms=10.0, failures=0, requests=15))
    progress.clear()
    assert capsys.readouterr().out == ""
    assert progress.begin(p.runs[0]) == "run 1/8 cpu/1_10_1 (elapsed 0m00s, ETA 8m00s)"
    assert progress.end(p.runs[0]) == "run 1/8 cpu/1_10_1"


def test_text_ticker_carries_the_live_figures_too(capsys):
    from loadgrid.load import LiveFigures

    p = plan.build(make_config(variants=("cpu",)))
    progress = Progress(p, live=True)
    progress.tick(p.runs[0], 12.4, LiveFigures(rps=5.0, p95_ms=10.0, failures=0, requests=15))
    out = capsys.readouterr().out
    assert out.startswith("\r  cpu/1_10_1: 12/60s of this run, run 1/8, elapsed 0m00s, ")
    assert out.endswith("5.0 req/s, p95 10 ms, 0 failures\033[K")
