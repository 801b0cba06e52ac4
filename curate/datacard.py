"""DATACARD.md: what was built, from what, under which licences, and how it was decided."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curate.config import SourceSpec


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


def write_datacard(path: Path, record: dict, kept: pa.Table, dropped: pa.Table,
                   quarantine: pa.Table, specs: list[SourceSpec], figure: str | None = None) -> None:
    c = record["counts"]
    recipe = record["recipe"]
    per_source = Counter(kept.column("source").to_pylist())
    per_modality = Counter(kept.column("modality").to_pylist())
    backends = Counter(pc.struct_field(kept.column("generation"), "backend").to_pylist())
    rois = kept.column("rois").to_pylist()
    origins = Counter(r["origin"] for rs in rois for r in rs)
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
        f"- {c['filter']['kept']} samples (2D views) kept in {c['shard']['shards']} WebDataset "
        f"shards; {c['filter']['dropped']} dropped by filters (`filtered.parquet`); "
        f"{c['quarantine']} file(s) quarantined (`quarantine.parquet`).",
        f"- Splits by patient (salted hash of the case id): {c['splits']}.",
        f"- ROIs: {sum(origins.values())} ({dict(origins)}); VQA pairs: "
        f"{sum(len(v) for v in kept.column('vqa').to_pylist())}.",
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
        _table(["modality", "samples"], [[k, v] for k, v in sorted(per_modality.items(),
                                                                  key=lambda kv: str(kv[0]))]),
        "",
        "## How text was made",
        "",
    ]
    gen = kept.column("generation").to_pylist()
    for backend, n in backends.items():
        if backend == "grounded-template":
            out.append(f"- {n} samples: **deterministic grounded generator, no language model** "
                       "(`generation.backend = grounded-template`). Sentences are assembled "
                       "only from computed ROI geometry and source metadata; they are "
                       "accurate but plain, and contain no medical knowledge beyond that.")
        else:
            models = sorted({(g["model"], g["prompt_version"]) for g in gen
                             if g["backend"] == backend})
            out.append(f"- {n} samples: backend `{backend}`, "
                       + ", ".join(f"model `{m}` with prompt `{v}`" for m, v in models)
                       + ". Answers were validated against the five-level schema and every "
                       "size and side checked against the computed facts.")
    acct = c["describe"].get("stage", {}).get("generator")
    if acct:
        out.append(f"- Model calls this run: {acct.get('requests', 0)} requests "
                   f"({acct.get('retries', 0)} retries, {acct.get('cache_hits', 0)} cache hits), "
                   f"{acct.get('prompt_tokens', 0)} prompt and {acct.get('completion_tokens', 0)} "
                   f"completion tokens, estimated cost {acct.get('cost_estimate', 0)}.")
    refs = [r for r in kept.column("knowledge_refs").to_pylist() if r]
    knowledge = recipe.get("describe", {}).get("knowledge")
    if refs and knowledge:
        out.append(f"- {len(refs)} samples carry `knowledge_refs`: the ids of {knowledge['k']} "
                   f"passages retrieved from the `{knowledge['kb']}` knowledge base for their "
                   "modality, region and findings.")
    vqa_origins = Counter(q["origin"] for v in kept.column("vqa").to_pylist() for q in v)
    out.append(f"- VQA: {dict(vqa_origins)} (`facts`: answers computed from the ROI facts and "
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
        _table(["reason", "dropped"], [[k, v] for k, v in c["filter"]["reasons"].items()])
        if c["filter"]["reasons"] else "No sample was dropped.",
        "",
        "## Quarantine",
        "",
        _table(["stage", "error", "files"], [
            [k[0], k[1], v] for k, v in sorted(Counter(zip(
                quarantine.column("stage").to_pylist(),
                quarantine.column("error").to_pylist(), strict=True)).items())])
        if quarantine.num_rows else "No file was quarantined.",
        "",
        "## Limitations",
        "",
        "- Text from the grounded generator describes geometry, not diagnosis; it says nothing "
        "about what is not annotated.",
        "- Licences are those the sources declare; check each before redistribution.",
        "",
    ]
    path.write_text("\n".join(out))
