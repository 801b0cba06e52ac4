"""DATACARD.md: what was built, from what, under which licences, and how it was decided.

The card is rendered from small, mergeable statistics, never from the manifest itself:
each shard writer computes `card_stats` (kept rows), `dropped_stats` (filtered rows) and
`quarantine_stats` on its own part, and the driver folds them with `merge_stats`, which is
associative and commutative and gives the same result in any order. Every statistic is a
nested dict of counts with string keys (null becomes ""), plus, for kept rows, a bounded
list of example rows for the contact sheet.
"""

from __future__ import annotations

from functools import reduce
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curate.model.recipe import SourceSpec

EXAMPLES_PER_SOURCE = 4  # the smallest sample ids of each source, for the contact sheet
EXAMPLE_FIELDS = ["sample_id", "source", "shard", "rois", "caption"]


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def commercial_note(specs: list[SourceSpec]) -> str:
    """The dataset allows commercial use only if every source does; say which do not."""
    blocked = [s.name for s in specs if not s.license or s.license.commercial_use is False]
    unknown = [s.name for s in specs if s.license and s.license.commercial_use == "unknown"]
    if not blocked and not unknown:
        return "Every source allows commercial use."
    parts = []
    if blocked:
        parts.append(f"do not allow commercial use or state no licence: {', '.join(blocked)}")
    if unknown:
        parts.append(f"leave commercial use unclear: {', '.join(unknown)}")
    return ("**Commercial use:** the build inherits the strictest licence of its sources; "
            "these " + "; these ".join(parts) + ". Filter by `license` or `source` before any "
            "commercial use.")

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


def _list_field(table: pa.Table, column: str, field: str) -> pa.Array:
    flat = pc.list_flatten(table.column(column))
    return pc.struct_field(flat, field) if len(flat) else pa.array([], pa.string())


def _caption_bucket(n: int) -> int:
    """Histogram bucket of a caption length: 0, then powers of two (1, 2, 4, ... 512)."""
    return 0 if n <= 0 else 1 << (n.bit_length() - 1)


def _examples(table: pa.Table, per_source: int = EXAMPLES_PER_SOURCE) -> list[dict]:
    out: list[dict] = []
    for source in sorted(pc.unique(table.column("source")).to_pylist(), key=_key):
        mask = (pc.is_null(table.column("source")) if source is None
                else pc.equal(table.column("source"), source))
        part = table.filter(mask).select(EXAMPLE_FIELDS)
        idx = pc.bottom_k_unstable(part.column("sample_id"), min(per_source, part.num_rows))
        out += part.take(idx).to_pylist()
    return _sorted_examples(out, per_source)


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


def card_stats(table: pa.Table) -> dict:
    """What the card says about kept rows, for one manifest part (MANIFEST schema)."""
    gen = table.column("generation")
    models = pa.table({"backend": pc.struct_field(gen, "backend"),
                       "model": pc.struct_field(gen, "model"),
                       "prompt": pc.struct_field(gen, "prompt_version")}) if table.num_rows \
        else pa.table({"backend": pa.array([], pa.string())} | {
            k: pa.array([], pa.string()) for k in ("model", "prompt")})
    lengths = pc.utf8_length(pc.fill_null(table.column("caption"), "")).to_pylist() \
        if table.num_rows else []
    hist: dict[str, int] = {}
    for n in lengths:
        hist[str(_caption_bucket(n))] = hist.get(str(_caption_bucket(n)), 0) + 1
    refs = pc.list_value_length(table.column("knowledge_refs"))
    stats = {
        "rows": table.num_rows,
        "per_source": _counts(table.column("source")),
        "per_modality": _counts(table.column("modality")),
        "per_split": _counts(table.column("split")),
        "licenses": _nested(table, ["source", "license"]),
        "backends": _nested(models, ["backend", "model", "prompt"]),
        "roi_origins": _counts(_list_field(table, "rois", "origin")),
        "vqa_origins": _counts(_list_field(table, "vqa", "origin")),
        "knowledge_refs": int(pc.sum(pc.greater(refs, 0)).as_py() or 0) if len(refs) else 0,
        "caption_chars": {"sum": int(sum(lengths)), "hist": hist},
        "examples": _examples(table),
    }
    return _merge(stats, {})


