"""Config validation: each bad input is one line naming the key, before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loadgrid import cli, config
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
    assert "\n" not in message and len(err.value.messages) == 1, err.value.messages
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


# --- mistakes that passed or crashed (issue 11, section 7): one line each, exit 2, nothing started ------------

GOOD_YAML = """num_models_list: [1]
num_users_list: [4]
spawn_rate_list: [4]
run_time: 20s
output_dir: out
host: http://localhost:8080
"""


@pytest.fixture
def no_docker(monkeypatch):
    """Anything that would start a process (docker, Locust) fails the test: a config error comes first."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"started {args[0] if args else kwargs} before the config was checked")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


def run_cli(base: Path, text: str | bytes, capsys, *flags: str) -> tuple[int, list[str]]:
    """orchestrate.py --config base/config.yaml (no --dry-run: it would run): exit code and stderr lines."""
    path = base / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code = cli.main(["--config", str(path), *flags])
    captured = capsys.readouterr()
    assert captured.out == ""
    assert not (base / "out").exists(), "nothing may be written before the config is valid"
    return code, captured.err.splitlines()


def test_a_file_that_is_not_utf8_is_one_line_naming_the_line_and_key(base, capsys, no_docker):
    text = GOOD_YAML.replace("http://localhost:8080", "http://caf\xe9:8080").encode("latin-1")
    code, lines = run_cli(base, text, capsys)
    assert code == 2
    assert lines == [f"loadgrid: error: config: {base / 'config.yaml'} is not UTF-8 text (byte 0xe9 at line 6, "
                     "key host); save the file as UTF-8"]


def test_a_utf8_file_with_a_bom_is_read(base):
    path = base / "config.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_YAML.encode())
    assert config.load(path).host == "http://localhost:8080"


def test_a_service_the_compose_files_lack_is_one_line_naming_theirs(base, capsys, no_docker):
    code, lines = run_cli(base, GOOD_YAML + "service: modle\n", capsys)
    assert code == 2
    assert lines == ["loadgrid: error: config: service: 'modle' is not a service of docker-compose.yml (services: "
                     "gateway, model); set service to the one to scale (did you mean model?)"]


def test_the_service_check_reads_the_compose_files_without_docker(base, capsys, no_docker):
    # --dry-run stays Docker-free (no_docker) and still refuses a service no compose file has.
    path = base / "config.yaml"
    path.write_text(GOOD_YAML + "service: worker\n")
    assert cli.main(["--config", str(path), "--dry-run"]) == 2
    assert "'worker' is not a service of docker-compose.yml" in capsys.readouterr().err
    path.write_text(GOOD_YAML)
    assert cli.main(["--config", str(path), "--dry-run"]) == 0


def test_services_are_the_union_of_the_variants_files(base):
    (base / "docker-compose.gpu.yml").write_text("services:\n  model: {}\n  trt: {}\n")
    (base / "extra.yml").write_text("services:\n  sidecar:\n    image: x\n")
    both = {"compose_files": ["docker-compose.yml", "extra.yml"]}
    assert load(base, **both, service="sidecar").service == "sidecar"  # any file of compose_files
    assert load(base, variants=["gpu"], service="trt").service == "trt"  # gpu: gpu_compose_files too
    with pytest.raises(UserError) as err:  # the cpu variant runs without the gpu file
        load(base, variants=["cpu", "gpu"], service="trt")
    assert err.value.messages == ("config: service: 'trt' is not a service of docker-compose.yml (services: "
                                  "gateway, model, the cpu variant's files); set service to the one to scale",)


def test_compose_includes_and_tags_are_followed(base):
    (base / "sub").mkdir()
    (base / "sub" / "more.yml").write_text("services:\n  worker: {}\n")
    (base / "main.yml").write_text("include:\n  - sub/more.yml\nservices:\n  model:\n    ports: !reset []\n")
    assert load(base, compose_files=["main.yml"], service="worker").service == "worker"
    (base / "remote.yml").write_text("include:\n  - oci://example/app:1\nservices: {}\n")
    assert load(base, compose_files=["remote.yml"], service="any").service == "any"  # Compose alone can tell


def test_a_compose_file_that_is_not_yaml_names_the_key(base):
    (base / "broken.yml").write_text("services:\n  model: [\n")
    with pytest.raises(UserError) as err:
        load(base, compose_files=["broken.yml"])
    assert err.value.messages == (f"config: compose_files: {base / 'broken.yml'} is not valid YAML at line 3; "
                                  "fix the file",)


@pytest.mark.parametrize("extra, line", [
    ("warmup: 30s\n", "config: warmup: 30s is not shorter than run_time (20s), so no request would be measured; "
                      "shorten warmup or lengthen run_time"),
    ("warmup: 20s\n", "config: warmup: 20s is not shorter than run_time (20s), so no request would be measured; "
                      "shorten warmup or lengthen run_time"),
    ("warmup: 10s\ncapacity_search: {run_time: 10s}\n",
     "config: warmup: 10s is not shorter than capacity_search.run_time (10s), so no request would be measured; "
     "shorten warmup or lengthen capacity_search.run_time"),
])
def test_warmup_must_end_before_the_run(base, capsys, no_docker, extra, line):
    code, lines = run_cli(base, GOOD_YAML + extra, capsys)
    assert code == 2
    assert lines == [f"loadgrid: error: {line}"]


