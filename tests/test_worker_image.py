"""The Locust worker image: its build context and tag without Docker, build()'s control flow against a fake
docker command, and one real build on the project's base image (marked docker)."""

from __future__ import annotations

import importlib.metadata
import json
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from support.engine import base_image

from loadgrid import worker_image
from loadgrid.errors import UserError

LOCUST = importlib.metadata.version("locust")
CA = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A small stand-in for the loadgrid package, with what a checkout accumulates beside the modules."""
    pkg = tmp_path / "pkg"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "locust_users.py").write_text("X = 1\n")
    (pkg / "__pycache__" / "locust_users.cpython-311.pyc").write_bytes(b"\0bytecode")
    (pkg / "stale.pyc").write_bytes(b"\0bytecode")
    (pkg / "templates").mkdir()
    (pkg / "templates" / "index.html.j2").write_text("<html>")
    (pkg / "templates" / "helper.py").write_text("")
    (pkg / "worker_image" / "ca").mkdir(parents=True)
    (pkg / "worker_image" / "Dockerfile").write_text("FROM scratch\n")
    return pkg


@pytest.fixture
def image_dir(package: Path) -> Path:
    return package / "worker_image"


def files_of(package: Path, image_dir: Path, env: dict | None = None) -> dict[str, bytes]:
    return worker_image.context_files(package_dir=package, image_dir=image_dir, env=env or {})


def test_the_requirements_pin_the_installed_locust_and_nothing_else():
    files = worker_image.context_files(env={})
    assert files["requirements.txt"] == f"locust=={LOCUST}\n".encode()


def test_the_real_context_holds_the_dockerfile_and_the_modules_the_worker_imports():
    files = worker_image.context_files(env={})
    assert files["Dockerfile"] == (worker_image.IMAGE_DIR / "Dockerfile").read_bytes()
    for module in ("__init__", "locust_users", "locust_latency", "locust_window", "safefile", "errors"):
        path = f"loadgrid/{module}.py"
        assert files[path] == (worker_image.PACKAGE_DIR / f"{module}.py").read_bytes(), path
    # This test run has imported the package, so its __pycache__ exists: still nothing of it is copied.
    assert not [p for p in files if "__pycache__" in p or p.endswith(".pyc")]
    assert not [p for p in files if p.startswith(("loadgrid/worker_image/", "loadgrid/templates/"))]


def test_the_package_copy_skips_bytecode_templates_and_the_image_folder(package: Path, image_dir: Path):
    (image_dir / "ca" / "extra-ca.crt").write_bytes(CA)
    files = files_of(package, image_dir)
    assert sorted(p for p in files if p.startswith("loadgrid/")) == ["loadgrid/__init__.py",
                                                                     "loadgrid/locust_users.py"]
    # The CA is in the context only as ca/extra-ca.crt (the venv stage's), never in the package copy.
    assert [p for p, data in files.items() if data == CA] == ["ca/extra-ca.crt"]


def test_the_ca_is_taken_from_the_checkout_first(package: Path, image_dir: Path, tmp_path: Path):
    (image_dir / "ca" / "extra-ca.crt").write_bytes(CA)
    other = tmp_path / "other.crt"
    other.write_bytes(b"other bundle\n")
    assert files_of(package, image_dir, {"LOADGRID_CA_BUNDLE": str(other)})["ca/extra-ca.crt"] == CA


def test_the_ca_comes_from_loadgrid_ca_bundle_when_the_checkout_has_none(package: Path, image_dir: Path,
                                                                          tmp_path: Path):
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(CA)
    assert files_of(package, image_dir, {"LOADGRID_CA_BUNDLE": str(bundle)})["ca/extra-ca.crt"] == CA


@pytest.mark.parametrize("setting", ["", "missing.crt", "a-directory", "empty.crt"])
def test_without_a_usable_ca_the_context_has_none_but_keeps_an_empty_ca_folder(package: Path, image_dir: Path,
                                                                               tmp_path: Path, setting: str):
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "empty.crt").write_bytes(b"")
    (image_dir / "ca" / "extra-ca.crt").write_bytes(b"")  # an empty checkout copy counts as none, as in the Dockerfile
    env = {"LOADGRID_CA_BUNDLE": str(tmp_path / setting)} if setting else {}
    files = files_of(package, image_dir, env)
    assert "ca/extra-ca.crt" not in files
    context = tmp_path / "context"
    worker_image.write_context(files, context)
    assert (context / "ca").is_dir() and list((context / "ca").iterdir()) == []
    assert (context / "loadgrid" / "locust_users.py").read_text() == "X = 1\n"


def test_the_tag_is_stable_and_follows_the_package_and_the_base(package: Path, image_dir: Path):
    tag = worker_image.image_tag(files_of(package, image_dir), "python:3.11-slim")
    assert tag == worker_image.image_tag(files_of(package, image_dir), "python:3.11-slim")
    assert tag.startswith("loadgrid-worker:") and len(tag.split(":")[1]) == 12
    int(tag.split(":")[1], 16)
    assert worker_image.image_tag(files_of(package, image_dir), "loadgrid-base:bookworm") != tag
    (package / "locust_users.py").write_text("X = 2\n")
    assert worker_image.image_tag(files_of(package, image_dir), "python:3.11-slim") != tag


def test_the_tag_follows_a_new_module_the_dockerfile_and_the_locust_pin(package: Path, image_dir: Path):
    files = files_of(package, image_dir)
    tag = worker_image.image_tag(files, "b")
    assert worker_image.image_tag({**files, "loadgrid/worker.py": b""}, "b") != tag
    assert worker_image.image_tag({**files, "Dockerfile": b"FROM other\n"}, "b") != tag
    assert worker_image.image_tag({**files, "requirements.txt": b"locust==0.0.1\n"}, "b") != tag


def test_the_tag_ignores_the_ca_bundle(package: Path, image_dir: Path):
    # The bundle only lets pip through a proxy: the same image comes out, so a refreshed bundle reuses it.
    without = worker_image.image_tag(files_of(package, image_dir), "b")
    (image_dir / "ca" / "extra-ca.crt").write_bytes(CA)
    assert worker_image.image_tag(files_of(package, image_dir), "b") == without


FAKE_DOCKER = """#!/bin/sh
# Records each call; `image inspect` answers $INSPECT_RC; `build` saves its context's listing, then exits $BUILD_RC.
echo "$*" >> "{calls}"
case "$1 $2" in
  "image inspect") exit {inspect_rc} ;;