def dropped_stats(table: pa.Table) -> dict:
    """Filtered rows of one part: how many, per source, and per reason (the reason's name,
    before any ':'); a sample dropped for two reasons counts once under each."""
    reasons = pc.list_flatten(pc.struct_field(table.column("quality"), "reasons")) \
        if table.num_rows else pa.array([], pa.string())
    names = pc.list_element(pc.split_pattern(reasons, ":", max_splits=1), 0) \
        if len(reasons) else reasons
    return _merge({"rows": table.num_rows, "per_source": _counts(table.column("source")),
                   "reasons": _counts(names)}, {})


def quarantine_stats(table: pa.Table) -> dict:
    """Quarantined files of one part (QUARANTINE schema): per stage and error, per source."""
    return _merge({"rows": table.num_rows, "per_source": _counts(table.column("source")),
                   "errors": _nested(table, ["stage", "error"])}, {})


def _as_stats(kept, dropped, quarantine) -> tuple[dict, dict, dict]:
    if isinstance(kept, pa.Table):  # whole tables, from a caller not yet passing stats
        kept, dropped, quarantine = (card_stats(kept), dropped_stats(dropped),
                                     quarantine_stats(quarantine))
    return merge_stats(kept, {}), merge_stats(dropped, {}), merge_stats(quarantine, {})


