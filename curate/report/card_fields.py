"""What each column of a sample means, with its unit: the card's field table.

Keyed by the column's path in the MANIFEST schema (`rois.area_mm2` is a field of each
element of the `rois` list); a test keeps every schema field described.
"""

from __future__ import annotations

import pyarrow as pa

FIELDS: dict[str, tuple[str, str]] = {  # path -> (unit, meaning)
    "image": ("PNG", "the clean normalised 2D view (Parquet export: a `datasets` Image; "
              "shards: the `<id>.png` member)"),
    "masks": ("npz bytes", "every ROI mask of the sample (the shards' `<id>.masks.npz` "
              "member): `curate.model.masks.unpack` gives bool (R, H, W) aligned with `rois`, "
              "box ROIs filled"),
    "sample_id": ("", "stable id of the 2D sample (hash of its source, file and view)"),
    "unit_id": ("", "the work unit (case or file) the sample was made from"),
    "source_files": ("", "the input files it came from, relative to the source root (a "
                     "long series by its folders); empty where the source opts out"),
    "source": ("", "the source dataset's short name (see Sources)"),
    "case_id": ("", "salted hash of the patient or case id; splits never share a case"),
    "series": ("", "salted hash of the series or file identity"),
    "image_sha256": ("hex", "SHA-256 of the shipped PNG; used to drop exact duplicates"),
    "image_phash": ("hex", "perceptual hash; used to remove benchmark test images"),
    "license": ("", "the source's licence (SPDX id where one exists)"),
    "modality": ("", "CT, MR, XR, US, PET, dermoscopy, ... (DICOM header when present)"),
    "anatomy": ("", "imaged region as the source records it"),
    "findings": ("", "normalised finding labels the source annotates for this case"),
    "annotated": ("", "whether the source annotates findings for this case (no: an "
                  "absent ROI says nothing)"),
    "image_labels": ("", "image-level class labels from the source"),
    "patient_labels": ("", "the patient's labels from the source's records (a cohort's "
                       "diagnosis): context, not a finding of this image"),
    "view": ("", "which view of the image or volume this is"),
    "view.plane": ("", "axial, frontal, lateral or none"),
    "view.index": ("slice", "slice index in the LPS-reoriented volume; -1 for 2D images"),
    "view.count": ("slices", "slices in the volume; 1 for 2D images"),
    "width": ("px", "image width"),
    "height": ("px", "image height"),
    "channels": ("", "1 (grey) or 3 (RGB)"),
    "pixel_spacing_mm": ("mm", "[row, column] spacing after resizing; null when unknown"),
    "window": ("", "how the pixel values were mapped to the 0-255 display range"),
    "window.method": ("", "ct_window, percentile, minmax or none: how values became 0-255"),
    "window.name": ("", "the CT preset or percentile pair used"),
    "window.low": ("HU for CT, source units otherwise", "value shown as black"),
    "window.high": ("HU for CT, source units otherwise", "value shown as white"),
    "notes": ("", "what ingest decided by a declared rule (resampling, zeroed NaNs, ...)"),
    "rois": ("", "regions of interest, one per annotated or expert-found region"),
    "rois.label": ("", "the source's label"),
    "rois.finding": ("", "normalised finding label"),
    "rois.bbox": ("px", "[x0, y0, x1, y1] in the shipped image, x1/y1 exclusive"),
    "rois.bbox_norm": ("0-1", "bbox divided by width/height"),
    "rois.area_px": ("px", "pixels inside the region"),
    "rois.area_frac": ("0-1", "share of the image area"),
    "rois.area_mm2": ("mm²", "area from the pixel spacing; null when spacing is unknown"),
    "rois.area_kind": ("", "mask (outlined), box (only a box was given) or point (only a "
                       "point was given: no area, size or mask)"),
    "rois.longest_diameter_mm": ("mm", "longest in-plane diameter; null without spacing"),
    "rois.volume_mm3": ("mm³", "volume of the 3D lesion this region is a slice of"),
    "rois.centroid": ("px", "[x, y] of the region's centre"),
    "rois.laterality": ("", "left, right or midline (patient frame); null without one"),
    "rois.location": ("", "where the region lies, in words"),
    "rois.intensity": ("", "hyper, hypo or iso: inside against a 3-pixel ring around it"),
    "rois.intensity_inside": ("HU for CT; source units otherwise",
                              "mean value inside the region before display windowing: "
                              "Hounsfield units for CT, the scanner's unitless values for "
                              "MR and other volumes, the stored pixel value for 2D images "
                              "(0-255 for 8-bit ones, the channel mean for RGB)"),
    "rois.intensity_around": ("as intensity_inside",
                              "mean value of the ring around the region, same units; "
                              "null when the ring leaves the body"),
    "rois.relations": ("", "phrases relating this region to the others"),
    "rois.origin": ("", "annotation (the source's) or expert:NAME (a model's)"),
    "rois.confidence": ("0-1", "1 for annotations; the expert's score otherwise"),
    "levels": ("", "the caption in five levels, each one or two sentences"),
    "levels.modality": ("", "modality, plane and window"),
    "levels.organ": ("", "the imaged region"),
    "levels.roi": ("", "each region: where, how large"),
    "levels.texture": ("", "each region's intensity against its surroundings"),
    "levels.relations": ("", "how the regions relate"),
    "caption": ("characters", "the five levels joined"),
    "knowledge_refs": ("", "ids of knowledge-base passages retrieved for this sample"),
    "vqa": ("", "question-answer pairs"),
    "vqa.question": ("", "the question"),
    "vqa.answer": ("", "the answer"),
    "vqa.type": ("", "closed (yes/no), open or choice"),
    "vqa.category": ("", "modality, organ, presence, location, size, ..."),
    "vqa.options": ("", "the choices of a choice question"),
    "vqa.origin": ("", "facts (computed) or source (written by the dataset's authors)"),
    "generation": ("", "how the caption and levels were written"),
    "generation.backend": ("", "what wrote the text: grounded-template, openai, vllm"),
    "generation.model": ("", "the language model; null for the grounded generator"),
    "generation.prompt_version": ("", "prompt or template version"),
    "generation.cache_key": ("", "key of the cached generation"),
    "generation.note": ("", "how the text was made, in words"),
    "quality": ("", "image statistics, scores and the filter decision"),
    "quality.std": ("0-255", "standard deviation of the shipped image"),
    "quality.contrast": ("0-255", "spread between the 1st and 99th percentiles"),
    "quality.scores.name": ("", "the scorer (e.g. judge, alignment)"),
    "quality.scores.value": ("", "the score; filters.min_scores drops samples below a threshold"),
    "quality.text_flags": ("", "contradictions found between text and facts"),
    "quality.scores": ("", "named scores later stages gave (name, value)"),
    "quality.keep": ("", "the filter decision (always yes in the shards)"),
    "quality.reasons": ("", "why a sample was dropped (filtered.parquet)"),
    "split": ("", "train, val or test, by salted hash of the case"),
    "shard": ("", "the WebDataset shard holding the sample"),
}


def _type_name(t: pa.DataType) -> str:
    if pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t):
        inner = t.value_type
        return "list of records" if pa.types.is_struct(inner) else f"list of {_type_name(inner)}"
    if pa.types.is_struct(t):
        return "record"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_boolean(t):
        return "yes/no"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "number"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytes"
    return str(t)


def field_rows(schema: pa.Schema) -> list[tuple[str, str, str, str]]:
    """(path, type, unit, meaning) for every field of schema and of its records, depth-first."""
    out = []

    def walk(prefix: str, field: pa.Field) -> None:
        path = f"{prefix}{field.name}"
        unit, meaning = FIELDS.get(path, ("", ""))
        if pa.types.is_struct(field.type) and {f.name for f in field.type} == {"bytes", "path"}:
            out.append((path, "image", unit, meaning))  # a `datasets` Image: bytes and path
            return
        out.append((path, _type_name(field.type), unit, meaning))
        inner = field.type
        if pa.types.is_list(inner) or pa.types.is_fixed_size_list(inner):
            inner = inner.value_type
        if pa.types.is_struct(inner):
            for i in range(inner.num_fields):
                walk(f"{path}.", inner.field(i))

    for f in schema:
        walk("", f)
    return out
