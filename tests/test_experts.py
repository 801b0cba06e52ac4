"""Experts on phantoms with known truth and on real images shipped in packages.

Accuracy floors here are set a little under what the experts measure (see
docs/experts.md), so a regression fails while noise does not.
"""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from pydantic import ValidationError

from curate.model.errors import CurateError, MissingDependency
from curate.model.recipe import View
from curate.unit.experts import (
    EXPERTS,
    Expert,
    ExpertConfig,
    ExpertError,
    ExpertROI,
    Resources,
    assign_organ,
    expert_rois_to_facts,
    external,
    run_experts,
    select_experts,
)
from curate.unit.experts.phantoms import (
    abdomen_phantom,
    chest_phantom,
    ct_view,
    fundus_phantom,
    he_phantom,
    rgb_view,
)


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


# --- interface, registry, config ---------------------------------------------------

def test_expert_roi_validates_and_unpacks():
    m = np.zeros((4, 5), bool)
    m[1, 1] = True
    label, mask, score, kind = ExpertROI("x", m.astype(np.uint8), 0.5, "organ")
    assert mask.dtype == bool and score == 0.5 and kind == "organ" and label == "x"
    for bad in [dict(score=1.5), dict(kind="tumour"), dict(mask=np.zeros((4, 5), bool))]:
        args = {"label": "x", "mask": m, "score": 0.5, "kind": "organ", **bad}
        with pytest.raises(ExpertError):
            ExpertROI(**args)


def test_registry_config_and_selection():
    assert {"ct_lungs", "ct_lesion_candidates", "he_nuclei", "fundus_optic_disc",
            "monai_bundle", "totalsegmentator", "cellpose"} <= set(EXPERTS)
    cfgs = [ExpertConfig(name="ct_lungs", modality=["CT"]),
            ExpertConfig(name="ct_lesion_candidates", params={"within": "organs"},
                         modality=["ct"], sources=["lidc"]),
            ExpertConfig(name="he_nuclei", params={"per_nucleus": False})]
    assert [c.name for c in select_experts(cfgs, "lidc", "CT")] == [
        "ct_lungs", "ct_lesion_candidates", "he_nuclei"]
    assert [c.name for c in select_experts(cfgs, "msd", "CT")] == ["ct_lungs", "he_nuclei"]
    assert [c.name for c in select_experts(cfgs, "msd", "MR")] == ["he_nuclei"]
    assert isinstance(cfgs[1].build(), EXPERTS["ct_lesion_candidates"])
    with pytest.raises(ValidationError, match="unknown expert"):
        ExpertConfig(name="ct_lung")
    with pytest.raises(ValidationError, match="within"):
        ExpertConfig(name="ct_lesion_candidates", params={"within": "liver"})
    with pytest.raises(ValidationError, match="typo: Extra inputs"):
        ExpertConfig(name="ct_lungs", params={"air_hu": -400, "typo": 1})
    with pytest.raises(ValidationError):
        ExpertConfig(name="ct_lungs", modalities=["CT"])
    bundle = EXPERTS["monai_bundle"](path="/x", num_gpus=1)
    assert bundle.resources == Resources(1.0, 1.0)
    assert bundle.resources.ray_options() == {"num_cpus": 1.0, "num_gpus": 1.0}


class _WrongGrid(Expert):
    name = "wrong_grid"

    def run(self, view, context):
        return [ExpertROI("x", np.ones((3, 3), bool), 1.0, "structure")]


def test_masks_off_the_grid_and_wrong_inputs_are_errors():
    view, _ = chest_phantom()
    with pytest.raises(ExpertError, match="mask"):
        _WrongGrid()(view)
    vol = sitk.GetImageFromArray(np.zeros((4, 8, 8), np.float32))
    with pytest.raises(ExpertError, match="View2D"):
        EXPERTS["ct_lungs"]()(vol)
    with pytest.raises(ExpertError, match="volume"):
        EXPERTS["totalsegmentator"]()(view)
    mr = ct_view(view.raw, modality="MR")
    with pytest.raises(ExpertError, match="CT"):
        EXPERTS["ct_lungs"]()(mr)
    with pytest.raises(ExpertError, match="RGB"):
        EXPERTS["fundus_optic_disc"]()(view)


# --- CT ------------------------------------------------------------------------------

