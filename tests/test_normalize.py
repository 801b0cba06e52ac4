import numpy as np
import pytest
import SimpleITK as sitk

from curate.ingest.base import Box, CaseMeta, ImageCase, VolumeCase
from curate.model.recipe import NormalizeConfig, View
from curate.unit.normalize import (
    choose_slices,
    image_view,
    percentile_range,
    to_lps,
    volume_views,
    window_ct,
)


def test_window_ct_maps_the_window_to_0_255():
    hu = np.array([-2000, -160, 40, 240, 3000], np.float32)
    out, win = window_ct(hu, "soft_tissue")  # W400 L40
    assert out.tolist() == [0, 0, 128, 255, 255]
    assert (win["low"], win["high"]) == (-160, 240)


def test_unknown_window_is_a_clear_error():
    from curate.unit.normalize import pick_window
    with pytest.raises(ValueError, match="unknown CT window"):
        pick_window("CT", None, "lungs")


def test_percentiles_ignore_zero_background():
    v = np.zeros(1000, np.float32)
    v[:100] = np.arange(1, 101)
    low, high = percentile_range(v, (0.5, 99.5))
    assert 1 <= low < 2 and 99 < high <= 100


def _volume(direction):
    arr = np.zeros((4, 5, 6), np.float32)  # z, y, x
    arr[:, :, 0] = 1  # the first column along the image's own x axis
    img = sitk.GetImageFromArray(arr)
    img.SetDirection(direction)
    return img


def test_to_lps_flips_ras_x_axis():
    # RAS-like grid: +i points to the patient's right (-x in LPS)
    ras = _volume((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    out = sitk.GetArrayFromImage(to_lps(ras))
    # the marked voxels were the patient's leftmost... i=0 is the most left in RAS grid,
    # so after reorienting to LPS they sit at the largest column
    assert out[:, :, -1].all() and not out[:, :, 0].any()
    assert np.allclose(to_lps(ras).GetDirection(), np.eye(3).ravel())


def test_choose_slices_keeps_roi_slices_and_some_normal_ones():
    labels = np.zeros((10, 8, 8), np.uint8)
    labels[4:7, 2:6, 2:6] = 1
    labels[3, 3, 3] = 1  # a sliver under 10% of the largest slice: dropped
    body = np.ones(10)
    cfg = NormalizeConfig(roi_slices=5, normal_slices=2)
    picked = choose_slices(labels, body, cfg, np.random.default_rng(0))
    assert {4, 5, 6} <= set(picked) and 3 not in picked
    assert len(set(picked) - {4, 5, 6}) == 2


def test_resize_keeps_aspect_and_rescales_spacing_and_boxes():
    px = np.zeros((200, 100), np.uint8)
    px[50:150, 25:75] = 200
    case = ImageCase(pixels=px, meta=CaseMeta(), view=View.frontal, spacing=(0.5, 0.5),
                     mask=(px > 0).astype(np.uint8), boxes=[Box("b", 25, 50, 75, 150)])
    view = image_view(case, NormalizeConfig(max_size=100))
    assert view.image.shape == (100, 50)
    assert view.spacing == pytest.approx((1.0, 1.0))
    assert set(np.unique(view.labels)) == {0, 1}  # nearest neighbour keeps labels
    b = view.boxes[0]
    assert (b.x0, b.y0, b.x1, b.y1) == pytest.approx((12.5, 25, 37.5, 75))


def test_volume_views_record_window_and_hu():
    arr = np.full((6, 20, 20), -1000, np.float32)
    arr[:, 5:15, 5:15] = 40
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.7, 3.0))
    case = VolumeCase(img, None, CaseMeta(modality="CT", anatomy="brain"))
    views = volume_views(case, NormalizeConfig(normal_slices=2), np.random.default_rng(0))
    assert len(views) == 2
    assert views[0].window["name"] == "brain"
    assert views[0].spacing == pytest.approx((0.7, 0.7))
    assert views[0].raw.max() == 40


# ---- the bounded-memory path against the whole-volume one (issue 13, item 9) -----------

ORIENTATIONS = [a + b + c for a in "LR" for b in "PA" for c in "SI"]
ORIENTATIONS = [("".join(o[i] for i in p)) for o in ORIENTATIONS
                for p in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))]


def test_lps_array_is_to_lps_in_all_48_orientations():
    from curate.unit.normalize import lps_array
    arr = np.random.default_rng(0).integers(-1000, 1000, (4, 5, 6)).astype(np.int16)
    lps = sitk.GetImageFromArray(arr)
    lps.SetSpacing((0.7, 0.9, 2.5))
    assert len(set(ORIENTATIONS)) == 48
    for code in ORIENTATIONS:
        img = sitk.DICOMOrient(lps, code)
        ref = to_lps(img)
        ours, spacing = lps_array(img)
        assert np.array_equal(ours, sitk.GetArrayViewFromImage(ref)), code
        assert ours.dtype == np.int16 and spacing == ref.GetSpacing(), code
    oblique = sitk.Image(lps)
    c, s = np.cos(0.3), np.sin(0.3)
    oblique.SetDirection((c, -s, 0, s, c, 0, 0, 0, 1))  # not a signed permutation: to_lps
    ours, spacing = lps_array(oblique)
    assert np.array_equal(ours, sitk.GetArrayFromImage(to_lps(oblique)))


