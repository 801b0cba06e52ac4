"""Whole-dataset steps over committed units: decide, dedup, split by patient, order."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.compute as pc

from curate.config import FilterConfig, SplitConfig
from curate.quality import decide


def apply_filters(table: pa.Table, cfg: FilterConfig) -> pa.Table:
    """Fill quality.keep/reasons from the stored scores, and drop exact duplicate images."""
    quality = table.column("quality").to_pylist()
    decided = [decide({"std": q["std"], "contrast": q["contrast"],
                       "text_flags": q["text_flags"] or []}, cfg) for q in quality]
    first_of: dict[bytes, str] = {}
    ids = table.column("sample_id").to_pylist()
    order = sorted(range(len(ids)), key=ids.__getitem__)
    images = table.column("image")
    for i in order:
        digest = hashlib.sha256(images[i].as_py()).digest()
        if digest in first_of:
            decided[i]["keep"] = False
            decided[i]["reasons"] = decided[i]["reasons"] + [f"duplicate: same image as {first_of[digest]}"]
        else:
            first_of[digest] = ids[i]
    col = pa.array(decided, type=table.schema.field("quality").type)
    return table.set_column(table.schema.get_field_index("quality"), "quality", col)


def split_of(case_id: str, salt: str, cfg: SplitConfig) -> str:
    """Patient-level split: every sample of a case_id lands in the same split."""
    u = int(hashlib.sha256(f"{salt}\0split\0{case_id}".encode()).hexdigest()[:12], 16) / 16**12
    if u < cfg.train:
        return "train"
    return "val" if u < cfg.train + cfg.val else "test"


def assign_splits(table: pa.Table, salt: str, cfg: SplitConfig) -> pa.Table:
    splits = [split_of(c, salt, cfg) for c in table.column("case_id").to_pylist()]
    return table.set_column(table.schema.get_field_index("split"), "split",
                            pa.array(splits, pa.string()))


def partition(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(kept rows in shard order: split then sample_id, dropped rows by sample_id)."""
    keep = pc.struct_field(table.column("quality"), "keep")
    kept = table.filter(keep).sort_by([("split", "ascending"), ("sample_id", "ascending")])
    dropped = table.filter(pc.invert(keep)).sort_by("sample_id")
    return kept, dropped
