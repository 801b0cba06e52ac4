"""Whole-dataset decisions as plain functions over small Arrow tables (no Ray here).

Each function takes one part's rows, or one group's rows (all samples sharing an image
hash, or a pHash band), and returns rows; curate.dataset.finalize wires them into distributed
map and group-by steps, and the driver only ever sees per-split counts and the pairs of
cases that share a scan.

- filters: blank, low contrast, text-fact mismatch, benchmark copies (per row)
- exact duplicates: per image_sha256 group, the smallest sample_id is kept
- near duplicates across cases: pHash bands (pigeonhole: two hashes within k bits agree
  exactly on one of k+1 bands), compared only inside a band's group
- patient linking: cases joined by such pairs are one group (union-find over case pairs),
  and the split is a salted hash of the group, so a scan republished by two sources
  lands in one split
- shard assignment: a salted hash of the sample id picks the shard of its split and the
  order inside it, so shards mix sources and do not depend on worker count
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.model.recipe import FilterConfig, SplitConfig
from curate.unit.quality import decide

# one row per sample: what the global steps need, never the image bytes
DECISION = pa.schema([
    ("source", pa.string()), ("part", pa.string()), ("sample_id", pa.string()),
    ("case_id", pa.string()), ("image_sha256", pa.string()), ("image_phash", pa.string()),
    ("usable", pa.bool_()),  # passed the image filters: may take part in near-dup steps
    ("keep", pa.bool_()), ("reasons", pa.list_(pa.string())), ("bytes", pa.int64()),
])
# an extra drop reason for one sample, found by a global step
REASON = pa.schema([("part", pa.string()), ("sample_id", pa.string()), ("reason", pa.string())])
BAND = pa.schema([("band", pa.string()), ("sample_id", pa.string()), ("case_id", pa.string()),
                  ("part", pa.string()), ("phash", pa.uint64()), ("keep", pa.bool_())])
PAIR = pa.schema([("a", pa.string()), ("a_case", pa.string()), ("a_part", pa.string()),
                  ("a_keep", pa.bool_()),
                  ("b", pa.string()), ("b_case", pa.string()), ("b_part", pa.string()),
                  ("b_keep", pa.bool_()), ("dist", pa.int32())])
MAX_BAND_GROUP = 2000  # a larger band group is compared against its first FIRST_OF_BIG only
FIRST_OF_BIG = 200


def row_decisions(samples: pa.Table, source: str, part: str, filters: FilterConfig,
                  benchmarks=None, bytes_per_row: int = 0) -> pa.Table:
    """DECISION rows of one committed part (its samples' small columns)."""
    rows = []
    for r in samples.select(["sample_id", "case_id", "image_sha256", "image_phash",
                             "quality"]).to_pylist():
        q = r["quality"]
        d = decide({"std": q["std"], "contrast": q["contrast"],
                    "text_flags": q["text_flags"] or [], "scores": q.get("scores") or []},
                   filters)
        usable = not any(x.startswith(("blank", "low_contrast")) for x in d["reasons"])
        hit = benchmarks.match(r["image_phash"]) if benchmarks else None
        if hit:
            d["keep"] = False
            d["reasons"].append(f"benchmark: matches an image listed in {hit}")
        rows.append({"source": source, "part": part, "sample_id": r["sample_id"],
                     "case_id": r["case_id"], "image_sha256": r["image_sha256"],
                     "image_phash": r["image_phash"], "usable": usable, "keep": d["keep"],
                     "reasons": d["reasons"], "bytes": bytes_per_row})
    return pa.Table.from_pylist(rows, schema=DECISION)


def exact_duplicates(t: pa.Table) -> pa.Table:
    """REASON rows for every sample whose image hash a smaller sample id also has (rows
    of any number of image hashes; each hash's rows all present)."""
    if t.num_rows < 2:
        return REASON.empty_table()
    first = t.group_by("image_sha256").aggregate([("sample_id", "min")])
    joined = t.select(["part", "sample_id", "image_sha256"]).join(first, "image_sha256")
    dup = joined.filter(pc.not_equal(joined.column("sample_id"),
                                     joined.column("sample_id_min")))
    return pa.table({"part": dup.column("part"), "sample_id": dup.column("sample_id"),
                     "reason": pc.binary_join_element_wise(
                         "duplicate: same image as ", dup.column("sample_id_min"), "")},
                    schema=REASON).sort_by("sample_id")


def band_bounds(bits: int) -> np.ndarray:
    return np.linspace(0, 64, bits + 2).round().astype(int)


def bands(t: pa.Table, bits: int) -> pa.Table:
    """BAND rows: each usable sample once per band of its pHash."""
    bounds = band_bounds(bits)
    rows = []
    for r in t.filter(t.column("usable")).select(
            ["sample_id", "case_id", "part", "image_phash", "keep"]).to_pylist():
        h = int(r["image_phash"], 16)
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            chunk = (h >> int(lo)) & ((1 << int(hi - lo)) - 1)
            rows.append({"band": f"{i}:{chunk:x}", "sample_id": r["sample_id"],
                         "case_id": r["case_id"], "part": r["part"], "phash": h,
                         "keep": r["keep"]})
    return pa.Table.from_pylist(rows, schema=BAND)


def band_pairs(t: pa.Table, bits: int) -> pa.Table:
    """PAIR rows: samples of different cases in one band group within `bits` bits (a < b),
    for rows of any number of bands (each band's rows all present).

    A group larger than MAX_BAND_GROUP (thousands of near-identical images, which the
    image filters usually remove first) is compared against its first FIRST_OF_BIG
    samples only, so the cost stays bounded; this can miss links, never invent one.
    """
    by_band: dict[str, list[dict]] = defaultdict(list)
    for r in t.to_pylist():
        by_band[r["band"]].append(r)
    out = []
    for rows in by_band.values():
        if len(rows) < 2:
            continue
        rows.sort(key=lambda r: r["sample_id"])
        anchors = rows if len(rows) <= MAX_BAND_GROUP else rows[:FIRST_OF_BIG]
        for i, a in enumerate(anchors):
            for b in rows[i + 1:]:
                dist = (a["phash"] ^ b["phash"]).bit_count()
                if a["case_id"] != b["case_id"] and dist <= bits:
                    out.append({"a": a["sample_id"], "a_case": a["case_id"],
                                "a_part": a["part"], "a_keep": a["keep"],
                                "b": b["sample_id"], "b_case": b["case_id"],
                                "b_part": b["part"], "b_keep": b["keep"], "dist": dist})
    return pa.Table.from_pylist(out, schema=PAIR)


def case_pairs(pairs: pa.Table) -> pa.Table:
    """Distinct (case, case) pairs (smaller first), each with the smallest sample id seen
    in its pairs and that sample's case: what links patients across sources."""
    best: dict[tuple[str, str], tuple[str, str]] = {}
    for p in pairs.select(["a", "a_case", "b", "b_case"]).to_pylist():
        key = tuple(sorted((p["a_case"], p["b_case"])))
        first = min((p["a"], p["a_case"]), (p["b"], p["b_case"]))
        if key not in best or first < best[key]:
            best[key] = first
    rows = [{"a_case": a, "b_case": b, "first": f, "first_case": fc}
            for (a, b), (f, fc) in sorted(best.items())]
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("a_case", pa.string()), ("b_case", pa.string()), ("first", pa.string()),
        ("first_case", pa.string())]))


