"""Config validation: each bad input is one line naming the key, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgrid import config
from loadgrid.errors import UserError

GOOD = {
    "num_models_list": [1, 2],
    "num_users_list": [10, 50],
    "spawn_rate_list": [1, 10],
    "run_time": "1m",
    "host": "http://localhost:8080",
}


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "docker-compose.yml").write_text("services: {model: {}, gateway: {}}\n")
    (tmp_path / "docker-compose.gpu.yml").write_text("services: {model: {}, gateway: {}}\n")
    (tmp_path / "locustfile.py").write_text("")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8")
    return tmp_path


def load(base: Path, **changes) -> config.Config:
    raw = {**GOOD, **changes}
    raw = {k: v for k, v in raw.items() if v is not DROP}
    return config.from_mapping(raw, base=base)


DROP = object()


def test_the_original_sweep_keys_are_enough(base):
    cfg = load(base)
    assert cfg.num_models_list == (1, 2)
    assert cfg.num_users_list == (10, 50)
    assert cfg.spawn_rate_list == (1.0, 10.0)
    assert cfg.run_time_s == 60
    assert cfg.host == "http://localhost:8080"
    assert cfg.variants == ("cpu",)
    assert cfg.compose_files == ((base / "docker-compose.yml").resolve(),)
    assert cfg.output_dir == base / "reports"
    assert cfg.service == "model"


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("1m", 60), ("1h30m", 5400), ("2m30s", 150), (45, 45),
                                           ("90", 90)])
def test_durations(text, seconds):
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize("changes, words", [
    ({"num_users_list": "ten"}, ["num_users_list", "list"]),
    ({"num_users_list": 10}, ["num_users_list", "write [10]"]),
    ({"num_models_list": [1, -2]}, ["num_models_list", "-2", "not above zero"]),
    ({"num_models_list": [1.5]}, ["num_models_list", "whole number"]),
    ({"num_users_list": []}, ["num_users_list", "non-empty"]),
    ({"spawn_rate_list": [0]}, ["spawn_rate_list", "not above zero"]),
    ({"spawn_rate_list": [1, 1]}, ["spawn_rate_list", "twice"]),
    ({"run_time": "ten minutes"}, ["run_time", "duration"]),
    ({"run_time": "0s"}, ["run_time", "above zero"]),
    ({"run_time": -5}, ["run_time"]),
    ({"host": "localhost:8080"}, ["host", "http"]),
    ({"num_user_list": [1]}, ["unknown key", "num_user_list", "did you mean num_users_list"]),
    ({"host": DROP}, ["missing key host"]),
    ({"variants": ["tpu"]}, ["variants", "'tpu'"]),
    ({"compose_files": ["nope.yml"]}, ["compose_files", "nope.yml", "does not exist"]),
    ({"variants": ["cpu", "gpu"], "gpu_compose_files": ["nope.gpu.yml"]}, ["gpu_compose_files", "nope.gpu.yml"]),
    ({"images_dir": "missing"}, ["images_dir"]),
    ({"locustfile": "missing.py"}, ["locustfile", "missing.py"]),
    ({"project": "Bad Name"}, ["project"]),
    ({"num_models_list": [True]}, ["num_models_list"]),
    ({"gpu_count": 0}, ["gpu_count", "all or a whole number"]),
    ({"gpu_count": 1, "gpu_device_ids": [0]}, ["gpu_count and gpu_device_ids", "not both"]),
    ({"gpu_device_ids": []}, ["gpu_device_ids"]),
    ({"gpu_required": "yes"}, ["gpu_required", "true or false"]),
])
def test_bad_input_is_one_line_naming_the_key(base, changes, words):
    with pytest.raises(UserError) as err:
        load(base, **changes)
    message = str(err.value)
    assert "\n" not in message
    assert err.value.exit_code == 2
    for word in words:
        assert word in message


def test_gpu_files_are_added_for_the_gpu_variant_only(base):
    cfg = load(base, variants=["cpu", "gpu"])
    assert cfg.compose_files_for("cpu") == ((base / "docker-compose.yml").resolve(),)
    assert cfg.compose_files_for("gpu")[-1] == (base / "docker-compose.gpu.yml").resolve()


def test_gpu_settings(base):
    cfg = load(base, variants=["cpu", "gpu"], gpu_device_ids=[1, "GPU-abc"], gpu_required=True)
    assert cfg.gpu_device_ids == ("1", "GPU-abc") and cfg.gpu_required is True
    assert load(base).gpu_count == 1 and load(base, gpu_count="all").gpu_count == "all"


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("num_models_list: [1, 2\nhost: x\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        config.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        config.load(tmp_path / "nope.yaml")


def test_the_shipped_config_is_valid(project_root):
    cfg = config.load(project_root / "config.yaml")
    assert cfg.variants == ("cpu",)
    assert len(cfg.num_models_list) * len(cfg.num_users_list) * len(cfg.spawn_rate_list) >= 2
