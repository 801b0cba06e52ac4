"""The data card's statistics: small, mergeable aggregates, never the manifest itself.

The card (curate.report.card_markdown), its plots (curate.report.figures) and its front
matter (curate.report.hub_meta) are rendered from these:
each shard writer computes `card_stats` (kept rows), `dropped_stats` (filtered rows) and
`quarantine_stats` on its own part, and the driver folds them with `merge_stats`, which is
associative and commutative and gives the same result in any order. Every statistic is a
nested dict of counts with string keys (null becomes ""), plus, for kept rows, a bounded
list of example rows for the contact sheet.
"""

from __future__ import annotations

import json
from functools import reduce
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

EXAMPLES_PER_SOURCE = 4  # the smallest sample ids of each source, for the contact sheet
EXAMPLE_FIELDS = ["sample_id", "source", "shard", "split", "modality", "anatomy", "width",
                  "height", "rois", "levels", "caption", "vqa"]
CAPTION_BIN = 50  # caption length histogram: 50-character bins ...
CAPTION_MAX = 1500  # ... the last one holding every caption from 1500 characters on


def _key(value) -> str:
    return "" if value is None else str(value)


def _counts(values) -> dict[str, int]:
    """Occurrences of each value of an Arrow array or chunked array, keyed by _key."""
    if not len(values):
        return {}
    vc = pc.value_counts(values)
    return {_key(v): int(n) for v, n in zip(vc.field("values").to_pylist(),
                                            vc.field("counts").to_pylist(), strict=True)}


def _nested(table: pa.Table, keys: list[str]) -> dict:
    """Row counts nested by the given columns: {k1: {k2: n}}."""
    out: dict = {}
    if not table.num_rows:
        return out
    grouped = table.select(keys).group_by(keys).aggregate([([], "count_all")])
    for r in grouped.to_pylist():
        d = out
        for k in keys[:-1]:
            d = d.setdefault(_key(r[k]), {})
        d[_key(r[keys[-1]])] = d.get(_key(r[keys[-1]]), 0) + int(r["count_all"])
    return out


def _list_field(table: pa.Table, column: str, field: str, empty: str = "string") -> pa.Array:
    """One field of every element of a list-of-struct column; an empty array of type
    `empty` when there are none."""
    flat = pc.list_flatten(table.column(column)) if table.num_rows else []
    return pc.struct_field(flat, field) if len(flat) else pa.array([], empty)


def _examples(table: pa.Table, per_source: int = EXAMPLES_PER_SOURCE) -> list[dict]:
    """The rows with the smallest sample ids of each source, EXAMPLE_FIELDS only. Ids are
    picked on the two small columns, then only the picked rows are taken: filtering the
    whole table per source (its ROI and VQA lists) cost ~0.2 ms a row."""
    sources, ids = table.column("source"), table.column("sample_id")
    picked = []
    for source in pc.unique(sources).to_pylist():
        rows = pc.indices_nonzero(pc.is_null(sources) if source is None
                                  else pc.fill_null(pc.equal(sources, source), False))
        first = pc.bottom_k_unstable(pc.take(ids, rows), min(per_source, len(rows)))
        picked.append(pc.take(rows, first))
    if not picked:
        return []
    rows = table.select(EXAMPLE_FIELDS).take(pa.concat_arrays(picked)).to_pylist()
    return _sorted_examples(rows, per_source)


def _sorted_examples(rows: list[dict], per_source: int = EXAMPLES_PER_SOURCE) -> list[dict]:
    out, seen = [], {}
    for r in sorted(rows, key=lambda r: (_key(r["source"]), r["sample_id"])):
        k = _key(r["source"])
        if seen.get(k, 0) < per_source:
            seen[k] = seen.get(k, 0) + 1
            out.append(r)
    return out


def _merge(a, b):
    if a is None:
        return _merge(b, {}) if isinstance(b, dict) else b
    if b is None:
        return _merge(a, {}) if isinstance(a, dict) else a
    if isinstance(a, dict):
        return {k: (_sorted_examples(a.get(k, []) + b.get(k, [])) if k == "examples"
                    else _merge(a.get(k), b.get(k))) for k in sorted(set(a) | set(b))}
    return a + b


def merge_stats(a: dict, b: dict) -> dict:
    """Fold two results of card_stats, dropped_stats or quarantine_stats (or of this
    function); {} is the identity. Counts add; examples keep the smallest sample ids of
    each source. Associative, commutative, and the output's keys are sorted."""
    return _merge(a, b)


merge_card_stats = merge_stats


def merge_all(parts: list[dict]) -> dict:
    return reduce(merge_stats, parts, {})


def _log2_buckets(values: pa.Array, low: int, high: int) -> dict[str, int]:
    """Counts of floor(log2(v)) clipped to [low, high], keyed by the exponent; null and
    non-positive values count under ""."""
    arr = np.asarray(pc.fill_null(values, -1.0).to_numpy(zero_copy_only=False), np.float64)
    ok = arr > 0
    exps = np.clip(np.floor(np.log2(arr[ok])), low, high).astype(int)
    out = {str(k): int(n) for k, n in zip(*np.unique(exps, return_counts=True), strict=True)}
    if (~ok).any():
        out[""] = int((~ok).sum())
    return out


