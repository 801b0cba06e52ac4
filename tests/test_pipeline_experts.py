"""Experts inside the build: organs as context, lesions only where nothing is annotated."""

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from curate.ingest import adapter
from curate.model.recipe import Recipe, SourceSpec
from curate.unit.pipeline import WorkerModels, process_unit

EXPERTS = [{"name": "ct_lungs", "modality": ["CT"]},
           {"name": "ct_lesion_candidates", "modality": ["CT"], "params": {"within": "organs"}}]


def run(spec, root, experts=EXPERTS, **sections):
    recipe = Recipe.model_validate({"name": "t", "sources": [], "experts": experts, **sections})
    plan, _ = adapter(spec.format)
    units, _ = plan(spec, root)
    models = WorkerModels(recipe)
    return [process_unit(spec, root, u.stamp(root, "x"), recipe, models) for u in units], models


def test_lungs_on_a_real_ct_slice_have_the_right_sides():
    root = Path(get_testdata_file("CT_small.dcm")).parent
    spec = SourceSpec(name="ct", format="dicom", anatomy="chest",
                      layout={"images": ["CT_small.dcm"]})
    (res,), _ = run(spec, root)
    rois = {r["label"]: r for r in res.samples[0]["rois"]}
    assert rois["left lung"]["laterality"] == "left"
    assert rois["right lung"]["laterality"] == "right"
    assert all(r["origin"] == "expert:ct_lungs" and 0 < r["confidence"] <= 1
               for r in rois.values())
    assert "Organs outlined by expert models (ct_lungs)" in res.samples[0]["caption"]
    assert res.samples[0]["quality"]["text_flags"] == []


def test_unknown_expert_or_bad_params_fail_when_the_recipe_loads():
    from curate.load import check_plugins
    from curate.model.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown expert"):
        check_plugins(Recipe.model_validate({"name": "t", "sources": [],
                                             "experts": [{"name": "nope"}]}))
    with pytest.raises(ConfigError, match="params"):
        check_plugins(Recipe.model_validate({
            "name": "t", "sources": [], "experts": [{"name": "ct_lungs",
                                                     "params": {"bogus": 1}}]}))


def test_expert_lesions_do_not_override_annotations(tmp_path):
    """An annotated CT phantom keeps only its annotated lesion; organs still give context."""
    from curate.sources.phantoms import ensure_phantoms, phantom_layout
    spec = SourceSpec(name="p", format="nifti", modality="CT",
                      generate={"kind": "ct_lesion", "cases": 1, "seed": 3},
                      layout=phantom_layout("ct_lesion").model_dump())
    root = ensure_phantoms(spec.generate, tmp_path / "p")
    experts = [{"name": "ct_lesion_candidates", "modality": ["CT"]}]
    (res,), models = run(spec, root, experts)
    origins = {r["origin"] for s in res.samples for r in s["rois"]}
    assert origins == {"annotation"}
    assert models.resources(models.recipe) == {"num_cpus": 1.0, "num_gpus": 0.0}
    # the same volume declared without its labels: the expert finds the lesion itself
    bare = spec.model_copy(update={"layout": spec.layout.model_copy(update={"masks": None})})
    (res,), _ = run(bare, root, experts, normalize={"normal_slices": 24})  # every slice
    found = [r for s in res.samples for r in s["rois"]]
    assert found and {r["origin"] for r in found} == {"expert:ct_lesion_candidates"}


def test_experts_change_the_unit_fingerprint():
    from curate.build import unit_fingerprint
    spec = SourceSpec(name="s", format="nifti", layout={"images": ["*.nii"]})
    a = Recipe.model_validate({"name": "t", "sources": []})
    b = Recipe.model_validate({"name": "t", "sources": [], "experts": EXPERTS[:1]})
    assert unit_fingerprint(a, spec) != unit_fingerprint(b, spec)


