"""DICOM files and series.

Planning reads headers only and groups files into series by SeriesInstanceUID and
orientation; reading orders slices by their position along the slice normal (not
InstanceNumber) and builds a SimpleITK volume in LPS patient space.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.pixels import apply_modality_lut

from curate.config import SourceSpec, View
from curate.errors import IngestError
from curate.ingest.base import CaseMeta, ImageCase, Unit, VolumeCase
from curate.ingest.files import Problem, list_images

HEADER_TAGS = [
    "SeriesInstanceUID", "ImageOrientationPatient", "ImagePositionPatient", "Modality",
    "NumberOfFrames", "SOPClassUID",
]


def plan_dicom(spec: SourceSpec, root: Path) -> tuple[list[Unit], list[Problem]]:
    groups: dict[tuple, list[str]] = defaultdict(list)
    problems: list[Problem] = []
    for rel in list_images(spec, root):
        try:
            ds = pydicom.dcmread(root / rel, stop_before_pixels=True, specific_tags=HEADER_TAGS)
            uid = str(ds.SeriesInstanceUID)
        except Exception as exc:  # noqa: BLE001 - any unreadable header is a quarantine row
            problems.append(Problem(rel, "plan", exc))
            continue
        iop = tuple(round(float(v), 3) for v in ds.get("ImageOrientationPatient", []) or [])
        groups[(uid, iop)].append(rel)
    units = []
    for i, ((uid, iop), files) in enumerate(sorted(groups.items(), key=lambda kv: kv[1][0])):
        files = sorted(files)
        units.append(Unit(spec.name, key=files[0] if len(files) == 1 else f"series{i}",
                          files=files, extra={"series_uid": uid, "iop": list(iop)}))
    return units, problems


def _pixels(ds: pydicom.Dataset) -> np.ndarray:
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise IngestError("multi-frame DICOM is not read yet (planned: frames as slices)")
    arr = ds.pixel_array
    if arr.ndim == 2:
        # rescale in float: int16 arithmetic overflows with a -1024 intercept
        arr = apply_modality_lut(arr.astype(np.float32), ds).astype(np.float32)
    return arr


def _meta(ds: pydicom.Dataset, spec: SourceSpec) -> CaseMeta:
    return CaseMeta(
        modality=str(ds.get("Modality") or spec.modality or "") or None,
        anatomy=spec.anatomy or (str(ds.get("BodyPartExamined") or "").lower() or None),
        patient_id=str(ds.get("PatientID") or "") or None,
        series_id=str(ds.get("SeriesInstanceUID") or "") or None,
    )


def read_dicom(spec: SourceSpec, root: Path, unit: Unit) -> list[VolumeCase | ImageCase]:
    datasets = []
    for rel in unit.files:
        try:
            datasets.append(pydicom.dcmread(root / rel))
        except Exception as exc:  # noqa: BLE001
            raise IngestError(f"{rel}: not readable as DICOM: {exc}") from exc
    first = datasets[0]
    meta = _meta(first, spec)
    iop = first.get("ImageOrientationPatient")
    if iop is None or first.get("ImagePositionPatient") is None:
        return [_projection(ds, meta, spec) for ds in datasets]
    row = np.array([float(v) for v in iop[:3]])
    col = np.array([float(v) for v in iop[3:]])
    normal = np.cross(row, col)
    pos = [np.array([float(v) for v in ds.ImagePositionPatient]) for ds in datasets]
    order = np.argsort([float(p @ normal) for p in pos])
    slices = [_pixels(datasets[i]) for i in order]
    if any(s.ndim != 2 or s.shape != slices[0].shape for s in slices):
        raise IngestError("series mixes colour or differently sized slices")
    along = np.array([float(pos[i] @ normal) for i in order])
    if len(along) > 1:
        steps = np.diff(along)
        dz = float(np.median(steps))
        if dz <= 0:
            raise IngestError("series has slices at the same position")
        if np.max(np.abs(steps - dz)) > 0.1 * dz:
            meta.notes.append("uneven slice spacing; median spacing used")
    else:
        dz = float(first.get("SliceThickness") or 1.0)
    vol = sitk.GetImageFromArray(np.stack(slices))
    ps = [float(v) for v in first.PixelSpacing]
    vol.SetSpacing((ps[1], ps[0], dz))
    vol.SetOrigin(tuple(float(v) for v in pos[order[0]]))
    vol.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    return [VolumeCase(image=vol, label=None, meta=meta)]


def _projection(ds: pydicom.Dataset, meta: CaseMeta, spec: SourceSpec) -> ImageCase:
    """A projection image (CR/DX/MG...) or any image without patient geometry."""
    arr = _pixels(ds)
    inverted = False
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        arr = arr.max() - arr  # show bone bright
        inverted = True
    view = spec.layout.view or View.none
    po = list(ds.get("PatientOrientation") or [])
    if len(po) == 2 and str(ds.get("ViewPosition", "")).upper() in {"PA", "AP"}:
        # turn the image so the patient's left is on the image right, head at the top
        if str(po[0]).startswith("R"):
            arr = arr[:, ::-1]
        if str(po[1]).startswith("H"):
            arr = arr[::-1, :]
        view = View.frontal
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    return ImageCase(
        pixels=np.ascontiguousarray(arr), meta=meta, view=view,
        spacing=(float(spacing[0]), float(spacing[1])) if spacing else None,
        photometric_inverted=inverted,
    )
