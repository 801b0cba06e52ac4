"""Findings given as bare points (PROSTATEx): a point ROI on the one slice that holds it,
its side from the series' geometry, and no size, area or extent anywhere in the record."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from curate.ingest.dicom import plan_dicom, read_dicom
from curate.model.errors import ConfigError
from curate.model.recipe import Recipe
from curate.model.source import SourceSpec

SIZE_WORDS = re.compile(r"\bmm\b|mm²|mm³|pixel|diameter|area|measur|spann|larg|small|size|"
                        r"volume|extent of|%", re.I)


def mr_series(folder: Path, patient: str, *, row_dir=(1.0, 0.0, 0.0), x0: float = 0.0,
              n: int = 4, size: int = 40) -> None:
    """An axial MR series: n slices 3 mm apart, 0.5 mm pixels, a bright disc (the body)
    on a dark ground, first pixel at (x0, 0, 3k) mm, rows along row_dir."""
    from pydicom import uid

    from tests.phantom_parts import dicom_dataset

    folder.mkdir(parents=True, exist_ok=True)
    series, study = uid.generate_uid(), uid.generate_uid()
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2) < (0.45 * size) ** 2
    for k in range(n):
        ds = dicom_dataset(uid.MRImageStorage, "MR", patient, study, series)
        ds.InstanceNumber, ds.SliceThickness, ds.PixelSpacing = k + 1, 3.0, [0.5, 0.5]
        ds.ImageOrientationPatient = [*row_dir, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [x0, 0.0, 3.0 * k]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.where(body, 800 + 10 * k + (xx % 7) * 5, 20).astype(np.uint16).tobytes()
        ds.save_as(folder / f"1-{k + 1:02d}.dcm", enforce_file_format=True)


def spec_for(**points) -> SourceSpec:
    return SourceSpec.model_validate({
        "name": "px", "format": "dicom", "modality": "MR", "anatomy": "prostate",
        "findings": {"clinically significant lesion": "csPCa"},
        "layout": {"images": ["*/**/*.dcm"], "patient_id": r"(ProstateX-\d{4})",
                   "points": {"file": "Findings.csv", "image_column": "ProxID",
                              "image_key": r"{parent:^.*?(ProstateX-\d\d\d\d).*$=\1}",
                              "coords_column": "pos", "diameter_column": None,
                              "extent": "point", "label_column": "ClinSig",
                              "label_names": {"TRUE": "clinically significant lesion",
                                              "FALSE": "clinically insignificant lesion"},
                              "zone_column": "zone",
                              "zones": {"PZ": "peripheral zone", "TZ": "transition zone"},
                              "outside": "skip", **points}}})


def findings(root: Path, rows: list[str]) -> None:
    (root / "Findings.csv").write_text("ProxID,fid,pos,zone,ClinSig\n" + "".join(
        f"{r}\n" for r in rows))


def test_a_point_lands_on_its_slice_and_pixel_with_its_side_from_geometry(tmp_path):
    mr_series(tmp_path / "ProstateX-0001" / "st" / "t2", "ProstateX-0001")
    # the other series of the patient: rows run to the patient's right (x decreasing)
    mr_series(tmp_path / "ProstateX-0001" / "st" / "t2flip", "ProstateX-0001",
              row_dir=(-1.0, 0.0, 0.0), x0=19.5)
    # column 30 (x 15 mm), row 12 (y 6 mm), slice 2 (z 6 mm); the second row is outside
    findings(tmp_path, ["ProstateX-0001,1,15.0 6.0 6.2,PZ,TRUE",
                        "ProstateX-0001,2,15.0 6.0 60,TZ,FALSE"])
    spec = spec_for()
    units = sorted(plan_dicom(spec, tmp_path)[0], key=lambda u: u.key)
    assert len(units) == 2 and all(len(u.extra["points"]) == 2 for u in units)
    plain, flipped = (read_dicom(spec, tmp_path, u)[0] for u in units)
    assert plain.label is None and len(plain.points) == 1  # the far point is skipped
    assert any("outside this volume" in n for n in plain.meta.notes)
    assert plain.points[0]["zone"] == "peripheral zone"
    assert np.allclose(plain.points[0]["index"], [30, 12, 6.2 / 3], atol=1e-6)

    from curate.unit.ground import ground
    from curate.unit.normalize import volume_views

    recipe = Recipe(name="t", sources=[])
    for case, col in ((plain, 30), (flipped, 30)):  # LPS: the left is on the image right
        views = volume_views(case, recipe.normalize, np.random.default_rng(0))
        held = [v for v in views if v.points]
        assert [v.index for v in held] == [2], [v.index for v in views]
        rois, masks = ground(held[0], {}, spec.findings, 1)
        (roi,) = rois
        assert masks == [None] and roi["bbox"] == [col, 12, col + 1, 13]
        assert roi["centroid"] == pytest.approx([col, 12]) and roi["area_kind"] == "point"
        assert roi["laterality"] == "left"  # x = +15 mm is the patient's left either way
        assert roi["relations"] == ["in the peripheral zone"]
        assert all(roi[k] is None for k in ("area_px", "area_frac", "area_mm2", "intensity",
                                            "longest_diameter_mm", "volume_mm3"))
        assert all(not v.points for v in views if v.index != 2)


def test_the_side_follows_the_point_not_the_pixel_index(tmp_path):
    # x = -15 mm is the patient's right; the flipped series stores it at column 30 too,
    # where the first test's point (x = +15 mm, the left) landed in LPS
    mr_series(tmp_path / "ProstateX-0002" / "st" / "t2flip", "ProstateX-0002",
              row_dir=(-1.0, 0.0, 0.0))
    findings(tmp_path, ["ProstateX-0002,1,-15.0 6.0 3.0,PZ,FALSE"])
    spec = spec_for()
    unit = plan_dicom(spec, tmp_path)[0][0]
    (case,) = read_dicom(spec, tmp_path, unit)
    # rows along -x and columns along +y: the slice normal is -z, so z = 3 mm is index 2
    assert np.allclose(case.points[0]["index"], [30, 12, 2])
    from curate.unit.ground import ground
    from curate.unit.normalize import volume_views

    view = next(v for v in volume_views(case, Recipe(name="t", sources=[]).normalize,
                                        np.random.default_rng(0)) if v.points)
    (roi,) = ground(view, {}, spec.findings, 1)[0]
    assert roi["bbox"][:2] == [9, 12] and roi["laterality"] == "right"  # 39 - 30 in LPS


def test_a_record_of_a_point_states_no_size(tmp_path):
    from curate.unit.pipeline import process_unit
    from curate.unit.text.consistency import check_text

    mr_series(tmp_path / "ProstateX-0003" / "st" / "t2", "ProstateX-0003")
    findings(tmp_path, ["ProstateX-0003,1,15.0 6.0 6.0,PZ,TRUE",
                        "ProstateX-0003,2,4.0 14.0 6.0,TZ,FALSE"])
    spec = spec_for()
    unit = plan_dicom(spec, tmp_path)[0][0].stamp(tmp_path, "fp")
    recipe = Recipe.model_validate({"name": "t", "sources": [],
                                    "ask": {"max_questions": 40, "per_category": 10}})
    result = process_unit(spec, tmp_path, unit, recipe)
    assert not result.quarantine, result.quarantine
    (row,) = [s for s in result.samples if s["rois"]]
    assert {r["label"] for r in row["rois"]} == {"clinically significant lesion",
                                                 "clinically insignificant lesion"}
    assert row["roi_masks"] == [None, None] and row["annotated"]
    text = " ".join([row["caption"], *row["levels"].values()])
    assert "marked by a point" in text and "peripheral zone" in text
    assert "patient's left" in text and "patient's right" in text
    assert not SIZE_WORDS.search(text.replace("transition zone", "")), text
    assert not row["quality"]["text_flags"], row["quality"]["text_flags"]
    assert check_text(row["caption"], {**_ctx(spec, row)}) == []
    categories = {q["category"].split("/")[0] for q in row["vqa"]}
    assert {"presence", "laterality", "localisation", "organ"} <= categories, categories
    assert not categories & {"size", "comparison", "attribute"}, categories
    zone_q = [q for q in row["vqa"] if "zone" in q["question"]]
    assert zone_q and all(q["answer"] in ("peripheral zone", "transition zone")
                          for q in zone_q)
    for q in row["vqa"]:
        assert "/box" not in q["category"] and "/mask" not in q["category"], q
        assert not SIZE_WORDS.search(q["question"] + " " + q["answer"]), q
    others = [s for s in result.samples if not s["rois"]]
    assert others and all("No " in s["levels"]["roi"] and "marked in this view"
                          in s["levels"]["roi"] for s in others)


def _ctx(spec: SourceSpec, row: dict) -> dict:
    from curate.unit.pipeline import context

    return context(spec, modality=row["modality"], anatomy=row["anatomy"],
                   plane=row["view"]["plane"], window=row["window"], rois=row["rois"],
                   annotated=row["annotated"], image_labels=row["image_labels"],
                   spacing=row["pixel_spacing_mm"])


def test_point_extent_refuses_a_size_and_an_unknown_zone(tmp_path):
    with pytest.raises(ValueError, match="no size"):
        spec_for(diameter_mm=5)
    mr_series(tmp_path / "ProstateX-0004" / "st" / "t2", "ProstateX-0004", n=2)
    findings(tmp_path, ["ProstateX-0004,1,1 1 1,XX,TRUE"])
    with pytest.raises(ConfigError, match="zone 'XX'"):
        plan_dicom(spec_for(), tmp_path)


def point_roi(x: int, y: int, w: int = 40, h: int = 40) -> dict:
    return {"label": "clinically significant lesion", "finding": "csPCa",
            "bbox": [x, y, x + 1, y + 1], "bbox_norm": [x / w, y / h, (x + 1) / w, (y + 1) / h],
            "area_px": None, "area_frac": None, "area_mm2": None, "area_kind": "point",
            "longest_diameter_mm": None, "volume_mm3": None, "centroid": [float(x), float(y)],
            "laterality": "left", "location": "x", "intensity": None, "intensity_inside": None,
            "intensity_around": None, "relations": [], "origin": "annotation", "confidence": 1.0}


def test_consumers_give_a_point_no_region():
    import random

    from curate.model.masks import masks_array, pack
    from curate.report.figures import overlay
    from curate.train.trainer import training_example
    from curate.unit.ground import encode_png

    box = dict(point_roi(5, 5), area_kind="box", bbox=[2, 2, 6, 6],
               bbox_norm=[0.05, 0.05, 0.15, 0.15])
    masks = masks_array([point_roi(30, 12), box], [None, None], 40, 40)
    assert masks[0].sum() == 0 and masks[1].sum() == 16  # a point: an empty plane
    png = encode_png(np.zeros((40, 40), np.uint8))
    im = np.asarray(overlay(png, pack(masks[:1]), [point_roi(30, 12)], 400).convert("RGB"))
    # a cross centred on the point's pixel (305, 125 at 10x), not a box around it
    assert im[125, 297:314].any(axis=-1).all() and im[117:134, 305].any(axis=-1).all()
    assert not im[150:, :].any() and not im[:, :250].any()
    record = {"caption": "c", "rois": [point_roi(30, 12)], "vqa": []}
    assert training_example(None, record, random.Random(0))["box"] is None
    assert training_example(None, {**record, "rois": [point_roi(30, 12), box]},
                            random.Random(0))["box"] == box["bbox_norm"]


@pytest.mark.parametrize("direction", [
    (1, 0, 0, 0, 1, 0, 0, 0, 1),  # LPS already
    (-1, 0, 0, 0, 0, 1, 0, -1, 0),  # a flipped coronal acquisition
    (0.96, 0.28, 0, -0.28, 0.96, 0, 0, 0, 1),  # oblique: DICOMOrient's own axes
])
def test_a_point_index_follows_the_volume_into_lps_and_every_plane(direction):
    import SimpleITK as sitk

    from curate.model.recipe import View
    from curate.unit.normalize import in_plane, lps_array, lps_index, plane_point

    arr = np.zeros((5, 6, 7), np.uint8)  # (k, j, i)
    arr[3, 1, 5] = 1  # the voxel at index (i, j, k) = (5, 1, 3)
    img = sitk.GetImageFromArray(arr)
    img.SetDirection(direction)
    lps, _ = lps_array(img)
    zyx = lps_index(img, [5, 1, 3])
    assert lps[tuple(np.rint(zyx).astype(int))] == 1
    for plane in (View.axial, View.coronal, View.sagittal):
        k, row, col = (int(round(v)) for v in plane_point(zyx, lps.shape, plane))
        assert in_plane(lps, plane)[k, row, col] == 1, plane


def test_the_prompt_overlay_marks_a_point_with_a_cross():
    import io

    from PIL import Image

    from curate.describe.backends.prompt import roi_overlay_png
    from curate.unit.ground import encode_png

    png = encode_png(np.zeros((80, 80), np.uint8))
    with Image.open(io.BytesIO(roi_overlay_png(png, [point_roi(40, 50, 80, 80)]))) as im:
        drawn = np.asarray(im.convert("L")) > 0
    assert drawn[50, 37:44].all() and drawn[47:54, 40].all()  # both arms through the point
    assert not drawn[60:, :].any() and not drawn[:, :30].any() and not drawn[:, 50:].any()


def test_a_resized_view_keeps_the_point_on_its_pixel(tmp_path):
    mr_series(tmp_path / "ProstateX-0005" / "st" / "t2", "ProstateX-0005", size=64)
    findings(tmp_path, ["ProstateX-0005,1,15.0 6.0 3.0,TZ,TRUE"])  # column 30, row 12
    spec = spec_for()
    (case,) = read_dicom(spec, tmp_path, plan_dicom(spec, tmp_path)[0][0])
    from curate.unit.ground import ground
    from curate.unit.normalize import volume_views

    cfg = Recipe.model_validate({"name": "t", "sources": [],
                                 "normalize": {"max_size": 32}}).normalize
    view = next(v for v in volume_views(case, cfg, np.random.default_rng(0)) if v.points)
    (roi,) = ground(view, {}, spec.findings, 1)[0]
    # full-size pixel 30 (centre 30) lies in half-size pixel 15 (full-size pixels 30 and 31)
    assert view.image.shape == (32, 32) and roi["bbox"] == [15, 6, 16, 7]
    assert roi["centroid"] == pytest.approx([14.75, 5.75])
