"""Issue 13.1: the default user ships in the package, so a config outside the project needs no locustfile.

A config in a tmp folder (no locustfile.py there, no `locustfile` key) passes the dry run of a compose grid and
runs for real in target mode against a local server (no Docker); a `locustfile` key still overrides."""

from __future__ import annotations

import json
import shutil

from support.engine import ROOT
from support.sink_server import SinkServer
from support.target import orchestrate

from loadgrid import config

GRID = ("num_models_list: [1]\nnum_users_list: [2]\nspawn_rate_list: [2]\nrun_time: 5s\n"
        "host: http://localhost:8080\n")


def outside(tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    shutil.copy(ROOT / "docker-compose.yml", folder / "docker-compose.yml")
    shutil.copytree(ROOT / "images", folder / "images")
    return folder


def test_a_config_elsewhere_uses_the_packaged_locustfile(tmp_path):
    folder = outside(tmp_path)
    (folder / "config.yaml").write_text(GRID)
    cfg = config.load(folder / "config.yaml")
    assert cfg.locustfile == ROOT / "loadgrid" / "locustfile.py" == config.PACKAGED_LOCUSTFILE
    assert (ROOT / "loadgrid" / "locustfile.py").read_text().count("class ModelUser(LoadgridUser)") == 1


def test_the_locustfile_key_still_overrides_relative_to_the_config(tmp_path):
    folder = outside(tmp_path)
    (folder / "mine").mkdir()
    (folder / "mine" / "users.py").write_text("")
    (folder / "config.yaml").write_text(GRID + "locustfile: mine/users.py\n")
    assert config.load(folder / "config.yaml").locustfile == (folder / "mine" / "users.py").resolve()
    (folder / "config.yaml").write_text(GRID + "locustfile: gone.py\n")
    try:
        config.load(folder / "config.yaml")
    except config.UserError as exc:
        (line,) = exc.messages
        assert line.startswith("config: locustfile: file ") and "gone.py does not exist" in line
    else:
        raise AssertionError("a missing locustfile must be an error")


def test_a_locustfile_beside_the_config_is_still_picked_up(tmp_path):
    folder = outside(tmp_path)
    (folder / "locustfile.py").write_text("")
    (folder / "config.yaml").write_text(GRID)
    assert config.load(folder / "config.yaml").locustfile == folder / "locustfile.py"


def test_dry_run_from_elsewhere(tmp_path):
    folder = outside(tmp_path)
    (folder / "config.yaml").write_text(GRID)
    proc = orchestrate(["--config", str(folder / "config.yaml"), "--dry-run"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cpu/1_2_2" in proc.stdout and not (tmp_path / "docker-called").exists()


def test_a_real_target_run_from_elsewhere(tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    shutil.copytree(ROOT / "images", folder / "images")
    with SinkServer() as sink:
        (folder / "config.yaml").write_text(f"target: {sink.url}/predict\nnum_users_list: [1]\n"
                                            f"requests_per_user: 25\nclient_cpu_limit_pct: 100\n")
        proc = orchestrate(["--config", str(folder / "config.yaml")], tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert sink.count == 25
    record = json.loads((folder / "reports" / "target" / "1_1.json").read_text())
    assert record["status"] == "completed" and record["validity"]["valid"], record["validity"]
    assert record["load"]["requests"] == 25 and record["payload"]["expect"] == "prediction"
