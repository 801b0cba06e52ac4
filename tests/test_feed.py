"""The torch feed over a build's shards."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from curate.build import build
from curate.model import masks as mask_member
from curate.model.errors import CurateError
from curate.train.feed import collate, decode, image_chw, resize_masks, samples


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def fake_sample(arr: np.ndarray, boxes: list[list[int]]) -> dict:
    h, w = arr.shape[:2]
    rois = [{"bbox": b, "area_kind": "box"} for b in boxes]
    m = mask_member.masks_array(rois, [None] * len(rois), h, w)
    return {"__key__": "s0", "png": png_bytes(arr), mask_member.MEMBER: mask_member.pack(m),
            "json": json.dumps({"sample_id": "s0", "rois": rois}).encode()}


@pytest.mark.parametrize("shape", [(30, 40), (30, 40, 3)])
def test_image_is_float_chw_scaled_like_plain_numpy(shape):
    arr = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = image_chw(png_bytes(arr))
    want = arr.astype(np.float32) / 255.0
    want = want[None] if want.ndim == 2 else want.transpose(2, 0, 1)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert out.shape == want.shape
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-7)
    assert out.min() >= 0 and out.max() <= 1


def test_decode_gives_tensors_masks_and_record():
    arr = np.zeros((20, 30), np.uint8)
    arr[5:10, 10:20] = 255
    image, masks, record = decode(fake_sample(arr, [[10, 5, 20, 10], [0, 0, 3, 2]]))
    assert isinstance(image, torch.Tensor) and image.shape == (1, 20, 30)
    assert masks.dtype == torch.bool and masks.shape == (2, 20, 30)
    assert masks[0].sum() == 50 and masks[1].sum() == 6
    assert bool(masks[0, 5:10, 10:20].all()) and record["sample_id"] == "s0"
    assert float(image[0, 7, 15]) == 1.0 and float(image[0, 0, 0]) == 0.0


def test_resize_keeps_boxes_where_bbox_norm_says_and_numpy_mode():
    arr = np.zeros((40, 80, 3), np.uint8)
    image, masks, _ = decode(fake_sample(arr, [[40, 0, 80, 20]]), size=(16, 16),
                             to_tensor=False)
    assert isinstance(image, np.ndarray) and image.shape == (3, 16, 16)
    assert masks.shape == (1, 16, 16) and masks.dtype == bool
    # the box covered the top-right quarter; after the resize it still does
    assert masks[0, :8, 8:].all() and not masks[0, 8:, :].any() and not masks[0, :, :8].any()
    assert resize_masks(np.ones((0, 4, 4), bool), (2, 2)).shape == (0, 2, 2)


def test_old_shards_without_the_masks_member_are_a_clear_error():
    sample = fake_sample(np.zeros((4, 4), np.uint8), [])
    del sample[mask_member.MEMBER]
    with pytest.raises(CurateError, match="older curate; rebuild"):
        decode(sample)


def test_bad_resize_or_channels_are_refused(tmp_path):
    with pytest.raises(CurateError, match="resize"):
        samples(tmp_path, resize=(0, 4))
    with pytest.raises(CurateError, match="channels"):
        samples(tmp_path, channels=2)


def test_channels_converts_grey_and_colour():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    rgb = np.stack([grey, grey, grey], axis=2)
    assert image_chw(png_bytes(grey), channels=3).shape == (3, 3, 4)
    np.testing.assert_allclose(image_chw(png_bytes(grey), channels=3)[2], grey / 255, atol=1e-7)
    np.testing.assert_allclose(image_chw(png_bytes(rgb), channels=1)[0], grey / 255, atol=1e-2)


@pytest.mark.slow
def test_feed_yields_images_masks_and_records(tmp_path, mask_folder, write_recipe):
    recipe = write_recipe([{"name": "f", "path": str(mask_folder), "format": "image_mask",
                            "layout": {"images": ["img/p*.png"], "masks": "seg/{stem}_seg.png",
                                       "label_map": {1: "opacity"}}}],
                          split={"train": 1.0, "val": 0.0, "test": 0.0})
    out = tmp_path / "out"
    build(recipe, out, executor="local", log=lambda m: None)
    loader = torch.utils.data.DataLoader(samples(out, "train"), batch_size=None, num_workers=2)
    items = list(loader)
    assert len(items) == 3
    for image, masks, record in items:
        assert image.shape == (1, 64, 80) and 0 <= image.min() and image.max() <= 1
        assert masks.shape == (1, 64, 80) and masks.dtype == torch.bool
        x0, y0, x1, y1 = record["rois"][0]["bbox"]
        assert masks[0].sum() == (x1 - x0) * (y1 - y0)  # the phantom's region is a rectangle
        assert record["caption"] and record["rois"][0]["label"] == "opacity"
    # one size and one channel count: batched in the workers with feed.collate
    batched = torch.utils.data.DataLoader(samples(out, "train", resize=32, channels=3),
                                          batch_size=3, collate_fn=collate, num_workers=2)
    images, masks, records = next(iter(batched))
    assert images.shape == (3, 3, 32, 32) and masks[0].shape == (1, 32, 32)
    assert len(records) == 3 and bool((images[:, 0] == images[:, 1]).all())  # grey as RGB
    shuffled = [r["sample_id"] for _, _, r in samples(out, "train", shuffle=10, seed=1)]
    assert sorted(shuffled) == sorted(r["sample_id"] for _, _, r in items)
    with pytest.raises(FileNotFoundError, match="no val shards"):
        samples(out, "val")
