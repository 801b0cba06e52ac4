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


def _read(path: Path, pixel_type: int, four_d: str = "first") -> list[sitk.Image]:
    """The volume(s) in a file; 4D files follow the source's declared rule."""
    try:
        img = sitk.ReadImage(str(path), pixel_type)
    except RuntimeError as exc:
        raise IngestError(f"{path.name}: not readable as an image volume: {str(exc).strip()[:300]}") from exc
    if img.GetDimension() == 4:
        size = list(img.GetSize())
        vols = [sitk.Extract(img, size[:3] + [0], [0, 0, 0, t]) for t in range(size[3])]
        if four_d == "first":
            return vols[:1]
        if four_d == "mean":
            mean = sitk.GetImageFromArray(np.mean([sitk.GetArrayFromImage(v) for v in vols], 0)
                                          .astype(np.float32))
            mean.CopyInformation(vols[0])
            return [sitk.Cast(mean, pixel_type)]
        return vols
    if img.GetDimension() == 2:
        img = sitk.JoinSeries(img)
    return [img]


def read_volume(spec: SourceSpec, root: Path, unit: Unit) -> list[VolumeCase]:
    images = _read(root / unit.files[0], sitk.sitkFloat32, spec.layout.volume.four_d)
    image = images[0]
    label = None
    if "label" in unit.extra:
        label = _read(root / unit.extra["label"], sitk.sitkUInt16)[0]
        if label.GetSize() != image.GetSize():
            raise IngestError(
                f"label volume size {label.GetSize()} differs from image size {image.GetSize()}"
            )
        if not np.allclose(label.GetDirection(), image.GetDirection(), atol=1e-3):
            raise IngestError("label volume orientation differs from the image's")
        label.CopyInformation(image)  # same grid; tolerate header rounding differences
    def meta(t: int) -> CaseMeta:
        return CaseMeta(modality=spec.modality, anatomy=spec.anatomy,
                        patient_id=patient_from_path(spec, unit.key),
                        series_id=unit.key if len(images) == 1 else f"{unit.key}#t{t}")

    return [VolumeCase(image=img, label=label, meta=meta(t)) for t, img in enumerate(images)]
