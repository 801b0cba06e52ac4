"""The torch feed over a build's shards."""

import pytest
import torch

from curate.build import build
from curate.train.feed import samples


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
    with pytest.raises(FileNotFoundError, match="no val shards"):
        samples(out, "val")