def test_volume_experts_are_sliced_onto_the_views(tmp_path, monkeypatch):
    """A 3D-only expert (as TotalSegmentator is) runs once per volume; its masks reach views."""
    from curate.sources.phantoms import ensure_phantoms
    from curate.unit.experts import Expert, ExpertParams, ExpertROI
    from curate.unit.experts.registry import EXPERTS

    class BrightBlobs3D(Expert):
        name = "bright3d"
        Params = ExpertParams
        inputs = frozenset({"3d"})
        calls = 0

        def run(self, x, context):
            import SimpleITK as sitk
            BrightBlobs3D.calls += 1
            arr = sitk.GetArrayFromImage(x)
            return [ExpertROI("bright blob", arr > 100, 0.9, "lesion")]

    monkeypatch.setitem(EXPERTS, "bright3d", BrightBlobs3D)
    spec = SourceSpec(name="p", format="nifti", modality="CT",
                      generate={"kind": "ct_lesion", "cases": 1, "seed": 5},
                      layout={"images": ["images/*.nii.gz"]})  # labels not declared
    root = ensure_phantoms(spec.generate, tmp_path / "p")
    (res,), _ = run(spec, root, [{"name": "bright3d"}])
    rois = [r for s in res.samples for r in s["rois"]]
    assert BrightBlobs3D.calls == 1
    # slice choice was steered to the lesion (plus the usual normal slices)
    with_roi = sum(bool(s["rois"]) for s in res.samples)
    assert with_roi >= 3 and len(res.samples) - with_roi <= 2
    truth = __import__("json").loads((root / "truth" / "case000.json").read_text())
    assert {r["laterality"] for r in rois} == {truth["side"]}
    assert {r["origin"] for r in rois} == {"expert:bright3d"}


def test_replacing_expert_weights_changes_the_unit_fingerprint(tmp_path):
    import os

    from curate.build import unit_fingerprint
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    weights = bundle / "models" / "model.pt"
    weights.write_bytes(b"v1")
    spec = SourceSpec(name="s", format="nifti", layout={"images": ["*.nii"]})
    recipe = Recipe.model_validate({"name": "t", "sources": [], "experts": [
        {"name": "monai_bundle", "params": {"path": str(bundle)}}]})
    before = unit_fingerprint(recipe, spec)
    weights.write_bytes(b"v2-larger")
    os.utime(weights, ns=(1, 1))
    assert unit_fingerprint(recipe, spec) != before


def test_scanning_experts_choose_the_slices_of_a_lesion_nothing_annotates(tmp_path):
    """A CT volume without labels whose only lesion (slices 30-33 of 40) no annotation
    marks: with `scan`, the lesion candidate expert runs on every slice first, so the
    slices holding the lesion ship, with the lesion as an expert ROI."""
    import numpy as np
    import SimpleITK as sitk

    z, y, x = np.mgrid[:40, :96, :96]
    hu = np.where(((x - 48) / 40) ** 2 + ((y - 48) / 36) ** 2 <= 1, 40, -1000).astype(np.int16)
    hu += np.random.default_rng(0).integers(-8, 8, hu.shape).astype(np.int16)
    lesion = ((x - 62) ** 2 + (y - 40) ** 2 <= 36) & (z >= 30) & (z <= 33)
    hu[lesion] = 160
    (tmp_path / "ct").mkdir()
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing((0.8, 0.8, 2.0))
    sitk.WriteImage(img, str(tmp_path / "ct" / "c.nii.gz"))
    spec = SourceSpec(name="p", format="nifti", modality="CT", anatomy="abdomen",
                      layout={"images": ["ct/*.nii.gz"]})
    expert = {"name": "ct_lesion_candidates", "modality": ["CT"]}
    norm = {"normalize": {"normal_slices": 1, "roi_slices": 2}}
    (plain,), _ = run(spec, tmp_path, [expert], **norm)
    (scanned,), _ = run(spec, tmp_path, [{**expert, "scan": 1}], **norm)
    index = lambda res: {s["view"]["index"] for s in res.samples}  # noqa: E731
    assert not index(plain) & set(range(30, 34))  # the random normal slice misses it
    shown = index(scanned) & set(range(30, 34))
    assert len(shown) == 2  # roi_slices of the lesion's four
    lesions = [r for s in scanned.samples if s["view"]["index"] in shown for r in s["rois"]
               if r["origin"] == "expert:ct_lesion_candidates"]
    assert lesions and all(r["laterality"] == "left" for r in lesions)