def owners(rows: list[dict], groups: dict[str, str]) -> dict[str, str]:
    """Linked group -> the case that holds the group's smallest linked sample id."""
    best: dict[str, tuple[str, str]] = {}
    for r in rows:
        g = groups[r["a_case"]]
        if g not in best or (r["first"], r["first_case"]) < best[g]:
            best[g] = (r["first"], r["first_case"])
    return {g: case for g, (_, case) in best.items()}


def near_duplicate_reasons(pairs: pa.Table, groups: dict[str, str],
                           owner: dict[str, str]) -> pa.Table:
    """REASON rows: in each group of cases linked by near-identical images, the case that
    holds the smallest sample id keeps its images; a linked image of any other case is
    dropped, naming its twin. Independent of order and of how work was split."""
    out = []
    for p in pairs.to_pylist():
        if not (p["a_keep"] and p["b_keep"]):
            continue
        for x, case, part, twin in ((p["a"], p["a_case"], p["a_part"], p["b"]),
                                    (p["b"], p["b_case"], p["b_part"], p["a"])):
            if owner.get(groups.get(case, case), case) != case:
                out.append({"part": part, "sample_id": x,
                            "reason": f"near_duplicate: like {twin} of another case"})
    return pa.Table.from_pylist(out, schema=REASON)


def link_groups(pairs) -> dict[str, str]:
    """Union-find over case pairs: case -> the smallest case id of its linked group.
    Holds only the linked cases (a few thousand republished patients), never all."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    for a, b in pairs:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def split_of(key: str, salt: str, cfg: SplitConfig) -> str:
    """Patient-level split: every sample of a case (or linked group) lands in one split."""
    u = int(hashlib.sha256(f"{salt}\0split\0{key}".encode()).hexdigest()[:12], 16) / 16**12
    if u < cfg.train:
        return "train"
    return "val" if u < cfg.train + cfg.val else "test"


def split_counts(t: pa.Table, groups: dict[str, str], salt: str, cfg: SplitConfig) -> pa.Table:
    """Samples and bytes per split among rows kept by the per-row filters (an upper bound
    of what ships: global drops come later), to size the shards."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for case, keep, size in zip(t.column("case_id").to_pylist(), t.column("keep").to_pylist(),
                                t.column("bytes").to_pylist(), strict=True):
        if keep:
            c = counts[split_of(groups.get(case, case), salt, cfg)]
            c[0] += 1
            c[1] += size
    names = sorted(counts)
    return pa.table({"split": pa.array(names, pa.string()),
                     "samples": pa.array([counts[n][0] for n in names], pa.int64()),
                     "bytes": pa.array([counts[n][1] for n in names], pa.int64())})


def shard_counts(totals: dict[str, tuple[int, int]], max_samples: int,
                 max_bytes: int) -> dict[str, int]:
    """Shards per split so that each holds about max_bytes and at most ~max_samples."""
    return {split: max(1, -(-n // max_samples), -(-size // max_bytes))
            for split, (n, size) in totals.items()}


def shard_of(sample_id: str, seed: int, n: int) -> tuple[int, str]:
    """(shard index, order key inside the shard): a seeded hash, so sources mix."""
    key = hashlib.sha256(f"{seed}\0shard\0{sample_id}".encode()).hexdigest()
    return int(key[:12], 16) % n, key[:32]
