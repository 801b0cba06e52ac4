"""Nuclei on H&E (or IHC with haematoxylin counterstain) by colour deconvolution.

Haematoxylin stains nuclei; skimage.color.rgb2hed separates its optical density from
eosin and DAB (Ruifrok & Johnston stain vectors), so one Otsu threshold on the H channel
finds nuclei across staining intensities without any weights. Touching nuclei are split
by a distance-transform watershed with seeds spaced by the expected nucleus size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field
from scipy import ndimage

from curate.unit.experts.base import Expert, ExpertError, ExpertParams, ExpertROI
from curate.unit.normalize import View2D


class NucleiParams(ExpertParams):
    per_nucleus: bool = Field(True, description="one ROI per nucleus; else one merged ROI "
                              "with meta['count']")
    nucleus_diameter_px: float = Field(10.0, gt=1, description="expected diameter in view "
                                       "pixels; sets seed spacing and size limits")
    min_area_frac: float = Field(0.2, gt=0, description="smallest nucleus, x expected area")
    max_area_frac: float = Field(6.0, gt=0, description="largest nucleus, x expected area")
    threshold: float | None = Field(None, description="H optical density cut; Otsu if None")
    min_h_od: float = Field(0.01, ge=0, description="no nuclei when the two Otsu classes "
                            "differ by less than this H optical density (no haematoxylin)")
    max_rois: int = Field(200, ge=1, description="per-nucleus mode keeps the best-scored")


def hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin optical density per pixel (rgb2hed channel 0)."""
    from skimage.color import rgb2hed

    return rgb2hed(rgb[..., :3]).astype(np.float32)[..., 0]


def split_nuclei(fg: np.ndarray, diameter: float) -> np.ndarray:
    """Label image of nuclei: watershed of the distance map, seeds >= 0.6 diameters apart."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    dist = ndimage.distance_transform_edt(fg)
    smooth = ndimage.gaussian_filter(dist, 1.0)
    blobs, _ = ndimage.label(fg)
    peaks = peak_local_max(smooth, min_distance=max(2, int(round(0.3 * diameter))),
                           labels=blobs, exclude_border=False)
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # blobs without a peak (flat, tiny) still count as one nucleus
    missing = np.setdiff1d(np.unique(blobs[fg]), np.unique(blobs[markers > 0]))
    for b in missing:
        ys, xs = np.nonzero(blobs == b)
        markers[ys[len(ys) // 2], xs[len(xs) // 2]] = markers.max() + 1
    return watershed(-smooth, markers, mask=fg)


class HENuclei(Expert):
    """Nuclei on an H&E (or haematoxylin-counterstained) RGB view."""

    name = "he_nuclei"
    Params = NucleiParams

    def run(self, view: View2D, context: Sequence[ExpertROI]) -> list[ExpertROI]:
        from skimage.filters import threshold_otsu
        from skimage.measure import regionprops

        p = self.params
        if view.image.ndim != 3 or view.image.shape[2] < 3:
            raise ExpertError("he_nuclei needs an RGB view (stain colours carry the signal)")
        h = ndimage.gaussian_filter(hematoxylin(view.image), 1.0)
        t = p.threshold if p.threshold is not None else float(threshold_otsu(h))
        if p.threshold is None and float(h[h > t].mean() - h[h <= t].mean()) < p.min_h_od:
            return []
        fg = ndimage.binary_fill_holes(ndimage.binary_opening(h > t, iterations=1))
        expected = np.pi * (p.nucleus_diameter_px / 2) ** 2
        lo, hi = p.min_area_frac * expected, p.max_area_frac * expected
        labels = split_nuclei(fg, p.nucleus_diameter_px)
        top = float(np.percentile(h[fg], 99)) if fg.any() else t
        nuclei: list[tuple[float, np.ndarray]] = []
        for prop in regionprops(labels, intensity_image=h):
            if not (lo <= prop.area <= hi):
                continue
            strength = np.clip((prop.intensity_mean - t) / max(top - t, 1e-6), 0.0, 1.0)
            score = float(0.5 * prop.solidity + 0.5 * strength)
            mask = np.zeros(fg.shape, bool)
            r0, c0, r1, c1 = prop.bbox
            mask[r0:r1, c0:c1] = prop.image
            nuclei.append((score, mask))
        if not nuclei:
            return []
        count = len(nuclei)
        if not p.per_nucleus:
            merged = np.logical_or.reduce([m for _, m in nuclei])
            mean = float(np.mean([s for s, _ in nuclei]))
            return [ExpertROI("nuclei", merged, mean, "structure",
                              {"count": count, "threshold_od": t})]
        order = sorted(range(count), key=lambda i: (-nuclei[i][0], i))[:p.max_rois]
        return [ExpertROI("nucleus", nuclei[i][1], nuclei[i][0], "structure",
                          {"count": count, "threshold_od": t}) for i in sorted(order)]