@pytest.mark.parametrize("gap,floor", [(48, 0.98), (36, 0.97)])  # apart; touching at midline
def test_ct_lungs_on_phantom_with_lps_sides(gap, floor):
    view, truth = chest_phantom(gap=gap)
    rois = EXPERTS["ct_lungs"]()(view)
    assert sorted(r.label for r in rois) == ["left lung", "right lung"]
    for r in rois:
        assert r.kind == "organ" and 0.9 <= r.score <= 1.0
        assert dice(r.mask, truth[r.label]) >= floor
    left = next(r for r in rois if r.label == "left lung")
    assert np.nonzero(left.mask)[1].mean() > 128  # patient's left = image right (LPS)


def test_ct_lungs_without_patient_frame_and_without_lungs():
    view, _ = chest_phantom()
    view.plane = View.none
    assert {r.label for r in EXPERTS["ct_lungs"]()(view)} == {"lung"}
    abdomen, _ = abdomen_phantom()
    assert EXPERTS["ct_lungs"]()(abdomen) == []


def test_ct_lungs_on_real_ct_small_with_cropped_field_of_view():
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    view = ct_view(hu, spacing=tuple(float(s) for s in ds.PixelSpacing))
    rois = {r.label: r for r in EXPERTS["ct_lungs"]()(view)}
    assert set(rois) == {"left lung", "right lung"}
    assert np.nonzero(rois["right lung"].mask)[1].mean() < 40  # upper left of the image
    assert np.nonzero(rois["left lung"].mask)[1].mean() > 88
    for r in rois.values():
        assert np.median(hu[r.mask]) < -600 and r.mask.sum() > 1000


def test_nodule_candidates_inside_lungs_and_organ_context():
    view, truth = chest_phantom()
    lungs = EXPERTS["ct_lungs"]()(view)
    by_self = EXPERTS["ct_lesion_candidates"](within="lungs")(view)
    by_ctx = EXPERTS["ct_lesion_candidates"](within="organs")(view, lungs)
    for found in (by_self, by_ctx):
        (nod,) = found
        assert nod.label == "hyperdense lesion candidate" and nod.kind == "lesion"
        assert dice(nod.mask, truth["nodule"]) >= 0.95 and nod.score > 0.8
    assert assign_organ(by_ctx[0], lungs) == "left lung"
    assert assign_organ(by_ctx[0], {"liver": truth["right lung"]}) is None
    facts = expert_rois_to_facts(view, lungs + by_ctx, "ct")
    nod = facts[-1]
    assert nod["origin"] == "expert:ct" and nod["confidence"] == pytest.approx(by_ctx[0].score)
    assert nod["laterality"] == "left" and "in the left lung" in nod["relations"]
    assert nod["area_mm2"] == pytest.approx(truth["nodule"].sum() * 0.49, rel=0.15)
    # chained the way a recipe runs them: lungs first, candidates see them as context
    chained = run_experts(view, [EXPERTS["ct_lungs"](),
                                 EXPERTS["ct_lesion_candidates"](within="organs")])
    assert [n for n, _ in chained] == ["ct_lungs", "ct_lesion_candidates"]
    assert len(chained[1][1]) == 1


def test_soft_tissue_candidates_bright_and_dark():
    view, truth = abdomen_phantom()
    rois = EXPERTS["ct_lesion_candidates"]()(view)
    assert sorted(r.label for r in rois) == ["hyperdense lesion candidate",
                                             "hypodense lesion candidate"]
    for r in rois:
        key = "bright" if r.label.startswith("hyper") else "dark"
        assert dice(r.mask, truth[key]) >= 0.93
    only_dark = EXPERTS["ct_lesion_candidates"](polarity="dark")(view)
    assert [r.label for r in only_dark] == ["hypodense lesion candidate"]
    chest, _ = chest_phantom()  # vertebra, fat rim and lung edges are not candidates
    assert EXPERTS["ct_lesion_candidates"]()(chest) == []


# --- pathology -----------------------------------------------------------------------

def test_he_nuclei_on_phantom_split_and_counted():
    view, truth = he_phantom()
    n_true = int(truth.max())
    rois = EXPERTS["he_nuclei"]()(view)
    matched = sum(max((iou(r.mask, truth == i) for i in np.unique(truth[r.mask]) if i),
                      default=0) >= 0.5 for r in rois)
    assert matched / len(rois) >= 0.95 and matched / n_true >= 0.95
    assert all(r.label == "nucleus" and r.kind == "structure" for r in rois)
    (merged,) = EXPERTS["he_nuclei"](per_nucleus=False)(view)
    assert merged.meta["count"] == len(rois) and dice(merged.mask, truth > 0) >= 0.95


