"""A sample's ROI masks as one shard member, `masks.npz`, the same for every sample.

Every sample in a shard carries the same members (`png`, `json`, `masks.npz`) so that
tools that infer one schema per split (Hugging Face `datasets`' webdataset loader, the
hub's viewer) read the shards as they are. `masks.npz` is a compressed NumPy archive
(`np.load` with the default `allow_pickle=False` reads it) holding one array:

    masks: uint8 (R, H, W), 1 inside ROI i, aligned with record["rois"][i]

A box ROI (area_kind "box") has its box filled; a sample without ROIs has R = 0.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

MEMBER = "masks.npz"


def masks_array(rois: list[dict], pngs: list[bytes | None], height: int, width: int
                ) -> np.ndarray:
    """(R, H, W) uint8 from the ROIs' mask PNGs, filling the box of box ROIs."""
    out = np.zeros((len(rois), height, width), np.uint8)
    for i, (roi, png) in enumerate(zip(rois, pngs, strict=True)):
        if png is not None:
            with Image.open(io.BytesIO(png)) as m:
                arr = np.asarray(m)
            if arr.shape[:2] != (height, width):
                raise ValueError(f"ROI {i} mask is {arr.shape[:2]}, image is {(height, width)}")
            out[i] = arr.reshape(height, width, -1).max(axis=2) > 0
        else:
            x0, y0, x1, y1 = roi["bbox"]
            out[i, y0:y1, x0:x1] = 1
    return out


def pack(masks: np.ndarray) -> bytes:
    """The `masks.npz` member for an (R, H, W) array of 0/1."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be (R, H, W), got shape {masks.shape}")
    buf = io.BytesIO()
    np.savez_compressed(buf, masks=np.ascontiguousarray(masks, dtype=np.uint8))
    return buf.getvalue()


def unpack(data: bytes) -> np.ndarray:
    """(R, H, W) bool from a `masks.npz` member."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return z["masks"].astype(bool)
