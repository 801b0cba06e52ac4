"""The optic disc on a colour fundus photograph, without weights.

The disc is the brightest large, compact region of the fundus. Work on a copy whose
long side is `work_size` (the disc is ~1/6 of the field of view, so detail is not
needed), smooth at a scale of a few percent of the field, take the brightest peak, grow
it to half way between the fundus background and the peak, and accept it only if its
size and circularity fit a disc; otherwise try the next peak. The accepted region's
convex hull is the disc (vessels crossing the disc cut notches into the raw region).

Luminance is the default channel: on many cameras the red channel saturates over a
wide area around the disc (skimage's retina image does), which moves the red peak off
the disc; luminance and green stay peaked on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field
from scipy import ndimage

from curate.unit.experts.base import Expert, ExpertError, ExpertParams, ExpertROI, components
from curate.unit.normalize import View2D


class DiscParams(ExpertParams):
    channel: Literal["luminance", "green", "red", "value"] = "luminance"
    work_size: int = Field(384, ge=64, description="long side of the working copy")
    fov_threshold: float = Field(20.0, description="field of view: max(R, G, B) above this")
    smooth_frac: float = Field(0.015, gt=0, description="smoothing sigma, x FOV diameter")
    level: float = Field(0.5, gt=0, lt=1, description="region = above background + level "
                         "x (peak - background)")
    min_diameter_frac: float = Field(0.06, gt=0, description="disc diameter, x FOV diameter")
    max_diameter_frac: float = Field(0.3, gt=0)
    min_circularity: float = Field(0.6, gt=0, le=1, description="4 pi area / perimeter²")
    candidates: int = Field(4, ge=1, description="peaks tried before giving up")


def brightness(rgb: np.ndarray, channel: str) -> np.ndarray:
    rgb = rgb[..., :3].astype(np.float32)
    if channel == "luminance":
        return rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    if channel == "value":
        return rgb.max(axis=2)
    return rgb[..., {"red": 0, "green": 1}[channel]]


def circularity(mask: np.ndarray) -> float:
    """4 pi A / P², 1 for a disc; perimeter from skimage (crofton is less biased on grids)."""
    from skimage.measure import perimeter_crofton

    per = perimeter_crofton(mask, directions=4)
    return float(min(1.0, 4 * np.pi * mask.sum() / per ** 2)) if per > 0 else 0.0


def field_of_view(rgb: np.ndarray, threshold: float) -> np.ndarray:
    fov = rgb[..., :3].max(axis=2) > threshold
    lab, n = components(fov)
    if n == 0:
        return fov
    fov = lab == (int(np.argmax(np.bincount(lab.ravel())[1:])) + 1)
    return ndimage.binary_fill_holes(fov)


def resize(arr: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    from PIL import Image

    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    img = Image.fromarray(arr.astype(np.uint8) * (255 if arr.dtype == bool else 1))
    out = np.asarray(img.resize((shape[1], shape[0]), method))
    return out > 127 if arr.dtype == bool else out


class FundusOpticDisc(Expert):
    """The optic disc on a colour fundus photo (label "optic disc", kind "structure")."""

    name = "fundus_optic_disc"
    Params = DiscParams

    def run(self, view: View2D, context: Sequence[ExpertROI]) -> list[ExpertROI]:
        from skimage.morphology import convex_hull_image

        p = self.params
        if view.image.ndim != 3 or view.image.shape[2] < 3:
            raise ExpertError("fundus_optic_disc needs an RGB view")
        h, w = view.image.shape[:2]
        scale = min(1.0, p.work_size / max(h, w))
        shape = (max(1, round(h * scale)), max(1, round(w * scale)))
        rgb = view.image if scale == 1.0 else resize(view.image, shape, nearest=False)
        fov = field_of_view(rgb, p.fov_threshold)
        if fov.sum() < 100:
            return []
        diameter = 2 * np.sqrt(fov.sum() / np.pi)
        inner = ndimage.binary_erosion(fov, iterations=max(1, int(0.02 * diameter)))
        lum = brightness(rgb, p.channel)
        sigma = p.smooth_frac * diameter
        # normalised smoothing over the FOV only, so the black border does not dim the rim
        smooth = (ndimage.gaussian_filter(lum * fov, sigma)
                  / np.maximum(ndimage.gaussian_filter(fov.astype(np.float32), sigma), 1e-6))
        background = float(np.median(smooth[inner]))
        spread = float(np.percentile(smooth[inner], 99) - background)
        avail = inner.copy()
        for _ in range(p.candidates):
            if not avail.any():
                break
            peak_at = np.unravel_index(np.argmax(np.where(avail, smooth, -np.inf)), smooth.shape)
            peak = float(smooth[peak_at])
            if peak - background <= 0:
                break
            region, _ = components((smooth >= background + p.level * (peak - background)) & fov)
            blob = ndimage.binary_fill_holes(region == region[peak_at])
            avail &= ~ndimage.binary_dilation(blob, iterations=2)
            d = 2 * np.sqrt(blob.sum() / np.pi) / diameter
            circ = circularity(blob)
            if not (p.min_diameter_frac <= d <= p.max_diameter_frac) or circ < p.min_circularity:
                continue
            disc = convex_hull_image(blob)
            contrast = float(np.clip((peak - background) / max(2 * spread, 1e-6), 0.0, 1.0))
            score = float(np.clip(0.5 * circ + 0.5 * contrast, 0.0, 1.0))
            mask = disc if scale == 1.0 else resize(disc, (h, w), nearest=True)
            if not mask.any():
                continue
            return [ExpertROI("optic disc", mask, score, "structure",
                              {"diameter_frac": float(d), "circularity": circ})]
        return []
