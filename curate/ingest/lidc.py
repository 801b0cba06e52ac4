"""LIDC-IDRI reading sessions (the XML beside each CT series) as a consensus label volume.

Each readingSession is one radiologist's blinded-then-unblinded read; each
unblindedReadNodule lists, per slice, an roi naming the slice by its SOP Instance UID with
the outline's pixel coordinates (edgeMap xCoord = column, yCoord = row) and whether it
encloses the nodule (inclusion TRUE) or cuts a hole in it (FALSE). Outlines are placed on
the volume through each slice's own geometry (position, orientation, pixel spacing), so a
series reordered, flipped or split into sub-volumes still gets its outlines where they
belong. A voxel is labelled where at least `min_readers` readers outline it. Nodules under
3 mm are marked by a single centre point, not an outline, and are not drawn.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from curate.model.errors import IngestError


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el, name: str):
    return next((c for c in el if _local(c.tag) == name), None)


def _children(el, name: str):
    return [c for c in el if _local(c.tag) == name]


def parse_reading_sessions(path: Path, rel: str) -> tuple[str | None, list[list[dict]]]:
    """(the series UID in the header, one list per reader of its outlines:
    {sop, inclusion, xy (N, 2) column/row}) of a LIDC XML file."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise IngestError(f"not a LIDC reading file: {exc}", file=rel) from exc
    header = _child(root, "ResponseHeader")
    series = None
    if header is not None:
        uid = _child(header, "SeriesInstanceUid")
        series = (uid.text or "").strip() if uid is not None else None
    readers = []
    for session in _children(root, "readingSession"):
        outlines = []
        for nodule in _children(session, "unblindedReadNodule"):
            for roi in _children(nodule, "roi"):
                sop = _child(roi, "imageSOP_UID")
                inclusion = _child(roi, "inclusion")
                try:
                    xy = np.array([(float(_child(e, "xCoord").text), float(_child(e, "yCoord").text))
                                   for e in _children(roi, "edgeMap")], float)
                except (AttributeError, TypeError, ValueError) as exc:
                    raise IngestError("an edgeMap point is not a number", file=rel) from exc
                if sop is None or len(xy) < 3:
                    continue  # a nodule under 3 mm: its centre point only
                outlines.append({"sop": (sop.text or "").strip(), "xy": xy,
                                 "inclusion": (inclusion is None or
                                               (inclusion.text or "").strip().upper() != "FALSE")})
        readers.append(outlines)
    return series, readers


def slice_geometry(ds) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(position, row direction, column direction, (row, column) spacing) of a slice."""
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    return (np.array([float(v) for v in ds.ImagePositionPatient]), iop[:3], iop[3:],
            np.array([float(v) for v in ds.PixelSpacing]))


def readings_label(image: sitk.Image, geometry: dict[str, tuple], readers: list[list[dict]],
                   min_readers: int) -> tuple[np.ndarray, int]:
    """The (z, y, x) 0/1 consensus of the readers' outlines on image's grid, and how many
    outlines fell on one of its slices. geometry: SOP Instance UID -> slice_geometry."""
    from PIL import Image, ImageDraw

    size = image.GetSize()
    votes = np.zeros(size[::-1], np.uint8)
    placed = 0
    for outlines in readers:
        planes: dict[int, tuple[Image.Image, ImageDraw.ImageDraw]] = {}
        for o in sorted(outlines, key=lambda o: not o["inclusion"]):  # holes after outlines
            if o["sop"] not in geometry:
                continue
            pos, row_dir, col_dir, (drow, dcol) = geometry[o["sop"]]
            world = pos + np.outer(o["xy"][:, 0] * dcol, row_dir) + \
                np.outer(o["xy"][:, 1] * drow, col_dir)
            # rounded: 5.9999999 from floating point must draw like the pixel 6 it is
            idx = np.round([image.TransformPhysicalPointToContinuousIndex(p.tolist())
                            for p in world], 3)
            k = int(round(float(np.median(idx[:, 2]))))
            if not 0 <= k < size[2]:
                continue
            placed += 1
            if k not in planes:
                canvas = Image.new("L", (size[0], size[1]))
                planes[k] = (canvas, ImageDraw.Draw(canvas))
            value = 1 if o["inclusion"] else 0
            planes[k][1].polygon([(float(x), float(y)) for x, y in idx[:, :2]],
                                 fill=value, outline=value)
        for k, (canvas, _) in planes.items():
            votes[k] += np.asarray(canvas, np.uint8)
    return (votes >= min_readers).astype(np.uint8), placed


def attach_readings(spec, root: Path, case, files: list[str], series_uid: str,
                    geometry: dict[str, tuple]) -> None:
    """Set case.label from the series' reading files. A file whose header names another
    series is left out with a note; one that names this series but places no outline on
    this volume (while the volume is the whole series) is an error."""
    cfg = spec.layout.readings
    readers: list[list[dict]] = []
    for f in files:
        uid, found = parse_reading_sessions(root / f, f)
        if uid and series_uid and uid != series_uid:
            case.meta.notes.append(f"reading file {Path(f).name} is for another series; not used")
            continue
        readers += found
    if not readers:
        return
    if len(readers) < cfg.min_readers:
        case.meta.notes.append(f"{len(readers)} reader(s), fewer than readings.min_readers "
                               f"{cfg.min_readers}: no outline can reach the consensus")
    mask, placed = readings_label(case.image, geometry, readers, cfg.min_readers)
    outlines = sum(len(r) for r in readers)
    if outlines and not placed and case.image.GetSize()[2] >= len(geometry):
        raise IngestError(f"{outlines} outline(s) in the reading file(s) but none on a slice "
                          "of this series", file=files[0])
    label = sitk.GetImageFromArray(mask)
    label.CopyInformation(case.image)
    case.label = label
    case.meta.label_map = {1: cfg.label}