esac
if [ "$1" = build ]; then
  for last; do :; done
  echo "$last" > "{context_dir}"
  (cd "$last" && find . | sort) > "{listing}"
  echo "Step 1/9 : FROM base"
  echo "ERROR: Could not find a version that satisfies the requirement locust==9.9"
  exit {build_rc}
fi
exit 0
"""


def fake_docker(tmp_path: Path, *, inspect_rc: int, build_rc: int) -> Path:
    script = tmp_path / "docker"
    script.write_text(FAKE_DOCKER.format(calls=tmp_path / "calls", context_dir=tmp_path / "context_dir",
                                         listing=tmp_path / "listing", inspect_rc=inspect_rc, build_rc=build_rc))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_build_reuses_an_image_with_the_same_tag(tmp_path: Path):
    docker = fake_docker(tmp_path, inspect_rc=0, build_rc=1)
    tag = worker_image.build("base:1", docker=str(docker))
    assert tag == worker_image.image_tag(worker_image.context_files(), "base:1")
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == [f"image inspect --format {{{{.Id}}}} {tag}"]


def test_build_builds_the_context_and_removes_it(tmp_path: Path):
    docker = fake_docker(tmp_path, inspect_rc=1, build_rc=0)
    tag = worker_image.build("base:1", docker=str(docker))
    build_call = (tmp_path / "calls").read_text().splitlines()[1]
    context = (tmp_path / "context_dir").read_text().strip()
    assert build_call == f"build --build-arg BASE_IMAGE=base:1 -t {tag} {context}"
    listing = (tmp_path / "listing").read_text().splitlines()
    assert {"./Dockerfile", "./requirements.txt", "./ca", "./loadgrid/locust_users.py"} <= set(listing)
    assert not [p for p in listing if "__pycache__" in p or "worker_image/" in p]
    assert not Path(context).exists(), "the temp build context is removed"


def test_a_failed_build_is_one_line_naming_the_base_the_log_and_the_cause(tmp_path: Path):
    docker = fake_docker(tmp_path, inspect_rc=1, build_rc=1)
    log = tmp_path / "logs" / "worker-build.log"
    with pytest.raises(UserError) as caught:
        worker_image.build("base:1", docker=str(docker), log=log)
    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == 1
    assert "docker build" in message and "base base:1" in message and str(log) in message
    assert "locust==9.9" in message
    assert "Could not find a version" in log.read_text()
    assert not Path((tmp_path / "context_dir").read_text().strip()).exists(), "removed on failure too"


def test_a_failed_build_without_a_log_quotes_its_last_lines(tmp_path: Path):
    docker = fake_docker(tmp_path, inspect_rc=1, build_rc=1)
    with pytest.raises(UserError, match=r"failed: Step 1/9 : FROM base \| ERROR: Could not find"):
        worker_image.build("base:1", docker=str(docker))


def test_a_missing_docker_command_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="command not found"):
        worker_image.build("base:1", docker=str(tmp_path / "no-docker"))


def _layer_paths(tag: str) -> list[str]:
    """Every path in every layer of the image, read from `docker save` as one would to look for a leak."""
    paths = []
    with (subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE) as save,
          tarfile.open(fileobj=save.stdout, mode="r|") as outer):
        for member in outer:
            if not member.isfile():
                continue
            # Any member may be a layer: <id>/layer.tar in Docker's old format, blobs/sha256/<digest> in OCI's.
            try:
                with tarfile.open(fileobj=outer.extractfile(member), mode="r|*") as layer:
                    paths += [m.name for m in layer]
            except tarfile.TarError:  # the manifest, the config: not a layer
                continue
    assert save.returncode == 0
    assert len(paths) > 1000, "the layers were read (the base alone has thousands of files)"
    return paths


@pytest.mark.docker
def test_the_image_builds_on_the_project_base_runs_the_pinned_locust_and_holds_no_ca(tmp_path: Path):
    base = base_image()
    started = time.monotonic()
    tag = worker_image.build(base, log=tmp_path / "build.log")
    first_s = time.monotonic() - started
    started = time.monotonic()
    assert worker_image.build(base) == tag
    print(f"\nworker image {tag} on {base}: build {first_s:.1f}s, cached {time.monotonic() - started:.2f}s")

    imports = "import locust, loadgrid.locust_users, loadgrid.locust_latency, loadgrid.locust_window; " \
              "print(locust.__version__)"
    ran = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python", tag, "-c", imports],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == LOCUST

    probe = "id -u; id -g; ls /tmp/ca 2>&1 || true; find /opt/loadgrid -name '__pycache__' -o -name '*.pyc'"
    ran = subprocess.run(["docker", "run", "--rm", "--entrypoint", "sh", tag, "-c", probe],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    uid, gid, ls_ca, *bytecode = ran.stdout.splitlines()
    assert (uid, gid) == ("10001", "10001")
    assert "No such file" in ls_ca
    assert bytecode == []

    config = json.loads(subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config}}", tag],
                                       capture_output=True, text=True, check=True).stdout)
    assert config["Entrypoint"] == ["python", "-m", "loadgrid.worker"]
    assert config["User"] == "10001:10001"
    assert {"PYTHONPATH=/opt/loadgrid", "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"} <= set(config["Env"])

    history = subprocess.run(["docker", "image", "history", "--no-trunc", "--format", "{{.CreatedBy}}", tag],
                             capture_output=True, text=True, check=True).stdout
    assert "/tmp/ca" not in history and "extra-ca" not in history
    # No layer holds the bundle under any path (a COPY then `rm` would still show here).
    assert not [p for p in _layer_paths(tag) if "extra-ca" in p or p.startswith(("tmp/ca", "./tmp/ca"))]
