"""Benchmark decontamination: drop samples whose image is (nearly) a benchmark image.

Benchmarks' test images are hashed once (`curate hashes DIR --out LIST.jsonl`); a recipe
names those lists. Each sample stores the perceptual hash (pHash, 64 bits) of its shipped
image; a sample within `max_distance` bits of a listed hash is dropped with the list's
name as the reason. pHash survives resizing, re-encoding and mild intensity changes, not
crops or different windowing, so this catches copies, not every derived image.

Lookup is multi-index hashing: the 64 bits are cut into max_distance + 1 chunks, and two
hashes within max_distance bits must agree exactly on at least one chunk (pigeonhole), so
each sample is compared only with the few listed hashes that share a chunk.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from curate.model.errors import ConfigError, MissingDependency

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".dcm"}


def phash_hex(image: np.ndarray | bytes) -> str:
    """pHash of a grey version of the image, as 16 hex digits."""
    try:
        import imagehash
    except ImportError as exc:
        raise MissingDependency("imagehash") from exc
    im = Image.open(io.BytesIO(image)) if isinstance(image, bytes) else Image.fromarray(image)
    return str(imagehash.phash(im.convert("L")))


def _file_image(path: Path) -> np.ndarray:
    """A benchmark file as 8-bit pixels; wider data is clipped at its 0.5/99.5 percentiles."""
    from curate.unit.normalize import scale_to_uint8

    if path.suffix.lower() == ".dcm":
        import pydicom

        arr = pydicom.dcmread(path).pixel_array.astype(np.float32)
        arr = arr if arr.ndim == 2 else arr.reshape(-1, *arr.shape[-2:])[0]
    else:
        from curate.ingest.image2d import load_image

        arr = load_image(path)
        if arr.dtype == np.uint8:
            return arr
    low, high = np.percentile(arr, [0.5, 99.5])
    return scale_to_uint8(arr, float(low), float(high))


def hash_folder(folder: Path, out: Path) -> tuple[int, list[str]]:
    """Write one JSON line {path, sha256, phash} per image under folder; returns the count
    and the files that could not be read (with the reason)."""
    n, skipped = 0, []
    with open(out, "w") as f:
        for path in sorted(p for p in Path(folder).rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                ph = phash_hex(_file_image(path))
            except Exception as exc:  # noqa: BLE001 - report and go on
                skipped.append(f"{path.relative_to(folder)}: {exc}")
                continue
            f.write(json.dumps({"path": str(path.relative_to(folder)), "phash": ph,
                                "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}) + "\n")
            n += 1
    return n, skipped


class HashIndex:
    """Listed pHashes, searchable within max_distance bits."""

    def __init__(self, max_distance: int):
        self.k = max_distance
        self.bounds = np.linspace(0, 64, max_distance + 2).round().astype(int)
        self.tables: list[dict[int, list[tuple[int, str]]]] = [defaultdict(list)
                                                                for _ in range(max_distance + 1)]

    def _chunks(self, h: int) -> list[int]:
        return [(h >> int(lo)) & ((1 << int(hi - lo)) - 1)
                for lo, hi in zip(self.bounds[:-1], self.bounds[1:], strict=True)]

    def add(self, phash: str, label: str) -> None:
        h = int(phash, 16)
        for table, chunk in zip(self.tables, self._chunks(h), strict=True):
            table[chunk].append((h, label))

    def match(self, phash: str, ignore: str | None = None) -> str | None:
        """The label of a listed hash within the distance (labels starting with `ignore`
        do not count), or None."""
        h = int(phash, 16)
        for table, chunk in zip(self.tables, self._chunks(h), strict=True):
            for other, label in table.get(chunk, ()):
                if (h ^ other).bit_count() <= self.k and not (ignore and label.startswith(ignore)):
                    return label
        return None


def load_index(lists: list[str], max_distance: int, base: Path) -> HashIndex | None:
    if not lists:
        return None
    index = HashIndex(max_distance)
    for raw in lists:
        path = (base / raw) if not Path(raw).is_absolute() else Path(raw)
        if not path.is_file():
            raise ConfigError(f"decontamination list {raw} not found (make one with "
                              "`curate hashes BENCHMARK_DIR --out LIST.jsonl`)")
        for line in path.read_text().splitlines():
            if line.strip():
                index.add(json.loads(line)["phash"], path.stem)
    return index
