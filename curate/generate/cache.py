"""On-disk answer cache keyed by the content hash of what was asked.

The key covers the prompt version, the model and the full request payload (rendered
prompt, images, response format, sampling settings), so any change that could change an
answer is a different key, and a re-run or a resumed crash repeats no call that already
succeeded. Each entry is written once, atomically, as its request succeeds; failures are
never cached, so a re-run retries exactly those.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

LONG = 4096  # strings longer than this (image data URLs) are hashed on their own


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


class DiskCache:
    """`<dir>/<key[:2]>/<key>.json` entries; `None` directory means no caching."""

    def __init__(self, directory: str | os.PathLike[str] | None):
        self.directory = Path(directory) if directory else None
        self._made: set[Path] = set()  # shard folders known to exist

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if self.directory is None:
            return None
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return None  # a torn or unreadable entry is a miss; the next success rewrites it

    def put(self, key: str, entry: dict[str, Any]) -> None:
        if self.directory is None:
            return
        path = self._path(key)
        if path.parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
        # unique per process and thread, so concurrent writers (Ray workers) never collide;
        # os.replace makes the entry appear whole or not at all
        tmp = path.with_name(f".{key}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps(entry, ensure_ascii=False, sort_keys=True),
                           encoding="utf-8")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
