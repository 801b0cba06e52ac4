"""DICOM SEG and RTSTRUCT objects read as label volumes on their image series."""

from __future__ import annotations

import numpy as np
import pydicom
import SimpleITK as sitk
from skimage.draw import polygon

from curate.model.errors import IngestError


def referenced_series(ds: pydicom.Dataset) -> str | None:
    """The SeriesInstanceUID a SEG or RTSTRUCT annotates."""
    if ds.get("Modality") == "SEG":
        for item in ds.get("ReferencedSeriesSequence", []):
            return str(item.SeriesInstanceUID)
    if ds.get("Modality") == "RTSTRUCT":
        for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
            for study in ref.get("RTReferencedStudySequence", []):
                for series in study.get("RTReferencedSeriesSequence", []):
                    return str(series.SeriesInstanceUID)
    return None


def _slice_index(vol: sitk.Image, point_mm) -> tuple[float, float, float]:
    return vol.TransformPhysicalPointToContinuousIndex([float(v) for v in point_mm])


def seg_labels(ds: pydicom.Dataset, vol: sitk.Image, labels: np.ndarray,
               label_map: dict[int, str], offset: int) -> None:
    """Paint each SEG frame into labels (z, y, x) at the slice its position falls on."""
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
    frames = ds.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    if frames.shape[1:] != labels.shape[1:]:
        raise IngestError(f"SEG frames {frames.shape[1:]} do not match the series grid "
                          f"{labels.shape[1:]}")
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    for i, pf in enumerate(ds.PerFrameFunctionalGroupsSequence):
        # one-segment SEGs may put the segment number in the shared groups
        ident = pf if "SegmentIdentificationSequence" in pf else shared
        if ident is None or "SegmentIdentificationSequence" not in ident:
            raise IngestError(f"SEG frame {i} names no segment")
        seg_no = int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        pos = pf.PlanePositionSequence[0].ImagePositionPatient
        x, y, z = _slice_index(vol, pos)
        k = round(z)
        if abs(z - k) > 0.5 or not 0 <= k < labels.shape[0] or abs(x) > 0.5 or abs(y) > 0.5:
            raise IngestError(f"SEG frame {i} does not lie on a slice of its series")
        value = offset + seg_no
        labels[k][frames[i] > 0] = value
        label_map[value] = names.get(seg_no, f"segment {seg_no}")


def rtstruct_labels(ds: pydicom.Dataset, vol: sitk.Image, labels: np.ndarray,
                    label_map: dict[int, str], offset: int) -> None:
    """Rasterise CLOSED_PLANAR contours (patient mm) onto the slices they lie on."""
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    for roi in ds.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        value = offset + number
        label_map[value] = names.get(number, f"roi {number}")
        for contour in roi.get("ContourSequence", []):
            if contour.get("ContourGeometricType", "CLOSED_PLANAR") != "CLOSED_PLANAR":
                continue
            pts = np.asarray(contour.ContourData, float).reshape(-1, 3)
            idx = np.array([_slice_index(vol, p) for p in pts])
            k = round(float(np.median(idx[:, 2])))
            if not 0 <= k < labels.shape[0] or np.ptp(idx[:, 2]) > 0.5:
                raise IngestError(f"RTSTRUCT contour of ROI {number} is not on one slice")
            rr, cc = polygon(idx[:, 1], idx[:, 0], shape=labels.shape[1:])
            labels[k, rr, cc] = value
