"""One Arrow schema per record kind, enforced where each is written.

A *sample* is one 2D view with its ROIs, text and quality decision. Work units commit
samples with their encoded bytes (`image`, `roi_masks`); the manifest is the same table
without the bytes, which live in the WebDataset shards.
"""

from __future__ import annotations

import pyarrow as pa

WINDOW = pa.struct([
    ("method", pa.string()),  # ct_window | percentile | minmax | none
    ("name", pa.string()),
    ("low", pa.float64()),
    ("high", pa.float64()),
])

VIEW = pa.struct([
    ("plane", pa.string()),  # axial | frontal | lateral | none
    ("index", pa.int32()),  # slice index in the canonical (LPS) volume, -1 for 2D
    ("count", pa.int32()),  # slices in the volume, 1 for 2D
])

ROI = pa.struct([
    ("label", pa.string()),  # the source's label
    ("finding", pa.string()),  # normalised finding label
    ("bbox", pa.list_(pa.int32(), 4)),  # [x0, y0, x1, y1] pixels, x1/y1 exclusive
    ("bbox_norm", pa.list_(pa.float64(), 4)),
    ("area_px", pa.int64()),
    ("area_frac", pa.float64()),
    ("area_mm2", pa.float64()),  # null when pixel spacing is unknown
    ("area_kind", pa.string()),  # mask | box | point (no extent: bbox its pixel, no area)
    ("longest_diameter_mm", pa.float64()),
    ("volume_mm3", pa.float64()),  # the 3D lesion this region is a slice of (volumes only)
    ("centroid", pa.list_(pa.float64(), 2)),  # [x, y] pixels
    ("laterality", pa.string()),  # left | right | midline | null when no patient frame
    ("location", pa.string()),
    ("intensity", pa.string()),  # hyper | hypo | iso relative to a ring around the ROI
    ("intensity_inside", pa.float64()),
    ("intensity_around", pa.float64()),
    ("relations", pa.list_(pa.string())),
    ("origin", pa.string()),  # annotation | expert:<name>
    ("confidence", pa.float64()),
])

LEVELS = pa.struct([
    ("modality", pa.string()),
    ("organ", pa.string()),
    ("roi", pa.string()),
    ("texture", pa.string()),
    ("relations", pa.string()),
])

QA = pa.struct([
    ("question", pa.string()),
    ("answer", pa.string()),
    ("type", pa.string()),  # closed | open | choice
    ("category", pa.string()),
    ("options", pa.list_(pa.string())),
    ("origin", pa.string()),  # facts (computed) | source (written by the dataset's authors)
])

GENERATION = pa.struct([
    ("backend", pa.string()),
    ("model", pa.string()),
    ("prompt_version", pa.string()),
    ("cache_key", pa.string()),
    ("note", pa.string()),
])

QUALITY = pa.struct([
    ("std", pa.float64()),
    ("contrast", pa.float64()),
    ("text_flags", pa.list_(pa.string())),  # text-fact contradictions (curate.unit.text.consistency)
    # scores a later stage gives the sample by name (e.g. "judge" from an LLM judge,
    # "alignment" from a trained checkpoint); `filters.min_scores` drops below a threshold
    ("scores", pa.list_(pa.struct([("name", pa.string()), ("value", pa.float64())]))),
    ("keep", pa.bool_()),
    ("reasons", pa.list_(pa.string())),
])

SAMPLE_FIELDS = [
    ("sample_id", pa.string()),
    ("unit_id", pa.string()),
    # the input files the sample came from, relative to the source root (a series past
    # MAX_SOURCE_FILES files is named by its folders); empty when the source opts out
    ("source_files", pa.list_(pa.string())),
    ("source", pa.string()),
    ("case_id", pa.string()),  # salted hash of the patient id
    ("series", pa.string()),  # salted hash of the series/file identity
    ("image_sha256", pa.string()),  # of the shipped PNG: exact-duplicate removal
    ("image_phash", pa.string()),  # perceptual hash: benchmark decontamination
    ("license", pa.string()),
    ("modality", pa.string()),
    ("anatomy", pa.string()),
    ("findings", pa.list_(pa.string())),
    ("annotated", pa.bool_()),  # whether the source annotates findings for this case
    ("image_labels", pa.list_(pa.string())),  # image-level class labels from the source
    # the patient's labels from the source's records (a cohort's diagnosis), not findings
    # of this image: nothing says where, or whether, the image shows them
    ("patient_labels", pa.list_(pa.string())),
    ("view", VIEW),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("channels", pa.int32()),
    ("pixel_spacing_mm", pa.list_(pa.float64(), 2)),  # [row, col]; null when unknown
    ("window", WINDOW),
    ("notes", pa.list_(pa.string())),  # what ingest decided by a declared rule (resampling...)
    ("rois", pa.list_(ROI)),
    ("levels", LEVELS),
    ("caption", pa.string()),
    ("knowledge_refs", pa.list_(pa.string())),
    ("vqa", pa.list_(QA)),
    ("generation", GENERATION),
    ("quality", QUALITY),
    ("split", pa.string()),
    ("shard", pa.string()),
]

BYTES_FIELDS = [
    ("image", pa.binary()),  # PNG of the clean normalised view
    # PNG per ROI, aligned with rois; null for box and point ROIs
    ("roi_masks", pa.list_(pa.binary())),
]

SAMPLE = pa.schema(SAMPLE_FIELDS + BYTES_FIELDS)
MAX_SOURCE_FILES = 32
MANIFEST = pa.schema(SAMPLE_FIELDS)

QUARANTINE = pa.schema([
    ("source", pa.string()),
    ("unit_id", pa.string()),
    ("file", pa.string()),  # path relative to the source root; the sample id for describe rows
    ("stage", pa.string()),
    ("error", pa.string()),  # exception class
    ("message", pa.string()),
])


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Build a table, failing loudly when a row does not fit the schema."""
    return pa.Table.from_pylist(rows, schema=schema)
