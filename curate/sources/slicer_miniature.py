"""Miniature 3D Slicer segmentation files and the role table naming their series.

For a source with layout.segmentations: every image's series gets the declared .seg.nrrd
files in its own geometry (a block per declared structure; a multi-segment file in one
layer with its label values in reverse order, as the authors warn values may be), and
the role table names the first image's series with the declared role and every other
series with another role, so reading checks both that the files land on the right
voxels and that the table, not the file names, decides which series gets them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from curate.ingest.files import annotation_path
from curate.model.source import SeriesRoles, SourceSpec


def _grid(ds: pydicom.Dataset) -> sitk.Image:
    """An empty (rows x cols x 1) image in the geometry of a one-slice DICOM file."""
    image = sitk.Image(int(ds.Columns), int(ds.Rows), 1, sitk.sitkUInt8)
    row = np.array([float(v) for v in ds.ImageOrientationPatient[:3]])
    col = np.array([float(v) for v in ds.ImageOrientationPatient[3:]])
    image.SetDirection(tuple(np.column_stack([row, col, np.cross(row, col)]).ravel()))
    image.SetOrigin(tuple(float(v) for v in ds.ImagePositionPatient))
    sy, sx = (float(v) for v in ds.PixelSpacing)
    image.SetSpacing((sx, sy, float(ds.get("SliceThickness") or 1.0)))
    return image


def _seg_file(path: Path, grid: sitk.Image, declared, row: int) -> None:
    arr = np.zeros((1, grid.GetHeight(), grid.GetWidth()), np.uint8)
    names = list(declared.segments) or [declared.label]
    for j, _ in enumerate(names):  # a 2 x 2 block per structure, from the file's row on
        arr[0, row:row + 2, 1 + 2 * j:3 + 2 * j] = len(names) - j if declared.segments else 1
    image = sitk.GetImageFromArray(arr)
    image.CopyInformation(grid)
    for j, name in enumerate(names if declared.segments else []):
        image.SetMetaData(f"Segment{j}_Name", name)
        image.SetMetaData(f"Segment{j}_LabelValue", str(len(names) - j))
        image.SetMetaData(f"Segment{j}_Layer", "0")
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)


def _cell(value: str, part: int | None, filler: list[str]) -> str:
    if part is None:
        return value
    parts = list(filler)
    parts[part] = value
    return "/".join(parts)


def _table(path: Path, table: SeriesRoles, rows: list[tuple[str, str]]) -> None:
    header = [table.uid_column, table.role_column]
    cells = [[_cell(uid, table.uid_part, ["collection", "patient", "study", "series", "1-1.dcm"]),
              _cell(role, table.role_part, ["images", "patient", "sequence", "1.dcm"])]
             for uid, role in rows]
    if table.uid_column == table.role_column:
        raise ValueError("a role table needs two columns")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        from openpyxl import Workbook

        book = Workbook()
        book.active.append(header)
        for row in cells:
            book.active.append(row)
        book.save(path)
        return
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *cells])


def write_segmentations(spec: SourceSpec, dest: Path, images: list[str]) -> list[str]:
    """The declared files for every one-slice DICOM image and the role table; returns the
    files written (the table is not an annotation file and is left out)."""
    seg = spec.layout.segmentations
    written, rows = [], []
    for i, rel in enumerate(images):
        ds = pydicom.dcmread(dest / rel, stop_before_pixels=True)
        if "ImagePositionPatient" not in ds:
            continue
        rows.append((str(ds.SeriesInstanceUID), seg.series.role if i == 0 else
                     f"not_{seg.series.role}"))
        for k, declared in enumerate(seg.files):
            target = annotation_path(declared.file, rel, spec.layout.case_regex)
            if target == rel or "*" in target or "?" in target:
                continue
            _seg_file(dest / target, _grid(ds), declared, row=1 + 3 * k)
            written.append(target)
    _table(dest / seg.series.file, seg.series, rows)
    return written