def test_he_nuclei_finds_nothing_without_haematoxylin():
    view, _ = he_phantom(nuclei=0)
    assert EXPERTS["he_nuclei"]()(view) == []


def test_he_nuclei_on_real_ihc_image():
    from skimage import data

    from curate.unit.experts.pathology import hematoxylin

    img = data.immunohistochemistry()
    (merged,) = EXPERTS["he_nuclei"](per_nucleus=False, nucleus_diameter_px=14)(
        rgb_view(img, "pathology"))
    h = hematoxylin(img)
    assert merged.meta["count"] >= 150
    assert h[merged.mask].mean() > 2 * h[~merged.mask].mean()


# --- fundus --------------------------------------------------------------------------

@pytest.mark.parametrize("seed,disc", [(0, (225, 150, 22)), (1, (95, 170, 20))])
def test_fundus_optic_disc_on_phantom(seed, disc):
    view, truth = fundus_phantom(seed, disc=disc)
    (roi,) = EXPERTS["fundus_optic_disc"]()(view)
    assert roi.label == "optic disc" and iou(roi.mask, truth) >= 0.9


def test_fundus_optic_disc_on_skimage_retina():
    from skimage import data

    img = data.retina()  # the disc is the bright region left of centre, about (207, 647)
    (roi,) = EXPERTS["fundus_optic_disc"]()(rgb_view(img, "fundus"))
    ys, xs = np.nonzero(roi.mask)
    assert np.hypot(xs.mean() - 207, ys.mean() - 647) < 50
    assert 0.08 <= roi.meta["diameter_frac"] <= 0.2 and roi.score > 0.5


# --- MONAI bundle --------------------------------------------------------------------

