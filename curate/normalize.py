"""Volumes and images -> 2D views: canonical orientation, intensity, slice choice, size.

Volumes are reoriented to LPS, so that in an axial slice array[row, col] the columns run
to the patient's left (shown on the image right, the radiological convention) and the
rows run from anterior to posterior.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from PIL import Image

from curate.config import NormalizeConfig, View
from curate.ingest.base import Box, CaseMeta, ImageCase, VolumeCase

# (width, level) in HU; see FIELD-NOTES for where the numbers come from
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (1500, -600),
    "mediastinum": (350, 50),
    "soft_tissue": (400, 40),
    "abdomen": (400, 50),
    "liver": (150, 60),
    "bone": (1800, 400),
    "brain": (80, 40),
}
WINDOW_BY_ANATOMY = {
    "brain": "brain", "head": "brain", "chest": "lung", "lung": "lung", "thorax": "lung",
    "liver": "liver", "abdomen": "abdomen", "kidney": "abdomen", "pancreas": "abdomen",
    "spine": "bone", "bone": "bone",
}


@dataclass
class View2D:
    """One normalised 2D view ready for grounding."""

    image: np.ndarray  # uint8, (H, W) or (H, W, 3)
    raw: np.ndarray  # float32 (H, W) in source units (HU for CT) for intensity facts
    plane: View
    index: int
    count: int
    spacing: tuple[float, float] | None  # (row, col) mm
    window: dict
    meta: CaseMeta
    labels: np.ndarray | None = None  # int mask on the same grid
    boxes: list[Box] = field(default_factory=list)
    body: np.ndarray | None = None  # bool body mask when one can be computed
    components: np.ndarray | None = None  # 3D lesion component id of each pixel (volumes)
    component_mm3: dict[int, float] = field(default_factory=dict)  # id -> volume in mm³
    # ROIs a volume expert found, sliced to this view: (expert, label, kind, score, mask)
    expert_slices: list[tuple] = field(default_factory=list)


def window_ct(hu: np.ndarray, name: str) -> tuple[np.ndarray, dict]:
    width, level = CT_WINDOWS[name]
    low, high = level - width / 2, level + width / 2
    out = (np.clip(hu, low, high) - low) * (255.0 / (high - low))
    return np.round(out).astype(np.uint8), {"method": "ct_window", "name": name,
                                            "low": low, "high": high}


def percentile_range(values: np.ndarray, pct: tuple[float, float]) -> tuple[float, float]:
    """Percentiles of the non-zero values (all values when nothing is non-zero)."""
    nz = values[values != 0]
    sample = nz if nz.size else values.ravel()
    low, high = np.percentile(sample, pct)
    return float(low), float(high)


def scale_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    out = (np.clip(values, low, high) - low) * (255.0 / (high - low))
    return np.round(out).astype(np.uint8)


def pick_window(modality: str | None, anatomy: str | None, preset: str | None) -> str:
    if preset:
        if preset not in CT_WINDOWS:
            raise ValueError(f"unknown CT window {preset!r}; known: {sorted(CT_WINDOWS)}")
        return preset
    return WINDOW_BY_ANATOMY.get((anatomy or "").lower(), "soft_tissue")


def to_lps(img: sitk.Image) -> sitk.Image:
    return sitk.DICOMOrient(img, "LPS")


def choose_slices(labels: np.ndarray | None, body_frac: np.ndarray, cfg: NormalizeConfig,
                  rng: np.random.Generator) -> list[int]:
    """Slices with ROIs (per label, up to cfg.roi_slices, large enough) plus normal ones."""
    nz = body_frac.shape[0]
    chosen: set[int] = set()
    has_roi = np.zeros(nz, bool)
    if labels is not None:
        for value in np.unique(labels):
            if value == 0:
                continue
            area = (labels == value).reshape(nz, -1).sum(axis=1)
            has_roi |= area > 0
            keep = np.nonzero(area >= max(1, cfg.min_roi_slice_frac * area.max()))[0]
            if len(keep) > cfg.roi_slices:
                keep = keep[np.round(np.linspace(0, len(keep) - 1, cfg.roi_slices)).astype(int)]
            chosen.update(int(k) for k in keep)
    # normal slices: no ROI, and enough body in view to be worth describing
    candidates = np.nonzero(~has_roi & (body_frac >= 0.5 * body_frac.max()))[0]
    if len(candidates) and cfg.normal_slices:
        n = min(cfg.normal_slices, len(candidates))
        chosen.update(int(k) for k in rng.choice(candidates, size=n, replace=False))
    return sorted(chosen)


def components_3d(labels: np.ndarray, spacing) -> tuple[np.ndarray, dict[int, float]]:
    """3D connected components of each label value (26-connectivity), ids unique across
    labels, and each component's volume in mm³ from the voxel spacing."""
    from scipy import ndimage

    out = np.zeros(labels.shape, np.int32)
    volumes: dict[int, float] = {}
    voxel = float(np.prod(spacing))
    next_id = 0
    for value in np.unique(labels):
        if value == 0:
            continue
        comps, n = ndimage.label(labels == value, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(comps.ravel())[1:]
        out[comps > 0] = comps[comps > 0] + next_id
        volumes.update({next_id + i + 1: float(s) * voxel for i, s in enumerate(sizes)})
        next_id += n
    return out, volumes


def volume_views(case: VolumeCase, cfg: NormalizeConfig, rng: np.random.Generator,
                 window: str | None = None, expert_rois: list[tuple] = ()) -> list[View2D]:
    """2D views of a volume; expert_rois are (expert, ExpertROI) on the LPS grid of this
    volume, sliced onto the views (and, where nothing is annotated, steering slice choice
    towards the lesions they found)."""
    img = to_lps(case.image)
    arr = sitk.GetArrayFromImage(img).astype(np.float32)  # (z, y, x)
    labels = sitk.GetArrayFromImage(to_lps(case.label)) if case.label is not None else None
    sx, sy, _ = img.GetSpacing()
    modality = (case.meta.modality or "").upper()
    if modality == "CT":
        name = pick_window(modality, case.meta.anatomy, window or cfg.ct_window)
        body = arr > -500
        def intensity(sl):  # noqa: E306
            return window_ct(sl, name)
    else:
        low, high = percentile_range(arr, cfg.mr_percentiles)
        body = arr > (low + 0.1 * (high - low))
        win = {"method": "percentile", "name": f"p{cfg.mr_percentiles[0]}-p{cfg.mr_percentiles[1]}",
               "low": low, "high": high}
        def intensity(sl):  # noqa: E306
            return scale_to_uint8(sl, low, high), win
    body_frac = body.reshape(body.shape[0], -1).mean(axis=1)
    comps, comp_mm3 = components_3d(labels, img.GetSpacing()) if labels is not None else (None, {})
    nz = arr.shape[0]
    steer = labels
    if labels is None and any(r.kind == "lesion" for _, r in expert_rois):
        steer = np.zeros(arr.shape, np.uint8)
        for _, r in expert_rois:
            if r.kind == "lesion":
                steer[r.mask] = 1
    picks = choose_slices(steer, body_frac, cfg, rng) if nz > 1 else [0]
    if not picks:  # unlabelled volume: the central slice
        picks = [nz // 2]
    views = []
    for k in picks:
        u8, win = intensity(arr[k])
        views.append(resize_view(View2D(
            image=u8, raw=arr[k], plane=View.axial, index=k, count=nz, spacing=(sy, sx),
            window=win, meta=case.meta, labels=None if labels is None else labels[k],
            body=body[k], components=None if comps is None else comps[k],
            component_mm3=comp_mm3,
            expert_slices=[(name, r.label, r.kind, r.score, r.mask[k]) for name, r in expert_rois
                           if r.mask[k].any()],
        ), cfg.max_size))
    return views


def image_view(case: ImageCase, cfg: NormalizeConfig) -> View2D:
    px = case.pixels
    if case.window is not None:
        u8, win = px, case.window
    elif px.dtype == np.uint8:
        u8 = px
        win = {"method": "none", "name": "uint8", "low": 0.0, "high": 255.0}
    else:
        grey = px.astype(np.float32)
        low, high = percentile_range(grey, cfg.mr_percentiles)
        u8 = scale_to_uint8(grey, low, high)
        win = {"method": "percentile", "name": "p0.5-p99.5", "low": low, "high": high}
    raw = px.astype(np.float32) if px.ndim == 2 else px.astype(np.float32).mean(axis=2)
    view = View2D(image=u8, raw=raw, plane=case.view, index=case.index, count=1,
                  spacing=case.spacing,
                  window=win, meta=case.meta, labels=case.mask, boxes=list(case.boxes))
    return resize_view(view, cfg.max_size)


def resize_view(view: View2D, max_size: int) -> View2D:
    """Shrink so the longest side is max_size, keeping aspect; masks by nearest neighbour."""
    h, w = view.image.shape[:2]
    if max(h, w) <= max_size:
        return view
    scale = max_size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    sy, sx = h / nh, w / nw

    def resample(a: np.ndarray, method: int) -> np.ndarray:
        return np.asarray(Image.fromarray(a).resize((nw, nh), method))

    view.image = resample(view.image, Image.Resampling.BICUBIC)
    view.raw = resample(view.raw.astype(np.float32), Image.Resampling.BILINEAR)
    if view.labels is not None:
        view.labels = resample(view.labels.astype(np.int32), Image.Resampling.NEAREST)
    view.expert_slices = [(n, lab, kind, score, resample(m.astype(np.uint8),
                                                         Image.Resampling.NEAREST).astype(bool))
                          for n, lab, kind, score, m in view.expert_slices]
    if view.components is not None:
        view.components = resample(view.components, Image.Resampling.NEAREST)
    if view.body is not None:
        view.body = resample(view.body.astype(np.uint8), Image.Resampling.NEAREST).astype(bool)
    if view.spacing:
        view.spacing = (view.spacing[0] * sy, view.spacing[1] * sx)
    view.boxes = [Box(b.label, b.x0 / sx, b.y0 / sy, b.x1 / sx, b.y1 / sy) for b in view.boxes]
    return view
