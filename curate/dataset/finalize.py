"""Whole-dataset steps as distributed operations: decide, dedup, link, split, shard.

Every step is a map over parts or a group-by on the executor (curate.runner); the driver
only gathers per-split counts, the pairs of cases that share a scan, and one small row per
shard. Outputs are written into a staging folder and switched into place together at the
end (curate.workdir.switch), so a build killed here leaves the previous outputs intact.

  parts ──map──► decisions (small columns: ids, hashes, filter verdicts)   [materialized]
  decisions ──group by image_sha256──► duplicate reasons
  decisions ──bands──group by band──► near-duplicate pairs ─► reasons; case links (driver:
                                                               union-find over linked cases)
  decisions + reasons ──group by part──► kept rows (dropped rows → filtered.parquet/)
  kept rows ──group by shard──► shards/*.tar + manifest.parquet/*.parquet + per-shard stats
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.dataset import decide as D
from curate.dataset.decontam import load_index
from curate.dataset.ship import atomic_parquet, attach_decisions, write_shard
from curate.model.recipe import Recipe
from curate.unit.store import UnitStore
from curate.workdir import STAGING, fault_point, switch

SMALL = ["sample_id", "case_id", "image_sha256", "image_phash", "quality"]
EVENT = pa.schema([("source", pa.string()), ("part", pa.string()), ("sample_id", pa.string()),
                   ("case_id", pa.string()), ("keep", pa.bool_()),
                   ("reasons", pa.list_(pa.string()))])
OUTPUTS = ["shards", "manifest.parquet", "filtered.parquet", "quarantine.parquet", "data"]


@dataclass
class Shipped:
    kept: int = 0
    dropped: int = 0
    reasons: Counter = field(default_factory=Counter)
    splits: Counter = field(default_factory=Counter)
    shards: list[dict] = field(default_factory=list)  # one small row per shard
    quarantined: int = 0
    linked_cases: int = 0
    seconds: dict = field(default_factory=dict)  # wall time per step

    @contextmanager
    def step(self, name: str, log=None):
        t = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t, 3)
        if log:
            log(f"finalize: {name} {self.seconds[name]:.1f} s")


def decide_parts(batch: pa.Table, recipe: Recipe, store_root: str, variant: str | None,
                 recipe_dir: str) -> pa.Table:
    """Plan rows (source, part) -> DECISION rows from each part's small columns."""
    store = UnitStore(Path(store_root))
    d = recipe.decontaminate
    benchmarks = load_index(d.lists, d.max_distance, Path(recipe_dir))
    out = [D.DECISION.empty_table()]
    for source, part in zip(batch.column("source").to_pylist(),
                            batch.column("part").to_pylist(), strict=True):
        summary = store.summary(source, part)
        samples = store.load(key=(source, part), variant=variant, columns=SMALL)
        per_row = summary.get("bytes", 0) // max(1, summary["counts"].get("views", 1))
        out.append(D.row_decisions(samples, source, part, recipe.filters, benchmarks, per_row))
    return pa.concat_tables(out)


def to_events(t: pa.Table) -> pa.Table:
    return t.select(EVENT.names).cast(EVENT)


def reasons_to_events(t: pa.Table) -> pa.Table:
    n = t.num_rows
    return pa.table({"source": pa.nulls(n, pa.string()), "part": t.column("part"),
                     "sample_id": t.column("sample_id"), "case_id": pa.nulls(n, pa.string()),
                     "keep": pa.nulls(n, pa.bool_()),
                     "reasons": pa.array([[r] for r in t.column("reason").to_pylist()],
                                         pa.list_(pa.string()))}, schema=EVENT)


def close_pairs(pairs: pa.Table, bits: int, kept_only: bool) -> pa.Table:
    mask = pc.less_equal(pairs.column("dist"), bits)
    if kept_only:
        mask = pc.and_(mask, pc.and_(pairs.column("a_keep"), pairs.column("b_keep")))
    return pairs.filter(mask)


