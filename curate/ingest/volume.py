"""NIfTI (and other SimpleITK-readable) volumes with optional label volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from curate.ingest.base import Unit, VolumeCase
from curate.ingest.files import Problem, annotation_path, file_meta, list_images
from curate.model.errors import IngestError
from curate.model.recipe import SourceSpec


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


def _sitk_reason(exc: Exception) -> str:
    """The line of a SimpleITK/ITK exception that says what went wrong (not the C++ path)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception thrown", "/"))
              and "sitk::ERROR" not in ln[:12]]
    return (useful[-1] if useful else lines[-1] if lines else type(exc).__name__)[:300]


def from_nibabel(path: Path) -> list[sitk.Image]:
    """Formats SimpleITK does not read (NIfTI-2, MGH/MGZ, MINC, some Analyze) via nibabel,
    with the RAS affine turned into SimpleITK's LPS geometry; one image per volume."""
    import nibabel as nib

    img = nib.load(str(path))
    if not isinstance(img, nib.spatialimages.SpatialImage) or len(img.shape) not in (3, 4):
        raise IngestError(f"{type(img).__name__} with shape {img.shape} is not an image volume")
    data = np.asanyarray(img.dataobj).astype(np.float32)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine  # RAS -> LPS
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing == 0):
        raise IngestError("the affine has a zero-length axis")
    vols = [data] if data.ndim == 3 else [data[..., t] for t in range(data.shape[3])]
    out = []
    for vol in vols:
        im = sitk.GetImageFromArray(np.ascontiguousarray(vol.transpose(2, 1, 0)))  # (k, j, i)
        im.SetSpacing(tuple(float(v) for v in spacing))
        im.SetOrigin(tuple(float(v) for v in affine[:3, 3]))
        im.SetDirection(tuple((affine[:3, :3] / spacing).ravel()))
        out.append(im)
    return out


def _read(path: Path, pixel_type: int, four_d: str = "first") -> list[sitk.Image]:
    """The volume(s) in a file; 4D files follow the source's declared rule."""
    try:
        img = sitk.ReadImage(str(path), pixel_type)
        if img.GetDimension() == 4:
            size = list(img.GetSize())
            vols = [sitk.Extract(img, size[:3] + [0], [0, 0, 0, t]) for t in range(size[3])]
        else:
            vols = [sitk.JoinSeries(img) if img.GetDimension() == 2 else img]
    except RuntimeError as exc:
        try:
            vols = [sitk.Cast(v, pixel_type) for v in from_nibabel(path)]
        except IngestError as why:
            raise IngestError(str(why), file=path.name) from exc
        except Exception:  # noqa: BLE001 - neither reader: report SimpleITK's reason
            raise IngestError(f"not readable as an image volume: {_sitk_reason(exc)}",
                              file=path.name) from exc
    if len(vols) == 1 or four_d == "split":
        return vols
    if four_d == "first":
        return vols[:1]
    mean = sitk.GetImageFromArray(np.mean([sitk.GetArrayFromImage(v) for v in vols], 0)
                                  .astype(np.float32))
    mean.CopyInformation(vols[0])
    return [sitk.Cast(mean, pixel_type)]


# stored pixel types whose every value the wanted type holds exactly: read as stored, so a
# 16-bit CT stays 2 bytes a voxel in memory (normalize converts only the slices it ships)
EXACT_IN = {
    sitk.sitkFloat32: {sitk.sitkInt8, sitk.sitkUInt8, sitk.sitkInt16, sitk.sitkUInt16,
                       sitk.sitkFloat32},
    sitk.sitkUInt16: {sitk.sitkUInt8, sitk.sitkUInt16},
}


def stored_or(path: Path, wanted: int) -> int:
    """The file's own scalar pixel type where it holds the same values as `wanted` (3D or
    2D files; a 4D one is combined in `wanted`), else `wanted`."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return wanted  # _read reports it, or reads it through nibabel
    if reader.GetDimension() in (2, 3) and reader.GetNumberOfComponents() == 1 \
            and reader.GetPixelID() in EXACT_IN[wanted]:
        return reader.GetPixelID()
    return wanted


def read_volume(spec: SourceSpec, root: Path, unit: Unit) -> list[VolumeCase]:
    path = root / unit.files[0]
    images = _read(path, stored_or(path, sitk.sitkFloat32), spec.layout.volume.four_d)
    image = images[0]
    label = None
    if "label" in unit.extra:
        path = root / unit.extra["label"]
        label = _read(path, stored_or(path, sitk.sitkUInt16))[0]
        if label.GetSize() != image.GetSize():
            raise IngestError(
                f"label volume size {label.GetSize()} differs from image size {image.GetSize()}"
            )
        if not np.allclose(label.GetDirection(), image.GetDirection(), atol=1e-3):
            raise IngestError("label volume orientation differs from the image's")
        label.CopyInformation(image)  # same grid; tolerate header rounding differences
    return [VolumeCase(image=img, label=label,
                       meta=file_meta(spec, unit.key, None if len(images) == 1 else
                                      f"{unit.key}#t{t}"))
            for t, img in enumerate(images)]