def test_label_components_on_boxes_are_the_whole_volume_components():
    from curate.unit.normalize import components_3d, label_components, slice_areas
    labels = np.zeros((9, 12, 14), np.uint16)
    labels[1:4, 2:5, 3:6] = 1
    labels[6:8, 8:11, 9:13] = 1  # a second component of value 1
    labels[7, 11, 13] = 1  # touches it only by a corner: 26-connected, the same component
    labels[2:7, 6:9, 0:2] = 3
    labels[0, 0, 0] = 3  # a one-voxel component at the volume's corner
    spacing = (0.8, 0.9, 2.0)
    whole, mm3 = components_3d(labels, spacing)
    ours = label_components(labels, spacing)
    assert ours.mm3 == mm3 and len(mm3) == 4
    for k in range(labels.shape[0]):
        assert np.array_equal(ours.at(k), whole[k]), k
    ref = slice_areas(labels)
    assert ref.keys() == ours.areas.keys()
    assert all(np.array_equal(ref[v], ours.areas[v]) for v in ref)


def _whole_volume_views(image, label, meta, cfg, rng):
    """volume_views as it was: everything reoriented, copied to float32, labelled whole."""
    from curate.unit.normalize import components_3d, pick_window, scale_to_uint8
    img = to_lps(image)
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    labels = sitk.GetArrayFromImage(to_lps(label))
    if meta.modality == "CT":
        name = pick_window("CT", meta.anatomy, None)
        body = arr > -500
        def intensity(sl):  # noqa: E306
            return window_ct(sl, name)
    else:
        low, high = percentile_range(arr, cfg.mr_percentiles)
        body = arr > (low + 0.1 * (high - low))
        def intensity(sl):  # noqa: E306
            return scale_to_uint8(sl, low, high), {"low": low, "high": high}
    comps, mm3 = components_3d(labels, img.GetSpacing())
    picks = choose_slices(labels, body.reshape(body.shape[0], -1).mean(axis=1), cfg, rng)
    return [(k, *intensity(arr[k]), arr[k], labels[k], body[k], comps[k], mm3) for k in picks]


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_volume_views_of_a_reoriented_phantom_match_the_whole_volume_path(tmp_path, modality):
    from curate.ingest import adapter
    from curate.model.recipe import SourceSpec
    spacing = (0.8, 0.9, 2.0)
    z, y, x = np.mgrid[:20, :40, :48]
    hu = np.where(((x - 24) / 22) ** 2 + ((y - 20) / 17) ** 2 <= 1, 40, -1000)
    hu = (hu + np.random.default_rng(1).integers(-20, 20, hu.shape)).astype(np.int16)
    lesion = ((x - 34) * 0.8) ** 2 + ((y - 18) * 0.9) ** 2 + ((z - 9) * 2.0) ** 2 <= 36
    hu[lesion] = 130
    for name, arr in (("img", hu), ("lab", lesion.astype(np.uint8))):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(spacing)
        (tmp_path / name).mkdir()  # stored with axes swapped and flipped: not LPS
        sitk.WriteImage(sitk.DICOMOrient(img, "SRA"), str(tmp_path / name / "c.nii.gz"))
    spec = SourceSpec(name="p", format="nifti", modality=modality, anatomy="abdomen",
                      layout={"images": ["img/*.nii.gz"], "masks": "lab/{name}"})
    plan, read = adapter(spec.format)
    (unit,), _ = plan(spec, tmp_path)
    (case,) = read(spec, tmp_path, unit)
    assert case.image.GetPixelID() == sitk.sitkInt16  # read as stored, not as float32
    cfg = NormalizeConfig(max_size=4096, roi_slices=3, normal_slices=2)
    views = volume_views(case, cfg, np.random.default_rng(7))
    ref = _whole_volume_views(sitk.ReadImage(str(tmp_path / "img" / "c.nii.gz"), sitk.sitkFloat32),
                              sitk.ReadImage(str(tmp_path / "lab" / "c.nii.gz"), sitk.sitkUInt16),
                              case.meta, cfg, np.random.default_rng(7))
    assert [v.index for v in views] == [r[0] for r in ref] and len(views) == 5
    for v, (k, u8, win, raw, labels, body, comps, mm3) in zip(views, ref, strict=True):
        assert np.array_equal(v.image, u8) and np.array_equal(v.raw, raw), k
        assert v.raw.dtype == np.float32 and {**v.window, **win} == v.window, k
        assert np.array_equal(v.labels, labels) and np.array_equal(v.body, body), k
        assert np.array_equal(v.components, comps) and v.component_mm3 == mm3, k
        assert v.spacing == pytest.approx((0.9, 0.8))  # NIfTI holds float32 spacing
    # the phantom's truth: one lesion, its volume, on the patient's left (high x)
    assert list(views[0].component_mm3.values()) == pytest.approx([lesion.sum() * np.prod(spacing)])
    shown = [v for v in views if v.labels.any()]
    assert len(shown) == 3 and all(np.nonzero(v.labels)[1].min() > 24 for v in shown)


@pytest.mark.parametrize("spacing,planes", [((1.0, 1.0, 1.1), ["axial", "coronal", "sagittal"]),
                                            ((0.7, 0.7, 5.0), ["axial"])])
def test_other_planes_only_where_the_voxels_are_near_isotropic(spacing, planes):
    from curate.ingest.base import CaseMeta, VolumeCase
    arr = np.zeros((24, 32, 32), np.int16) - 1000
    arr[4:20, 6:26, 6:26] = 40
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    case = VolumeCase(image=img, label=None, meta=CaseMeta(modality="CT"))
    cfg = NormalizeConfig(planes=["acquisition", "coronal", "sagittal"], normal_slices=1)
    views = volume_views(case, cfg, np.random.default_rng(0))
    assert sorted({v.plane.value for v in views}) == planes
    shapes = {v.plane.value: v.image.shape for v in views}
    assert shapes["axial"] == (32, 32)
    if "coronal" in shapes:
        assert shapes["coronal"] == (24, 32) and shapes["sagittal"] == (24, 32)
