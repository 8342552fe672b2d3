"""CLI behaviour without Docker: dry-run, one-line errors and exit codes, report rebuild."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.records import record

from loadgrid import cli, report, settings, store
from loadgrid.store import Validity

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_prints_every_run_and_starts_nothing(project_root, capsys, monkeypatch):
    def no_docker(*a, **k):
        raise AssertionError("dry-run must not call docker")

    monkeypatch.setattr(subprocess, "run", no_docker)
    monkeypatch.setattr(subprocess, "Popen", no_docker)
    assert cli.main(["--config", str(project_root / "config.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "cpu/1_4_4" in out and "reports/cpu/2_16_4.html" in out and "4 runs" in out


def test_bad_config_exits_2_with_one_line(tmp_path, project_root):
    for name in ("docker-compose.yml", "locustfile.py"):
        shutil.copy(project_root / name, tmp_path / name)
    shutil.copytree(project_root / "images", tmp_path / "images")
    (tmp_path / "config.yaml").write_text(
        "num_models_list: [1]\nnum_users_list: [1]\nspawn_rate_list: [1]\nrun_time: 5x\nhost: http://localhost:1\n")
    proc = subprocess.run([sys.executable, str(project_root / "orchestrate.py"), "--config",
                           str(tmp_path / "config.yaml")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "run_time" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


# --- the help -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["orchestrate", "loadgrid"])
def test_help_names_loadgrid_and_lists_the_commands(entry, tmp_path):
    if entry == "orchestrate":
        argv = [sys.executable, str(ROOT / "orchestrate.py"), "--help"]
    else:
        argv = [sys.executable, "-c", "import sys; from loadgrid.cli import main; sys.exit(main())", "--help"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={"COLUMNS": "120", "PATH": "/usr/bin"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("usage: loadgrid ") and "orchestrate.py" not in out
    assert "benchmarks a model-serving stack" in out
    for command in cli.COMMANDS:
        assert re.search(rf"^    {command} +\S", out, re.M), command
    assert "examples:" in out and "loadgrid --config config.yaml --dry-run" in out


def test_run_help_lists_every_flag_of_the_table(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: loadgrid run ")
    for s in settings.FLAGS:
        assert s.flag in out


def test_report_rebuilds_from_stored_records(tmp_path, capsys):
    store.write(record(), tmp_path / "cpu" / "2_50_10.json")
    bad = record(id="cpu/1_50_10", models=1, validity=Validity(False, ["replica m1 restarted during the run"]))
    store.write(bad, tmp_path / "cpu" / "1_50_10.json")
    assert cli.main(["report", str(tmp_path)]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "summary.csv").read_text())))
    assert [r["id"] for r in rows] == ["cpu/1_50_10", "cpu/2_50_10"]
    assert rows[0]["valid"] == "no" and "restarted" in rows[0]["reasons"]
    # every column of the valid run, not a handful: a column dropped, renamed or filled wrongly fails here
    assert rows[1] == {
        "id": "cpu/2_50_10", "variant": "cpu", "models": "2", "users": "50", "spawn_rate": "10",
        "status": "completed", "requests": "100", "failures": "0", "rps": "10.0", "p50_ms": "10.0", "p90_ms": "",
        "p95_ms": "20.0", "p99_ms": "", "max_ms": "", "valid": "yes", "reasons": "", "report": "cpu/2_50_10.html",
        "client_bound": "no", "generator_cpu_pct": "", "generator_cores": "", "window_s": "", "warmup_s": "",
        "bottleneck": "unknown", "bottleneck_detail": "nothing found near its limit, but not recorded: host CPU "
        "(not recorded); replicas' CPU (no replica container in the telemetry)", "repeat": "1", "kind": "closed",
        "arrival_rate": ""}
    page = (tmp_path / "index.html").read_text()
    assert 'href="cpu/2_50_10.html"' in page and "restarted during the run" in page


def test_report_of_missing_folder_is_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert "no such output folder" in err and len(err.strip().splitlines()) == 1, err


def test_summary_columns_are_stable():
    assert report.SUMMARY_COLUMNS[:5] == ["id", "variant", "models", "users", "spawn_rate"]
