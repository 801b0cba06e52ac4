"""ROIs and the facts about them, computed from geometry only.

Conventions: bbox is [x0, y0, x1, y1] in pixels with x1/y1 exclusive; centroid is
[x, y]. For axial (LPS) and frontal (radiological) views the image right is the
patient's left; views with no patient frame get image-relative words and no laterality.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from curate.model.recipe import View
from curate.unit.normalize import View2D

# views whose image x axis runs from the patient's right to left (laterality is stated)
PATIENT_FRAME = {View.axial, View.coronal, View.frontal}


def box_mask(shape: tuple[int, int], bbox: list[int]) -> np.ndarray:
    """A bool mask of the box [x0, y0, x1, y1] (x1/y1 exclusive) on a grid of `shape`."""
    region = np.zeros(shape, bool)
    region[bbox[1]:bbox[3], bbox[0]:bbox[2]] = True
    return region


def encode_png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def longest_diameter_mm(mask: np.ndarray, spacing: tuple[float, float]) -> float:
    """Largest distance between two pixel centres of the region, plus one pixel, in mm."""
    ys, xs = np.nonzero(mask)
    pts = np.column_stack([ys * spacing[0], xs * spacing[1]])
    if len(pts) >= 3:
        try:
            pts = pts[ConvexHull(pts).vertices]
        except QhullError:  # collinear points: the hull is degenerate, use them all
            pass
    d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).max() if len(pts) > 1 else 0.0
    return float(d + min(spacing))


def midline_x(view: View2D) -> float:
    """The patient's midline: the centre of the body's extent, else the image centre."""
    if view.body is not None and view.body.any():
        cols = np.nonzero(view.body.any(axis=0))[0]
        return (cols[0] + cols[-1] + 1) / 2
    return view.image.shape[1] / 2


def location(view: View2D, cx: float, cy: float) -> tuple[str, str | None]:
    """A location phrase and the laterality (None when the view has no patient frame)."""
    h, w = view.image.shape[:2]
    vert = ("upper", "middle", "lower")[min(2, int(3 * cy / h))]
    # in the patient's frame, one word per axis: never "central part of the slice" beside
    # "the patient's left" (image words and patient words do not mix)
    height = ("upper", "mid-height", "lower")[min(2, int(3 * cy / h))]
    if view.plane in PATIENT_FRAME:
        mid = midline_x(view)
        half = max(mid, w - mid)
        off = (cx - mid) / half
        lat = "midline" if abs(off) < 0.15 else ("left" if off > 0 else "right")
        side = "near the midline" if lat == "midline" else f"on the patient's {lat} side"
        if view.plane == View.axial:  # image y runs anterior to posterior
            depth = ("anterior", "mid-depth", "posterior")[min(2, int(3 * cy / h))]
            return f"{depth}, {side}", lat
        if view.plane == View.coronal:
            return f"{height}, {side}", lat
        return f"{vert} zone of the image, {side}", lat
    if view.plane == View.sagittal:  # image x runs anterior to posterior: no side in-plane
        depth = ("anterior", "mid-depth", "posterior")[min(2, int(3 * cx / w))]
        return f"{height}, {depth}", None
    horiz = ("left", "centre", "right")[min(2, int(3 * cx / w))]
    where = "centre" if (vert, horiz) == ("middle", "centre") else f"{vert} {horiz}"
    return f"{where} of the image", None


def intensity(view: View2D, region: np.ndarray, ring_px: int = 3) -> tuple[str, float, float]:
    """hyper/hypo/iso: mean inside against a ring of surrounding pixels."""
    ring = ndimage.binary_dilation(region, iterations=ring_px) & ~region
    if view.body is not None:
        ring &= view.body
    inside = float(view.raw[region].mean())
    if not ring.any():
        return "unknown", inside, float("nan")
    around_vals = view.raw[ring]
    around = float(around_vals.mean())
    spread = float(max(around_vals.std(), 1e-6))
    delta = inside - around
    label = "iso" if abs(delta) < max(0.5 * spread, 0.02 * (abs(around) + 1)) else (
        "hyper" if delta > 0 else "hypo")
    return label, inside, around


def roi_facts(view: View2D, region: np.ndarray, label: str, finding: str, kind: str,
              origin: str = "annotation", confidence: float = 1.0) -> dict:
    h, w = view.image.shape[:2]
    ys, xs = np.nonzero(region)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    area = int(region.sum())
    cx, cy = float(xs.mean()), float(ys.mean())
    phrase, lat = location(view, cx, cy)
    inten, inside, around = intensity(view, region)
    sp = view.spacing
    volume = None
    if view.components is not None and kind == "mask":
        ids = view.components[region]
        ids = ids[ids > 0]
        if ids.size:
            volume = view.component_mm3.get(int(np.bincount(ids).argmax()))
    return {
        "label": label, "finding": finding, "bbox": bbox,
        "bbox_norm": [bbox[0] / w, bbox[1] / h, bbox[2] / w, bbox[3] / h],
        "area_px": area, "area_frac": area / (h * w),
        "area_mm2": area * sp[0] * sp[1] if sp else None, "area_kind": kind,
        "longest_diameter_mm": longest_diameter_mm(region, sp) if sp else None,
        "volume_mm3": volume,
        "centroid": [cx, cy], "laterality": lat, "location": phrase,
        "intensity": inten, "intensity_inside": inside,
        "intensity_around": None if np.isnan(around) else around,
        "relations": [], "origin": origin, "confidence": confidence,
    }


def point_facts(view: View2D, x: float, y: float, label: str, finding: str,
                zone: str | None = None) -> dict:
    """A finding the source gives as a point, with no extent: its pixel as a 1-pixel box,
    its centroid the point, side and location from where it lies; no area, size, volume
    or intensity, which a point does not have. A zone the source names becomes an
    "in the <zone>" relation."""
    h, w = view.image.shape[:2]
    px, py = min(w - 1, max(0, int(np.floor(x + 0.5)))), min(h - 1, max(0, int(np.floor(y + 0.5))))
    bbox = [px, py, px + 1, py + 1]
    phrase, lat = location(view, float(x), float(y))
    return {
        "label": label, "finding": finding, "bbox": bbox,
        "bbox_norm": [bbox[0] / w, bbox[1] / h, bbox[2] / w, bbox[3] / h],
        "area_px": None, "area_frac": None, "area_mm2": None, "area_kind": "point",
        "longest_diameter_mm": None, "volume_mm3": None,
        "centroid": [float(x), float(y)], "laterality": lat, "location": phrase,
        "intensity": None, "intensity_inside": None, "intensity_around": None,
        "relations": [f"in the {zone}"] if zone else [], "origin": "annotation",
        "confidence": 1.0,
    }


def relations(rois: list[dict], plane: View, masks: list | None = None) -> None:
    """Pairwise relations between ROIs, phrased in the view's frame; filled in place.

    With masks, two regions whose masks touch (within one pixel) are "adjacent to".
    """
    frame = plane in PATIENT_FRAME
    grown = [ndimage.binary_dilation(m) if m is not None else None for m in (masks or [])]
    for i, a in enumerate(rois):
        for j, b in enumerate(rois):
            if i == j:
                continue
            ax0, ay0, ax1, ay1 = a["bbox"]
            bx0, by0, bx1, by1 = b["bbox"]
            other = f"{b['label']} #{j + 1}"
            if ax0 >= bx0 and ay0 >= by0 and ax1 <= bx1 and ay1 <= by1:
                a["relations"].append(f"inside {other}")
                continue
            if grown and grown[i] is not None and masks[j] is not None and \
                    (grown[i] & masks[j]).any():
                a["relations"].append(f"adjacent to {other}")
            dx = a["centroid"][0] - b["centroid"][0]
            if abs(dx) > 0.5 * max(ax1 - ax0, bx1 - bx0):
                if plane == View.sagittal:  # image right is posterior
                    a["relations"].append(f"{'posterior' if dx > 0 else 'anterior'} to {other}")
                elif frame:  # image right is the patient's left
                    a["relations"].append(f"to the patient's {'left' if dx > 0 else 'right'} of {other}")
                else:
                    a["relations"].append(f"{'right' if dx > 0 else 'left'} of {other} in the image")
            dy = a["centroid"][1] - b["centroid"][1]
            if abs(dy) > 0.5 * max(ay1 - ay0, by1 - by0):
                word = ("posterior to" if dy > 0 else "anterior to") if plane == View.axial else (
                    "below" if dy > 0 else "above")
                a["relations"].append(f"{word} {other}")


def ground(view: View2D, label_map: Mapping[int, str], findings: Mapping[str, str],
           min_pixels: int) -> tuple[list[dict], list[np.ndarray | None]]:
    """ROIs from the view's label mask (one per connected component), its boxes and its
    points."""
    rois: list[dict] = []
    masks: list[np.ndarray | None] = []
    if view.labels is not None:
        for value in np.unique(view.labels):
            if value == 0:
                continue
            label = label_map.get(int(value), f"label {int(value)}")
            marked = view.labels == value
            comps, n = (marked.astype(np.int32), 1) if view.meta.roi_per_value else \
                ndimage.label(marked, structure=np.ones((3, 3)))
            for c in range(1, n + 1):
                region = comps == c
                if region.sum() < min_pixels:
                    continue
                rois.append(roi_facts(view, region, label, findings.get(label, label), "mask"))
                masks.append(region)
    h, w = view.image.shape[:2]
    for b in view.boxes:
        x0, y0 = max(0, int(np.floor(b.x0))), max(0, int(np.floor(b.y0)))
        x1, y1 = min(w, int(np.ceil(b.x1))), min(h, int(np.ceil(b.y1)))
        if x1 <= x0 or y1 <= y0:
            continue
        region = box_mask((h, w), [x0, y0, x1, y1])
        rois.append(roi_facts(view, region, b.label, findings.get(b.label, b.label), "box"))
        masks.append(None)  # a box is not a mask; never ship a rectangle as one
    for label, zone, x, y in view.points:
        rois.append(point_facts(view, x, y, label, findings.get(label, label), zone))
        masks.append(None)  # a point has no region
    order = sorted(range(len(rois)), key=lambda i: (rois[i]["label"], rois[i]["bbox"]))
    rois, masks = [rois[i] for i in order], [masks[i] for i in order]
    relations(rois, view.plane, masks)
    return rois, masks
