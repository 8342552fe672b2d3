"""Issue 13.5: the user's compose file linted up front, one line each naming service and key.

Pure: the lint on recorded `docker compose config --format json` output (tests/fixtures/compose/*.config.json)
and on the same files as written (merged and interpolated without Docker: what --dry-run sees), through the
config and the CLI. Real engine (docker): the dry run and the run of a bad compose file, and the resolved
model that `docker compose config` gives the same lines."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from support.engine import ROOT

from loadgrid import compose_lint, config, stack
from loadgrid.errors import UserError

FIXTURES = ROOT / "tests" / "fixtures" / "compose"
GRID = "num_models_list: [1, 2]\nnum_users_list: [2]\nspawn_rate_list: [2]\nrun_time: 5s\n"

CONTAINER_NAME = ("config: service: model.container_name is 'model' in bad_scaled.yml: --scale model=N would fail "
                  "(one name for N containers); remove container_name from model")
FIXED_PORT = ("config: service: model.ports publishes fixed host port 8000 ({text!r}) in bad_scaled.yml: "
              "--scale model=N would fail (one host port for N containers); publish no host port on model "
              "(ports: ['8000'], or none) and reach it through a service in front of it")
REPLICAS = ("config: service: model.deploy.replicas is 3 in replicas.yml; loadgrid ignores it and runs --scale "
            "model=N for each entry of num_models_list")
NOT_PUBLISHED = ("config: host: port 8080 is published by no service of replicas.yml (published: gateway 8081); "
                 "set host to http://localhost:8081, or publish 8080 on the service in front of the replicas")


def recorded(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.config.json").read_text())["services"]


def as_written(name: str, host: str = "", environ: dict | None = None) -> compose_lint.Lint:
    return config.lint_compose((FIXTURES / f"{name}.yml",), "model", host or None, "cpu", environ or {})


def test_container_name_and_fixed_host_port_on_the_scaled_service_are_errors():
    found = compose_lint.lint(recorded("bad_scaled"), "model", "http://localhost:8081", "bad_scaled.yml")
    assert found.errors == (CONTAINER_NAME, FIXED_PORT.format(text="8000:8000"))
    assert found.warnings == ()  # the gateway's container_name and port are its own business
    written = as_written("bad_scaled", "http://localhost:8081")  # short syntax, ${MODEL_PORT:-8000}
    assert written.errors == (CONTAINER_NAME, FIXED_PORT.format(text="127.0.0.1:8000:8000")) and not written.warnings


def test_a_variable_moves_the_port_and_the_message_follows():
    written = as_written("bad_scaled", "http://localhost:8081", {"MODEL_PORT": "8123"})
    assert "fixed host port 8123 ('127.0.0.1:8123:8000')" in written.errors[1]


def test_deploy_replicas_and_an_unpublished_host_are_warnings():
    for found in (compose_lint.lint(recorded("replicas"), "model", "http://localhost:8080", "replicas.yml"),
                  as_written("replicas", "http://localhost:8080")):
        assert found.errors == () and found.warnings == (REPLICAS, NOT_PUBLISHED)
    assert compose_lint.lint(recorded("replicas"), "model", "http://localhost:8081", "replicas.yml").warnings == \
        (REPLICAS,)
    # another machine's ports are not these files' to publish
    remote = compose_lint.lint(recorded("replicas"), "model", "http://bench-host:8080", "replicas.yml")
    assert remote.warnings == (REPLICAS,)


def test_the_third_party_shape_is_fine_when_the_worker_is_scaled():
    services = recorded("queue_api")
    assert compose_lint.lint(services, "worker", "http://localhost:80", "queue_api.yml") == compose_lint.Lint()
    api = compose_lint.lint(services, "api", "http://localhost", "queue_api.yml")
    assert [line.split(" is ")[0].split(" publishes")[0] for line in api.errors] == \
        ["config: service: api.container_name", "config: service: api.ports"]


def test_the_bundled_stack_has_nothing_to_say():
    cfg = config.load(ROOT / "config.yaml")
    assert cfg.warnings == ()
    assert config.lint_compose(cfg.compose_files, "model", "http://localhost:8080", "cpu", {}) == compose_lint.Lint()
    # a host port other than 8080 moves the gateway's published port with it (LOADGRID_GATEWAY_PORT)
    assert config.lint_compose(cfg.compose_files, "model", "http://localhost:9999", "cpu", {}) == compose_lint.Lint()


@pytest.mark.parametrize("entry, published, target", [
    ("80", None, "80"), (80, None, "80"), ("8080:80", 8080, "80"), ("127.0.0.1:8080:80/udp", 8080, "80"),
    ("127.0.0.1::80", None, "80"), ("[::1]:8080:80", 8080, "80"), ("8000-8009:80", None, "80"),
    ({"target": 80, "published": "8080"}, 8080, "80"), ({"target": 80}, None, "80"),
])
def test_ports_in_every_syntax(entry, published, target):
    (port,) = compose_lint.ports({"ports": [entry]})
    assert (port.published, port.target) == (published, target)


@pytest.mark.parametrize("text, env, out", [
    ("${A:-x}", {}, "x"), ("${A:-x}", {"A": ""}, "x"), ("${A-x}", {"A": ""}, ""), ("${A}", {"A": "1"}, "1"),
    ("$A:$$B", {"A": "1"}, "1:$B"), ("${A:+y}", {"A": "1"}, "y"), ("${A:-${B:-z}}", {}, "z"),
])
def test_interpolation(text, env, out):
    assert compose_lint.interpolate(text, env) == out


def test_files_merge_like_compose(tmp_path):
    (tmp_path / ".env").write_text("PORT=7000\n")
    docs = [{"services": {"model": {"image": "a", "ports": ["80"]}}},
            {"services": {"model": {"container_name": "m", "ports": ["${PORT}:81"]}}}]
    model = compose_lint.read_model(docs, tmp_path, {}, {})
    assert model["model"] == {"image": "a", "container_name": "m", "ports": ["80", "7000:81"]}


def write_project(tmp_path, compose: str, extra: str = "", host: str = "http://localhost:8081") -> object:
    shutil.copy(FIXTURES / compose, tmp_path / "docker-compose.yml")
    shutil.copytree(ROOT / "images", tmp_path / "images")
    (tmp_path / "config.yaml").write_text(GRID + f"host: {host}\n" + extra)
    return tmp_path / "config.yaml"


def test_the_config_lists_lint_errors_with_its_other_mistakes(tmp_path):
    path = write_project(tmp_path, "bad_scaled.yml", "repeats: 0\n")
    with pytest.raises(UserError) as err:
        config.load(path)
    assert [m.split(":")[1].strip() for m in err.value.messages] == ["repeats", "service", "service"]
    assert err.value.messages[1] == CONTAINER_NAME.replace("bad_scaled.yml", "docker-compose.yml")


def test_service_not_in_the_files_is_still_one_line(tmp_path):
    path = write_project(tmp_path, "queue_api.yml", "service: wroker\n", host="http://localhost:80")
    with pytest.raises(UserError) as err:
        config.load(path)
    assert err.value.messages == ("config: service: 'wroker' is not a service of docker-compose.yml (services: api, "
                                  "redis, worker); set service to the one to scale (did you mean worker?)",)


def dry_run(path, cwd):
    return subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(path), "--dry-run"],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_dry_run_says_the_warnings_once_and_goes_on(tmp_path):
    path = write_project(tmp_path, "replicas.yml", host="http://localhost:8080")
    proc = dry_run(path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [f"loadgrid: warning: {REPLICAS}".replace("replicas.yml", "docker-compose.yml"),
                                        f"loadgrid: warning: {NOT_PUBLISHED}".replace("replicas.yml",
                                                                                      "docker-compose.yml")]
    assert "cpu/1_2_2" in proc.stdout


def test_dry_run_stops_on_a_lint_error(tmp_path):
    proc = dry_run(write_project(tmp_path, "bad_scaled.yml"), tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "loadgrid: error: " + CONTAINER_NAME.replace("bad_scaled.yml", "docker-compose.yml"),
        "loadgrid: error: " + FIXED_PORT.format(text="127.0.0.1:8000:8000").replace("bad_scaled.yml",
                                                                                  "docker-compose.yml")]


@pytest.mark.docker
def test_real_engine_lint_before_anything_is_built(tmp_path):
    from support.engine import project_resources

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "docker-compose.yml").write_text("services:\n  model:\n    image: loadgrid-lint-never-built:1\n"
                                            "    build: {context: .}\n    container_name: lint-model\n")
    (bad / "Dockerfile").write_text("FROM scratch\n")
    shutil.copytree(ROOT / "images", bad / "images")
    (bad / "config.yaml").write_text(GRID + "host: http://localhost:8081\nproject: lintcheck\n")
    line = ("loadgrid: error: config: service: model.container_name is 'lint-model' in docker-compose.yml: "
            "--scale model=N would fail (one name for N containers); remove container_name from model")
    for args in (["--dry-run"], []):
        proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "--config", str(bad / "config.yaml"),
                               *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and proc.stderr.splitlines() == [line], proc.stdout + proc.stderr
    assert project_resources("lintcheck-cpu") == ([], [])
    assert not (bad / "reports").exists()  # stopped before the hold, the build and any container
    # what Compose itself resolves gives the same line, before building (a file that includes another is
    # linted only there)
    (bad / "main.yml").write_text("include: [docker-compose.yml]\n")
    assert config.lint_compose((bad / "main.yml",), "model", None, "cpu") == compose_lint.Lint()
    with pytest.raises(UserError) as err:
        stack.ComposeStack("lintcheck-cpu", (bad / "main.yml",), "model").validate()
    assert err.value.messages == (line.removeprefix("loadgrid: error: ").replace("docker-compose.yml", "main.yml"),)
    assert project_resources("lintcheck-cpu") == ([], [])


def test_malformed_ports_are_left_to_compose_not_a_traceback():
    # `ports: 12` is Compose's to refuse (docker compose config names the file); the lint must not crash on it
    assert compose_lint.ports({"ports": 12}) == [] and compose_lint.ports("not a mapping") == []
    assert compose_lint.lint({"model": {"ports": 12}}, "model", None, "f.yml").errors == ()
    # nor warn that host is unpublished: Compose's refusal is the one line to read
    assert compose_lint.lint({"model": {"ports": 12}}, "model", "http://localhost:8080", "f.yml") == \
        compose_lint.Lint()
