"""Feed a build's shards to PyTorch training.

    from curate.train.feed import samples
    loader = torch.utils.data.DataLoader(samples("out/demo", split="train"), batch_size=None)
    for image, masks, record in loader: ...

Each item is the clean image as a float tensor (C, H, W) in [0, 1], the ROI masks as a
bool tensor (R, H, W) aligned with record["rois"] (box ROIs get their box filled, marked
by area_kind = "box" in the record), and the record itself (caption, levels, VQA, ...).
Shards are split across DataLoader workers and, under torch.distributed, across nodes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image


def _decode(sample: dict):
    import torch

    record = json.loads(sample["json"])
    with Image.open(io.BytesIO(sample["png"])) as im:
        arr = np.array(im.convert("RGB") if im.mode not in ("L", "RGB") else im)  # a copy
    image = torch.from_numpy(arr).float() / 255.0
    image = image[None] if image.ndim == 2 else image.permute(2, 0, 1)
    h, w = image.shape[-2:]
    masks = torch.zeros((len(record["rois"]), h, w), dtype=torch.bool)
    for i, roi in enumerate(record["rois"]):
        if roi.get("mask") and roi["mask"] in sample:
            with Image.open(io.BytesIO(sample[roi["mask"]])) as m:
                masks[i] = torch.from_numpy(np.asarray(m) > 0)
        else:
            x0, y0, x1, y1 = roi["bbox"]
            masks[i, y0:y1, x0:x1] = True
    return image, masks, record


def shard_paths(build_dir: str | Path, split: str) -> list[str]:
    paths = sorted(str(p) for p in (Path(build_dir) / "shards").glob(f"{split}-*.tar"))
    if not paths:
        raise FileNotFoundError(f"no {split} shards under {build_dir}/shards")
    return paths


def samples(build_dir: str | Path, split: str = "train", shuffle: int = 0, seed: int = 0):
    """An iterable dataset over one split's shards (webdataset pipeline)."""
    import webdataset as wds

    stages = [wds.SimpleShardList(shard_paths(build_dir, split), seed=seed if shuffle else None),
              wds.split_by_node, wds.split_by_worker,
              wds.tarfile_to_samples(handler=wds.reraise_exception)]
    if shuffle:
        stages.append(wds.shuffle(shuffle, seed=seed))
    stages.append(wds.map(_decode))
    return wds.DataPipeline(*stages)
