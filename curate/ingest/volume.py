"""NIfTI (and other SimpleITK-readable) volumes with optional label volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from curate.config import SourceSpec
from curate.errors import IngestError
from curate.ingest.base import CaseMeta, Unit, VolumeCase
from curate.ingest.files import Problem, annotation_path, list_images, patient_from_path


def plan_volumes(spec: SourceSpec, root: Path) -> tuple[list[Unit], list[Problem]]:
    units = []
    for rel in list_images(spec, root):
        files = [rel]
        extra = {}
        if spec.layout.masks:
            label = annotation_path(spec.layout.masks, rel, spec.layout.case_regex)
            if (root / label).is_file() and label != rel:
                files.append(label)
                extra["label"] = label
        units.append(Unit(spec.name, key=rel, files=files, extra=extra))
    return units, []


def _read(path: Path, pixel_type: int) -> sitk.Image:
    try:
        img = sitk.ReadImage(str(path), pixel_type)
    except RuntimeError as exc:
        raise IngestError(f"{path.name}: not readable as an image volume: {str(exc).strip()[:300]}") from exc
    if img.GetDimension() == 4:
        # declared rule for now: the first volume of a 4D series (time or channel)
        size = list(img.GetSize())
        img = sitk.Extract(img, size[:3] + [0], [0, 0, 0, 0])
    if img.GetDimension() == 2:
        img = sitk.JoinSeries(img)
    return img


def read_volume(spec: SourceSpec, root: Path, unit: Unit) -> list[VolumeCase]:
    image = _read(root / unit.files[0], sitk.sitkFloat32)
    label = None
    if "label" in unit.extra:
        label = _read(root / unit.extra["label"], sitk.sitkUInt16)
        if label.GetSize() != image.GetSize():
            raise IngestError(
                f"label volume size {label.GetSize()} differs from image size {image.GetSize()}"
            )
        if not np.allclose(label.GetDirection(), image.GetDirection(), atol=1e-3):
            raise IngestError("label volume orientation differs from the image's")
        label.CopyInformation(image)  # same grid; tolerate header rounding differences
    meta = CaseMeta(
        modality=spec.modality, anatomy=spec.anatomy,
        patient_id=patient_from_path(spec, unit.key), series_id=unit.key,
    )
    return [VolumeCase(image=image, label=label, meta=meta)]
