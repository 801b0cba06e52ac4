"""Feed a build's shards to PyTorch training.

    from curate.train.feed import samples
    loader = torch.utils.data.DataLoader(samples("out/demo", split="train"), batch_size=None)
    for image, masks, record in loader: ...

Each item is the clean image as a float tensor (C, H, W) in [0, 1], the ROI masks as a
bool tensor (R, H, W) aligned with record["rois"] (box ROIs get their box filled, marked
by area_kind = "box" in the record; a point ROI, area_kind = "point", an empty plane), and
the record itself (caption, levels, VQA, ...).
`resize=(H, W)` (or one int for a square) and `channels=1|3` give every image one shape
(boxes in `bbox_norm` stay valid: the resize is not a crop), so `collate` batches items
inside the DataLoader workers (masks differ in R and stay a list): one image tensor per
batch crosses to the training process instead of one per sample, about a quarter less
CPU per sample; `to_tensor=False` yields NumPy arrays. Shards are split across
DataLoader workers and, under torch.distributed, across nodes.

Decoding is NumPy work on the decoded PNG: reordered to (C, H, W) as bytes, cast and
scaled to float32 [0, 1] in one contiguous pass, then a zero-copy `torch.from_numpy`;
per-sample torch ops (`.float()`, `/ 255`, `.permute`) cost 3-5x more with torch's
default threads (`benchmarks/feed.py` measures both against a plain webdataset loop).
"""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from curate.model import masks as mask_member
from curate.model.errors import CurateError

SCALE = np.float32(1.0 / 255.0)


def image_chw(png: bytes, size: tuple[int, int] | None = None,
              channels: int | None = None) -> np.ndarray:
    """float32 (C, H, W) in [0, 1] from PNG bytes: C = 1 for grey, 3 for colour, or
    `channels` (1 or 3) for every image."""
    with Image.open(io.BytesIO(png)) as im:
        mode = {1: "L", 3: "RGB"}.get(channels) or (
            im.mode if im.mode in ("L", "RGB") else
            "RGB" if im.mode in ("RGBA", "P", "CMYK", "YCbCr") else "L")
        if im.mode != mode:
            im = im.convert(mode)
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(im)
    hwc = arr[:, :, None] if arr.ndim == 2 else arr
    # bytes first: the (C, H, W) reorder moves a quarter of the data as uint8, then one
    # contiguous pass casts and scales (a strided float pass is about 3x slower)
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    out = np.empty(chw.shape, np.float32)
    np.multiply(chw, SCALE, out=out)
    return out


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour (R, H, W) -> (R, *size), by index arrays (no per-mask loop)."""
    r, h, w = masks.shape
    if (h, w) == tuple(size):
        return masks
    rows = np.minimum((np.arange(size[0]) + 0.5) * h / size[0], h - 1).astype(np.intp)
    cols = np.minimum((np.arange(size[1]) + 0.5) * w / size[1], w - 1).astype(np.intp)
    return masks[:, rows[:, None], cols[None, :]]


def decode(sample: dict, size: tuple[int, int] | None = None, to_tensor: bool = True,
           channels: int | None = None):
    """(image, masks, record) from one shard sample's members."""
    if mask_member.MEMBER not in sample:
        raise CurateError(
            f"sample {sample.get('__key__')} in {sample.get('__url__')} has no "
            f"{mask_member.MEMBER} member: the build was made by an older curate; rebuild it")
    record = json.loads(sample["json"])
    image = image_chw(sample["png"], size, channels)
    masks = mask_member.unpack(sample[mask_member.MEMBER])
    if size is not None:
        masks = resize_masks(masks, size)
    if to_tensor:
        import torch

        return torch.from_numpy(image), torch.from_numpy(np.ascontiguousarray(masks)), record
    return image, masks, record


def _size(resize: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if resize is None:
        return None
    size = (resize, resize) if isinstance(resize, int) else tuple(resize)
    if len(size) != 2 or min(size) < 1:
        raise CurateError(f"resize must be a positive int or (height, width), not {resize!r}")
    return int(size[0]), int(size[1])


def shard_paths(build_dir: str | Path, split: str) -> list[str]:
    paths = sorted(str(p) for p in (Path(build_dir) / "shards").glob(f"{split}-*.tar"))
    if not paths:
        raise FileNotFoundError(f"no {split} shards under {build_dir}/shards")
    return paths


def samples(build_dir: str | Path, split: str = "train", shuffle: int = 0, seed: int = 0, *,
            resize: int | tuple[int, int] | None = None, channels: int | None = None,
            to_tensor: bool = True, handler=None):
    """An iterable dataset over one split's shards (webdataset pipeline).

    shuffle: buffer size of the sample shuffle (0: shards and samples in order).
    resize: (H, W) or one int: every image and mask to that size (bilinear / nearest).
    channels: 1 or 3: every image grey or RGB (default: as stored).
    to_tensor: torch tensors (default) or NumPy arrays.
    handler: webdataset's error policy for a bad shard or sample (default: raise;
    e.g. `webdataset.warn_and_continue`).
    """
    import webdataset as wds

    handler = handler or wds.reraise_exception
    size = _size(resize)
    if channels not in (None, 1, 3):
        raise CurateError(f"channels must be 1 or 3, not {channels!r}")
    stages = [wds.SimpleShardList(shard_paths(build_dir, split), seed=seed if shuffle else None),
              wds.split_by_node, wds.split_by_worker,
              wds.tarfile_to_samples(handler=handler)]
    if shuffle:
        stages.append(wds.shuffle(shuffle, seed=seed))
    stages.append(wds.map(functools.partial(decode, size=size, to_tensor=to_tensor,
                                            channels=channels),
                          handler=handler))
    return wds.DataPipeline(*stages)


def collate(items: list[tuple]) -> tuple:
    """A DataLoader `collate_fn` for items of one size (`resize=` and `channels=`): images
    stacked into (B, C, H, W), masks and records as lists (R differs by sample).

    Batching in the workers (`DataLoader(samples(..., resize=224, channels=3),
    batch_size=32, collate_fn=collate, num_workers=N)`) sends one image tensor per batch
    to the training process instead of one per sample."""
    import torch

    images, masks, records = zip(*items, strict=True)
    return torch.stack(images), list(masks), list(records)
