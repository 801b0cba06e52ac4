import numpy as np
import pytest

from curate.ingest.base import Box, CaseMeta
from curate.model.recipe import View
from curate.unit.ground import ground, location, longest_diameter_mm
from curate.unit.normalize import View2D


def make_view(plane=View.axial, spacing=(0.5, 0.5), h=100, w=120):
    raw = np.full((h, w), 40.0, np.float32)
    return View2D(image=np.full((h, w), 100, np.uint8), raw=raw, plane=plane, index=0, count=1,
                  spacing=spacing, window={}, meta=CaseMeta(modality="CT"),
                  labels=np.zeros((h, w), np.uint8), body=np.ones((h, w), bool))


def test_bbox_area_and_mm_from_a_mask():
    v = make_view()
    v.labels[10:30, 90:110] = 1  # 20 x 20 pixels on the image right
    v.raw[10:30, 90:110] = 120
    rois, masks = ground(v, {1: "tumor"}, {"tumor": "tumour"}, min_pixels=4)
    (roi,) = rois
    assert roi["bbox"] == [90, 10, 110, 30]
    assert roi["bbox_norm"] == pytest.approx([0.75, 0.1, 110 / 120, 0.3])
    assert roi["area_px"] == 400 and roi["area_mm2"] == pytest.approx(100.0)
    assert roi["area_frac"] == pytest.approx(400 / 12000)
    assert roi["finding"] == "tumour" and roi["origin"] == "annotation"
    # image right is the patient's left in an axial LPS slice
    assert roi["laterality"] == "left" and "patient's left" in roi["location"]
    assert roi["location"].startswith("anterior")
    assert roi["intensity"] == "hyper"
    assert masks[0].sum() == 400


def test_each_connected_component_is_its_own_roi_with_relations():
    v = make_view()
    v.labels[40:50, 5:15] = 1
    v.labels[40:50, 100:110] = 1
    rois, _ = ground(v, {1: "nodule"}, {}, min_pixels=4)
    assert len(rois) == 2
    right, left = sorted(rois, key=lambda r: r["centroid"][0])
    assert right["laterality"] == "right" and left["laterality"] == "left"
    assert any("to the patient's right of" in r for r in right["relations"])


def test_tiny_components_are_dropped():
    v = make_view()
    v.labels[5, 5] = 1
    assert ground(v, {1: "x"}, {}, min_pixels=4)[0] == []


def test_views_without_patient_frame_have_no_laterality():
    v = make_view(plane=View.none)
    phrase, lat = location(v, cx=110, cy=5)
    assert lat is None and phrase == "upper right of the image"


def test_box_roi_has_no_mask_and_box_area():
    v = make_view(plane=View.frontal, spacing=(1.0, 1.0))
    v.labels = None
    v.boxes = [Box("nodule", 10.2, 20.0, 30.0, 40.0)]
    rois, masks = ground(v, {}, {}, min_pixels=1)
    assert masks == [None]
    assert rois[0]["bbox"] == [10, 20, 30, 40] and rois[0]["area_kind"] == "box"
    assert rois[0]["area_mm2"] == pytest.approx(400.0)
    assert rois[0]["laterality"] == "right"


def test_longest_diameter_within_one_pixel():
    yy, xx = np.mgrid[0:101, 0:101]
    disk = (yy - 50) ** 2 + (xx - 50) ** 2 <= 30**2
    d = longest_diameter_mm(disk, (0.4, 0.4))
    assert abs(d - 60 * 0.4) <= 0.4 + 1e-6


def test_unknown_spacing_gives_null_mm():
    v = make_view(spacing=None)
    v.labels[10:20, 10:20] = 1
    (roi,), _ = ground(v, {1: "x"}, {}, min_pixels=1)
    assert roi["area_mm2"] is None and roi["longest_diameter_mm"] is None
