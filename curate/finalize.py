"""Whole-dataset steps over committed units, streaming: decide, dedup, split, ship.

Pass 1 reads only small columns of every unit (ids, image hashes, case ids, scores) to
take the global decisions: filter thresholds, exact-duplicate images (the smallest
sample_id of each image hash is kept), patient-level splits. Pass 2 streams units one by
one into the WebDataset shards, the manifest and the filtered table, so memory holds one
unit's bytes at a time, whatever the dataset's size.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

from curate.config import FilterConfig, Recipe, SplitConfig
from curate.decontam import HashIndex, load_index
from curate.quality import decide
from curate.records import MANIFEST, to_table
from curate.shard import ShardSink
from curate.store import UnitStore

Key = tuple[str, str]


def split_of(case_id: str, salt: str, cfg: SplitConfig) -> str:
    """Patient-level split: every sample of a case_id lands in the same split."""
    u = int(hashlib.sha256(f"{salt}\0split\0{case_id}".encode()).hexdigest()[:12], 16) / 16**12
    if u < cfg.train:
        return "train"
    return "val" if u < cfg.train + cfg.val else "test"


def decide_all(store: UnitStore, keys: list[Key], variant: str | None, filters: FilterConfig,
               salt: str, splits: SplitConfig,
               benchmarks: HashIndex | None = None) -> dict[str, tuple[dict, str]]:
    """sample_id -> (quality with keep/reasons, split), from small columns only."""
    cols = ["sample_id", "image_sha256", "image_phash", "case_id", "quality"]
    rows = []
    for key in keys:
        rows += store.load(key=key, variant=variant, columns=cols).to_pylist()
    first_of: dict[str, str] = {}
    for r in rows:
        h = r["image_sha256"]
        first_of[h] = min(first_of.get(h, r["sample_id"]), r["sample_id"])
    seen = HashIndex(filters.cross_case_duplicate_bits) \
        if filters.cross_case_duplicate_bits is not None else None
    out = {}
    for r in sorted(rows, key=lambda r: r["sample_id"]):  # the first of a pair is kept
        q = r["quality"]
        d = decide({"std": q["std"], "contrast": q["contrast"],
                    "text_flags": q["text_flags"] or []}, filters)
        first = first_of[r["image_sha256"]]
        if first != r["sample_id"]:
            d["keep"] = False
            d["reasons"] = d["reasons"] + [f"duplicate: same image as {first}"]
        hit = benchmarks.match(r["image_phash"]) if benchmarks else None
        if hit:
            d["keep"] = False
            d["reasons"] = d["reasons"] + [f"benchmark: matches an image listed in {hit}"]
        if seen is not None and d["keep"]:
            twin = seen.match(r["image_phash"], ignore=r["case_id"] + "|")
            if twin:
                d["keep"] = False
                d["reasons"] = d["reasons"] + [
                    f"near_duplicate: like {twin.split('|')[1]} of another case"]
            else:
                seen.add(r["image_phash"], f"{r['case_id']}|{r['sample_id']}")
        out[r["sample_id"]] = (d, split_of(r["case_id"], salt, splits))
    return out


@dataclass
class Shipped:
    kept: int = 0
    dropped: int = 0
    reasons: Counter = field(default_factory=Counter)
    splits: Counter = field(default_factory=Counter)


def ship(store: UnitStore, keys: list[Key], variant: str | None, recipe: Recipe,
         out: Path, recipe_dir: Path = Path(".")) -> Shipped:
    """Stream every unit into shards/, manifest.parquet and filtered.parquet."""
    benchmarks = load_index(recipe.decontaminate.lists, recipe.decontaminate.max_distance,
                            recipe_dir)
    decisions = decide_all(store, keys, variant, recipe.filters, recipe.salt, recipe.split,
                           benchmarks)
    sink = ShardSink(out / "shards", recipe.shard.max_samples, recipe.shard.max_bytes)
    result = Shipped()
    with pq.ParquetWriter(out / "manifest.parquet", MANIFEST) as manifest, \
            pq.ParquetWriter(out / "filtered.parquet", MANIFEST) as filtered:
        for key in tqdm(keys, desc="ship", unit="unit", dynamic_ncols=True, mininterval=0.5):
            rows = sorted(store.load(key=key, variant=variant).to_pylist(),
                          key=lambda r: r["sample_id"])
            kept, dropped = [], []
            for row in rows:
                row["quality"], row["split"] = decisions[row["sample_id"]]
                if row["quality"]["keep"]:
                    sink.add(row)
                    kept.append(row)
                    result.splits[row["split"]] += 1
                else:
                    dropped.append(row)
                    result.reasons.update(r.split(":")[0] for r in row["quality"]["reasons"])
            for writer, part in ((manifest, kept), (filtered, dropped)):
                if part:
                    writer.write_table(to_table([{k: r[k] for k in MANIFEST.names} for r in part],
                                                MANIFEST))
            result.kept += len(kept)
            result.dropped += len(dropped)
    sink.close()
    return result
