"""The build folder: what marks it as curate's, who may write it, what a kill left behind.

- `.curate-build` is written when a build first uses a folder; `--fresh` deletes only a
  folder that has it (or that an older curate built: run.json or units/), unless --force.
- `.curate-lock` holds the pid and host of the build writing the folder; a second build
  stops with a clear message; a lock whose process is gone (same host) is taken over.
- Temporary files of a killed build (`*.tmp<pid>`, `.staging/`, `.old-*`, a half-built
  knowledge base) are removed when the next build takes the lock.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

from curate import __version__
from curate.model.errors import CurateError

MARKER = ".curate-build"
LOCK = ".curate-lock"


class FolderInUse(CurateError):
    """Another build is writing the folder."""


def is_build(out: Path) -> bool:
    return (out / MARKER).is_file() or (out / "run.json").is_file() or (out / "units").is_dir()


def check_folder(out: Path, fresh: bool, force: bool) -> None:
    """Refuse to empty or fill a folder that is not a curate build, unless forced."""
    if not out.exists() or force or is_build(out):
        return
    if fresh or any(out.iterdir()):
        raise CurateError(f"{out} is not a curate build (no {MARKER}) and is not empty; "
                          f"refusing to {'delete' if fresh else 'write into'} it. Pick an "
                          "empty or new folder, or pass --force if you mean it")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BuildLock:
    """An exclusive lock on a build folder (a context manager)."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK
        self.held = False

    def __enter__(self) -> BuildLock:
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    other = json.loads(self.path.read_text() or "{}")
                except (OSError, ValueError):
                    other = {}
                if other.get("host") == me["host"] and not _alive(int(other.get("pid", 0))):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise FolderInUse(
                    f"another build (pid {other.get('pid', '?')} on {other.get('host', '?')}) "
                    f"is writing {self.path.parent}; wait for it to finish, or delete "
                    f"{self.path} if that process is gone") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise FolderInUse(f"could not take {self.path}")

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def mark(out: Path, recipe_name: str) -> None:
    if not (out / MARKER).is_file():
        (out / MARKER).write_text(json.dumps({"tool": "curate", "version": __version__,
                                              "recipe": recipe_name}) + "\n")


def clean_leftovers(out: Path) -> list[str]:
    """Remove what a killed build left half-written; returns what was removed."""
    gone = []
    for name in (".staging", "kb.partial"):
        if (out / name).exists():
            shutil.rmtree(out / name, ignore_errors=True)
            gone.append(name)
    for p in out.glob(".old-*"):
        shutil.rmtree(p, ignore_errors=True)
        gone.append(p.name)
    for sub in ("units", "plan"):
        for p in (out / sub).rglob("*.tmp*") if (out / sub).is_dir() else ():
            if p.is_file() and ".tmp" in p.name:
                p.unlink(missing_ok=True)
                gone.append(str(p.relative_to(out)))
    return gone
