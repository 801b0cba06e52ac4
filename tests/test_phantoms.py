"""Phantoms carry their truth; the pipeline must recover it."""

import json
from pathlib import Path

import pytest

from curate.ingest import adapter
from curate.model.recipe import Recipe, SourceSpec
from curate.sources.phantoms import ensure_phantoms, phantom_layout
from curate.unit.pipeline import process_unit


def run_phantom(tmp_path, kind, modality, cases=4):
    spec = SourceSpec(name=f"p-{kind.replace('_', '-')}", format={
        "ct_lesion": "nifti", "xray_boxes": "image_boxes", "rgb_mask": "image_mask"}[kind],
        modality=modality, generate={"kind": kind, "cases": cases, "seed": 7},
        layout=phantom_layout(kind).model_dump())
    root = ensure_phantoms(spec.generate, tmp_path / kind)
    recipe = Recipe(name="t", sources=[])
    plan, _ = adapter(spec.format)
    units, _ = plan(spec, root)
    results = [process_unit(spec, root, u.stamp(root, "fp"), recipe) for u in units]
    return root, units, results


def truth(root: Path, key: str) -> dict:
    return json.loads((root / "truth" / f"{Path(key).name.split('.')[0]}.json").read_text())


def test_ct_phantom_laterality_and_size(tmp_path):
    root, units, results = run_phantom(tmp_path, "ct_lesion", "CT")
    for unit, res in zip(units, results, strict=True):
        assert not res.quarantine
        t = truth(root, unit.key)
        lesion_rois = [r for s in res.samples for r in s["rois"]]
        assert lesion_rois, "every phantom volume has lesion slices"
        assert {r["laterality"] for r in lesion_rois} == {t["side"]}
        # no slice shows more than the lesion's largest cross-section (+1 pixel ring)
        biggest = max(r["longest_diameter_mm"] for r in lesion_rois)
        assert biggest <= 2 * t["radius_mm"] + 2 * 0.8


def test_xray_phantom_boxes_and_side(tmp_path):
    root, units, results = run_phantom(tmp_path, "xray_boxes", "XR")
    for unit, res in zip(units, results, strict=True):
        (sample,) = res.samples
        (roi,) = sample["rois"]
        t = truth(root, unit.key)
        assert roi["bbox"] == t["box"]
        assert roi["laterality"] == t["side"]


def test_rgb_phantom_mask_area(tmp_path):
    root, units, results = run_phantom(tmp_path, "rgb_mask", "dermoscopy", cases=2)
    for unit, res in zip(units, results, strict=True):
        (sample,) = res.samples
        (roi,) = sample["rois"]
        assert roi["area_px"] == truth(root, unit.key)["pixels"]
        assert roi["laterality"] is None and roi["intensity"] == "hypo"


def test_phantoms_are_deterministic_and_not_rewritten(tmp_path):
    spec = SourceSpec(name="x", format="nifti", generate={"kind": "ct_lesion", "cases": 1},
                      layout=phantom_layout("ct_lesion").model_dump())
    root = ensure_phantoms(spec.generate, tmp_path / "a")
    f = root / "images" / "case000.nii.gz"
    mtime = f.stat().st_mtime_ns
    ensure_phantoms(spec.generate, tmp_path / "a")
    assert f.stat().st_mtime_ns == mtime
    other = ensure_phantoms(spec.generate, tmp_path / "b")
    assert (other / "images" / "case000.nii.gz").read_bytes() == f.read_bytes()


@pytest.mark.parametrize("side_seed", [0, 1])
def test_dicom_series_phantom_keeps_lps_geometry(tmp_path, side_seed):
    import numpy as np

    from curate.sources.phantoms import write_dicom_series
    hu = np.full((8, 40, 50), -1000, np.float32)
    hu[:, 5:35, 5:45] = 40
    col = 38 if side_seed == 0 else 10  # LPS columns: large = patient's left
    hu[3:6, 15:20, col:col + 4] = 150
    write_dicom_series(tmp_path / "s", hu, (0.7, 0.7, 2.0), shuffle_seed=side_seed)
    from curate.ingest.dicom import plan_dicom, read_dicom
    spec = SourceSpec(name="s", format="dicom", modality="CT", layout={"images": ["s/*.dcm"]})
    units, _ = plan_dicom(spec, tmp_path)
    (case,) = read_dicom(spec, tmp_path, units[0])
    import SimpleITK as sitk
    arr = sitk.GetArrayFromImage(case.image)
    assert arr[4, 17, col + 1] == pytest.approx(150)  # geometry preserved, not flipped