def test_a_warmup_shorter_than_every_run_passes(base):
    assert load(base, warmup="19s").warmup_s == 19
    cs = load(base, warmup="19s", num_users_list=DROP, capacity_search={"run_time": "30s"}, run_time="10s")
    assert cs.capacity_search.run_time_s == 30  # no grid runs of 10s: only the probes' run time counts


@pytest.mark.parametrize("host, why", [
    ("http://local host:8080", "it contains a space"),
    ("http://localhost :8080", "it contains a space"),
    ("http://local%host:8080", "'local%host' is not a host name or IP address"),
    ("http://localhost:80x", "its port is not a number from 1 to 65535"),
    ("http://localhost:0", "its port is not a number from 1 to 65535"),
    ("http://[::zz]:8080", "its [host] is not an IPv6 address"),
    ("http://[::1:8080", "its [host] is not an IPv6 address"),
    ("ftp://localhost", "it does not start with http:// or https://"),
])
def test_a_host_that_is_not_a_url_is_one_line(base, capsys, no_docker, host, why):
    code, lines = run_cli(base, GOOD_YAML.replace("http://localhost:8080", f"'{host}'"), capsys)
    assert code == 2
    assert lines == [f"loadgrid: error: config: host: got {host!r}; expected an http(s) URL such as "
                     f"http://localhost:8080 ({why})"]


@pytest.mark.parametrize("host", ["http://localhost:8080", "http://127.0.0.1:1", "https://my-host.example.com/",
                                  "http://model_service:8000", "http://[::1]:8080", "http://example.com."])
def test_valid_hosts_pass(base, host):
    assert load(base, host=host).host == host.rstrip("/")


def test_a_target_with_a_space_is_refused(base):
    with pytest.raises(UserError) as err:
        config.from_mapping({"target": "http://127.0.0.1:9000/pre dict", "num_users_list": [1], "run_time": "5s"},
                            base=base, environ={})
    assert err.value.messages == ("config: target: got 'http://127.0.0.1:9000/pre dict'; expected an http(s) URL "
                                  "such as http://127.0.0.1:9000/predict (it contains a space)",)


def test_a_key_given_twice_is_named_with_both_lines(base, capsys, no_docker):
    code, lines = run_cli(base, GOOD_YAML + "run_time: 1m\n", capsys)
    assert code == 2
    assert lines == ["loadgrid: error: config: run_time: given twice (lines 4 and 7); keep one (YAML would "
                     "silently take the last)"]


def test_duplicate_keys_are_refused_at_any_depth_but_merges_may_override():
    with pytest.raises(config.DuplicateKeys) as err:
        config.yaml.load("a:\n  b:\n    - {c: 1, c: 2}\n", Loader=config.StrictLoader)
    assert err.value.messages == ["config: a.b[0].c: given twice (lines 3 and 3); keep one (YAML would silently "
                                  "take the last)"]
    text = "base: &b {x: 1, y: 2}\nmine:\n  <<: *b\n  x: 3\n"
    assert config.yaml.load(text, Loader=config.StrictLoader)["mine"] == {"x": 3, "y": 2}


def test_several_mistakes_are_listed_together_one_line_each(base, capsys, no_docker):
    text = GOOD_YAML.replace("http://localhost:8080", "http://local host:8080") + "service: modle\nwarmup: 1m\n"
    code, lines = run_cli(base, text, capsys)
    assert code == 2
    assert lines == [  # in the file's order of their keys
        "loadgrid: error: config: host: got 'http://local host:8080'; expected an http(s) URL such as "
        "http://localhost:8080 (it contains a space)",
        "loadgrid: error: config: service: 'modle' is not a service of docker-compose.yml (services: gateway, "
        "model); set service to the one to scale (did you mean model?)",
        "loadgrid: error: config: warmup: 60s is not shorter than run_time (20s), so no request would be measured; "
        "shorten warmup or lengthen run_time",
    ]


def test_several_mistakes_through_orchestrate_py(base, project_root):
    """The real command line: a duplicate key, an unknown key (with its suggestion) and a bad list at once."""
    path = base / "config.yaml"
    path.write_text(GOOD_YAML + "num_user_list: [1]\nrun_time: 30s\nspawn_rate_list: [0]\n")
    proc = subprocess.run([sys.executable, str(project_root / "orchestrate.py"), "--config", str(path)],
                          capture_output=True, text=True, cwd=base)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "loadgrid: error: config: run_time: given twice (lines 4 and 8); keep one (YAML would silently take the "
        "last)",
        "loadgrid: error: config: spawn_rate_list: given twice (lines 3 and 9); keep one (YAML would silently take "
        "the last)",
        "loadgrid: error: config: spawn_rate_list: got [0]; expected a non-empty list of positive numbers, e.g. "
        "[1, 2]; 0 is not above zero",
        "loadgrid: error: config: unknown key 'num_user_list'; did you mean num_users_list?",
    ]
    assert not (base / "out").exists()
