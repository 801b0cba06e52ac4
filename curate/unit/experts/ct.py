"""Classical CT experts on one axial view in HU: lung fields and lesion candidates.

They need no weights, so every CT source gets organ context and candidate ROIs even on
a machine with no GPU and no model hub. They read `view.raw` (HU, resampled with the
view) and trust the LPS axial convention of curate.unit.normalize: the image column grows
toward the patient's left, so a lung right of the body midline is the left lung.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field
from scipy import ndimage

from curate.model.recipe import View
from curate.unit.experts.base import Expert, ExpertError, ExpertParams, ExpertROI, components
from curate.unit.normalize import View2D


def require_ct(view: View2D, expert: str) -> np.ndarray:
    """view.raw as HU; other modalities would make every threshold meaningless."""
    modality = (view.meta.modality or "").upper()
    if modality and modality != "CT":
        raise ExpertError(f"expert {expert!r} needs CT in HU, got modality {view.meta.modality!r}")
    return np.asarray(view.raw, np.float32)


def pixel_area_mm2(view: View2D) -> float:
    """mm² per pixel; 1 when spacing is unknown (thresholds then read as pixels)."""
    return float(view.spacing[0] * view.spacing[1]) if view.spacing else 1.0


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = components(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (int(np.argmax(sizes)) + 1)


def body_mask(hu: np.ndarray, threshold: float = -500.0) -> np.ndarray:
    """The patient's cross-section with the lungs filled in (largest non-air component).

    The table and arms separated by air are dropped; hole filling puts the lungs and any
    gas inside the body, which is what 'air inside the body' needs.
    """
    tissue = largest_component(hu > threshold)
    return ndimage.binary_fill_holes(ndimage.binary_closing(tissue, iterations=2) | tissue)


def touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def inside_air(hu: np.ndarray, body: np.ndarray, air_hu: float, edge_air_hu: float) -> np.ndarray:
    """Air inside the body: holes in the body, plus, when the field of view cuts the body,
    air pockets at the image edge whose median is lung-like (> edge_air_hu) rather than the
    flat ~-1000 HU of the air around the patient.
    """
    air = hu < air_hu
    inside = air & body
    if touches_border(body):
        lab, n = components(air & ~body)
        for k in range(1, n + 1):
            comp = lab == k
            if touches_border(comp) and np.median(hu[comp]) > edge_air_hu:
                inside |= comp
    return inside


def body_midline(body: np.ndarray) -> float:
    """Centre of the body's column extent, as curate.unit.ground.midline_x measures it."""
    cols = np.nonzero(body.any(axis=0))[0]
    return (cols[0] + cols[-1] + 1) / 2 if cols.size else body.shape[1] / 2


def disk(radius: int) -> np.ndarray:
    r = max(0, int(radius))
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r


class LungParams(ExpertParams):
    air_hu: float = Field(-400.0, description="lung parenchyma is below this (HU)")
    body_hu: float = Field(-500.0, description="the body is above this (HU)")
    min_area_mm2: float = Field(400.0, ge=0, description="smaller air pockets are not lung")
    close_mm: float = Field(2.0, ge=0, description="closing radius that absorbs vessels")
    edge_air_hu: float = Field(-950.0, description="cropped fields of view: air at the image "
                               "edge with a median above this is lung, not room air")


