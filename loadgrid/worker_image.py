"""The Locust worker image (loadgrid/worker_image/Dockerfile): its build context, its tag, and its build.

The context is assembled in a temp dir, never in the checkout: the Dockerfile, requirements.txt pinning the
Locust installed here (a master and its workers must run the same Locust: its protocol is not versioned across
releases), ca/ with the CA bundle for pip behind a TLS-intercepting proxy (or empty), and a copy of the loadgrid
package's modules. The tag is a hash of that context and the base image, so an unchanged context on the same
base reuses the image already built instead of building again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from loadgrid.errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parent
IMAGE_DIR = PACKAGE_DIR / "worker_image"
CA_NAME = "ca/extra-ca.crt"
REPOSITORY = "loadgrid-worker"
# Folders of the package the worker does not run: the report pages' templates, and this image's own folder,
# which holds the (git-ignored) CA bundle: it must never reach the image's package copy.
_SKIPPED_DIRS = {"__pycache__", "templates", "worker_image"}
_BUILD_TIMEOUT_S = 1800.0  # a cold build downloads Locust and its dependencies: minutes on a slow proxy


def _ca_bundle(image_dir: Path, env: Mapping[str, str]) -> bytes | None:
    """The CA bundle for pip: the checkout's copy (setup.sh writes it), else LOADGRID_CA_BUNDLE's file.

    An empty file counts as none, as in the Dockerfile's `[ -s ... ]`."""
    candidates = [image_dir / CA_NAME]
    if env.get("LOADGRID_CA_BUNDLE"):
        candidates.append(Path(env["LOADGRID_CA_BUNDLE"]))
    for path in candidates:
        if path.is_file() and path.stat().st_size > 0:
            return path.read_bytes()
    return None


def _package_files(package_dir: Path) -> dict[str, bytes]:
    """The package's Python modules, as loadgrid/<relative path>. Only *.py: no bytecode, no editor leftovers."""
    files = {}
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        if _SKIPPED_DIRS.intersection(relative.parts[:-1]) or not path.is_file():
            continue
        files[f"loadgrid/{relative.as_posix()}"] = path.read_bytes()
    return files


def locust_version() -> str:
    try:
        return importlib.metadata.version("locust")
    except importlib.metadata.PackageNotFoundError:
        raise UserError("worker image: Locust is not installed here, so there is no version to pin for the "
                        "workers; install loadgrid's dependencies (./setup.sh)", exit_code=1) from None


def context_files(*, package_dir: Path = PACKAGE_DIR, image_dir: Path = IMAGE_DIR,
                  env: Mapping[str, str] | None = None, locust: str | None = None) -> dict[str, bytes]:
    """The build context as {relative posix path: bytes}, without touching Docker.

    ca/extra-ca.crt is there only when a non-empty bundle is found (see `_ca_bundle`); `write_context`
    creates ca/ either way, since the Dockerfile copies it."""
    files = {
        "Dockerfile": (image_dir / "Dockerfile").read_bytes(),
        "requirements.txt": f"locust=={locust or locust_version()}\n".encode(),
    }
    ca = _ca_bundle(image_dir, os.environ if env is None else env)
    if ca is not None:
        files[CA_NAME] = ca
    files.update(_package_files(package_dir))
    return files


def image_tag(files: Mapping[str, bytes], base_image: str) -> str:
    """loadgrid-worker:<12 hex>: sha256 over the base image's name and every file's path and bytes.

    The CA bundle is left out: it changes how pip reaches PyPI, not what lands in the image, and a refreshed
    host bundle should not cost a rebuild. Lengths are hashed before each part, so no two contexts collide by
    moving bytes between a path and a file."""
    digest = hashlib.sha256()
    for part in (base_image.encode(), *(p for path in sorted(files) if path != CA_NAME
                                         for p in (path.encode(), files[path]))):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return f"{REPOSITORY}:{digest.hexdigest()[:12]}"


def write_context(files: Mapping[str, bytes], dest: Path) -> None:
    (dest / "ca").mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        path = dest / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _run(cmd: list[str], *, timeout: float, log: Path | None = None) -> subprocess.CompletedProcess:
    try:
        if log is None:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as out:
            return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise UserError(f"worker image: {cmd[0]}: command not found; install Docker (or run ./setup.sh)",
                        exit_code=1) from None
    except subprocess.TimeoutExpired:
        where = f" (log: {log})" if log else ""
        raise UserError(f"worker image: {' '.join(cmd[:3])} ...: no answer within {timeout:.0f}s{where}",
                        exit_code=1) from None


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "no output"


def build(base_image: str, *, docker: str = "docker", log: Path | None = None,
          timeout_s: float = _BUILD_TIMEOUT_S) -> str:
    """Build the worker image on `base_image` (or reuse the one with the same tag) and return its tag.

    The build's output goes to `log` when given. A failed build raises UserError naming the base, the log
    and the build's last lines."""
    files = context_files()
    tag = image_tag(files, base_image)
    if _run([docker, "image", "inspect", "--format", "{{.Id}}", tag], timeout=60).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory(prefix="loadgrid-worker-") as tmp:
        context = Path(tmp)
        write_context(files, context)
        proc = _run([docker, "build", "--build-arg", f"BASE_IMAGE={base_image}", "-t", tag, str(context)],
                    timeout=timeout_s, log=log)
    if proc.returncode != 0:
        output = log.read_text(encoding="utf-8", errors="replace") if log else proc.stdout + proc.stderr
        where = f" (full log: {log})" if log else ""
        raise UserError(f"worker image: docker build of {tag} on base {base_image} failed: "
                        f"{_last_lines(output)}{where}; check that the base image exists and PyPI is reachable "
                        f"(behind a TLS-intercepting proxy: set LOADGRID_CA_BUNDLE or run ./setup.sh)", exit_code=1)
    return tag
