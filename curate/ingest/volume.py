"""NIfTI (and other SimpleITK-readable) volumes with optional label volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from curate.ingest.base import Unit, VolumeCase
from curate.ingest.files import (
    EmptyInput,
    NonFinite,
    OutsideRoot,
    Problem,
    check_file,
    check_pixels,
    file_meta,
    list_images,
    present_files,
    structure_label,
    unknown_labels_error,
)
from curate.model.errors import IngestError
from curate.model.recipe import SourceSpec


def plan_volumes(spec: SourceSpec, root: Path) -> tuple[list[Unit], list[Problem]]:
    from curate.ingest.annotations import add_classes, read_class_labels
    from curate.ingest.world_points import points_of, read_point_table

    units, problems = [], []
    points = read_point_table(spec, root) if spec.layout.points else {}
    classes = read_class_labels(spec, root)
    for rel in list_images(spec, root, problems):
        files = [rel]
        extra = {}
        if spec.layout.points:
            extra["points"] = points_of(spec, points, rel)  # [] is a volume without findings
        if not add_classes(spec, classes, rel, extra, problems):
            continue
        if spec.layout.masks:
            try:
                labels = present_files(spec, root, spec.layout.masks, rel)
            except OutsideRoot as exc:
                problems.append(Problem(exc.file, "plan", exc))
                continue
            if len(labels) == 1 and spec.layout.mask_label_from == "value":
                extra["label"] = labels[0]
            elif labels:
                extra["labels"] = labels  # one file per structure (or per lesion)
            files.extend(labels)
        units.append(Unit(spec.name, key=rel, files=files, extra=extra))
    return units, problems


def header_size(path: Path) -> tuple[int, ...] | None:
    """The array size a volume file declares, from its header alone (SimpleITK, else
    nibabel); None when neither can read the header (the read itself then reports it)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        return tuple(int(n) for n in reader.GetSize()) + (
            (reader.GetNumberOfComponents(),) if reader.GetNumberOfComponents() > 1 else ())
    except RuntimeError:
        pass
    try:
        import nibabel as nib

        return tuple(int(n) for n in nib.load(str(path)).shape)  # lazy: header only
    except Exception:  # noqa: BLE001 - not a volume nibabel knows either
        return None


def check_volume_header(spec: SourceSpec, path: Path, rel: str) -> None:
    """Refuse a volume over the voxel budget or degenerate, before reading its voxels."""
    size = header_size(path)
    if size is None:
        return
    check_pixels(int(np.prod(size, dtype=np.int64)), spec.layout.volume.max_voxels,
                 "volume", path.name, rel)
    degenerate(size[:3], rel)


def degenerate(size, rel: str) -> None:
    """A volume with an empty axis, or an in-plane axis shorter than 2 (1x1xN, Nx1xM)."""
    if any(n < 1 for n in size) or any(n < 2 for n in size[:2]):
        raise EmptyInput(f"{Path(rel).name}: degenerate volume of size {tuple(size)} "
                         "(an axis shorter than 2)", file=rel)


def _chunks(img: sitk.Image):
    arr = sitk.GetArrayViewFromImage(img)
    for z0 in range(0, arr.shape[0] if arr.ndim > 2 else 1, 16):
        yield arr[z0:z0 + 16] if arr.ndim > 2 else arr


def nifti_nonfinite(path: Path) -> int:
    """NaN/inf voxels stored in a float NIfTI file, counted from the file itself in slabs
    (ITK's NIfTI reader turns them into 0 without a word); 0 for other files."""
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return 0
    try:
        import nibabel as nib

        img = nib.load(str(path), keep_file_open=True)
        if img.get_data_dtype().kind not in "fc" or len(img.shape) < 3:
            return 0
        proxy, n = img.dataobj, img.shape[2]
        bad = 0
        for z0 in range(0, n, 16):  # slabs along k: contiguous on disk, read forwards
            slab = np.asarray(proxy[:, :, z0:z0 + 16])
            bad += int(slab.size - np.count_nonzero(np.isfinite(slab)))
        return bad
    except Exception:  # noqa: BLE001 - the read itself reports files nibabel cannot open
        return 0


def check_finite(spec: SourceSpec, img: sitk.Image, rel: str,
                 stored_bad: int = 0, total: int = 0) -> tuple[sitk.Image, str | None]:
    """A volume's NaN/inf voxels (those in memory, or `stored_bad` that the reader already
    zeroed): quarantine, or set to 0 with a note."""
    in_memory = 0
    if img.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        in_memory = sum(int(b.size - np.count_nonzero(np.isfinite(b))) for b in _chunks(img))
    bad = max(stored_bad, in_memory)
    if not bad:
        return img, None
    total = total or int(np.prod(img.GetSize()))
    if spec.layout.nonfinite != "zero":
        raise NonFinite(f"{Path(rel).name}: {bad:,} of {total:,} voxels are NaN or infinite; "
                        "set layout.nonfinite: zero to replace them with 0", file=rel)
    if not in_memory:  # the reader already set them to 0
        return img, f"{bad} non-finite voxels (NaN/inf) in {Path(rel).name} set to 0"
    fixed = sitk.GetImageFromArray(np.nan_to_num(sitk.GetArrayFromImage(img), nan=0.0,
                                                 posinf=0.0, neginf=0.0))
    fixed.CopyInformation(img)
    return fixed, f"{bad} non-finite voxels (NaN/inf) in {Path(rel).name} set to 0"


