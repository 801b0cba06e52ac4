"""Miniature slice masks (layout.slice_masks): one mask image per DICOM file of each series
folder an entry covers, in the folder its template names, holding every declared label."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from curate.ingest.files import annotation_path, stem
from curate.ingest.slice_masks import entry_of
from curate.model.recipe import SourceSpec


def mask_name(pattern: str, dicom: str) -> str:
    """A mask file name the entry's files glob matches, named after the DICOM file's stem
    (so name order and stem pairing both hold)."""
    return pattern.replace("*", stem(PurePosixPath(dicom).name), 1).replace("*", "") \
        .replace("?", "x")


def write_slice_masks(spec: SourceSpec, dest: Path, images: list[str]) -> list[str]:
    """Write the masks of the written DICOM images; returns their relative paths. Each
    mask holds one block per declared label, at the middle of the label's value range."""
    import pydicom
    from PIL import Image

    written: dict[str, None] = {}
    for rel in images:
        index = entry_of(spec, PurePosixPath(rel).parent.as_posix())
        if index is None or not rel.lower().endswith((".dcm", ".dicom")):
            continue
        entry = spec.layout.slice_masks[index]
        ds = pydicom.dcmread(dest / rel, stop_before_pixels=True)
        values = [(lo + hi) // 2 for lo, hi in entry.labels.values()]
        arr = np.zeros((int(ds.Rows), int(ds.Columns)),
                       np.uint16 if max(values) > 255 else np.uint8)
        block = arr.size // (len(values) + 1)
        for j, v in enumerate(values):
            arr.flat[(j + 1) * block:(j + 2) * block] = v
        folder = annotation_path(entry.folder, rel, spec.layout.case_regex).strip("/")
        target = f"{folder}/{mask_name(entry.files, rel)}"
        (dest / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(dest / target)
        written[target] = None
    return list(written)
