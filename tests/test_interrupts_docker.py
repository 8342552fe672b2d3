"""Ctrl-C / SIGTERM at several phases leave nothing running and keep completed runs; --resume runs the rest."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.engine import ROOT, Orchestrator, free_port, project_resources, write_config

pytestmark = pytest.mark.docker


@pytest.mark.parametrize("phase, sig, code", [
    ("building images", signal.SIGINT, 130),
    ("scaling model to 1", signal.SIGTERM, 143),
    ("run 2/2 cpu/1_3_3 (", signal.SIGINT, 130),
])
def test_interrupt_tears_down_and_keeps_completed_runs(tmp_path, phase, sig, code):
    project = f"lgtest-int{code}-{phase.split()[0]}"
    output = tmp_path / "reports"
    config = write_config(tmp_path / "config.yaml", output, free_port(), project, num_models_list="[1]",
                          num_users_list="[2, 3]", spawn_rate_list="[3]", run_time="6s")
    run = Orchestrator("--config", str(config))
    try:
        run.wait_for_line(phase)
        run.proc.send_signal(sig)
        assert run.finish() == code, run.lines
    finally:
        subprocess.run(["docker", "compose", "-p", f"{project}-cpu", "down", "-v"], capture_output=True)
    assert project_resources(f"{project}-cpu") == ([], []), "the interrupted grid left containers or networks"
    assert not list(output.rglob("*.tmp")), "a half-written file was left"
    if phase.startswith("run 2/2"):
        first = json.loads((output / "cpu" / "1_2_3.json").read_text())
        assert first["status"] == "completed" and first["validity"]["valid"]
        second = json.loads((output / "cpu" / "1_3_3.json").read_text())
        assert second["status"] == "interrupted"

        # --resume runs only what is missing: the interrupted point, not the completed one
        resumed = Orchestrator("--config", str(config), "--resume")
        try:
            assert resumed.finish(600) == 0, resumed.lines
        finally:
            subprocess.run(["docker", "compose", "-p", f"{project}-cpu", "down", "-v"], capture_output=True)
        assert any("1 finished runs kept, 1 to run" in line for line in resumed.lines), resumed.lines
        assert not any("run 1/1 cpu/1_2_3" in line for line in resumed.lines)
        assert json.loads((output / "cpu" / "1_2_3.json").read_text()) == first
        assert json.loads((output / "cpu" / "1_3_3.json").read_text())["status"] == "completed"
        assert project_resources(f"{project}-cpu") == ([], [])


def test_resume_treats_a_changed_setting_as_a_new_point(tmp_path):
    """Pure planning over stored records: no stack is started (dry run)."""
    output = tmp_path / "reports"
    config = write_config(tmp_path / "config.yaml", output, free_port(), "lgtest-resume", num_models_list="[1]",
                          num_users_list="[2]", spawn_rate_list="[3]", run_time="6s")
    from support.records import record

    from loadgrid import config as config_mod
    from loadgrid import plan as plan_mod
    from loadgrid import store

    cfg = config_mod.load(config)
    spec = plan_mod.build(cfg).runs[0]
    stored = record(id=spec.id, models=1, users=2, spawn_rate=3.0, run_time_s=6,
                    fingerprint=plan_mod.fingerprint(cfg, spec))
    store.write(stored, output / "cpu" / "1_2_3.json")
    same = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(config), "--resume",
                           "--dry-run"], capture_output=True, text=True)
    assert "1 finished runs kept, 0 to run" in same.stdout
    Path(config).write_text(Path(config).read_text().replace("run_time: 6s", "run_time: 7s"))
    changed = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(config), "--resume",
                              "--dry-run"], capture_output=True, text=True)
    assert "0 finished runs kept, 1 to run" in changed.stdout
