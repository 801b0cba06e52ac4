"""Answer cache keyed by the content hash of what was asked, in a few large files.

The key covers the prompt version, the model and the full request payload (rendered
prompt, images, response format, sampling settings), so any change that could change an
answer is a different key, and a re-run or a resumed crash repeats no call that already
succeeded. Failures are never cached, so a re-run retries exactly those.

Layout: `<dir>/answers-<slot>.sqlite`, one SQLite file per concurrent writer. A writer
(a process, a Ray actor) claims the first free slot with an exclusive `flock` on
`answers-<slot>.lock`, so writers never share a file, slots are reused across runs, and
the number of files stays at the most writers that ever ran at once. Readers look a key
up in every file. Entries are buffered and committed every `FLUSH_EVERY` entries or
`FLUSH_SECONDS` seconds and on `flush()`; the describe stage flushes before it commits a
part, so a crash can lose at most the answers of the parts still in flight (a second
of calls), never a committed part's. The rollback journal (not WAL) keeps the files
usable on shared filesystems, where `--out` lives on a cluster. Caches written by older
curate (`<dir>/<key[:2]>/<key>.json`) are still read.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

LONG = 4096  # strings longer than this (image data URLs) are hashed on their own
FLUSH_EVERY = 256
FLUSH_SECONDS = 1.0
MAX_SLOTS = 4096


def _digest_long(obj: Any) -> Any:
    """The payload with every long string replaced by its sha256: same content, same key.

    Hashing the image data URLs directly and the rest as canonical JSON is a content hash
    of the whole payload, at a sixth of the cost of encoding the base64 images as JSON.
    """
    if isinstance(obj, str):
        if len(obj) > LONG:
            return "sha256:" + hashlib.sha256(obj.encode("utf-8")).hexdigest()
        return obj
    if isinstance(obj, dict):
        return {k: _digest_long(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_digest_long(v) for v in obj]
    return obj


def cache_key(prompt_version: str, model: str, payload: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of (prompt version, model, payload)."""
    blob = json.dumps([prompt_version, model, _digest_long(payload)], sort_keys=True,
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    con.execute("PRAGMA synchronous=NORMAL")
    return con


class AnswerCache:
    """Thread-safe get/put of answer entries (dicts) by key; `None` directory: no caching.

    Files that other writers create after this cache was opened are not read: within a
    run every sample has its own key, so they could only hold another sample's answers.
    """

    def __init__(self, directory: str | os.PathLike[str] | None):
        self.directory = Path(directory) if directory else None
        self._lock = threading.Lock()
        self._pending: dict[str, str] = {}
        self._last_flush = time.monotonic()
        self._writer: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._readers: list[sqlite3.Connection] | None = None
        self._legacy = False
        self.slot: int | None = None

    # -- reading --------------------------------------------------------------------------

    def _open_readers(self) -> list[sqlite3.Connection]:
        if self._readers is None:
            self._readers = []
            if self.directory is not None and self.directory.is_dir():
                for path in sorted(self.directory.glob("answers-*.sqlite")):
                    try:
                        self._readers.append(_connect(path))
                    except sqlite3.Error:
                        continue  # an unreadable file is a miss, never an error
                self._legacy = any(p.is_dir() and len(p.name) == 2
                                   for p in self.directory.iterdir())
        return self._readers

    def get(self, key: str) -> dict[str, Any] | None:
        if self.directory is None:
            return None
        with self._lock:
            blob = self._pending.get(key)
            readers = self._open_readers()
            if blob is None:
                for con in readers:
                    try:
                        row = con.execute("SELECT entry FROM answers WHERE key=?",
                                          (key,)).fetchone()
                    except sqlite3.Error:
                        continue
                    if row is not None:
                        blob = row[0]
                        break
        if blob is None and self._legacy:
            try:
                blob = (self.directory / key[:2] / f"{key}.json").read_text(encoding="utf-8")
            except OSError:
                return None
        if blob is None:
            return None
        try:
            return json.loads(blob)
        except json.JSONDecodeError:
            return None  # a torn entry is a miss; the next success rewrites it

    # -- writing --------------------------------------------------------------------------

    def _claim(self) -> sqlite3.Connection:
        """Open this writer's own file: the first slot whose lock no one holds."""
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        for slot in range(MAX_SLOTS):
            fd = os.open(self.directory / f"answers-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._lock_fd, self.slot = fd, slot
            con = _connect(self.directory / f"answers-{slot}.sqlite")
            con.execute("CREATE TABLE IF NOT EXISTS answers "
                        "(key TEXT PRIMARY KEY, entry TEXT NOT NULL) WITHOUT ROWID")
            if self._readers is not None:  # opened before this file existed: add it
                self._readers.insert(0, _connect(self.directory / f"answers-{slot}.sqlite"))
            return con
        raise OSError(f"no free answer-cache slot in {self.directory}")

    def put(self, key: str, entry: dict[str, Any]) -> None:
        if self.directory is None:
            return
        blob = json.dumps(entry, ensure_ascii=False, sort_keys=True)
        with self._lock:
            self._pending[key] = blob
            due = (len(self._pending) >= FLUSH_EVERY
                   or time.monotonic() - self._last_flush >= FLUSH_SECONDS)
        if due:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered entries to this writer's file."""
        with self._lock:
            self._last_flush = time.monotonic()
            if not self._pending:
                return
            if self._writer is None:
                self._writer = self._claim()
            rows = list(self._pending.items())
            self._writer.execute("BEGIN")
            self._writer.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?)", rows)
            self._writer.execute("COMMIT")
            self._pending.clear()

    def close(self) -> None:
        """Flush, close every file and give the slot back."""
        self.flush()
        with self._lock:
            for con in (self._readers or []) + ([self._writer] if self._writer else []):
                con.close()
            self._readers, self._writer = None, None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd, self.slot = None, None

    def __getstate__(self) -> dict[str, Any]:
        """Only the folder travels (a generator shipped to Ray workers): each copy claims
        its own slot when it first writes."""
        return {"directory": self.directory}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"])

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to report to
            pass


DiskCache = AnswerCache  # the name earlier code and docs use
