"""ROI facts against phantom truth in several stored orientations (issue: grounding).

The truth is drawn in LPS (x to the patient's left); each phantom is stored re-oriented
(LPS, RAS, LAS, RPI NIfTI and a DICOM series with SEG) and must come back with the same
sides, boxes, areas, diameters and volumes.
"""

import numpy as np
import pytest
import SimpleITK as sitk

from curate.ingest import adapter
from curate.model.recipe import Recipe, SourceSpec
from curate.unit.ground import longest_diameter_mm
from curate.unit.pipeline import process_unit

SPACING = (0.8, 0.9, 2.0)  # x, y, z in mm; anisotropic on purpose
SHAPE = (12, 60, 70)  # z, y, x
LESIONS = {"left": (1, (52, 28, 6), 7.0), "right": (2, (16, 34, 5), 5.0)}  # value, xyz, r_mm


def truth_volume():
    z, y, x = np.mgrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]].astype(float)
    hu = np.full(SHAPE, -1000.0)
    hu[((x - 35) / 32) ** 2 + ((y - 30) / 26) ** 2 <= 1] = 40
    labels = np.zeros(SHAPE, np.uint8)
    for value, (cx, cy, cz), r in LESIONS.values():
        d2 = ((x - cx) * SPACING[0]) ** 2 + ((y - cy) * SPACING[1]) ** 2 + \
             ((z - cz) * SPACING[2]) ** 2
        labels[d2 <= r * r] = value
    hu[labels > 0] = 140
    return hu, labels


def as_image(arr, pixel=sitk.sitkFloat32):
    img = sitk.Cast(sitk.GetImageFromArray(arr), pixel)
    img.SetSpacing(SPACING)
    img.SetOrigin((-20.0, 10.0, 5.0))
    return img  # identity direction: LPS


RECIPE = Recipe.model_validate({"name": "t", "sources": [], "normalize": {
    "max_size": 4096, "roi_slices": 50, "normal_slices": 0, "min_roi_slice_frac": 0.0}})


def check(samples, labels):
    names = {v[0]: side for side, v in LESIONS.items()}
    seen = set()
    for s in samples:
        k = s["view"]["index"]
        for roi in s["rois"]:
            value = int(roi["label"].split()[-1]) if roi["label"].startswith("label") else \
                {"left lesion": 1, "right lesion": 2}[roi["label"]]
            truth = labels[k] == value
            ys, xs = np.nonzero(truth)
            tb = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            b = roi["bbox"]
            inter = max(0, min(b[2], tb[2]) - max(b[0], tb[0])) * \
                max(0, min(b[3], tb[3]) - max(b[1], tb[1]))
            union = (b[2] - b[0]) * (b[3] - b[1]) + (tb[2] - tb[0]) * (tb[3] - tb[1]) - inter
            assert inter / union >= 0.95, (roi["label"], k, b, tb)
            assert roi["laterality"] == names[value]
            assert abs(roi["area_px"] - truth.sum()) <= 1  # within one voxel
            assert roi["area_mm2"] == pytest.approx(truth.sum() * SPACING[0] * SPACING[1])
            d = longest_diameter_mm(truth, (SPACING[1], SPACING[0]))
            assert abs(roi["longest_diameter_mm"] - d) <= max(SPACING[:2])
            assert roi["volume_mm3"] == pytest.approx((labels == value).sum() * np.prod(SPACING))
            seen.add(value)
    assert seen == {1, 2}


@pytest.mark.parametrize("orientation", ["LPS", "RAS", "LAS", "RPI"])
def test_nifti_in_any_orientation(tmp_path, orientation):
    hu, labels = truth_volume()
    img = sitk.DICOMOrient(as_image(hu), orientation)
    lab = sitk.DICOMOrient(as_image(labels, sitk.sitkUInt8), orientation)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    sitk.WriteImage(img, str(tmp_path / "img" / "c.nii.gz"))
    sitk.WriteImage(lab, str(tmp_path / "lab" / "c.nii.gz"))
    stored = sitk.ReadImage(str(tmp_path / "img" / "c.nii.gz"))
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        stored.GetDirection()) == orientation
    spec = SourceSpec(name="g", format="nifti", modality="CT", layout={
        "images": ["img/*.nii.gz"], "masks": "lab/{name}",
        "label_map": {1: "left lesion", 2: "right lesion"}})
    plan, _ = adapter(spec.format)
    (unit,), _ = plan(spec, tmp_path)
    res = process_unit(spec, tmp_path, unit.stamp(tmp_path, "x"), RECIPE)
    assert not res.quarantine
    check(res.samples, labels)


def test_dicom_series_with_seg(tmp_path):
    hd = pytest.importorskip("highdicom")
    import pydicom
    from pydicom.sr.codedict import codes

    from curate.sources.phantoms import write_dicom_series
    hu, labels = truth_volume()
    paths = write_dicom_series(tmp_path / "s", hu, SPACING, shuffle_seed=2)
    sources = sorted((pydicom.dcmread(p) for p in paths),
                     key=lambda d: float(d.ImagePositionPatient[2]))
    descs = [hd.seg.SegmentDescription(
        segment_number=v, segment_label=f"label {v}",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL) for v in (1, 2)]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descs,
        series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="curate", manufacturer_model_name="test",
        software_versions="0", device_serial_number="0")
    seg.save_as(tmp_path / "s" / "seg.dcm")
    spec = SourceSpec(name="d", format="dicom_seg", layout={"images": ["s/*.dcm"]})
    plan, _ = adapter(spec.format)
    (unit,), problems = plan(spec, tmp_path)
    assert not problems
    res = process_unit(spec, tmp_path, unit.stamp(tmp_path, "x"), RECIPE)
    assert not res.quarantine, res.quarantine
    check(res.samples, labels)


def test_touching_regions_are_adjacent():
    from curate.ingest.base import CaseMeta
    from curate.model.recipe import View
    from curate.unit.ground import ground
    from curate.unit.normalize import View2D
    labels = np.zeros((40, 40), np.uint8)
    labels[10:20, 5:15] = 1
    labels[10:20, 15:25] = 2
    view = View2D(image=np.full((40, 40), 90, np.uint8), raw=np.zeros((40, 40), np.float32),
                  plane=View.none, index=-1, count=1, spacing=None, window={},
                  meta=CaseMeta(), labels=labels)
    rois, _ = ground(view, {1: "a", 2: "b"}, {}, 1)
    assert any(r.startswith("adjacent to b") for r in rois[0]["relations"])
    assert not any("patient" in r for r in rois[0]["relations"])