def _caption_hist(lengths: np.ndarray) -> dict[str, int]:
    """Caption lengths in CAPTION_BIN-character bins (key: the bin's lower bound), the last
    bin holding everything from CAPTION_MAX on."""
    bins = np.minimum(lengths // CAPTION_BIN * CAPTION_BIN, CAPTION_MAX)
    return {str(k): int(n) for k, n in zip(*np.unique(bins, return_counts=True), strict=True)}


def card_stats(table: pa.Table) -> dict:
    """What the card says about kept rows, for one manifest part (MANIFEST schema)."""
    gen = table.column("generation")
    models = pa.table({"backend": pc.struct_field(gen, "backend"),
                       "model": pc.struct_field(gen, "model"),
                       "prompt": pc.struct_field(gen, "prompt_version")}) if table.num_rows \
        else pa.table({k: pa.array([], pa.string()) for k in ("backend", "model", "prompt")})
    lengths = np.asarray(pc.utf8_length(pc.fill_null(table.column("caption"), "")).to_numpy(
        zero_copy_only=False), np.int64) if table.num_rows else np.zeros(0, np.int64)
    refs = pc.list_value_length(table.column("knowledge_refs"))
    rois = table.column("rois")
    roi_sources = pc.take(table.column("source"), pc.list_parent_indices(rois)) \
        if table.num_rows else pa.array([], pa.string())
    by_origin = pa.table({"source": roi_sources,
                          "origin": _list_field(table, "rois", "origin")})
    stats = {
        "rows": table.num_rows,
        "per_source": _counts(table.column("source")),
        "per_modality": _counts(table.column("modality")),
        "per_source_modality": _nested(table, ["source", "modality"]),
        "per_split": _counts(table.column("split")),
        "licenses": _nested(table, ["source", "license"]),
        "backends": _nested(models, ["backend", "model", "prompt"]),
        "roi_origins": _counts(by_origin.column("origin")),
        "roi_origins_by_source": _nested(by_origin, ["source", "origin"]),
        "roi_kinds": _counts(_list_field(table, "rois", "area_kind")),
        "roi_findings": _counts(_list_field(table, "rois", "finding")),
        "roi_area_frac_log2": _log2_buckets(_list_field(table, "rois", "area_frac", "float64"),
                                            -14, 0),
        "roi_diameter_mm_log2": _log2_buckets(
            _list_field(table, "rois", "longest_diameter_mm", "float64"), -1, 9),
        "vqa_origins": _counts(_list_field(table, "vqa", "origin")),
        "vqa_categories": _counts(_list_field(table, "vqa", "category")),
        "vqa_types": _counts(_list_field(table, "vqa", "type")),
        "knowledge_refs": int(pc.sum(pc.greater(refs, 0)).as_py() or 0) if len(refs) else 0,
        "caption_chars": {"sum": int(lengths.sum()), "hist": _caption_hist(lengths)},
        "examples": _examples(table),
    }
    return _merge(stats, {})


def dropped_stats(table: pa.Table) -> dict:
    """Filtered rows of one part: how many, per source and split, and per reason (the
    reason's name, before any ':') overall and per split; a sample dropped for two reasons
    counts once under each."""
    reasons = pc.struct_field(table.column("quality"), "reasons")
    flat = pc.list_flatten(reasons) if table.num_rows else pa.array([], pa.string())
    names = pc.list_element(pc.split_pattern(flat, ":", max_splits=1), 0) if len(flat) else flat
    splits = pc.take(table.column("split"), pc.list_parent_indices(reasons)) \
        if len(flat) else pa.array([], pa.string())
    return _merge({"rows": table.num_rows, "per_source": _counts(table.column("source")),
                   "per_split": _counts(table.column("split")),
                   "reasons": _counts(names),
                   "reasons_by_split": _nested(pa.table({"split": splits, "reason": names}),
                                               ["split", "reason"])}, {})


def quarantine_stats(table: pa.Table) -> dict:
    """Quarantined files of one part (QUARANTINE schema): per stage and error, per source."""
    return _merge({"rows": table.num_rows, "per_source": _counts(table.column("source")),
                   "errors": _nested(table, ["stage", "error"])}, {})


def frame_stats(ex, path: Path, fn) -> list[dict]:
    """fn (card_stats, dropped_stats or quarantine_stats) over each Parquet part under
    `path`, on the executor `ex` (curate.runner.Executor): mergeable stats dicts. Parts are
    listed here (one name per part) and read by tasks, several per task."""
    files = sorted(str(p) for p in Path(path).glob("*.parquet"))
    if not files:
        return []
    frame = ex.frame(pa.table({"path": files}), blocks=min(len(files), 4 * ex.cpus))
    out = []
    for t in frame.map_batches(_stats_of_files, args=(fn,)).tables_iter():
        out += [json.loads(x) for x in t.column("s").to_pylist()]
    return out


def _stats_of_files(batch: pa.Table, fn) -> pa.Table:
    import pyarrow.parquet as pq

    return pa.table({"s": [json.dumps(fn(pq.read_table(p)))
                           for p in batch.column("path").to_pylist()]})
