"""DICOM files and series, with their SEG and RTSTRUCT annotations.

Planning reads headers only: image files are grouped into series by SeriesInstanceUID
and orientation; SEG/RTSTRUCT objects are attached to the series they reference; other
objects (SR, RT plans, waveforms) become quarantine rows saying they hold no image.
Reading orders slices by their position along the slice normal (not InstanceNumber),
rescales to modality units in float, builds a SimpleITK volume in patient space, and
scrubs every dataset with the PS3.15 basic profile once the few needed values are taken.
Compressed transfer syntaxes decode through the pylibjpeg plugins.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from curate.ingest.base import CaseMeta, ImageCase, Unit, VolumeCase
from curate.ingest.dicom_annot import referenced_series, rtstruct_labels, seg_labels
from curate.ingest.dicom_io import dcmread, pixel_array
from curate.ingest.files import (
    OutsideRoot,
    Problem,
    check_pixels,
    list_images,
    nonfinite_fix,
    patient_from_path,
    present_files,
    read_volume_file,
)
from curate.model.errors import IngestError
from curate.model.recipe import SourceSpec, View, VolumeRules
from curate.unit.deid import scrub

HEADER_TAGS = [
    "SeriesInstanceUID", "ImageOrientationPatient", "Modality", "Rows", "SOPClassUID",
    "ReferencedSeriesSequence", "ReferencedFrameOfReferenceSequence",
    # instances of one series at the same positions but another echo or time point are
    # separate stacks (multi-echo MR, dynamic series)
    "EchoNumbers", "TemporalPositionIdentifier",
]


class NotAnImage(IngestError):
    """A DICOM object without pixel data (SR, RT plan, waveform, ...)."""


class BurnedInAnnotation(IngestError):
    """BurnedInAnnotation is YES: text in the pixels may identify the patient."""


def plan_dicom(spec: SourceSpec, root: Path) -> tuple[list[Unit], list[Problem]]:
    groups: dict[tuple, list[str]] = defaultdict(list)
    annotations: dict[str, list[str]] = defaultdict(list)
    problems: list[Problem] = []
    listed = list_images(spec, root, problems)
    refused = [p.file for p in problems]  # matched by the globs but not usable (empty, ...)
    for rel in listed:
        try:
            ds = dcmread(root / rel, stop_before_pixels=True, specific_tags=HEADER_TAGS)
            modality = str(ds.get("Modality", ""))
            if modality in ("SEG", "RTSTRUCT"):
                annotations[referenced_series(ds) or ""].append(rel)
                continue
            if "Rows" not in ds:
                raise NotAnImage(f"{modality or 'this'} object holds no image; skipped")
            # no series UID (secondary captures), or declared so: the file is its own case
            uid = str(ds.get("SeriesInstanceUID") or f"file:{rel}") \
                if not spec.layout.dicom_per_file else f"file:{rel}"
            iop = tuple(round(float(v), 3) for v in ds.get("ImageOrientationPatient", []) or [])
            stack = (str(ds.get("EchoNumbers", "")), str(ds.get("TemporalPositionIdentifier", "")))
        except Exception as exc:  # noqa: BLE001 - any unreadable header is a quarantine row
            problems.append(Problem(rel, "plan", exc))
            continue
        groups[(uid, iop, stack)].append(rel)
    units = []
    biggest: dict[str, Unit] = {}
    for i, ((uid, iop, _), files) in enumerate(sorted(groups.items(), key=lambda kv: kv[1][0])):
        files = sorted(files)
        unit = Unit(spec.name, key=files[0] if len(files) == 1 else f"series{i}:{files[0]}",
                    files=files, extra={"iop": list(iop)})
        units.append(unit)
        if uid not in biggest or len(files) > len(biggest[uid].files):
            biggest[uid] = unit
    if spec.layout.roi_folders:  # ROI mask/crop folders beside an image's (CBIS-DDSM)
        from curate.ingest.dicom_roi_files import attach_roi_folders

        units = attach_roi_folders(spec, root, units, problems)
    if spec.layout.masks:  # label files (NIfTI, images) beside a DICOM series
        for unit in units:
            if "iop" not in unit.extra or len(unit.files) < 1:
                continue
            try:
                masks = present_files(spec, root, spec.layout.masks, unit.files[0], unit.files)
            except OutsideRoot as exc:
                problems.append(Problem(exc.file, "plan", exc))
                continue
            if masks:
                unit.extra["label_files"] = masks
                unit.files = unit.files + masks
    if spec.layout.segmentations:  # Slicer label files of one series by role (Duke)
        from curate.ingest.slicer_seg import plan_segmentations

        problems += plan_segmentations(spec, root, units)
    if spec.layout.readings:  # readers' XML outlines beside a series (LIDC-IDRI)
        for unit in units:
            try:
                xml = present_files(spec, root, spec.layout.readings.file, unit.files[0],
                                    unit.files)
            except OutsideRoot as exc:
                problems.append(Problem(exc.file, "plan", exc))
                continue
            if xml and "iop" in unit.extra:
                unit.extra["readings"] = xml
                unit.files = unit.files + xml
    if spec.layout.mdai:  # an MD.ai export: outlines by series, labels by exam
        from curate.ingest.annotations import header_key
        from curate.ingest.mdai import read_mdai

        outlines, exams = read_mdai(spec, root)
        for unit in units:
            try:
                series = header_key(root / unit.files[0], "SeriesInstanceUID", unit.files[0])
                study = header_key(root / unit.files[0], "StudyInstanceUID", unit.files[0])
            except IngestError:
                continue  # no UIDs, nothing the export can name
            if outlines.get(series) and "iop" in unit.extra:
                unit.extra["mdai"] = outlines[series]
            if exams.get(study):
                unit.extra["exam_labels"] = exams[study]
    if spec.layout.points:  # world-coordinate findings keyed from the first file
        from curate.ingest.world_points import points_of, read_point_table

        point_table = read_point_table(spec, root)
        for unit in units:
            found = points_of(spec, point_table, unit.files[0])
            if found and "iop" in unit.extra:
                unit.extra["points"] = found
    if spec.layout.classes is not None:  # image-level labels keyed from the first file
        from curate.ingest.annotations import add_classes, read_class_labels

        table = read_class_labels(spec, root)
        units = [u for u in units
                 if add_classes(spec, table, u.files[0], u.extra, problems, root)]
    for uid, files in annotations.items():
        if uid in biggest:
            biggest[uid].extra["annotations"] = sorted(files)
            biggest[uid].files = biggest[uid].files + sorted(files)
        else:
            problems += [Problem(f, "plan", IngestError(
                "annotation references a series that is not under the source root")) for f in files]
    if spec.layout.slice_masks:  # per-slice mask images beside a series (CHAOS)
        from curate.ingest.slice_masks import plan_slice_masks

        units = plan_slice_masks(spec, root, units, problems, listed + refused)
    return units, problems


def _meta(ds: pydicom.Dataset, spec: SourceSpec, rel: str) -> CaseMeta:
    return CaseMeta(
        modality=str(ds.get("Modality") or spec.modality or "") or None,
        anatomy=spec.anatomy or (str(ds.get("BodyPartExamined") or "").lower() or None),
        patient_id=patient_from_path(spec, rel) or str(ds.get("PatientID") or "") or None,
        series_id=str(ds.get("SeriesInstanceUID") or "") or None,
        patient_labels=spec.patient_labels(),
    )


def _frames(ds: pydicom.Dataset) -> np.ndarray:
    """Pixels as (frames, rows, cols[, 3]): grey in modality units (float), colour as RGB."""
    arr = pixel_array(ds)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        if arr.dtype != np.uint8:
            arr = (arr / 257).round().astype(np.uint8)
    elif int(ds.get("SamplesPerPixel", 1)) == 1:
        # rescale in float: int16 arithmetic overflows with a -1024 intercept
        arr = apply_modality_lut(arr.astype(np.float32), ds).astype(np.float32)
    elif arr.dtype != np.uint8:  # 16-bit RGB: keep the top byte's worth of range
        arr = (arr.astype(np.float32) * (255.0 / max(1.0, float(arr.max())))).round().astype(np.uint8)
    return arr if n > 1 else arr[None]


def check_dicom_size(spec: SourceSpec, datasets: list[pydicom.Dataset]) -> None:
    """The pixel budgets, from the headers before any pixel data is decoded: each frame
    against layout.max_image_pixels, the whole series against layout.volume.max_voxels."""
    total, multi = 0, len(datasets) > 1
    for ds in datasets:
        rel = getattr(ds, "curate_rel", None)
        name = Path(rel).name if rel else "DICOM"
        frame = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
        if "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            check_pixels(frame, spec.layout.max_image_pixels, "image", name, rel)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        total += frame * frames
        multi = multi or frames > 1
    if multi:
        check_pixels(total, spec.layout.volume.max_voxels, "volume",
                     f"series of {len(datasets)} file(s)", getattr(datasets[0], "curate_rel", None))


def read_dicom(spec: SourceSpec, root: Path, unit: Unit) -> list[VolumeCase | ImageCase]:
    annotation_objects = set(unit.extra.get("annotations", []))
    label_files = unit.extra.get("label_files", [])
    readings = unit.extra.get("readings", [])
    slicer_files = [rel for rel, _ in unit.extra.get("segmentations", [])]
    slice_mask_files = {mask for _, mask, _ in unit.extra.get("slice_masks", [])}
    datasets, annots = [], []
    roi_files = set()
    if unit.extra.get("roi_folders"):  # masks and crops: read below, never as images
        from curate.ingest.dicom_roi_files import consumed_files

        roi_files = consumed_files(unit)
    not_images = set(label_files) | set(readings) | roi_files | set(slicer_files) | \
        slice_mask_files  # annotation files of the unit, read by their own readers below
    for rel in unit.files:
        if rel in not_images:
            continue
        try:
            ds = dcmread(root / rel)
        except Exception as exc:  # noqa: BLE001
            raise IngestError(f"not readable as DICOM: {exc}", file=rel) from exc
        ds.curate_rel = rel  # which file a later decoding error belongs to
        (annots if rel in annotation_objects else datasets).append(ds)
    first = datasets[0]
    check_dicom_size(spec, datasets)
    meta = _meta(first, spec, unit.key)
    if str(first.get("BurnedInAnnotation", "")).upper() == "YES" and not spec.allow_burned_in:
        raise BurnedInAnnotation("BurnedInAnnotation is YES; set allow_burned_in on the "
                                 "source to include such images")
    if readings or unit.extra.get("mdai"):  # outlines name slices by UIDs scrub replaces
        from curate.ingest.lidc import slice_geometry

        series_uid = str(first.get("SeriesInstanceUID", ""))
        geometry = {str(ds.SOPInstanceUID): slice_geometry(ds) for ds in datasets
                    if "ImagePositionPatient" in ds and "PixelSpacing" in ds}
    for ds in datasets + annots:
        scrub(ds)
    shared = first.get("SharedFunctionalGroupsSequence")
    if len(datasets) == 1 and "PerFrameFunctionalGroupsSequence" in first and shared and \
            "PlaneOrientationSequence" in shared[0]:
        cases = [_enhanced_volume(first, meta, spec.layout.volume)]
    elif len(datasets) == 1 and int(first.get("NumberOfFrames", 1) or 1) > 1:
        cases = _frame_images(first, meta, spec)
    elif first.get("ImageOrientationPatient") is None or first.get("ImagePositionPatient") is None:
        cases = _projections(datasets, meta, spec)
    else:
        cases = _volumes(datasets, annots, meta, spec.layout.volume)
    cases = [_finite_volume(spec, c, unit.files[0]) if isinstance(c, VolumeCase) else c
             for c in cases]
    if label_files:
        for case in cases:
            if isinstance(case, VolumeCase):
                _attach_label_files(spec, root, case, label_files)
    if unit.extra.get("mdai"):
        from curate.ingest.mdai import attach_mdai

        for case in cases:
            if isinstance(case, VolumeCase):
                attach_mdai(case, unit.extra["mdai"], geometry, spec.layout.mdai.file)
    if unit.extra.get("points") and spec.layout.points.extent == "point":
        from curate.ingest.world_points import point_marks

        for case in cases:
            if isinstance(case, VolumeCase):
                case.points = point_marks(case.image, unit.extra["points"],
                                          spec.layout.points.outside, case.meta.notes)
    elif unit.extra.get("points"):
        from curate.ingest.world_points import sphere_labels

        for case in cases:
            if isinstance(case, VolumeCase):
                case.label, case.meta.label_map = sphere_labels(
                    case.image, unit.extra["points"], spec.layout.points.outside,
                    case.meta.notes)
    if readings:
        from curate.ingest.lidc import attach_readings

        for case in cases:
            if isinstance(case, VolumeCase):
                attach_readings(spec, root, case, readings, series_uid, geometry)
    if slicer_files:  # 3D Slicer files of the series a role table names (Duke)
        from curate.ingest.slicer_seg import attach_segmentations

        for case in cases:
            if isinstance(case, VolumeCase):
                attach_segmentations(spec, root, case, unit.extra["segmentations"])
    if roi_files:
        from curate.ingest.dicom_roi_files import attach_roi_masks

        attach_roi_masks(spec, root, unit, cases)
    if slice_mask_files:  # each mask on its own DICOM file's slice (CHAOS)
        from curate.ingest.slice_masks import attach_slice_masks

        attach_slice_masks(spec, root, cases, unit.extra["slice_masks"], datasets)
    for case in cases:
        case.meta.image_labels = list(unit.extra.get("classes", [])) + \
            list(unit.extra.get("exam_labels", []))
    return cases


def _attach_label_files(spec: SourceSpec, root: Path, case: VolumeCase, files: list[str]) -> None:
    """Label volumes from other files (TCIA's NIfTI labels of a DICOM series) resampled
    onto the series' grid by their physical geometry (nearest neighbour, so whatever their
    orientation); values through label_map, or one structure per file (mask_label_from)."""
    from curate.ingest.files import structure_label
    from curate.ingest.volume import check_labels

    structures = spec.layout.mask_label_from != "value"
    names = sorted({structure_label(spec, f) for f in files}) if structures else []
    out = np.zeros(sitk.GetArrayViewFromImage(case.image).shape, np.uint16)
    for f in files:
        label = read_volume_file(root, f)
        on_grid = sitk.Resample(sitk.Cast(label, sitk.sitkUInt16), case.image,
                                sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
        if not structures:
            on_grid = check_labels(spec, on_grid, f)
        arr = sitk.GetArrayViewFromImage(on_grid)
        if not arr.any() and sitk.GetArrayViewFromImage(label).any():
            raise IngestError("label volume does not overlap the series in patient space "
                              "(another series' label?)", file=f)
        if structures:
            out[arr > 0] = names.index(structure_label(spec, f)) + 1
        else:
            out = np.where(arr > 0, arr, out).astype(np.uint16)
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(case.image)
    case.label = result
    if structures:
        case.meta.label_map = {i + 1: n for i, n in enumerate(names)}


def _finite_volume(spec: SourceSpec, case: VolumeCase, rel: str) -> VolumeCase:
    """NaN/inf voxels (float pixel data, a rescale that overflows): a quarantine row, or
    set to 0 with a note when the source declares layout.nonfinite: zero."""
    from curate.ingest.volume import check_finite  # volume imports nothing of dicom

    case.image, note = check_finite(spec, case.image, rel)
    if note:
        case.meta.notes.append(note)
    return case


def _projections(datasets: list, meta: CaseMeta, spec: SourceSpec) -> list[ImageCase]:
    """Images without patient geometry that share a series: each file on its own, so one
    that does not decode loses only itself (named in the quarantine)."""
    many = len(datasets) > 1
    out, failed = [], []
    for i, ds in enumerate(datasets):
        try:
            out.append(_projection(ds, meta, spec, index=i if many else -1))
        except IngestError as exc:
            if not many:
                raise
            failed.append((ds.curate_rel, exc))
    if not out:
        raise failed[0][1]
    meta.skipped.extend(failed)
    return out


def even_grid(stack: np.ndarray, along: np.ndarray, dz: float) -> np.ndarray:
    """Linear interpolation of slices at positions `along` onto steps of dz from along[0]."""
    n = int(round((along[-1] - along[0]) / dz)) + 1
    targets = along[0] + dz * np.arange(n)
    j = np.clip(np.searchsorted(along, targets, side="right") - 1, 0, len(along) - 2)
    w = ((targets - along[j]) / (along[j + 1] - along[j])).astype(np.float32)[:, None, None]
    return (1 - w) * stack[j] + w * stack[j + 1]


def first_per_position(positions: list[np.ndarray], normal: np.ndarray, rules: VolumeRules,
                       meta: CaseMeta) -> list[int]:
    """Indices to keep: the first instance at each position along the normal (by the
    source's rule), so duplicates are dropped before their pixels are decoded."""
    seen: list[float] = []
    keep = []
    for i, p in enumerate(positions):
        z = float(p @ normal)
        if any(abs(z - s) <= 1e-3 for s in seen):
            continue
        seen.append(z)
        keep.append(i)
    if len(keep) < len(positions):
        if rules.duplicate_positions == "reject":
            raise IngestError("series has several slices at the same position; rejected by "
                              "the source's rule (volume.duplicate_positions)")
        meta.notes.append(f"{len(positions) - len(keep)} duplicate slice(s) at the same "
                          "position ignored (the first file of each position kept)")
    return keep


def _assemble(slices: list[np.ndarray], positions: list[np.ndarray], iop, spacing_rc,
              meta: CaseMeta, rules: VolumeRules | None = None) -> tuple[sitk.Image, np.ndarray]:
    """A volume from slices at distinct positions (callers drop duplicates first)."""
    rules = rules or VolumeRules()
    row = np.array([float(v) for v in iop[:3]])
    col = np.array([float(v) for v in iop[3:]])
    normal = np.cross(row, col)
    along = np.array([float(p @ normal) for p in positions])
    order = np.argsort(along, kind="stable")
    along = along[order]
    if len(along) > 1:
        steps = np.diff(along)
        dz = float(np.median(steps))
        uneven = np.max(np.abs(steps - dz)) > 0.1 * dz
        # gantry tilt: slice origins drift off the normal through the first one
        drift = positions[order[-1]] - positions[order[0]]
        if np.linalg.norm(np.cross(drift / np.linalg.norm(drift), normal)) > 0.01:
            if rules.gantry_tilt == "reject":
                raise IngestError("gantry tilt: rejected by the source's rule (volume.gantry_tilt)")
            meta.notes.append("gantry tilt; slices kept on their own planes (not resampled)")
    else:
        dz, uneven = 1.0, False
    stack = np.stack([slices[i] for i in order]).astype(np.float32)
    if uneven:
        if rules.uneven_spacing == "reject":
            raise IngestError("uneven slice spacing: rejected by the source's rule "
                              "(volume.uneven_spacing)")
        if rules.uneven_spacing == "resample":
            stack = even_grid(stack, along, dz)
            meta.notes.append(f"uneven slice spacing; resampled to an even {dz:.3g} mm grid")
        else:
            meta.notes.append("uneven slice spacing; median spacing used")
    vol = sitk.GetImageFromArray(stack)
    vol.SetSpacing((float(spacing_rc[1]), float(spacing_rc[0]), dz))
    vol.SetOrigin(tuple(float(v) for v in positions[order[0]]))
    vol.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    return vol, order


def gap_runs(along: np.ndarray, rules: VolumeRules) -> list[slice]:
    """Runs of sorted slice positions with no step over rules.max_gap x the median step."""
    if len(along) < 3:
        return [slice(0, len(along))]
    steps = np.diff(along)
    dz = float(np.median(steps))
    cuts = [i + 1 for i, step in enumerate(steps) if step > rules.max_gap * dz]
    bounds = [0, *cuts, len(along)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def _volumes(datasets: list, annots: list, meta: CaseMeta, rules: VolumeRules
             ) -> list[VolumeCase]:
    """The series as one volume, or one per run of slices between gaps (rules.gaps); a
    slice that does not decode loses only itself (named in the quarantine)."""
    first = datasets[0]
    iop = [float(v) for v in first.ImageOrientationPatient]
    normal = np.cross(iop[:3], iop[3:])
    positions = [np.array([float(v) for v in ds.ImagePositionPatient]) for ds in datasets]
    keep = first_per_position(positions, normal, rules, meta)
    datasets, positions = [datasets[i] for i in keep], [positions[i] for i in keep]
    slices, good, failed = [], [], []
    for i, ds in enumerate(datasets):
        try:
            slices.append(_frames(ds)[0])
            good.append(i)
        except IngestError as exc:
            failed.append((ds.curate_rel, exc))
    if not good:
        raise failed[0][1]
    if failed:
        meta.skipped.extend(failed)
        meta.notes.append(f"{len(failed)} slice file(s) did not decode and were left out")
    datasets, positions = [datasets[i] for i in good], [positions[i] for i in good]
    if any(s.ndim != 2 or s.shape != slices[0].shape for s in slices):
        raise IngestError("series mixes colour or differently sized slices")
    order = np.argsort([float(p @ normal) for p in positions], kind="stable")
    along = np.array([float(positions[i] @ normal) for i in order])
    runs = gap_runs(along, rules)
    if len(runs) > 1:
        if rules.gaps == "reject":
            raise IngestError(f"series has {len(runs) - 1} gap(s) between slices (over "
                              f"{rules.max_gap:g} x the median step); rejected by the "
                              "source's rule (volume.gaps)")
        meta.notes.append(f"{len(runs) - 1} gap(s) between slices; split into {len(runs)} "
                          "sub-volumes, nothing interpolated across a gap")
    out = []
    for run in runs:
        idx = [int(i) for i in order[run]]
        sub = replace(meta, notes=list(meta.notes)) if len(runs) > 1 else meta
        out.append(_volume([datasets[i] for i in idx], [slices[i] for i in idx],
                           [positions[i] for i in idx], annots, sub, rules))
    return out


def _volume(datasets: list, slices: list, positions: list, annots: list, meta: CaseMeta,
            rules: VolumeRules) -> VolumeCase:
    first = datasets[0]
    vol, _ = _assemble(slices, positions, first.ImageOrientationPatient, first.PixelSpacing, meta,
                       rules)
    if len(datasets) == 1:
        vol.SetSpacing(vol.GetSpacing()[:2] + (float(first.get("SliceThickness") or 1.0),))
    label = None
    if annots:
        labels = np.zeros(sitk.GetArrayViewFromImage(vol).shape, np.uint16)
        label_map: dict[int, str] = {}
        for n, ds in enumerate(annots):
            paint = seg_labels if ds.Modality == "SEG" else rtstruct_labels
            paint(ds, vol, labels, label_map, offset=100 * n)
        label = sitk.GetImageFromArray(labels)
        label.CopyInformation(vol)
        meta.label_map = label_map
    return VolumeCase(image=vol, label=label, meta=meta)


def _enhanced_volume(ds: pydicom.Dataset, meta: CaseMeta, rules: VolumeRules) -> VolumeCase:
    """Enhanced CT/MR: one file, per-frame positions, shared orientation and spacing."""
    shared = ds.SharedFunctionalGroupsSequence[0]
    per = ds.PerFrameFunctionalGroupsSequence
    raw = pixel_array(ds).astype(np.float32)
    raw = raw if raw.ndim == 3 else raw[None]
    frames = []
    for frame, group in zip(raw, per, strict=True):
        # enhanced objects keep the rescale in the functional groups, per frame or shared
        where = next((g for g in (group, shared) if "PixelValueTransformationSequence" in g),
                     None)
        t = where.PixelValueTransformationSequence[0] if where is not None else ds
        frames.append(frame * float(t.get("RescaleSlope", 1) or 1)
                      + float(t.get("RescaleIntercept", 0) or 0))
    positions = [np.array([float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient])
                 for f in per]
    iop = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    spacing = shared.PixelMeasuresSequence[0].PixelSpacing
    keep = first_per_position(positions, np.cross([float(v) for v in iop[:3]],
                                                  [float(v) for v in iop[3:]]),
                              rules, meta)
    vol, _ = _assemble([frames[i] for i in keep], [positions[i] for i in keep], iop, spacing,
                       meta, rules)
    return VolumeCase(image=vol, label=None, meta=meta)


def _frame_images(ds: pydicom.Dataset, meta: CaseMeta, spec: SourceSpec) -> list[ImageCase]:
    """Cine/multi-frame without patient geometry: up to layout.max_frames, evenly spaced."""
    frames = _frames(ds)
    picks = np.unique(np.linspace(0, len(frames) - 1, min(spec.layout.max_frames, len(frames)))
                      .round().astype(int))
    return [_projection(ds, meta, spec, frames[i], index=int(i)) for i in picks]


def _projection(ds: pydicom.Dataset, meta: CaseMeta, spec: SourceSpec,
                frame: np.ndarray | None = None, index: int = -1) -> ImageCase:
    """A projection (CR/DX/MG...) or any image without patient geometry."""
    arr = _frames(ds)[0] if frame is None else frame
    # NaN/inf before the window, which they would turn into a blank image
    arr, note = nonfinite_fix(spec, arr, Path(getattr(ds, "curate_rel", "image")).name)
    if note and note not in meta.notes:
        meta.notes.append(note)
    window = None
    inverted = False
    if arr.ndim == 2:
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            arr = apply_voi_lut(arr, ds, prefer_lut=True).astype(np.float32)
            low, high = float(arr.min()), float(arr.max())
            arr = ((arr - low) * (255.0 / max(high - low, 1e-6))).round().astype(np.uint8)
            window = {"method": "voi_lut", "name": "dicom_voi", "low": low, "high": high}
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            arr = (arr.max() - arr) if arr.dtype != np.uint8 else 255 - arr  # bone bright
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
    spacing = None
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):  # zeros mean "not known"
        value = ds.get(tag)
        if value and len(value) == 2 and all(float(v) > 0 for v in value):
            spacing = (float(value[0]), float(value[1]))
            break
    return ImageCase(
        pixels=np.ascontiguousarray(arr), meta=meta, view=view, index=index, window=window,
        spacing=spacing,
        photometric_inverted=inverted,
    )