def segment_lungs(view: View2D, p: LungParams) -> list[tuple[str, np.ndarray, float]]:
    """(label, mask, score) per lung field; the shared core of ct_lungs and lungs-mode lesions."""
    hu = require_ct(view, "ct_lungs")
    body = body_mask(hu, p.body_hu)
    if not body.any():
        return []
    air = inside_air(hu, body, p.air_hu, p.edge_air_hu)
    air = ndimage.binary_opening(air, structure=disk(1))
    px_mm2 = pixel_area_mm2(view)
    lab, n = components(air)
    if n == 0:
        return []
    sizes = np.bincount(lab.ravel())[1:] * px_mm2
    order = [i + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= p.min_area_mm2][:2]
    if not order:
        return []
    mid = body_midline(body)
    col = np.arange(hu.shape[1])[None, :]
    fields = [lab == k for k in order]
    if len(fields) == 1:  # lungs touching across the midline (or one lung): cut at the midline
        f = fields[0]
        left, right = f & (col >= mid), f & (col < mid)
        small = min(left.sum(), right.sum())
        if small * px_mm2 >= p.min_area_mm2 and small >= 0.2 * f.sum():
            fields = [left, right]
    radius = int(round(p.close_mm / np.sqrt(px_mm2))) if view.spacing else 2
    out = []
    for f in fields:
        f = ndimage.binary_closing(f, structure=disk(radius)) | f if radius else f
        f = ndimage.binary_fill_holes(f)
        cx = np.nonzero(f)[1].mean()
        if view.plane == View.axial:  # LPS: larger column = patient's left
            label = "left lung" if cx >= mid else "right lung"
        else:
            label = "lung"
        same = [i for i, (other, _, _) in enumerate(out) if other == label]
        if same and label != "lung":  # two pockets on one side: one lung, not two
            f = f | out.pop(same[0])[1]
        # share of the field that looks like parenchyma; vessels and nodules lower it
        out.append((label, f, float(np.mean(hu[f] < -500.0))))
    return out


class CTLungs(Expert):
    """Lung fields on an axial CT slice, split into the patient's left and right."""

    name = "ct_lungs"
    Params = LungParams

    def run(self, view: View2D, context: Sequence[ExpertROI]) -> list[ExpertROI]:
        return [ExpertROI(label, mask, score, "organ")
                for label, mask, score in segment_lungs(view, self.params)]


class LesionParams(ExpertParams):
    within: Literal["body", "lungs", "organs"] = Field(
        "body", description="search the body (soft tissue), the lung fields (segmented "
        "here), or organ ROIs passed as context by earlier experts")
    organs: list[str] | None = Field(None, description="context organ labels to use (all if None)")
    polarity: Literal["both", "bright", "dark"] = "both"
    min_contrast_hu: float | None = Field(
        None, gt=0, description="|candidate - local tissue| at least this; default 300 HU "
        "in air-filled regions (nodule vs lung parenchyma), 40 HU in soft tissue")
    tissue_hu: tuple[float, float] = Field(
        (-50.0, 300.0), description="body mode: only tissue in this HU range is searched "
        "(drops fat, air and bone, whose edges are not lesions)")
    bone_hu: float | None = Field(300.0, description="body mode: bone (filled, plus 2 mm) "
                                  "above this is left out; None keeps it")
    min_area_mm2: float = Field(12.0, ge=0, description="about 4 mm across")
    max_area_mm2: float = Field(2000.0, gt=0, description="about 50 mm across")
    background_mm: float = Field(12.0, gt=0, description="scale of the local tissue estimate")
    smooth_mm: float = Field(0.8, ge=0, description="noise smoothing before thresholds")
    max_elongation: float = Field(3.0, ge=1, description="major/minor axis; vessels run long")
    min_enclosed: float = Field(0.6, ge=0, le=1, description="share of a candidate's outer "
                                "ring inside the search region; rims along edges fail it")
    max_rois: int = Field(10, ge=1)
    min_score: float = Field(0.0, ge=0, le=1, description="drop weaker candidates")


