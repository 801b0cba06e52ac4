"""WebDataset shards, written once at the end, reproducibly (fixed mtime, sorted keys)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm
from webdataset import TarWriter

MTIME = 0.0  # fixed so that the same samples give byte-identical shards


def sample_json(row: dict) -> dict:
    """The record as shipped beside the image: every manifest field, masks by member name."""
    out = {k: v for k, v in row.items() if k not in ("image", "roi_masks")}
    out["rois"] = [dict(r, mask=f"roi_{i:03d}.png" if m is not None else None)
                   for i, (r, m) in enumerate(zip(row["rois"], row["roi_masks"], strict=True))]
    return out


def write_shards(table: pa.Table, dest: Path, max_samples: int, max_bytes: int) -> list[str]:
    """Write rows (already in shard order, with `split` set) into {split}-NNNNNN.tar.

    Fills nothing in place; returns the shard name of every row, in row order.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.tar"):
        old.unlink()
    names: list[str] = []
    writer, current, count, size = None, None, 0, 0
    counters: dict[str, int] = {}
    rows = table.to_pylist()
    for row in tqdm(rows, desc="shards", unit="sample", dynamic_ncols=True, mininterval=0.5):
        split = row["split"]
        if writer is None or split != current or count >= max_samples or size >= max_bytes:
            if writer is not None:
                writer.close()
            index = counters.get(split, 0)
            counters[split] = index + 1
            current, count, size = split, 0, 0
            name = f"{split}-{index:06d}.tar"
            writer = TarWriter(str(dest / name), mtime=MTIME, encoder=False)
        row["shard"] = name
        record = {"__key__": row["sample_id"], "png": row["image"],
                  "json": json.dumps(sample_json(row), sort_keys=True).encode()}
        for i, mask in enumerate(row["roi_masks"]):
            if mask is not None:
                record[f"roi_{i:03d}.png"] = mask
        writer.write(record)
        names.append(name)
        count += 1
        size += sum(len(v) for k, v in record.items() if k != "__key__")
    if writer is not None:
        writer.close()
    return names


def checksums(dest: Path) -> dict[str, str]:
    out = {}
    for p in sorted(dest.glob("*.tar")):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[p.name] = h.hexdigest()
    return out