def write_datacard(path: Path, record: dict, kept_stats: dict, dropped_stats: dict,
                   quarantine_stats: dict, specs: list[SourceSpec],
                   figure: str | None = None) -> None:
    """Render DATACARD.md from the run record and the merged statistics of the kept,
    filtered and quarantined rows (merge_stats of card_stats, dropped_stats and
    quarantine_stats over every part; {} stands for none)."""
    kept, dropped, quarantine = _as_stats(kept_stats, dropped_stats, quarantine_stats)
    c = record["counts"]
    recipe = record["recipe"]
    per_source = kept.get("per_source", {})
    per_modality = kept.get("per_modality", {})
    backends = kept.get("backends", {})
    origins = kept.get("roi_origins", {})
    vqa_origins = kept.get("vqa_origins", {})
    captions = kept.get("caption_chars", {})
    reasons = dropped.get("reasons", {})
    licences = sorted({(s.license.spdx or s.license.name) if s.license else "unstated"
                       for s in specs})
    out = [
        "---",
        f"pretty_name: {recipe['name']}",
        "task_categories: [image-to-text, visual-question-answering]",
        "tags: [medical, curate]",
        f"license: {'other' if len(licences) != 1 else licences[0]}",
        "---",
        "",
        f"# {recipe['name']}",
        "",
        recipe.get("description") or "",
        "",
        f"Built by curate {record['curate_version']} (pipeline {record['pipeline_version']}) "
        f"from `{record['recipe_file']}`. Everything below is computed from the build "
        "outputs; `run.json` holds the full resolved configuration and package versions.",
        "",
        "## Contents",
        "",
        f"- {kept.get('rows', 0)} samples (2D views) kept in {c['shard']['shards']} WebDataset "
        f"shards; {dropped.get('rows', 0)} dropped by filters (`filtered.parquet`); "
        f"{quarantine.get('rows', 0)} file(s) quarantined (`quarantine.parquet`).",
        f"- Splits by patient (salted hash of the case id): {kept.get('per_split', {})}.",
        f"- ROIs: {sum(origins.values())} ({origins}); VQA pairs: "
        f"{sum(vqa_origins.values())}.",
        *([f"- Captions: {captions['sum'] / kept['rows']:.0f} characters on average."]
          if kept.get("rows") else []),
        "",
        *([f"![The first samples of each source, with their ROI boxes and captions]({figure})",
           ""] if figure else []),
        "## Sources",
        "",
        _table(["source", "samples", "modality", "licence", "commercial use"], [
            [s.name, per_source.get(s.name, 0), s.modality or "from DICOM header",
             (s.license.spdx or s.license.name) if s.license else "not stated",
             s.license.commercial_use if s.license else "unknown"] for s in specs]),
        "",
        commercial_note(specs),
        "",
        "Missing sources (skipped): " + (", ".join(
            f"{k} ({v})" for k, v in record["sources_missing"].items()) or "none") + ".",
        "",
        "## Modalities",
        "",
        _table(["modality", "samples"], [[k, v] for k, v in per_modality.items()]),
        "",
        "## How text was made",
        "",
    ]
    for backend, models in backends.items():
        n = sum(sum(p.values()) for p in models.values())
        if backend == "grounded-template":
            out.append(f"- {n} samples: **deterministic grounded generator, no language model** "
                       "(`generation.backend = grounded-template`). Sentences are assembled "
                       "only from computed ROI geometry and source metadata; they are "
                       "accurate but plain, and contain no medical knowledge beyond that.")
        else:
            out.append(f"- {n} samples: backend `{backend}`, "
                       + ", ".join(f"model `{m}` with prompt `{v}`"
                                   for m, prompts in models.items() for v in prompts)
                       + ". Answers were validated against the five-level schema and every "
                       "size and side checked against the computed facts.")
    acct = c["describe"].get("stage", {}).get("generator")
    if acct:
        out.append(f"- Model calls this run: {acct.get('requests', 0)} requests "
                   f"({acct.get('retries', 0)} retries, {acct.get('cache_hits', 0)} cache hits), "
                   f"{acct.get('prompt_tokens', 0)} prompt and {acct.get('completion_tokens', 0)} "
                   f"completion tokens, estimated cost {acct.get('cost_estimate', 0)}.")
    refs = kept.get("knowledge_refs", 0)
    knowledge = recipe.get("describe", {}).get("knowledge")
    if refs and knowledge:
        out.append(f"- {refs} samples carry `knowledge_refs`: the ids of {knowledge['k']} "
                   f"passages retrieved from the `{knowledge['kb']}` knowledge base for their "
                   "modality, region and findings.")
    out.append(f"- VQA: {vqa_origins} (`facts`: answers computed from the ROI facts and "
               "metadata; `source`: written by the dataset's authors).")
    out += [
        "",
        "## Conventions",
        "",
        "- `bbox` is `[x0, y0, x1, y1]` in pixels of the shipped image, x1/y1 exclusive; "
        "`bbox_norm` divides by width/height.",
        "- Volumes are reoriented to LPS; axial slices and frontal projections follow the "
        "radiological convention (the patient's left on the image right). Laterality is stated "
        "only for those views, from the ROI centroid against the body's midline.",
        "- `area_mm2` and `longest_diameter_mm` come from the pixel spacing after resizing; "
        "they are null when the source gives no spacing. Box ROIs have `area_kind = box`.",
        f"- CT is windowed in HU with named presets; MR and other grey images are clipped at "
        f"the {recipe['normalize']['mr_percentiles']} percentiles of non-zero pixels. The "
        "window used is recorded per sample.",
        "- Patient ids are salted hashes; no DICOM patient attribute is written.",
        "",
        "## Filters",
        "",
        _table(["reason", "dropped"], [[k, v] for k, v in reasons.items()])
        if reasons else "No sample was dropped.",
        "",
        "## Quarantine",
        "",
        _table(["stage", "error", "files"], [
            [stage, error, n] for stage, errors in quarantine.get("errors", {}).items()
            for error, n in errors.items()])
        if quarantine.get("rows") else "No file was quarantined.",
        "",
        "## Limitations",
        "",
        "- Text from the grounded generator describes geometry, not diagnosis; it says nothing "
        "about what is not annotated.",
        "- Licences are those the sources declare; check each before redistribution.",
        "",
    ]
    path.write_text("\n".join(out))