def masked_mean(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian mean of values over the weighted pixels only (normalised convolution)."""
    num = ndimage.gaussian_filter(values * weight, sigma)
    den = ndimage.gaussian_filter(weight.astype(np.float32), sigma)
    return num / np.maximum(den, 1e-6)


def elongation(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    if len(ys) < 3:
        return 1.0
    ev = np.linalg.eigvalsh(np.cov(np.vstack([ys, xs])))
    return float(np.sqrt(max(ev[1], 1e-6) / max(ev[0], 1e-6)))


class CTLesionCandidates(Expert):
    """Blobs brighter or darker than the local tissue inside the body, lungs or given organs.

    The local tissue level is a Gaussian mean over the search region only, computed twice
    (the second time without the first candidates) so a lesion does not raise its own
    background. Candidate masks are refined to the half-maximum of their contrast, which
    puts the edge where it is whatever the contrast. Score: 1 - exp(-|contrast| / threshold).
    """

    name = "ct_lesion_candidates"
    Params = LesionParams

    def region(self, view: View2D, hu: np.ndarray,
               context: Sequence[ExpertROI]) -> list[tuple[str | None, np.ndarray]]:
        p = self.params
        if p.within == "lungs":
            return [(label, m) for label, m, _ in segment_lungs(view, LungParams())]
        if p.within == "organs":
            return [(r.label, r.mask) for r in context if r.kind == "organ"
                    and r.mask.shape == hu.shape and (p.organs is None or r.label in p.organs)]
        px = np.sqrt(pixel_area_mm2(view)) if view.spacing else 1.0
        body = ndimage.binary_erosion(body_mask(hu), structure=disk(round(3.0 / px)))
        lo, hi = p.tissue_hu
        tissue = ndimage.gaussian_filter(hu, 1.0)
        tissue = (tissue >= lo) & (tissue <= hi)
        # drop the partial-volume rims where tissue meets fat, air or bone
        tissue = ndimage.binary_erosion(tissue, structure=disk(max(1, round(1.5 / px))))
        if p.bone_hu is not None:  # cancellous bone inside a cortex is in the tissue range
            bone = ndimage.binary_fill_holes(ndimage.binary_closing(hu > p.bone_hu, iterations=2))
            tissue &= ~ndimage.binary_dilation(bone, structure=disk(round(2.0 / px)))
        return [(None, body & tissue)]

    def run(self, view: View2D, context: Sequence[ExpertROI]) -> list[ExpertROI]:
        p = self.params
        hu = require_ct(view, self.name)
        search = np.zeros(hu.shape, bool)
        for _, m in self.region(view, hu, context):
            search |= m
        if not search.any():
            return []
        px_mm = float(np.sqrt(pixel_area_mm2(view)))
        thr = p.min_contrast_hu or (300.0 if np.median(hu[search]) < -500 else 40.0)
        weight = search.astype(np.float32)
        # smoothing and background only over the search region: nothing outside bleeds in
        smooth = masked_mean(hu, weight, p.smooth_mm / px_mm) if p.smooth_mm else hu
        sigma = p.background_mm / px_mm
        diff = smooth - masked_mean(smooth, weight, sigma)
        cand = self._threshold(diff, search, thr)
        if cand.any():  # second pass: estimate the background without the candidates
            weight = (search & ~ndimage.binary_dilation(cand, iterations=2)).astype(np.float32)
            diff = smooth - masked_mean(smooth, weight, sigma)
        rois = []
        for sign in self._signs():
            lab, n = components(self._threshold(diff, search, thr, sign))
            for k in range(1, n + 1):
                roi = self._candidate(lab == k, sign, diff, search, thr, px_mm)
                if roi is not None:
                    rois.append(roi)
        rois = [r for r in rois if r.score >= p.min_score]
        rois.sort(key=lambda r: (-r.score, int(np.argmax(r.mask.ravel()))))
        return rois[:p.max_rois]

    def _candidate(self, comp: np.ndarray, sign: float, diff: np.ndarray, search: np.ndarray,
                   thr: float, px_mm: float) -> ExpertROI | None:
        """Refine one component to its half-maximum and apply the size/shape checks."""
        p = self.params
        peak = float(np.max(sign * diff[comp]))
        near = ndimage.binary_dilation(comp, iterations=2) & search
        refined, _ = components(near & (sign * diff >= 0.5 * peak))
        hit = np.unique(refined[comp & (refined > 0)])
        mask = np.isin(refined, hit) if hit.size else comp
        area = mask.sum() * px_mm ** 2
        if not (p.min_area_mm2 <= area <= p.max_area_mm2):
            return None
        if elongation(mask) > p.max_elongation:
            return None
        ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
        if ring.any() and (ring & search).sum() / ring.sum() < p.min_enclosed:
            return None
        contrast = float(sign * diff[mask].mean())
        score = float(1.0 - np.exp(-max(contrast, 0.0) / thr))
        label = "hyperdense lesion candidate" if sign > 0 else "hypodense lesion candidate"
        return ExpertROI(label, mask, score, "lesion", {"contrast_hu": sign * contrast})

    def _signs(self) -> list[float]:
        return {"both": [1.0, -1.0], "bright": [1.0], "dark": [-1.0]}[self.params.polarity]

    def _threshold(self, diff: np.ndarray, search: np.ndarray, thr: float,
                   sign: float | None = None) -> np.ndarray:
        out = np.zeros(diff.shape, bool)
        for s in ([sign] if sign is not None else self._signs()):
            out |= (s * diff) > thr
        return out & search

