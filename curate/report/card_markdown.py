"""The data card's Markdown: front matter (curate.report.hub_meta) and a body a reader can
use, rendered from the run record and the merged card stats, in words and tables only."""

from __future__ import annotations

import yaml

from curate.model.recipe import SourceSpec
from curate.report.card_fields import field_rows
from curate.report.hub_meta import hub_split, spec_licence, split_order, used_specs

COMMERCIAL = {True: "yes", False: "no", "unknown": "unclear"}
VQA_SHOWN = 8  # VQA pairs of the example listed in its table


def cell(value) -> str:
    """A table cell: no line breaks, pipes escaped, null as a dash."""
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("\n", " ").replace("|", "\\|")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


ORIGINS = {"annotation": "from the sources' annotations", "facts": "computed from facts",
           "source": "written by the sources' authors"}


def origin_name(origin: str) -> str:
    if origin.startswith("expert:"):
        return f"found by the {origin.split(':', 1)[1]} expert model"
    return ORIGINS.get(origin, origin)


def words(counts: dict[str, int], name=str) -> str:
    """{"train": 14, "val": 1} -> "14 train and 1 val" (largest first)."""
    items = [f"{n} {name(k) if k else 'unknown'}" for k, n in
             sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    if not items:
        return "none"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


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


def licence_table(specs: list[SourceSpec], per_source: dict[str, int]) -> str:
    return table(["source", "samples", "licence", "commercial use", "licence text"], [
        [s.name, per_source.get(s.name, 0),
         s.license.name if s.license else "not stated",
         COMMERCIAL[s.license.commercial_use] if s.license else "unclear",
         licence_url(s)] for s in specs])


def licence_url(spec: SourceSpec) -> str:
    """Where the licence text is: the source's link, else the SPDX page of its id."""
    if spec.license and spec.license.url:
        return spec.license.url
    if spec.license and spec.license.spdx:
        return f"https://spdx.org/licenses/{spec.license.spdx}.html"
    return "–"


def _shard_pattern(record: dict, split: str) -> str:
    n = sum(1 for name in record.get("shards", {}) if name.startswith(f"{split}-"))
    return f"{split}-{{000000..{max(n - 1, 0):06d}}}.tar"


def load_section(record: dict, splits: list[str], parquet: bool) -> list[str]:
    name = record["recipe"]["name"]
    first = splits[0] if splits else "train"
    hub_first = hub_split(first)
    shards = f'{{"{hub_first}": "path/to/{name}/shards/{first}-*.tar"}}'
    if parquet:
        ds_lines = [
            f'ds = load_dataset("path/to/{name}")  # this folder, or "<user>/{name}" on the hub',
            f'sample = ds["{hub_first}"][0]',
            'sample["image"]  # a PIL image; also sample["caption"], ["rois"], ["vqa"], ...',
            '# sample["masks"]: the masks.npz bytes, curate.model.masks.unpack gives (R, H, W)',
            "",
            "# the shards instead, typed by curate (a null in the first samples cannot be inferred)",
            "from curate.dataset.hub import webdataset_features_of_datasets",
            "",
            f'shards = load_dataset("webdataset", data_files={shards},',
            "                      features=webdataset_features_of_datasets())",
        ]
    else:
        ds_lines = [
            f'ds = load_dataset("path/to/{name}")  # the shards: this build has no Parquet export',
            f'sample = ds["{hub_first}"][0]',
            'sample["png"], sample["json"]  # a PIL image and the record',
        ]
    return [
        "## Load it",
        "",
        "With Hugging Face `datasets` (the card's `configs` say which files hold each split):",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        *ds_lines,
        "```",
        "",
        "With `webdataset`, straight from the shards (every sample has the same three members: "
        "`<id>.png`, `<id>.json` and `<id>.masks.npz`):",
        "",
        "```python",
        "import numpy as np",
        "import webdataset as wds",
        "",
        f'url = "path/to/{name}/shards/{_shard_pattern(record, first)}"',
        'for s in wds.WebDataset(url, shardshuffle=False).decode("pil"):',
        '    image, record, m = s["png"], s["json"], s["masks.npz"]',
        '    # (R, H, W) bool, aligned with record["rois"]; box ROIs have their box filled',
        '    masks = np.unpackbits(m["packed"], count=int(np.prod(m["shape"]))).reshape(',
        '        m["shape"]).astype(bool)',
        "```",
        "",
        "As PyTorch tensors, with `curate` installed (shards split across workers and nodes):",
        "",
        "```python",
        "import torch",
        "from curate.train.feed import samples",
        "",
        f'data = samples("path/to/{name}", split="{first}")',
        "loader = torch.utils.data.DataLoader(data, batch_size=None)",
        "for image, masks, record in loader:  # (C, H, W) float, (R, H, W) bool, dict",
        "    ...",
        "```",
        "",
    ]


def funnel_section(record: dict, kept: dict, dropped: dict, quarantine: dict) -> list[str]:
    splits = split_order(set(kept.get("per_split", {})) | set(dropped.get("per_split", {})))
    by_split = dropped.get("reasons_by_split", {})
    reasons = sorted(dropped.get("reasons", {}))
    made = {s: kept.get("per_split", {}).get(s, 0) + dropped.get("per_split", {}).get(s, 0)
            for s in splits}
    c = record["counts"]
    header = ["step"] + [hub_split(s) if s else "no split" for s in splits] + ["all"]
    blank = ["–"] * len(splits)
    rows = [["work units planned (cases or files)", *blank, c.get("units_planned", "–")],
            ["files quarantined (unreadable or refused)", *blank, quarantine.get("rows", 0)],
            ["2D samples made", *[made[s] for s in splits], sum(made.values())]]
    for reason in reasons:
        rows.append([f"dropped: {reason}", *[by_split.get(s, {}).get(reason, 0) for s in splits],
                     dropped["reasons"][reason]])
    rows.append(["**kept**", *[kept.get("per_split", {}).get(s, 0) for s in splits],
                 kept.get("rows", 0)])
    return ["## Splits and filter funnel", "",
            "Splits are by patient (a salted hash of the case id), so no case is in two splits. "
            "A sample dropped for two reasons counts under both.", "",
            table(header, rows), ""]


def pick_example(examples: list[dict]) -> dict | None:
    """The example the card shows: one with outlined ROIs and many VQA pairs, if any."""
    if not examples:
        return None
    return min(examples, key=lambda r: (
        not any(x["area_kind"] == "mask" for x in r.get("rois") or []),
        not r.get("rois"), -len(r.get("vqa") or []), r["source"] or "", r["sample_id"]))


def example_section(row: dict | None, figure: str | None) -> list[str]:
    if row is None:
        return []
    out = ["## An example", "",
           f"Sample `{row['sample_id']}` from `{row['source']}` ({row.get('modality') or 'unknown'} "
           f"modality, {row.get('anatomy') or 'region not stated'}, split "
           f"{hub_split(row.get('split') or '')}, {row.get('width')}×{row.get('height')} px).", ""]
    if figure:
        out += [f"![The example sample with its ROI masks tinted and boxes numbered]({figure})", ""]
    if row.get("rois"):
        out += [table(["#", "finding", "kind", "box (px)", "area (mm²)", "longest diameter (mm)",
                       "location", "intensity (inside / around)"],
                      [[i, r["finding"], r["area_kind"], ", ".join(str(v) for v in r["bbox"]),
                        r["area_mm2"], r["longest_diameter_mm"], r["location"],
                        f"{cell(r['intensity'])}: {cell(r['intensity_inside'])} / "
                        f"{cell(r['intensity_around'])}"]
                       for i, r in enumerate(row["rois"], 1)]), ""]
    levels = row.get("levels") or {}
    out += [table(["level", "text"], [[k, v] for k, v in levels.items()]), "",
            "Caption (the five levels joined):", "", f"> {row.get('caption') or ''}", ""]
    vqa = row.get("vqa") or []
    if vqa:
        out += [table(["question", "answer", "type", "category"],
                      [[q["question"], q["answer"] + (f" (options: {', '.join(q['options'])})"
                                                      if q.get("options") else ""),
                        q["type"], q["category"]] for q in vqa[:VQA_SHOWN]]), ""]
        if len(vqa) > VQA_SHOWN:
            out += [f"and {len(vqa) - VQA_SHOWN} more pairs.", ""]
    return out


def sources_section(record: dict, specs: list[SourceSpec], kept: dict) -> list[str]:
    per_source = kept.get("per_source", {})
    by_modality = kept.get("per_source_modality", {})
    used = used_specs(specs, per_source)
    out = ["## Sources", "",
           table(["source", "title", "samples", "modalities", "licence", "commercial use"], [
               [s.name, s.title, per_source.get(s.name, 0),
                words(by_modality.get(s.name, {})) if by_modality.get(s.name) else
                (s.modality or "from the DICOM header"), spec_licence(s),
                COMMERCIAL[s.license.commercial_use] if s.license else "unclear"]
               for s in specs]), "",
           "Missing sources (skipped): " + (", ".join(
               f"{k} ({v})" for k, v in record.get("sources_missing", {}).items()) or "none")
           + ".", "",
           "## Licences", "",
           licence_table(used, per_source), "",
           commercial_note(used), "",
           "## Citation", "",
           "If you use this dataset, cite every source it was built from:", ""]
    for s in used:
        if s.citation:
            out.append(f"- **{s.name}**: {' '.join(s.citation.split())}")
        elif s.generate:
            out.append(f"- **{s.name}**: generated by curate ({s.title or 'a phantom'}); "
                       "nothing to cite.")
        else:
            where = f" ({s.homepage})" if s.homepage else ""
            out.append(f"- **{s.name}**: the source declares no citation; cite it as "
                       f"{s.title or s.name}{where}.")
    return out + [""]


def text_section(record: dict, kept: dict) -> list[str]:
    out = ["## How text was made", ""]
    for backend, models in kept.get("backends", {}).items():
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
    acct = record["counts"].get("describe", {}).get("stage", {}).get("generator")
    if acct:
        out.append(f"- Model calls this run: {acct.get('requests', 0)} requests "
                   f"({acct.get('retries', 0)} retries, {acct.get('cache_hits', 0)} cache hits), "
                   f"{acct.get('prompt_tokens', 0)} prompt and {acct.get('completion_tokens', 0)} "
                   f"completion tokens, estimated cost {acct.get('cost_estimate', 0)}.")
    refs = kept.get("knowledge_refs", 0)
    knowledge = record["recipe"].get("describe", {}).get("knowledge")
    if refs and knowledge:
        out.append(f"- {refs} samples carry `knowledge_refs`: the ids of {knowledge['k']} "
                   f"passages retrieved from the `{knowledge.get('kb') or 'built-in'}` knowledge "
                   "base for their modality, region and findings.")
    corpus = record.get("knowledge_base")
    if knowledge and corpus:
        out.append(f"- Knowledge corpus: {corpus.get('name') or 'unnamed'}, "
                   f"{corpus.get('documents', 0)} documents in {corpus.get('chunks', 0)} "
                   f"passages, embedded with {corpus.get('model')}; licence: "
                   f"{corpus.get('license') or 'unknown (the index was built without --license)'}.")
    vqa = kept.get("vqa_origins", {})
    out.append(f"- VQA pairs: {words(vqa, origin_name)} (`facts`: answers computed from the "
               "ROI facts and metadata; `source`: written by the dataset's authors).")
    return out + [""]


def body(record: dict, kept: dict, dropped: dict, quarantine: dict, specs: list[SourceSpec], *,
         figures: dict[str, str], example: dict | None, parquet: bool, schema) -> str:
    """The card below its front matter. figures: {relative path: alt text}, with
    figures/samples.png and figures/example.png when written."""
    recipe = record["recipe"]
    c = record["counts"]
    origins, vqa = kept.get("roi_origins", {}), kept.get("vqa_origins", {})
    splits = [s for s in split_order(kept.get("per_split", {})) if s]
    plots = {k: v for k, v in figures.items() if k not in
             ("figures/samples.png", "figures/example.png")}
    out = [
        f"# {recipe.get('title') or recipe['name']}", "",
        " ".join((recipe.get("description") or "").split()), "",
        f"Built by curate {record['curate_version']} (pipeline {record['pipeline_version']}) "
        f"from the recipe `{recipe['name']}`. Everything below is computed from the build "
        "outputs; `run.json` holds the full resolved configuration and package versions.", "",
        "## At a glance", "",
        f"- {kept.get('rows', 0)} samples (2D views with their ROIs, a five-level caption and "
        f"VQA pairs) in {c['shard']['shards']} WebDataset shards"
        + (" and as Parquet with embedded images" if parquet else "") + ".",
        "- Splits: " + (", ".join(f"{kept['per_split'][s]} {hub_split(s)}" for s in splits)
                        or "none, no sample was kept") + ".",
        f"- Modalities: {words(kept.get('per_modality', {}))}.",
        f"- ROIs: {sum(origins.values())} ({words(origins, origin_name)}); outlined by a mask: "
        f"{kept.get('roi_kinds', {}).get('mask', 0)}, boxes only: "
        f"{kept.get('roi_kinds', {}).get('box', 0)}"
        + (f", points without extent: {kept['roi_kinds']['point']}"
           if kept.get("roi_kinds", {}).get("point") else "") + ".",
        f"- VQA pairs: {sum(vqa.values())}.",
        *([f"- Captions: {kept['caption_chars']['sum'] / kept['rows']:.0f} characters on "
           "average."] if kept.get("rows") else []),
        f"- Dropped by filters: {dropped.get('rows', 0)} (`filtered.parquet`); quarantined "
        f"files: {quarantine.get('rows', 0)} (`quarantine.parquet`).", "",
    ]
    if "figures/samples.png" in figures:
        out += [f"![{figures['figures/samples.png']}](figures/samples.png)", ""]
    out += load_section(record, splits, parquet)
    out += funnel_section(record, kept, dropped, quarantine)
    if plots:
        out += ["## Distributions", ""]
        for path, alt in plots.items():
            out += [f"![{alt}]({path})", ""]
    out += example_section(example, "figures/example.png" if "figures/example.png" in figures
                           else None)
    out += ["## Fields", "",
            "One row per sample in the Parquet export and the manifest; the same record is "
            "each shard's `<id>.json`. A dotted name is a field of a record (`rois.bbox`: the "
            "box of each ROI).", "",
            table(["field", "type", "unit", "meaning"], field_rows(schema)), ""]
    out += sources_section(record, specs, kept)
    out += text_section(record, kept)
    out += [
        "## Conventions", "",
        "- `bbox` is `[x0, y0, x1, y1]` in pixels of the shipped image, x1/y1 exclusive; "
        "`bbox_norm` divides by width/height.",
        "- Volumes are reoriented to LPS; axial slices and frontal projections follow the "
        "radiological convention (the patient's left on the image right). Laterality is stated "
        "only for those views, from the ROI centroid against the body's midline.",
        "- `area_mm2` and `longest_diameter_mm` come from the pixel spacing after resizing; "
        "they are null when the source gives no spacing. Box ROIs have `area_kind = box`; "
        "findings a source gives as bare points have `area_kind = point`: `bbox` is the "
        "pixel holding the point, `centroid` the point, and area, size, volume and "
        "intensity are null (a point has no extent).",
        "- `intensity_inside` and `intensity_around` are in the source's units before "
        "windowing: Hounsfield units for CT, the scanner's unitless values for MR, the stored "
        "pixel value (0-255 for 8-bit images) otherwise.",
        "- CT is windowed in HU with named presets; MR and other grey images are clipped at "
        f"the {' and '.join(str(p) for p in recipe['normalize']['mr_percentiles'])} percentiles "
        "of non-zero pixels. The window used is recorded per sample.",
        "- Patient ids are salted hashes; no DICOM patient attribute is written.", "",
        "## Quarantine", "",
        table(["stage", "error", "files"], [
            [stage, error, n] for stage, errors in quarantine.get("errors", {}).items()
            for error, n in errors.items()])
        if quarantine.get("rows") else "No file was quarantined.", "",
        "## Limitations", "",
        "- Text from the grounded generator describes geometry, not diagnosis; it says nothing "
        "about what is not annotated.",
        "- Licences are those the sources declare; check each before redistribution.", "",
        "## Reading this card", "",
        "This file is the hub's `README.md` (and `DATACARD.md`, the same text). `card.html` "
        "holds the same content as one self-contained page, figures included: open it in any "
        "browser. `curate card BUILD_DIR` writes all three again from the build's outputs.", "",
    ]
    return "\n".join(out)


def render(front: dict, text: str) -> str:
    """README.md: the YAML front matter, then the body."""
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=100) \
        + "---\n\n" + text