def check_labels(spec: SourceSpec, label: sitk.Image, rel: str) -> sitk.Image:
    """Label values absent from a non-empty label_map: quarantine, keep, or set to 0."""
    label_map = spec.layout.label_map
    if not label_map or spec.layout.unknown_labels == "keep":
        return label
    seen: set[int] = set()
    for block in _chunks(label):
        seen.update(int(v) for v in np.unique(block))
    unknown = sorted(v for v in seen if v != 0 and v not in label_map)
    if not unknown:
        return label
    if spec.layout.unknown_labels == "quarantine":
        raise unknown_labels_error(spec, unknown, rel)
    return sitk.ChangeLabel(label, {float(v): 0.0 for v in unknown})


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
    for rel in unit.files:
        check_file(spec, root, rel)
        check_volume_header(spec, root / rel, rel)
    path = root / unit.files[0]
    stored_bad = nifti_nonfinite(path)
    if stored_bad and spec.layout.nonfinite != "zero":  # before reading it a second time
        check_finite(spec, sitk.Image(1, 1, 1, sitk.sitkUInt8), unit.files[0], stored_bad,
                     int(np.prod(header_size(path) or (0,))))
    images = _read(path, stored_or(path, sitk.sitkFloat32), spec.layout.volume.four_d)
    notes: list[str] = []
    for t, img in enumerate(images):
        degenerate(img.GetSize(), unit.files[0])
        images[t], note = check_finite(spec, img, unit.files[0], stored_bad if t == 0 else 0)
        notes += [note] if note else []
    image = images[0]
    label, label_map = None, None
    if "labels" in unit.extra:
        label, label_map = _label_files(spec, root, unit.extra["labels"], image)
    if "label" in unit.extra:
        path = root / unit.extra["label"]
        label = _read(path, stored_or(path, sitk.sitkUInt16))[0]
        label = check_labels(spec, label, unit.extra["label"])
        if label.GetSize() != image.GetSize():
            raise IngestError(
                f"label volume size {label.GetSize()} differs from image size {image.GetSize()}"
            )
        if not np.allclose(label.GetDirection(), image.GetDirection(), atol=1e-3):
            raise IngestError("label volume orientation differs from the image's")
        label.CopyInformation(image)  # same grid; tolerate header rounding differences
    marks = []
    if unit.extra.get("points"):
        from curate.ingest.world_points import point_marks, sphere_labels

        try:
            if spec.layout.points.extent == "point":
                marks = point_marks(image, unit.extra["points"], spec.layout.points.outside,
                                    notes)
            else:
                label, label_map = sphere_labels(image, unit.extra["points"],
                                                 spec.layout.points.outside, notes)
        except IngestError as exc:
            exc.file = exc.file or spec.layout.points.file
            raise
    return [VolumeCase(image=img, label=label,
                       meta=file_meta(spec, unit.key, None if len(images) == 1 else
                                      f"{unit.key}#t{t}", notes=list(notes),
                                      label_map=label_map,
                                      image_labels=list(unit.extra.get("classes", []))),
                       points=list(marks))
            for t, img in enumerate(images)]


def _label_files(spec: SourceSpec, root: Path, files: list[str], image: sitk.Image
                 ) -> tuple[sitk.Image, dict[int, str] | None]:
    """Several label files on the image's grid, painted into one label volume, one file at
    a time: one structure per file (mask_label_from; value i+1 for the i-th name, sorted),
    or label values through label_map (a later file wins where two overlap)."""
    structures = spec.layout.mask_label_from != "value"
    names = sorted({structure_label(spec, f) for f in files}) if structures else []
    values = {n: i + 1 for i, n in enumerate(names)}
    out = np.zeros(sitk.GetArrayViewFromImage(image).shape,
                   np.uint8 if structures and len(names) < 256 else np.uint16)
    for f in files:
        one = _read(root / f, stored_or(root / f, sitk.sitkUInt16))[0]
        if one.GetSize() != image.GetSize():
            raise IngestError(f"label volume size {one.GetSize()} differs from image size "
                              f"{image.GetSize()}", file=f)
        if not structures:
            one = check_labels(spec, one, f)
        arr = sitk.GetArrayViewFromImage(one)
        if structures:
            out[arr > 0] = values[structure_label(spec, f)]
        else:
            out = np.where(arr > 0, arr, out).astype(out.dtype)
        del one, arr
    label = sitk.GetImageFromArray(out)
    label.CopyInformation(image)
    return label, ({v: n for n, v in values.items()} if structures else None)
