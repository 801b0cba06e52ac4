"""WebDataset shards, written once at the end, reproducibly (fixed mtime, sorted keys)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from webdataset import TarWriter

MTIME = 0.0  # fixed so that the same samples give byte-identical shards


def sample_json(row: dict) -> dict:
    """The record as shipped beside the image: every manifest field, masks by member name."""
    out = {k: v for k, v in row.items() if k not in ("image", "roi_masks")}
    out["rois"] = [dict(r, mask=f"roi_{i:03d}.png" if m is not None else None)
                   for i, (r, m) in enumerate(zip(row["rois"], row["roi_masks"], strict=True))]
    return out


class ShardSink:
    """Streams samples into {split}-NNNNNN.tar, one open shard per split.

    Samples of a split go to its current shard until it holds max_samples or max_bytes,
    then the next one opens; members of a sample are written together, so they are
    adjacent in the tar as WebDataset requires.
    """

    def __init__(self, dest: Path, max_samples: int, max_bytes: int):
        self.dest, self.max_samples, self.max_bytes = dest, max_samples, max_bytes
        dest.mkdir(parents=True, exist_ok=True)
        for old in dest.glob("*.tar"):
            old.unlink()
        self.open: dict[str, tuple[TarWriter, str, int, int]] = {}
        self.counters: dict[str, int] = {}

    def add(self, row: dict) -> str:
        """Write one sample (with `split` set); returns the shard name it went into."""
        split = row["split"]
        writer, name, count, size = self.open.get(split, (None, "", 0, 0))
        if writer is None or count >= self.max_samples or size >= self.max_bytes:
            if writer is not None:
                writer.close()
            index = self.counters.get(split, 0)
            self.counters[split] = index + 1
            name = f"{split}-{index:06d}.tar"
            writer, count, size = TarWriter(str(self.dest / name), mtime=MTIME, encoder=False), 0, 0
        row["shard"] = name
        record = {"__key__": row["sample_id"], "png": row["image"],
                  "json": json.dumps(sample_json(row), sort_keys=True).encode()}
        for i, mask in enumerate(row["roi_masks"]):
            if mask is not None:
                record[f"roi_{i:03d}.png"] = mask
        writer.write(record)
        size += sum(len(v) for k, v in record.items() if k != "__key__")
        self.open[split] = (writer, name, count + 1, size)
        return name

    def close(self) -> None:
        for writer, *_ in self.open.values():
            writer.close()
        self.open.clear()


def checksums(dest: Path) -> dict[str, str]:
    out = {}
    for p in sorted(dest.glob("*.tar")):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[p.name] = h.hexdigest()
    return out
