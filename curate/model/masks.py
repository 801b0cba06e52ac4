"""A sample's ROI masks as one shard member, `masks.npz`, the same for every sample.

Every sample in a shard carries the same members (`png`, `json`, `masks.npz`) so that
tools that infer one schema per split (Hugging Face `datasets`' webdataset loader, the
hub's viewer) read the shards as they are. `masks.npz` is a compressed NumPy archive
(`np.load` with the default `allow_pickle=False` reads it) holding two 1-D arrays:

    shape:  int32 [R, H, W]; R ROIs, aligned with record["rois"]
    packed: uint8, np.packbits of the (R, H, W) 0/1 array in C order

so `np.unpackbits(z["packed"], count=R*H*W).reshape(R, H, W)` (or `unpack(bytes)`) gives
the masks; a box ROI (area_kind "box") has its box filled, a point ROI (area_kind "point",
a finding without extent) an empty plane; a sample without ROIs has R = 0.

Why packed and 1-D: `datasets` infers a split's schema from its first few samples, and
NumPy arrays keep their dtype there only when they are 1-D; an (R, H, W) array with R = 0
would be read as a list of nulls and every later sample with ROIs would fail to cast.
Both arrays are 1-D and typed for every sample (R = 0 included), and bits are 8x smaller
than bytes in the Arrow cache `datasets` writes.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

MEMBER = "masks.npz"


def masks_array(rois: list[dict], pngs: list[bytes | None], height: int, width: int
                ) -> np.ndarray:
    """(R, H, W) uint8 from the ROIs' mask PNGs, filling the box of box ROIs (a point ROI,
    which has no region, stays empty)."""
    out = np.zeros((len(rois), height, width), np.uint8)
    for i, (roi, png) in enumerate(zip(rois, pngs, strict=True)):
        if png is not None:
            with Image.open(io.BytesIO(png)) as m:
                arr = np.asarray(m)
            if arr.shape[:2] != (height, width):
                raise ValueError(f"ROI {i} mask is {arr.shape[:2]}, image is {(height, width)}")
            out[i] = arr.reshape(height, width, -1).max(axis=2) > 0
        elif roi.get("area_kind") != "point":
            x0, y0, x1, y1 = roi["bbox"]
            out[i, y0:y1, x0:x1] = 1
    return out


def pack(masks: np.ndarray) -> bytes:
    """The `masks.npz` member for an (R, H, W) array of 0/1 (or bool)."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be (R, H, W), got shape {masks.shape}")
    buf = io.BytesIO()
    np.savez_compressed(buf, shape=np.asarray(masks.shape, np.int32),
                        packed=np.packbits(np.asarray(masks) != 0, axis=None))
    return buf.getvalue()


def from_arrays(shape, packed) -> np.ndarray:
    """(R, H, W) bool from the two arrays (as `np.load` or `datasets` give them)."""
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3:
        raise ValueError(f"masks shape must be [R, H, W], got {list(shape)}")
    bits = np.unpackbits(np.asarray(packed, np.uint8), count=int(np.prod(shape)))
    return bits.reshape(shape).astype(bool)


def unpack(data: bytes) -> np.ndarray:
    """(R, H, W) bool from a `masks.npz` member."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return from_arrays(z["shape"], z["packed"])
