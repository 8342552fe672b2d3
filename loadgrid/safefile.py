"""Writing a file whole, under a name nobody else chose: no fixed temporary name that a planted symlink redirects.

`replace(path, data)` writes to a new temporary file in `path`'s folder, opened with O_CREAT|O_EXCL|O_NOFOLLOW
under a random name (an existing file or symlink there is refused, never followed), then renames it over
`path` (a rename replaces a symlink at `path` itself, not what it points to). The file gets the mode the
user's umask gives a new file (0666 & ~umask), as a plain `open(path, "w")` would, not mkstemp's 0600.
Standard library only: the locustfile imports it inside Locust's gevent world (through payload.py).
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def replace(path: str | Path, data: bytes | str, mode: int | None = None) -> Path:
    """Write `data` (text is written as UTF-8) to `path` atomically: readers see the old file or the new one.
    `mode`: the file's permission bits instead of the umask's (e.g. those of the file it replaces)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = _create(path)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _create(path: Path) -> tuple[int, Path]:
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")


def file_part(text: str, limit: int = 120) -> str:
    """`text` (a Locust worker id: its host name and a random part) as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(text))[:limit] or "worker"
