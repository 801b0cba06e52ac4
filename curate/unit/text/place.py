"""Where a region lies, in the words a radiologist uses, computed from centroids and masks.

Everything here reads the ROI facts of one view (curate.unit.ground.roi_facts): bbox,
bbox_norm, centroid, laterality and the "in the <organ>" relations that expert organ
masks add. One phrase is built per region, with one frame of reference only, so a
sentence never mixes image-relative words ("central part of the slice") with the
patient's side.

Lung zones follow chest-radiograph practice: the lung field, from apex to base, in
thirds (upper, middle, lower zone). A zone is not a lobe; `lobe_approximation` maps a
zone to the lobe that mostly projects there on a frontal view, and the text says
"approximately", because the lower lobes reach far up posteriorly.
"""

from __future__ import annotations

ZONES = ("upper", "middle", "lower")
FRAME_PLANES = ("axial", "frontal", "coronal")  # views in which the patient's side is known
# the lobe that mostly projects onto each zone of a frontal view (an approximation)
LOBES = {
    ("right", "upper"): "right upper lobe", ("right", "middle"): "right middle lobe",
    ("right", "lower"): "right lower lobe", ("left", "upper"): "left upper lobe",
    ("left", "middle"): "lingula of the left upper lobe", ("left", "lower"): "left lower lobe",
}
ORGAN_WORDS = ("lung", "liver", "kidney", "spleen", "pancreas", "heart", "brain", "bladder",
               "prostate", "stomach", "colon", "aorta", "gallbladder", "breast", "hemithorax")


def image_size(roi: dict) -> tuple[float, float] | None:
    """(width, height) of the view in pixels, recovered from bbox and bbox_norm (None
    when a hand-made fact has no bbox_norm)."""
    if not roi.get("bbox_norm"):
        return None
    x0, y0, x1, y1 = roi["bbox"]
    nx1, ny1 = roi["bbox_norm"][2], roi["bbox_norm"][3]
    return x1 / nx1 if nx1 else float(x1), y1 / ny1 if ny1 else float(y1)


def _third_of_image(value: float, size: float | None) -> int:
    return 1 if size is None else third(value, 0, size)


def third(value: float, low: float, high: float) -> int:
    """0, 1 or 2: which third of [low, high) the value falls in (clamped)."""
    span = max(high - low, 1e-9)
    return min(2, max(0, int(3 * (value - low) / span)))


def lung_zone(cy: float, lung_bbox: list[int] | list[float]) -> str:
    """upper/middle/lower zone of a point's row within the lung field's vertical extent."""
    return ZONES[third(cy, lung_bbox[1], lung_bbox[3])]


def lobe_approximation(side: str | None, zone: str) -> str | None:
    """The lobe that mostly projects onto a zone on a frontal view; None without a side."""
    return LOBES.get((side or "", zone))


def is_organ(roi: dict) -> bool:
    """An organ outlined by an expert model (context for other regions, not a finding)."""
    words = roi["label"].lower().split()
    return roi.get("origin", "").startswith("expert:") and bool(words) and \
        any(words[-1].startswith(w) for w in ORGAN_WORDS)


def organ_of(roi: dict) -> str | None:
    """The organ an expert placed the region in ("in the right lung" -> "right lung")."""
    for rel in roi.get("relations") or []:
        if rel.startswith("in the "):
            return rel[len("in the "):]
    return None


def side_word(organ: str) -> str | None:
    words = organ.lower().split()
    return next((w for w in words if w in ("left", "right")), None)


def organ_phrase(roi: dict, rois: list[dict], plane: str) -> str | None:
    """"in the right lung, lower zone (approximately the right lower lobe)" and the like,
    or None when no organ holds the region or the organ's side contradicts the region's."""
    organ = organ_of(roi)
    if organ is None:
        return None
    side = side_word(organ)
    if side and roi.get("laterality") in ("left", "right") and side != roi["laterality"]:
        return None  # the organ mask and the midline disagree: say neither side
    holder = next((r for r in rois if r["label"] == organ and is_organ(r)), None)
    if "lung" in organ and holder is not None:
        cy = roi["centroid"][1]
        if plane in ("frontal", "coronal"):
            zone = lung_zone(cy, holder["bbox"])
            lobe = lobe_approximation(side, zone)
            text = f"in the {zone} zone of the {organ}"
            return text + (f" (approximately the {lobe})" if lobe else "")
        if plane == "axial":
            ap = ("anterior", "central", "posterior")[third(cy, holder["bbox"][1], holder["bbox"][3])]
            return f"in the {ap} part of the {organ}"
    return f"in the {organ}"


def where(roi: dict, ctx: dict, rois: list[dict] | None = None) -> str:
    """One location phrase in a single frame of reference (patient or image)."""
    rois = rois if rois is not None else ctx.get("rois", [])
    plane = ctx.get("plane")
    organ = organ_phrase(roi, rois, plane)
    if organ and roi.get("area_kind") == "point":  # the zone a source names, and the side
        return f"{organ}, {where(dict(roi, relations=[]), ctx, rois)}"
    if organ:
        return organ
    w, h = image_size(roi) or (None, None)
    cx, cy = roi["centroid"]
    lat = roi.get("laterality")
    if plane in FRAME_PLANES and lat in ("left", "right", "midline"):
        region = ctx.get("anatomy") or "body"
        if plane == "axial":
            ap = ("anterior ", "", "posterior ")[_third_of_image(cy, h)]
            if lat == "midline":
                return f"in the {ap}{region} near the midline" if ap else f"centrally in the {region}"
            return f"in the {ap}{region} on the patient's {lat} side"
        if h is None:
            return "near the midline" if lat == "midline" else f"on the patient's {lat}"
        vert = ("upper", "middle", "lower")[third(cy, 0, h)]
        if lat == "midline":
            return f"near the midline, in the {vert} third of the image"
        return f"on the patient's {lat}, in the {vert} third of the image"
    if plane == "sagittal" and w is not None:  # x runs anterior to posterior, no side
        parts = [("upper", "", "lower")[third(cy, 0, h)],
                 ("anterior", "", "posterior")[third(cx, 0, w)]]
        region = ctx.get("anatomy") or "body"
        text = " ".join(p for p in parts if p)
        return f"in the {text} part of the {region}" if text else f"centrally in the {region}"
    vert = ("top", "", "bottom")[_third_of_image(cy, h)]
    horiz = ("left", "", "right")[_third_of_image(cx, w)]
    if not vert and not horiz:
        return "near the centre of the image"
    return f"towards the {'-'.join(p for p in (vert, horiz) if p)} of the image"


def short_where(roi: dict, ctx: dict) -> str:
    """A location answer for VQA: the phrase without its leading preposition."""
    text = where(roi, ctx)
    for lead in ("in the ", "towards the "):
        if text.startswith(lead):
            return text[len(lead):]
    return text
