"""Bring the global decisions back to each part's rows, and write one shard (no Ray here).

`attach_decisions` runs once per part: it reads the part's committed rows (with bytes),
sets each sample's keep decision, reasons and split, writes the dropped rows to
filtered.parquet/<part>.parquet and returns the kept rows with their shard name and order.
`write_shard` runs once per shard, on a worker: it writes {split}-{index}.tar (members
in the shard's seeded order, fixed mtime, so bytes repeat), the shard's manifest part
manifest.parquet/{split}-{index}.parquet, the same rows with their image and masks as the
Parquet export data/{split}-{index}.parquet (curate.dataset.hub), and returns its counts
and sha256 (hashed as it is written, never re-read).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from webdataset import TarWriter

from curate.dataset.decide import shard_of, split_of
from curate.dataset.hub import DATA, write_parquet_part
from curate.model.masks import MEMBER as MASKS_MEMBER
from curate.model.masks import masks_array
from curate.model.masks import pack as pack_masks
from curate.model.recipe import Recipe
from curate.model.records import MANIFEST, QUALITY, SAMPLE
from curate.unit.store import UnitStore

MTIME = 0.0  # fixed so that the same samples give byte-identical shards
ORDER = pa.field("_order", pa.string())
KEPT = SAMPLE.append(ORDER)


def atomic_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def merged_reasons(base: list[str], extra: list[str]) -> list[str]:
    """The row's own reasons, then at most one of each global kind (first by name)."""
    out, kinds = list(base), set()
    for r in sorted(extra):
        kind = r.split(":")[0]
        if kind not in kinds:
            kinds.add(kind)
            out.append(r)
    return out


def attach_decisions(events: pa.Table, recipe: Recipe, store_root: str, variant: str | None,
                     groups: dict[str, str], shards: dict[str, int], staging: str) -> pa.Table:
    """attach_part for every part whose events are in `events` (each part's all there)."""
    out = [KEPT.empty_table()]
    for part in sorted(set(events.column("part").to_pylist())):
        out.append(attach_part(events.filter(pc.equal(events.column("part"), part)), recipe,
                               store_root, variant, groups, shards, staging))
    return pa.concat_tables(out)


def attach_part(events: pa.Table, recipe: Recipe, store_root: str, variant: str | None,
                groups: dict[str, str], shards: dict[str, int], staging: str) -> pa.Table:
    """One part's decision rows and extra-reason rows -> its dropped rows written to
    filtered.parquet/, its kept rows (with bytes, split, shard, order) returned.

    Only ids and decisions go through Python; the rows themselves (nested ROIs, VQA,
    image bytes) stay Arrow columns."""
    source = next(s for s in events.column("source").to_pylist() if s)
    part = events.column("part")[0].as_py()
    base, extra = {}, {}
    for r in events.select(["sample_id", "keep", "reasons"]).to_pylist():
        if r["keep"] is None:
            extra.setdefault(r["sample_id"], []).extend(r["reasons"])
        else:
            base[r["sample_id"]] = r
    rows = UnitStore(Path(store_root)).load(key=(source, part), variant=variant)
    rows = rows.sort_by("sample_id")
    keep, reasons, split, shard, order = [], [], [], [], []
    for sid, case in zip(rows.column("sample_id").to_pylist(),
                         rows.column("case_id").to_pylist(), strict=True):
        d, more = base[sid], extra.get(sid, [])
        k = d["keep"] and not more
        keep.append(k)
        reasons.append(merged_reasons(d["reasons"], more))
        sp = split_of(groups.get(case, case), recipe.salt, recipe.split)
        split.append(sp)
        if k:
            index, key = shard_of(sid, recipe.seed, shards[sp])
            shard.append(f"{sp}-{index:06d}.tar")
            order.append(key)
        else:
            shard.append(None)
            order.append(None)
    q = rows.column("quality").combine_chunks()
    quality = pa.StructArray.from_arrays(
        [q.field("std"), q.field("contrast"), q.field("text_flags"), q.field("scores"),
         pa.array(keep, pa.bool_()), pa.array(reasons, pa.list_(pa.string()))],
        fields=list(QUALITY))
    rows = (rows.set_column(rows.schema.get_field_index("quality"), "quality", quality)
            .set_column(rows.schema.get_field_index("split"), "split",
                        pa.array(split, pa.string()))
            .set_column(rows.schema.get_field_index("shard"), "shard",
                        pa.array(shard, pa.string()))
            .append_column(ORDER, pa.array(order, pa.string())))
    mask = pa.array(keep, pa.bool_())
    dropped = rows.filter(pc.invert(mask))
    if dropped.num_rows:
        atomic_parquet(dropped.select(MANIFEST.names).cast(MANIFEST),
                       Path(staging) / "filtered.parquet" / f"{source}-{part}.parquet")
    return rows.filter(mask).cast(KEPT)


def sample_json(row: dict) -> dict:
    """The record as shipped beside the image: every manifest field (the masks are the
    `masks.npz` member, plane i for record["rois"][i])."""
    return {k: v for k, v in row.items() if k not in ("image", "roi_masks", "_order")}


def sample_members(row: dict) -> dict:
    """One sample's tar members; every sample has the same names (png, json, masks.npz),
    so tools that infer one schema per split read the shards as they are."""
    masks = masks_array(row["rois"], row["roi_masks"], row["height"], row["width"])
    return {"__key__": row["sample_id"], "png": row["image"],
            "json": json.dumps(sample_json(row), sort_keys=True).encode(),
            MASKS_MEMBER: pack_masks(masks)}


class _Hashing:
    """A write-only file that hashes what passes through it."""

    def __init__(self, f):
        self.f, self.h, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        pass  # the caller closes the real file


SHARD_RESULT = pa.schema([("shard", pa.string()), ("split", pa.string()),
                          ("samples", pa.int64()), ("bytes", pa.int64()),
                          ("sha256", pa.string()), ("reports", pa.string())])


def write_shard(rows: pa.Table, staging: Path, reports=None,
                parquet_images: bool = True) -> pa.Table:
    """Write one shard's tar, manifest part and (unless `parquet_images` is off) Parquet
    export part; `reports(manifest_part) -> dict` adds the per-part aggregates
    (validation, card statistics) computed here, on the worker."""
    rows = rows.sort_by("_order")
    name = rows.column("shard")[0].as_py()
    split = rows.column("split")[0].as_py()
    dest = staging / "shards" / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{name}.tmp{os.getpid()}")
    masks = []
    with open(tmp, "wb") as raw:
        stream = _Hashing(raw)
        writer = TarWriter(stream, mtime=MTIME, encoder=False)
        for row in rows.to_pylist():
            members = sample_members(row)
            masks.append(members[MASKS_MEMBER])
            writer.write(members)
        writer.close()
    os.replace(tmp, dest)
    manifest = rows.select(MANIFEST.names).cast(MANIFEST)
    part = name.replace(".tar", ".parquet")
    atomic_parquet(manifest, staging / "manifest.parquet" / part)
    if parquet_images:
        write_parquet_part(rows, masks, staging / DATA / part)
    extra = reports(manifest) if reports else {}
    return pa.Table.from_pylist([{"shard": name, "split": split, "samples": rows.num_rows,
                                  "bytes": stream.size, "sha256": stream.h.hexdigest(),
                                  "reports": json.dumps(extra, sort_keys=True)}],
                                schema=SHARD_RESULT)


def checksums(dest: Path) -> dict[str, str]:
    """sha256 of every shard under dest, read back (for `curate verify`)."""
    out = {}
    for p in sorted(dest.glob("*.tar")):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[p.name] = h.hexdigest()
    return out
