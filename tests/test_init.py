"""Issue 13.7: `loadgrid init [COMPOSE_FILE...]` writes a starter config for an existing compose project.

The guesses (service, host, payload) on the bundled stack, a third-party-shaped gateway + worker project and
the seed's queue shape; unclear guesses are TODOs with one printed line; the written config passes --dry-run
as written (no Docker called); an existing file is refused without --force. No Docker: nothing is started."""

from __future__ import annotations

import shutil

import yaml
from support.engine import ROOT
from support.target import orchestrate

from loadgrid import starter

GATEWAY_WORKER = """\
services:
  gateway:
    build: ./gateway
    ports:
      - "127.0.0.1:${GATEWAY_PORT:-8088}:80"
    depends_on: [worker]
  worker:
    build: ./worker
    environment:
      MODEL: resnet
  cache:
    image: docker.io/library/redis:7-alpine
"""


def init(cwd, *args):
    return orchestrate(["init", *args], cwd)


def settings(path) -> dict:
    return yaml.safe_load(path.read_text())


def every_setting_is_commented(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return all(" # " in line for line in lines)


def test_the_bundled_stack(tmp_path):
    proc = init(tmp_path, str(ROOT / "docker-compose.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        f"wrote config.yaml: service model, host http://localhost:8080 (published by gateway), payload "
        f"{ROOT / 'images'} (5 images); check it with: loadgrid --config config.yaml --dry-run"]
    text = (tmp_path / "config.yaml").read_text()
    written = settings(tmp_path / "config.yaml")
    assert written["service"] == "model" and written["host"] == "http://localhost:8080"
    assert every_setting_is_commented(text) and "TODO" not in text
    assert "# expect: {status: 200, json: {success: true}}" in text  # the optional keys, commented out
    dry = orchestrate(["--config", "config.yaml", "--dry-run"], tmp_path)
    assert dry.returncode == 0 and dry.stderr == "", dry.stderr
    assert "stack: model x 2" in dry.stdout and not (tmp_path / "docker-called").exists()


def third_party(tmp_path):
    project = tmp_path / "shop"
    (project / "samples" / "cats").mkdir(parents=True)
    (project / "docker-compose.yml").write_text(GATEWAY_WORKER)
    for name in ("a.jpg", "b.png"):
        shutil.copy(ROOT / "images" / "chelsea.jpg", project / "samples" / "cats" / name)
    (project / "docs").mkdir()
    shutil.copy(ROOT / "images" / "chelsea.jpg", project / "docs" / "logo.jpg")  # 1 image: a nearer folder wins
    return project


def test_a_gateway_and_a_worker(tmp_path):
    project = third_party(tmp_path)
    proc = init(project)  # no argument: the compose file of the current folder
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = settings(project / "config.yaml")
    assert written["compose_files"] == ["docker-compose.yml"] and written["service"] == "worker"
    assert written["host"] == "http://localhost:8088" and written["payload"] in ("docs", "samples/cats")
    assert written["project"] == "shop"
    dry = orchestrate(["--config", str(project / "config.yaml"), "--dry-run"], tmp_path)
    assert dry.returncode == 0 and dry.stderr == "", dry.stderr
    assert "stack: worker x 1 (project shop-cpu)" in dry.stdout


def test_images_folder_is_preferred(tmp_path):
    project = third_party(tmp_path)
    (project / "images").mkdir()
    shutil.copy(ROOT / "images" / "chelsea.jpg", project / "images" / "x.jpg")
    assert starter.find_images(project) == (project / "images", 1)


def test_the_queue_shape_skips_the_data_store(tmp_path):
    shutil.copy(ROOT / "tests" / "fixtures" / "compose" / "queue_api.yml", tmp_path / "compose.yaml")
    found = starter.guess((tmp_path / "compose.yaml",))
    assert found.service == "worker" and found.candidates == ("worker",)
    assert found.host == "http://localhost:80" and found.host_from == "api"
    assert found.payload is None and found.notes == (
        "payload: no folder of .jpg/.jpeg/.png images near compose.yaml; set payload to an image, a folder of "
        "images or a .json/.jsonl file",)


def test_several_candidates_is_a_todo_and_one_line(tmp_path):
    project = third_party(tmp_path)
    (project / "docker-compose.yml").write_text(GATEWAY_WORKER + "  tokenizer:\n    build: ./tok\n")
    proc = init(project)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == ("loadgrid init: TODO service: several services could be scaled "
                                           "(tokenizer, worker); set service in the config to the one to scale")
    text = (project / "config.yaml").read_text()
    assert "service: TODO" in text and "one of tokenizer, worker" in text
    dry = orchestrate(["--config", "config.yaml", "--dry-run"], project)
    assert dry.returncode == 2 and dry.stderr.splitlines() == [
        "loadgrid: error: config: service: 'TODO' is not a service of docker-compose.yml (services: cache, gateway, "
        "tokenizer, worker); set service to the one to scale"]


def test_no_candidate_is_a_todo_too(tmp_path):
    (tmp_path / "compose.yaml").write_text("services:\n  app:\n    image: x\n    container_name: app\n"
                                           "    ports: ['80:80']\n")
    found = starter.guess((tmp_path / "compose.yaml",))
    assert found.service is None and found.host == "http://localhost:80"
    assert found.notes[0] == ("service: no service can be scaled (each has a container_name or a fixed host port); "
                              "set service in the config to the one to scale")


def test_an_existing_config_is_refused_without_force(tmp_path):
    project = third_party(tmp_path)
    (project / "config.yaml").write_text("# mine\n")
    proc = init(project)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("loadgrid: error: init: config.yaml exists; pass --force to overwrite it, or --output "
                           "another path\n")
    assert (project / "config.yaml").read_text() == "# mine\n"
    forced = init(project, "--force")
    assert forced.returncode == 0 and settings(project / "config.yaml")["service"] == "worker"
    other = init(project, "--output", "other.yaml")
    assert other.returncode == 0 and (project / "other.yaml").is_file()


def test_no_compose_file_is_one_line(tmp_path):
    proc = init(tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "init: no compose file in" in proc.stderr
    assert not (tmp_path / "config.yaml").exists()
    missing = init(tmp_path, "nope.yml")
    assert missing.returncode == 2 and "init: compose file" in missing.stderr and "nope.yml does not exist" in \
        missing.stderr