def linked_cases(pairs, bits: int, kept_only: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(case -> group, group -> owner case) from the pairs within `bits`; the driver holds
    only the linked cases."""
    rows = []
    for t in pairs.map_batches(lambda p: D.case_pairs(close_pairs(p, bits, kept_only))).tables_iter():
        rows += t.to_pylist()
    groups = D.link_groups((r["a_case"], r["b_case"]) for r in rows)
    return groups, D.owners(rows, groups)


def copy_quarantine(batch: pa.Table, store_root: str, variant: str | None,
                    staging: str) -> pa.Table:
    """Each part's quarantine rows (and its describe variant's) into quarantine.parquet/."""
    store, rows = UnitStore(Path(store_root)), 0
    for source, part in zip(batch.column("source").to_pylist(),
                            batch.column("part").to_pylist(), strict=True):
        for v in (None, variant) if variant else (None,):
            path = store.path(source, part, v, quarantine=True)
            if path.exists():
                t = pq.read_table(path)
                rows += t.num_rows
                name = f"{source}-{part}" + (f".{v}" if v else "") + ".parquet"
                atomic_parquet(t, Path(staging) / "quarantine.parquet" / name)
    return pa.table({"rows": pa.array([rows], pa.int64())})


def ship(ex, parts, recipe: Recipe, out: Path, variant: str | None, recipe_dir: Path,
         reports=None, log=print) -> Shipped:
    """Decide, dedup, link, split and shard every committed part of `parts` (a frame of
    plan rows) into out/; returns counts and one row per shard. The dropped rows are in
    .staging/filtered.parquet/; their counts come from the report statistics."""
    store_root = str(out / "units")
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    result = Shipped()
    keys = parts.map_batches(lambda t: t.select(["source", "part"]))

    with result.step("decisions", log):
        decisions = keys.map_batches(decide_parts, args=(recipe, store_root, variant,
                                                         str(recipe_dir))).materialize()
    fault_point("finalize")
    rows = decisions.count()
    partitions = max(1, min(4 * ex.cpus + rows // 50_000, 2_000))  # ~50k rows per call
    extra = [decisions.partition_map("image_sha256", D.exact_duplicates,
                                     partitions=partitions)]
    removal, linking = recipe.filters.cross_case_duplicate_bits, recipe.split.link_near_duplicates_bits
    groups: dict[str, str] = {}
    if removal is not None or linking is not None:
        bits = max(b for b in (removal, linking) if b is not None)
        with result.step("near-duplicate pairs", log):
            pairs = decisions.map_batches(D.bands, args=(bits,)).partition_map(
                "band", D.band_pairs, args=(bits,), partitions=partitions).materialize()
        if removal is not None:
            near, owner = linked_cases(pairs, removal, kept_only=True)
            extra.append(pairs.map_batches(
                lambda p: D.near_duplicate_reasons(close_pairs(p, removal, True), near, owner)))
        if linking is not None:
            with result.step("patient links", log):
                groups, _ = linked_cases(pairs, linking, kept_only=False)
            result.linked_cases = len(groups)
            log(f"linked {len(groups)} cases that share near-identical images into "
                f"{len(set(groups.values()))} groups before the split")

    totals: dict[str, list[int]] = {}
    t0 = time.perf_counter()
    for t in decisions.map_batches(D.split_counts, args=(groups, recipe.salt,
                                                         recipe.split)).tables_iter():
        for split, n, size in zip(*(t.column(c).to_pylist() for c in ("split", "samples",
                                                                       "bytes")), strict=True):
            totals.setdefault(split, [0, 0])
            totals[split][0] += n
            totals[split][1] += size
    shards = D.shard_counts({k: tuple(v) for k, v in totals.items()},
                            recipe.shard.max_samples, recipe.shard.max_bytes)
    result.seconds["split counts"] = round(time.perf_counter() - t0, 3)

    events = decisions.map_batches(to_events).union(
        *[e.map_batches(reasons_to_events) for e in extra])
    kept = events.partition_map("part", attach_decisions, partitions=partitions,
                                args=(recipe, store_root, variant, groups, shards, str(staging)))
    written = kept.groupby_map("shard", write_shard,
                               args=(staging, reports, recipe.shard.parquet_images))
    with result.step("dedup, attach and write shards", log):
        for t in written.tables_iter():
            result.shards += t.to_pylist()
    fault_point("finalize")
    result.shards.sort(key=lambda r: r["shard"])
    for s in result.shards:
        result.kept += s["samples"]
        result.splits[s["split"]] += s["samples"]

    with result.step("quarantine"):
        for t in keys.map_batches(copy_quarantine, args=(store_root, variant,
                                                         str(staging))).tables_iter():
            result.quarantined += sum(t.column("rows").to_pylist())
    for p in sorted((out / "plan").glob("*.q.parquet")):  # one file per source
        t = pq.read_table(p)
        result.quarantined += t.num_rows
        atomic_parquet(t, staging / "quarantine.parquet" / f"plan-{p.name}")
    write_indexes(staging / "shards", result.shards)
    return result


def write_indexes(dest: Path, shards: list[dict]) -> None:
    """SHA256SUMS, and a `wids` shard index per split ({split}.wids.json)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "SHA256SUMS").write_text("".join(f"{s['sha256']}  {s['shard']}\n" for s in shards))
    for split in sorted({s["split"] for s in shards}):
        index = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": split,
                 "shardlist": [{"url": s["shard"], "nsamples": s["samples"]}
                               for s in shards if s["split"] == split]}
        (dest / f"{split}.wids.json").write_text(json.dumps(index, indent=1))


def publish(out: Path) -> list[str]:
    """Switch everything staged in out/.staging (run.json written last) into place as one
    step (curate.workdir.switch); the folders every build has exist even when empty.
    Returns the names of the outputs."""
    for name in OUTPUTS:
        (out / STAGING / name).mkdir(parents=True, exist_ok=True)
    return switch(out)


def _manifest_checks(t: pa.Table) -> pa.Table:
    """Rows sharing a sample_id, and cases in more than one split, among rows that hold
    every row of their cases (a sample id names its case, so duplicates meet too)."""
    ids = pc.value_counts(t.column("sample_id"))
    counts = ids.field("counts")
    dup = int(pc.sum(pc.filter(counts, pc.greater(counts, 1))).as_py() or 0)
    per_case = t.group_by("case_id").aggregate([("split", "count_distinct")])
    several = int(pc.sum(pc.greater(per_case.column("split_count_distinct"), 1)).as_py() or 0)
    return pa.table({"dup": [dup], "several": [several], "rows": [t.num_rows]})


def global_counts(ex, manifest: Path) -> dict:
    """The checks no single part can make, as one distributed pass over the manifest
    partitioned by case: rows sharing a sample_id, and cases found in more than one split."""
    frame = ex.read_parquet(manifest, columns=["sample_id", "case_id", "split"])
    out = {"duplicate_sample_ids": 0, "cases_in_several_splits": 0, "rows": 0}
    if frame is None:
        return out
    for t in frame.partition_map("case_id", _manifest_checks,
                                 partitions=4 * ex.cpus).tables_iter():
        out["duplicate_sample_ids"] += sum(t.column("dup").to_pylist())
        out["cases_in_several_splits"] += sum(t.column("several").to_pylist())
        out["rows"] += sum(t.column("rows").to_pylist())
    return out
