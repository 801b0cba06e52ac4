"""Containers that adapters produce and the work unit they read."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from curate.model.recipe import View


@dataclass
class Unit:
    """One case of one source: the smallest piece of work that commits on its own."""

    source: str
    key: str  # the case's name inside the source (relative path or series identity)
    files: list[str]  # paths relative to the source root
    extra: dict[str, Any] = field(default_factory=dict)  # adapter data (boxes, series info)
    unit_id: str = ""

    def stamp(self, root: Path, config_fingerprint: str) -> Unit:
        """Set unit_id from the inputs' identity (relative path, size, content
        fingerprint) and the config; never from modification times, so a copy of the
        data tree, with or without times, gives the same ids and the same dataset."""
        h = hashlib.sha256()
        h.update(f"{self.source}\0{self.key}\0{config_fingerprint}\0".encode())
        for rel in sorted(self.files):
            try:
                h.update(f"{rel}\0{content_fingerprint(root / rel)}\0".encode())
            except OSError:
                h.update(f"{rel}\0missing\0".encode())
        h.update(json.dumps(self.extra, sort_keys=True, default=str).encode())
        self.unit_id = h.hexdigest()[:24]
        return self


FINGERPRINT_BYTES = 16 * 1024


def content_fingerprint(path: Path) -> str:
    """Size and sha256 of a file's first and last 16 KiB (the whole file when smaller):
    two small reads per file at plan time instead of every byte of 25M files. An edit
    that keeps the size and touches neither end goes unseen; delete the unit's part to
    redo it."""
    size = os.stat(path).st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(FINGERPRINT_BYTES))
        if size > 2 * FINGERPRINT_BYTES:
            f.seek(size - FINGERPRINT_BYTES)
        h.update(f.read(FINGERPRINT_BYTES))
    return f"{size}:{h.hexdigest()[:32]}"


@dataclass
class CaseMeta:
    """What an adapter learned about a case; raw identifiers never leave the unit."""

    modality: str | None = None
    anatomy: str | None = None
    patient_id: str | None = None  # raw; hashed before anything is written
    series_id: str | None = None  # raw; hashed before anything is written
    notes: list[str] = field(default_factory=list)
    label_map: dict[int, str] | None = None  # from the data itself (SEG/RTSTRUCT names)
    # each mask value is one finding, whatever its pieces (an abnormality's own mask,
    # CBIS-DDSM): one ROI per value instead of one per connected component
    roi_per_value: bool = False
    image_labels: list[str] = field(default_factory=list)  # image-level class labels
    # labels of the patient from the source's records (a cohort's diagnosis): not findings
    patient_labels: list[str] = field(default_factory=list)
    source_qa: list[dict] = field(default_factory=list)  # QA written by the dataset's authors
    # files of the unit this case could not use, each with the error: a quarantine row each
    skipped: list[tuple[str, Exception]] = field(default_factory=list)


@dataclass
class VolumeCase:
    """A 3D image (any orientation) with an optional label volume on the same grid."""

    image: sitk.Image
    label: sitk.Image | None
    meta: CaseMeta
    # findings without extent: {label, zone, index: continuous (x, y, z) index in image}
    points: list[dict] = field(default_factory=list)


@dataclass
class Box:
    label: str
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass
class ImageCase:
    """A 2D image (H, W) or (H, W, 3) with optional mask and boxes in its pixel grid."""

    pixels: np.ndarray
    meta: CaseMeta
    view: View = View.none
    spacing: tuple[float, float] | None = None  # (row, col) mm
    mask: np.ndarray | None = None
    boxes: list[Box] = field(default_factory=list)
    photometric_inverted: bool = False  # MONOCHROME1 already inverted for display
    index: int = -1  # frame number for multi-frame files
    window: dict | None = None  # set when the adapter already mapped pixels to uint8
    hu: bool = False  # pixels are CT Hounsfield units: windowed like a CT slice
