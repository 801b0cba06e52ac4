import pytest

from curate.unit.text.consistency import check_text
from curate.unit.text.templates import describe


def ctx(**kw):
    roi = {"label": "nodule", "finding": "nodule", "bbox": [10, 10, 30, 30], "area_px": 400,
           "area_frac": 0.04, "area_mm2": 100.0, "area_kind": "mask",
           "longest_diameter_mm": 12.0, "centroid": [20, 20], "laterality": "right",
           "location": "upper zone of the image, on the patient's right side",
           "intensity": "hyper", "relations": [], "origin": "annotation", "confidence": 1.0}
    base = {"modality": "CT", "anatomy": "chest", "plane": "axial",
            "window": {"method": "ct_window", "name": "lung", "low": -1350, "high": 150},
            "rois": [roi], "annotated": True, "labels": ["nodule"], "image_labels": [],
            "spacing": (0.5, 0.5)}
    base.update(kw)
    return base


def test_grounded_text_is_consistent():
    c = ctx()
    _, caption, _ = describe(c)
    assert check_text(caption, c) == []


@pytest.mark.parametrize("text,flag", [
    ("A nodule on the patient's left side.", "no ROI lies on the patient's left"),
    ("The nodule measures 250 mm² in area.", "area 250 mm²"),
    ("It is 40 mm across.", "length 40 mm"),
    ("It covers 20% of the image.", "20% matches no ROI"),
    ("There are two nodules.", "says 2 nodule but 1"),
    ("This MRI shows a nodule.", "names MRI but the image is CT"),
])
def test_contradictions_are_flagged(text, flag):
    flags = check_text(text, ctx())
    assert any(flag in f for f in flags), flags


def test_facts_that_hold_are_not_flagged():
    text = ("Axial CT: one nodule on the patient's right, about 100 mm², 12 mm longest, "
            "4% of the image, 10 mm wide box.")
    assert check_text(text, ctx()) == []


def test_sides_in_views_without_patient_frame_are_flagged():
    c = ctx(plane="none", modality="dermoscopy")
    assert check_text("A lesion on the patient's right.", c)


def test_volumes_are_checked():
    c = ctx()
    c["rois"][0]["volume_mm3"] = 900.0
    assert check_text("part of a 3D region of about 900 mm³", c) == []
    assert any("volume 5000" in f for f in check_text("a 5000 mm³ mass", c))