def write_bundle(root, net_def, state, spatial, labels, post_invert=True, loader_channel=False,
                 orient=False):
    """A bundle laid out as MONAI's model zoo does, with its own pre/post-processing."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    import torch

    torch.save(state, root / "models" / "model.pt")
    pre = [{"_target_": "LoadImaged", "keys": "image", "ensure_channel_first": loader_channel}]
    if not loader_channel:
        pre.append({"_target_": "EnsureChannelFirstd", "keys": "image"})
    if orient:
        pre.append({"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"})
    pre += [{"_target_": "ScaleIntensityd", "keys": "image"},
            {"_target_": "Resized", "keys": "image", "spatial_size": spatial}]
    post = [{"_target_": "Activationsd", "keys": "pred", "softmax": True}]
    if post_invert:
        post.append({"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing",
                     "orig_keys": "image", "nearest_interp": False, "to_tensor": True})
    post += [{"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
             {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir"}]
    inference = {
        "bundle_root": ".", "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": net_def, "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": pre},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": post},
    }
    (root / "configs" / "inference.json").write_text(json.dumps(inference))
    meta = {"version": "0.1.0", "network_data_format": {
        "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": spatial}},
        "outputs": {"pred": {"type": "image", "num_channels": len(labels),
                             "channel_def": {str(i): n for i, n in enumerate(labels)}}}}}
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def no_download(monkeypatch):
    import monai.bundle

    def refuse(*a, **k):
        raise AssertionError("monai.bundle.download must never be called")

    monkeypatch.setattr(monai.bundle, "download", refuse)


def test_monai_bundle_unet_runs_offline_on_the_views_grid(tmp_path, no_download):
    import torch
    from monai.networks.nets import UNet

    kw = dict(spatial_dims=2, in_channels=1, out_channels=3, channels=[4, 8], strides=[2],
              num_res_units=0)
    torch.manual_seed(0)
    state = UNet(**kw).state_dict()
    last = [k for k, v in state.items() if k.endswith("bias") and v.shape == (3,)][-1]
    state[last] = torch.tensor([-20.0, 0.0, 0.0])  # never background: every pixel labelled
    root = write_bundle(tmp_path / "bundle", {"_target_": "UNet", **kw}, state, [32, 32],
                        ["background", "liver", "tumour"])
    hu = np.random.default_rng(0).normal(40, 200, (40, 48))  # non-square catches transposes
    view = ct_view(hu)
    rois = EXPERTS["monai_bundle"](path=str(root), kinds={"tumour": "lesion"})(view)
    assert {r.label for r in rois} <= {"liver", "tumour"} and rois
    assert all(r.mask.shape == (40, 48) and not r.meta["resampled"] for r in rois)
    assert sum(int(r.mask.sum()) for r in rois) == 40 * 48
    assert all(r.kind == ("lesion" if r.label == "tumour" else "organ") for r in rois)
    assert all(0.0 <= r.score <= 1.0 for r in rois)
    assert not (root / "eval").exists()  # SaveImaged dropped: nothing written


@pytest.mark.parametrize("dims,invert,loader_channel", [
    (2, True, False), (2, False, False), (2, True, True), (3, True, False)])
def test_monai_bundle_geometry_with_a_known_network(tmp_path, no_download, dims, invert,
                                                     loader_channel):
    """A 1x1 conv that says 'foreground where the scaled input > 0.5' makes the expected
    mask exact, so any transpose, flip or resampling error shows."""
    import torch

    conv = {"_target_": f"torch.nn.Conv{dims}d", "in_channels": 1, "out_channels": 2,
            "kernel_size": 1}
    state = {"weight": torch.tensor([-10.0, 10.0]).reshape(2, 1, *([1] * dims)),
             "bias": torch.tensor([5.0, -5.0])}
    spatial = [24] * dims  # the network sees 24^dims; the mask must come back on x's grid
    root = write_bundle(tmp_path / "b", conv, state, spatial, ["background", "spot"],
                        post_invert=invert, loader_channel=loader_channel, orient=dims == 3)
    expert = EXPERTS["monai_bundle"](path=str(root), input="raw")
    if dims == 2:
        raw = np.zeros((40, 48), np.float32)
        raw[5:15, 30:44] = 100.0  # off-centre, non-square: a transpose would miss it
        x = ct_view(raw, spacing=(0.8, 0.8), modality="MR")
        want = raw > 50
    else:
        raw = np.zeros((8, 12, 16), np.float32)
        raw[2:5, 3:6, 9:14] = 100.0
        x = sitk.GetImageFromArray(raw)
        x.SetSpacing((0.8, 0.9, 2.5))
        x.SetOrigin((10.0, -4.0, 30.0))  # LPS-stored: Orientationd(RAS) flips, Invertd undoes
        want = raw > 50
    (roi,) = expert(x)
    assert roi.label == "spot" and roi.mask.shape == want.shape
    # with Invertd the bundle maps back itself; without it we resize by nearest neighbour
    assert roi.meta["resampled"] is (not invert)
    assert iou(roi.mask, want) >= (0.99 if invert else 0.9)


def test_monai_bundle_missing_weights_names_the_folder(tmp_path, no_download):
    root = tmp_path / "bundle"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "inference.json").write_text("{}")
    (root / "configs" / "metadata.json").write_text("{}")
    with pytest.raises(CurateError, match=rf"weights missing in bundle folder {root}.*model.pt"):
        EXPERTS["monai_bundle"](path=str(root)).setup()


# --- optional packages ---------------------------------------------------------------

def test_totalsegmentator_and_cellpose_say_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(external, "installed", lambda module: False)
    with pytest.raises(MissingDependency, match="pip install TotalSegmentator"):
        EXPERTS["totalsegmentator"]().setup()
    with pytest.raises(MissingDependency, match="pip install cellpose"):
        EXPERTS["cellpose"]().setup()

    monkeypatch.setattr(external, "installed", lambda module: True)
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "ts"))
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    with pytest.raises(ExpertError, match=r"totalseg_download_weights -t total.*never downloads"):
        EXPERTS["totalsegmentator"](fast=True).setup()
    try:
        EXPERTS["totalsegmentator"](fast=True).setup()
    except ExpertError as err:
        assert str(tmp_path / "ts" / "nnunet" / "results") in str(err) and "297" in str(err)

    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / "cp"))
    with pytest.raises(ExpertError, match=rf"model 'nuclei' in {tmp_path / 'cp'}"):
        EXPERTS["cellpose"]().setup()
    (tmp_path / "cp").mkdir()
    (tmp_path / "cp" / "nucleitorch_0").write_bytes(b"x")
    assert external.cellpose_weights("nuclei", tmp_path / "cp").name == "nucleitorch_0"


def test_monai_input_matches_what_load_image_reads_from_a_file(tmp_path):
    """Bundles were trained on LoadImage output; the in-memory input must be the same."""
    from monai.transforms import LoadImage

    from curate.unit.experts.monai_bundle import to_monai

    arr = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.8, 2.0))
    img.SetOrigin((-10.0, 20.0, 5.0))
    img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    sitk.WriteImage(img, str(tmp_path / "v.nii.gz"))
    ref = LoadImage(image_only=True)(str(tmp_path / "v.nii.gz"))
    got, affine, _ = to_monai(img, "raw")
    assert np.allclose(got, np.asarray(ref)) and np.allclose(affine, np.asarray(ref.affine))
