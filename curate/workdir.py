"""The build folder: what marks it as curate's, who may write it, what a kill left behind.

- `.curate-build` is written when a build first uses a folder; `--fresh` deletes only a
  folder that has it (or that an older curate built: run.json or units/), unless --force.
- `.curate-lock` holds the pid and host of the build writing the folder; a second build
  stops with a clear message; a lock whose process is gone (same host) is taken over.
- Temporary files of a killed build (`*.tmp<pid>`, `.staging/`, `.old-*`, a half-built
  knowledge base) are removed when the next build takes the lock.
- A build's outputs are written into `.staging/` (run.json last) and switched into place
  together by `switch`: a journal (`.curate-switch`, written atomically) names the outputs
  of the build in place and of the new one; then the old ones are moved aside (run.json
  first) and the new ones renamed in (run.json last). A kill before the journal leaves the
  previous build; after it, the next build or `curate verify` completes the switch
  (`recover`), so the folder holds one complete build, never a mix. Readers may take
  run.json as the mark of a complete build. `.curate-outputs` lists the outputs in place,
  so outputs the new build no longer writes are removed too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from curate import __version__
from curate.model.errors import CurateError

MARKER = ".curate-build"
LOCK = ".curate-lock"
STAGING = ".staging"
JOURNAL = ".curate-switch"
OUTPUTS = ".curate-outputs"
TRASH = ".old-outputs"
LAST = "run.json"
# the outputs of builds made before .curate-outputs existed
LEGACY_OUTPUTS = ["shards", "manifest.parquet", "filtered.parquet", "quarantine.parquet",
                  "figures", "validation.json", "DATACARD.md", "croissant.json", LAST]


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
    if recover(out):
        gone.append("(completed the switch of outputs)")
    for name in (STAGING, "kb.partial"):
        if (out / name).exists():
            shutil.rmtree(out / name, ignore_errors=True)
            gone.append(name)
    for p in out.glob(".old-*"):
        shutil.rmtree(p, ignore_errors=True)
        gone.append(p.name)
    for p in out.glob(".*.tmp*"):  # atomic_text's temporary files (journal, outputs list)
        if p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p.name)
    for sub in ("units", "plan"):
        for p in (out / sub).rglob("*.tmp*") if (out / sub).is_dir() else ():
            if p.is_file() and ".tmp" in p.name:
                p.unlink(missing_ok=True)
                gone.append(str(p.relative_to(out)))
    return gone


def fault_point(stage: str) -> None:
    """Kill this process with SIGKILL at the n-th pass through `stage` when the environment
    says CURATE_FAULT=<stage>:<n> (the fault-injection tests; a no-op otherwise)."""
    want = os.environ.get("CURATE_FAULT", "")
    if not want.startswith(stage + ":"):
        return
    _PASSES[stage] = _PASSES.get(stage, 0) + 1
    if _PASSES[stage] >= int(want.rsplit(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)


_PASSES: dict[str, int] = {}  # passes per fault point, in this process (tests only)


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's entries: the renames into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_text(path: Path, text: str) -> None:
    """Write a small file atomically: temporary name, fsync, rename, fsync the folder."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def sync_tree(root: Path, threads: int = 16) -> int:
    """fsync every file and folder under root (the staged outputs, before they are
    switched in: their writers only rename); returns how many. One name per file (about
    three per shard) passes through here, never a sample."""
    paths = [root]
    for dirpath, dirs, files in os.walk(root):
        paths += [Path(dirpath) / n for n in dirs + files]

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fsync_path, paths))
    return len(paths)


def outputs_in_place(out: Path) -> list[str]:
    """The names of the outputs of the build in place (top-level names in `out`)."""
    try:
        names = json.loads((out / OUTPUTS).read_text())
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return names
    except (OSError, ValueError):
        pass
    return [n for n in LEGACY_OUTPUTS if (out / n).exists()]


def _safe(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..") \
        and name not in (MARKER, LOCK, STAGING, JOURNAL, OUTPUTS, TRASH, "units", "plan")


def switch(out: Path) -> list[str]:
    """Switch the outputs staged in out/.staging (complete: run.json written last) into
    place as one step; returns the names switched in."""
    staging = out / STAGING
    if not (staging / LAST).is_file():
        raise CurateError(f"{staging} holds no {LAST}: the staged build is not complete")
    new = sorted(n for n in os.listdir(staging) if n != LAST) + [LAST]
    bad = [n for n in new if not _safe(n)]
    if bad:
        raise CurateError(f"staged outputs may not be named {bad}")
    sync_tree(staging)
    shutil.rmtree(out / TRASH, ignore_errors=True)
    journal = {"old": outputs_in_place(out), "new": new}
    atomic_text(out / JOURNAL, json.dumps(journal))
    fault_point("switch")
    _complete(out, journal)
    return new


def recover(out: Path) -> bool:
    """Complete a switch a killed build left half-done (its journal exists); True if so.
    Without a journal, a staged build is only removed (by clean_leftovers)."""
    try:
        journal = json.loads((out / JOURNAL).read_text())
        old, new = list(journal["old"]), list(journal["new"])
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError):
        # written atomically, so an unreadable journal was never committed: no switch began
        (out / JOURNAL).unlink(missing_ok=True)
        return False
    _complete(out, {"old": [n for n in old if _safe(n)], "new": [n for n in new if _safe(n)]})
    return True


def _complete(out: Path, journal: dict) -> None:
    """The switch proper; every step can be redone after a kill (a staged name still in
    .staging/ has not been moved in, so the name in place is the old one)."""
    staging, trash = out / STAGING, out / TRASH
    trash.mkdir(exist_ok=True)
    new = journal["new"]
    # run.json leaves first; a new name already taken by a stray file is moved aside too
    order = list(dict.fromkeys([LAST, *journal["old"], *new]))
    for name in order:
        moved_in = name in new and not os.path.lexists(staging / name)
        if os.path.lexists(out / name) and not moved_in:
            if os.path.lexists(trash / name):
                _remove(trash / name)
            os.rename(out / name, trash / name)
            fault_point("switch")
    for name in new:  # run.json comes last
        if os.path.lexists(staging / name):
            os.rename(staging / name, out / name)
            fault_point("switch")
    fsync_path(out)
    atomic_text(out / OUTPUTS, json.dumps(new))
    (out / JOURNAL).unlink()
    fsync_path(out)
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def finish_switch(out: Path) -> bool:
    """Complete an interrupted switch of outputs, under the folder's lock (for `curate
    verify`); True if there was one. FolderInUse if a build is writing the folder now."""
    if not (Path(out) / JOURNAL).exists():
        return False
    with BuildLock(out):
        return recover(Path(out))
