import numpy as np
import pytest
import SimpleITK as sitk

from curate.config import NormalizeConfig, View
from curate.ingest.base import Box, CaseMeta, ImageCase, VolumeCase
from curate.normalize import (
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
    from curate.normalize import pick_window
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
