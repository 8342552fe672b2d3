"""One holder at a time: a live run holds its output folder and each compose project it may start.

Mechanism: a lock file held with fcntl.flock (exclusive, non-blocking) for the life of the process, one in
the output folder (`<output>/.loadgrid.lock`) and one per compose project in a per-machine folder
(`$XDG_RUNTIME_DIR/loadgrid-locks` or `/tmp/loadgrid-locks`, `<project>.lock`). The file holds JSON naming
the holder (pid, started_at, config, output_dir, project). The kernel releases a flock when its process dies,
so a hold left by a killed run is stale by construction: the next run gets the lock and rewrites the file.
The compose project label on every container already names the stack, so the lock per project name is what
stops a second run from scaling or tearing down a stack a live run measures.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".loadgrid.lock"


def locks_dir() -> Path:
    base = os.environ.get("LOADGRID_LOCK_DIR") or os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/tmp",
                                                               "loadgrid-locks")
    return Path(base)


class Hold:
    """The locks this process holds; kept open until release() or the process exits."""

    def __init__(self) -> None:
        self.files: list = []

    def release(self) -> None:
        for f in self.files:
            try:
                fcntl.flock(f, fcntl.LOCK_UN)
            finally:
                f.close()
        self.files = []


def _describe(path: Path, what: str) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{what} is held by another loadgrid run (lock {path}); wait for it to finish"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started_at", 0)))
    return (f"{what} is held by loadgrid pid {holder.get('pid')} since {since} (config {holder.get('config')}); "
            f"wait for it to finish or stop it")


def _take(hold: Hold, path: Path, what: str, info: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open for the life of the run)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise UserError(_describe(path, what), exit_code=1) from None
    f.seek(0)
    f.truncate()
    f.write(json.dumps(info) + "\n")
    f.flush()
    hold.files.append(f)


def acquire(output_dir: Path, projects: list[str], config_path: str) -> Hold:
    """Hold the output folder and every compose project, or raise a one-line UserError naming the holder."""
    info = {"pid": os.getpid(), "started_at": time.time(), "config": str(config_path),
            "output_dir": str(Path(output_dir).resolve()), "project": ",".join(projects)}
    hold = Hold()
    try:
        _take(hold, Path(output_dir) / LOCK_NAME, f"output folder {output_dir}", info)
        for project in projects:
            _take(hold, locks_dir() / f"{project}.lock", f"compose project {project}", info)
    except BaseException:
        hold.release()
        raise
    return hold
