"""3D Slicer segmentation files (.seg.nrrd) drawn on one series of each patient.

Some sources publish their label volumes beside the DICOM images as the files 3D Slicer
saves (Duke-Breast-Cancer-MRI's breast, FGT and vessel segmentations): NRRD volumes whose
header carries their own geometry in patient space and, per segment, its name, its label
value and its layer (`SegmentN_Name`, `SegmentN_LabelValue`, `SegmentN_Layer`; a file
with overlapping segments has one layer per component). The value of a structure is not
fixed across files, so structures are read by segment name, never by value.

Which series the files were drawn on is not in the files: a table of the authors names
each series by UID and role (Duke's Breast-Cancer-MRI-filepath_filename-mapping.xlsx,
role `pre`), and only the series of that role get the files. A file is then resampled
onto its series by geometry (nearest neighbour); a label that reaches beyond the
series' grid, or misses it, is a quarantine row instead of a mask on the wrong voxels.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from curate.ingest.base import Unit, VolumeCase
from curate.ingest.files import OutsideRoot, Problem, present_files, read_volume_file
from curate.model.errors import IngestError
from curate.model.recipe import SourceSpec
from curate.model.source import SeriesRoles

ROLE_ROWS_MAX = 50_000_000  # a role table is one row per file: Duke's has ~0.8M


def _part(value: str, part: int | None) -> str:
    if part is None:
        return value.strip()
    pieces = value.strip().replace("\\", "/").split("/")
    try:
        return pieces[part].strip()
    except IndexError:
        return ""


def _rows(path: Path, columns: tuple[str, str]):
    """(uid value, role value) of every row of a .csv or .xlsx table (first sheet)."""
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        book = load_workbook(path, read_only=True, data_only=True)
        try:
            rows = book.worksheets[0].iter_rows(values_only=True)
            header = [str(c).strip() if c is not None else "" for c in next(rows, ())]
            idx = _columns(header, columns, path)
            for row in rows:
                yield tuple("" if i >= len(row) or row[i] is None else str(row[i]) for i in idx)
        finally:
            book.close()
        return
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        idx = _columns([h.strip() for h in next(reader, [])], columns, path)
        for row in reader:
            yield tuple(row[i] if i < len(row) else "" for i in idx)


def _columns(header: list[str], columns: tuple[str, str], path: Path) -> list[int]:
    missing = [c for c in columns if c not in header]
    if missing:
        raise IngestError(f"series role table has no column(s) {missing}; it has "
                          f"{header[:12]}", file=path.name)
    return [header.index(c) for c in columns]


def series_with_role(table: SeriesRoles, root: Path) -> set[str]:
    """SeriesInstanceUIDs the role table gives the declared role."""
    path = root / table.file
    if not path.is_file():
        raise IngestError(f"series role table {table.file} is not under the source root "
                          "(the labels' series cannot be told apart without it)", file=table.file)
    found: set[str] = set()
    for n, (uid, role) in enumerate(_rows(path, (table.uid_column, table.role_column))):
        if n >= ROLE_ROWS_MAX:
            raise IngestError(f"series role table has over {ROLE_ROWS_MAX} rows", file=table.file)
        if _part(role, table.role_part) == table.role and (u := _part(uid, table.uid_part)):
            found.add(u)
    return found


def plan_segmentations(spec: SourceSpec, root: Path, units: list[Unit]) -> list[Problem]:
    """Attach each declared file to the units of the series the role table names; the
    files of other series (the patient's post-contrast phases) are never attached."""
    from curate.ingest.annotations import header_key

    seg = spec.layout.segmentations
    try:
        uids = series_with_role(seg.series, root)
    except IngestError as exc:
        return [Problem(seg.series.file, "plan", exc)]
    problems: list[Problem] = []
    for unit in units:
        if "iop" not in unit.extra or not unit.files:
            continue
        try:
            if header_key(root / unit.files[0], "SeriesInstanceUID", unit.files[0]) not in uids:
                continue
            entries = [[rel, i] for i, f in enumerate(seg.files)
                       for rel in present_files(spec, root, f.file, unit.files[0], unit.files)]
        except (OutsideRoot, IngestError) as exc:
            problems.append(Problem(getattr(exc, "file", None) or unit.files[0], "plan", exc))
            continue
        if entries:
            unit.extra["segmentations"] = entries
            unit.files = unit.files + [rel for rel, _ in entries]
    return problems


def segment_table(image: sitk.Image) -> dict[str, tuple[int, int]]:
    """Segment name -> (label value, layer) from a Slicer segmentation file's header."""
    keys = set(image.GetMetaDataKeys())
    out: dict[str, tuple[int, int]] = {}
    n = 0
    while f"Segment{n}_Name" in keys:
        name = image.GetMetaData(f"Segment{n}_Name").strip()
        value = image.GetMetaData(f"Segment{n}_LabelValue") \
            if f"Segment{n}_LabelValue" in keys else "1"
        layer = image.GetMetaData(f"Segment{n}_Layer") if f"Segment{n}_Layer" in keys else "0"
        try:
            out[name] = (int(value), int(layer))
        except ValueError:
            raise IngestError(f"segment {name!r} has label value {value!r} and layer "
                              f"{layer!r}, not integers") from None
        n += 1
    return out


def _layer(image: sitk.Image, layer: int) -> np.ndarray:
    """One layer of a segmentation file as a (z, y, x) array."""
    arr = sitk.GetArrayViewFromImage(image)
    comps = image.GetNumberOfComponentsPerPixel()
    if not 0 <= layer < comps:
        raise IngestError(f"segment layer {layer} not in a file of {comps} layer(s)")
    return arr[..., layer] if comps > 1 else arr


def file_codes(image: sitk.Image, declared, codes: dict[str, int]) -> np.ndarray:
    """A (z, y, x) array of label codes in the file's own grid: every non-zero voxel for
    a one-label file, else each declared segment by its value and layer, in the declared
    order (a later segment wins where two overlap)."""
    shape = sitk.GetArrayViewFromImage(image).shape[:3]
    out = np.zeros(shape, np.uint16)
    if declared.label is not None:
        arr = sitk.GetArrayViewFromImage(image)
        out[(arr != 0).any(axis=-1) if image.GetNumberOfComponentsPerPixel() > 1
            else arr != 0] = codes[declared.label]
        return out
    table = segment_table(image)
    absent = [s for s in declared.segments if s not in table]
    extra = [s for s in table if s not in declared.segments]
    if absent or extra:
        raise IngestError(f"segments {sorted(table)} in the file, declared "
                          f"{list(declared.segments)}" + (f"; missing {absent}" if absent else "")
                          + (f"; not declared {extra}" if extra else ""))
    for name, label in declared.segments.items():
        value, layer = table[name]
        out[_layer(image, layer) == value] = codes[label]
    return out


def _check_inside(label: sitk.Image, codes: np.ndarray, grid: sitk.Image) -> None:
    """The labelled voxels' bounding box, in the series' continuous index, must lie within
    its grid (half a voxel of slack): else the file is not this series' label."""
    nz = np.argwhere(codes)
    if not len(nz):
        return
    lo, hi = nz.min(axis=0)[::-1], nz.max(axis=0)[::-1]  # (x, y, z)
    size = np.array(grid.GetSize(), float)
    for corner in np.array(np.meshgrid(*zip(lo, hi, strict=True))).T.reshape(-1, 3):
        point = label.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
        idx = np.array(grid.TransformPhysicalPointToContinuousIndex(point))
        if np.any(idx < -0.5 - 1e-3) or np.any(idx > size - 0.5 + 1e-3):
            raise IngestError("segmentation reaches beyond the series' grid (voxel "
                              f"{[round(v, 1) for v in idx]} of a {grid.GetSize()} grid): "
                              "drawn on another series?")


def attach_segmentations(spec: SourceSpec, root: Path, case: VolumeCase,
                         entries: list[list]) -> None:
    """The declared files resampled onto the case's grid by geometry, one label volume
    with a label_map in the declared order (a later file wins where files overlap)."""
    seg = spec.layout.segmentations
    if case.label is not None:  # never silently replace another label of the series
        raise IngestError("the series has a DICOM SEG/RTSTRUCT label as well as segmentation "
                          "files; exclude one of them", file=entries[0][0])
    labels = list(dict.fromkeys(lab for f in seg.files
                                for lab in ([f.label] if f.label else f.segments.values())))
    codes = {lab: i + 1 for i, lab in enumerate(labels)}
    out = np.zeros(sitk.GetArrayViewFromImage(case.image).shape, np.uint16)
    for rel, i in sorted(entries, key=lambda e: e[1]):
        image = read_volume_file(root, rel, "segmentation file")
        try:
            arr = file_codes(image, seg.files[i], codes)
        except IngestError as exc:
            raise IngestError(str(exc), file=rel) from None
        own = sitk.GetImageFromArray(arr)
        own.SetOrigin(image.GetOrigin())
        own.SetSpacing(image.GetSpacing())
        own.SetDirection(image.GetDirection())
        try:
            _check_inside(own, arr, case.image)
        except IngestError as exc:
            raise IngestError(str(exc), file=rel) from None
        on_grid = sitk.GetArrayFromImage(sitk.Resample(  # a copy: the image is temporary
            own, case.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16))
        if arr.any() and not on_grid.any():
            raise IngestError("segmentation does not overlap the series in patient space",
                              file=rel)
        out = np.where(on_grid > 0, on_grid, out).astype(np.uint16)
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(case.image)
    case.label = result
    case.meta.label_map = {codes[lab]: lab for lab in labels}


def check_segmentations(spec: SourceSpec, root: Path, images: list[str]
                        ) -> tuple[int, int, list[str], list[str]]:
    """For `curate sources check`: (series under the root the role table names with its
    role, those with a declared file present, problems, warnings); one header read and
    one template fill per series folder."""
    from curate.ingest.annotations import header_key
    from curate.ingest.files import annotation_files

    seg = spec.layout.segmentations
    try:
        uids = series_with_role(seg.series, root)
    except IngestError as exc:
        return 0, 0, [str(exc)], []
    first: dict[str, str] = {}
    for rel in images:
        first.setdefault(str(Path(rel).parent), rel)
    named = with_files = 0
    for rel in first.values():
        try:
            if header_key(root / rel, "SeriesInstanceUID", rel) not in uids:
                continue
        except IngestError:
            continue
        named += 1
        with_files += any((root / m).is_file() for f in seg.files
                          for m in annotation_files(f.file, rel, root, spec.layout.case_regex))
    problems = [] if named or not images else [
        f"{seg.series.file} names no series under the root with role {seg.series.role!r} "
        f"({len(uids)} named in all; columns {seg.series.uid_column}, "
        f"{seg.series.role_column}: is uid_part right?)"]
    warnings = [] if with_files or not named else [
        "no segmentation file is present for any series of that role (templates "
        f"{[f.file for f in seg.files]})"]
    return named, with_files, problems, warnings
