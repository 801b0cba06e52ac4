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

from curate.ingest.base import Box, CaseMeta, ImageCase, VolumeCase
from curate.model.errors import IngestError
from curate.model.recipe import NormalizeConfig, View

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
    # findings without extent on this view: (label, zone or None, x, y) in pixels
    points: list[tuple] = field(default_factory=list)


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


def lps_array(img: sitk.Image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The (z, y, x) array of `img` in LPS and its (x, y, z) spacing, as `to_lps` gives them.

    Where the direction matrix is a signed permutation (nearly every scan) this is a view of
    the stored buffer by axis transposes and flips: no copy, no change of pixel type. The
    view lives only as long as `img`. Other directions go through `to_lps` (a copy).
    """
    d = np.asarray(img.GetDirection(), float)
    if img.GetDimension() == 3 and img.GetNumberOfComponentsPerPixel() == 1:
        src = _permutation(d.reshape(3, 3))
        if src is not None:
            d = d.reshape(3, 3)  # column p: index axis p in LPS
            arr = sitk.GetArrayViewFromImage(img)  # (k, j, i): index axis p is array axis 2-p
            arr = arr.transpose([2 - src[2], 2 - src[1], 2 - src[0]])
            flips = tuple(2 - a for a in range(3) if d[a, src[a]] < 0)
            spacing = img.GetSpacing()
            return np.flip(arr, flips) if flips else arr, tuple(spacing[p] for p in src)
    lps = to_lps(img)
    return sitk.GetArrayFromImage(lps), lps.GetSpacing()


def _permutation(d: np.ndarray) -> np.ndarray | None:
    """The index axis along LPS x, y and z when the direction is a signed permutation."""
    src = np.abs(d).argmax(axis=1)
    if sorted(src) == [0, 1, 2] and np.allclose(np.abs(d[[0, 1, 2], src]), 1, atol=1e-3):
        return src
    return None


def lps_index(img: sitk.Image, index) -> np.ndarray:
    """A continuous (x, y, z) index of img as the (z, y, x) position in lps_array(img)'s
    array: the same axis permutation and flips (asked of DICOMOrient on a 2-voxel image
    with img's direction when the direction is oblique)."""
    d = np.asarray(img.GetDirection(), float).reshape(3, 3)
    src = _permutation(d)
    if src is None:
        tiny = sitk.Image([2, 2, 2], sitk.sitkUInt8)
        tiny.SetDirection(img.GetDirection())
        nd = np.asarray(to_lps(tiny).GetDirection(), float).reshape(3, 3)
        src = np.abs(nd.T @ d).argmax(axis=1)  # oriented index axis p = img's axis src[p]
        signs = np.sign((nd.T @ d)[[0, 1, 2], src])
    else:
        signs = np.sign(d[[0, 1, 2], src])
    size = np.asarray(img.GetSize(), float)
    idx = np.asarray(index, float)
    xyz = [idx[q] if sg > 0 else size[q] - 1 - idx[q] for q, sg in zip(src, signs, strict=True)]
    return np.array(xyz[::-1])


def plane_point(zyx, shape_zyx, plane: View) -> tuple[float, float, float]:
    """An LPS (z, y, x) array position as (slice, row, col) of in_plane(arr, plane)."""
    z, y, x = zyx
    if plane == View.axial:
        return z, y, x
    if plane == View.coronal:
        return y, shape_zyx[0] - 1 - z, x
    return x, shape_zyx[0] - 1 - z, y


def slice_areas(labels: np.ndarray) -> dict:
    """Each non-zero label value -> its voxel count in every slice (whole-volume reference)."""
    nz = labels.shape[0]
    return {value: (labels == value).reshape(nz, -1).sum(axis=1)
            for value in np.unique(labels) if value != 0}


def choose_slices(labels: np.ndarray | None, body_frac: np.ndarray, cfg: NormalizeConfig,
                  rng: np.random.Generator) -> list[int]:
    """Slices with ROIs (per label, up to cfg.roi_slices, large enough) plus normal ones."""
    return pick_slices({} if labels is None else slice_areas(labels), body_frac, cfg, rng)


def pick_slices(areas: dict, body_frac: np.ndarray, cfg: NormalizeConfig,
                rng: np.random.Generator) -> list[int]:
    """choose_slices from each label value's per-slice areas."""
    nz = body_frac.shape[0]
    chosen: set[int] = set()
    has_roi = np.zeros(nz, bool)
    for area in areas.values():
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
    labels, and each component's volume in mm³ from the voxel spacing (whole volume;
    volume_views uses label_components, which gives the same ids inside bounding boxes)."""
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


CHUNK = 16  # slices per block when a pass must read the whole volume


def nonzero_box(vol: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The bounding box of the non-zero voxels, read a few slices at a time."""
    seen = [np.zeros(n, bool) for n in vol.shape]
    for z0 in range(0, vol.shape[0], CHUNK):
        m = vol[z0:z0 + CHUNK] != 0
        seen[0][z0:z0 + CHUNK] = m.any(axis=(1, 2))
        if seen[0][z0:z0 + CHUNK].any():
            seen[1] |= m.any(axis=(0, 2))
            seen[2] |= m.any(axis=(0, 1))
    if not seen[0].any():
        return None
    return tuple(slice(int(i[0]), int(i[-1]) + 1) for i in map(np.flatnonzero, seen))


def value_boxes(labels: np.ndarray) -> list[tuple]:
    """(value, bounding box) of each non-zero label value, in value order."""
    from scipy import ndimage

    crop = nonzero_box(labels)
    if crop is None:
        return []
    sub = labels[crop]
    if sub.dtype.kind == "u":  # one pass finds every value's box
        found = [(v + 1, b) for v, b in enumerate(ndimage.find_objects(sub)) if b is not None]
    else:
        found = [(v, ndimage.find_objects((sub == v).view(np.uint8))[0])
                 for v in np.unique(sub) if v != 0]
    return [(v, tuple(slice(c.start + s.start, c.start + s.stop)
                      for c, s in zip(crop, b, strict=True))) for v, b in found]


@dataclass
class LabelComponents:
    """components_3d of a label volume, held only inside each value's bounding box."""

    shape: tuple[int, ...]
    parts: list[tuple[tuple, np.ndarray]]  # (box, int32 component ids in the box)
    mm3: dict[int, float]  # component id -> volume in mm³
    areas: dict  # label value -> its voxel count in every slice

    def at(self, k: int) -> np.ndarray:
        """Slice k of components_3d's id volume."""
        out = np.zeros(self.shape[1:], np.int32)
        for box, ids in self.parts:
            if box[0].start <= k < box[0].stop:
                part = ids[k - box[0].start]
                np.copyto(out[box[1], box[2]], part, where=part > 0)
        return out


def label_components(labels: np.ndarray, spacing) -> LabelComponents:
    """components_3d on each label value's bounding box instead of the whole volume.

    ndimage.label numbers components in scan order, which a box holding all of a value's
    voxels keeps, so ids and volumes are those of the whole-volume path."""
    from scipy import ndimage

    voxel = float(np.prod(spacing))
    out = LabelComponents(labels.shape, [], {}, {})
    next_id = 0
    for value, box in value_boxes(labels):
        mask = labels[box] == value
        comps, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(comps.ravel())[1:]
        comps[comps > 0] += next_id
        out.parts.append((box, comps))
        out.mm3.update({next_id + i + 1: float(s) * voxel for i, s in enumerate(sizes)})
        next_id += n
        area = np.zeros(labels.shape[0], np.int64)
        area[box[0]] = np.count_nonzero(mask, axis=(1, 2))
        out.areas[value] = area
    return out


def lesion_areas(masks: list[np.ndarray], nz: int) -> dict:
    """Per-slice areas of the union of expert lesion masks, as one label value."""
    area = np.zeros(nz, np.int64)
    for z0 in range(0, nz, CHUNK):
        union = np.zeros(masks[0][z0:z0 + CHUNK].shape, bool)
        for m in masks:
            union |= m[z0:z0 + CHUNK]
        area[z0:z0 + CHUNK] = np.count_nonzero(union, axis=(1, 2))
    return {1: area} if area.any() else {}


def volume_percentiles(arr: np.ndarray, pct: tuple[float, float]) -> tuple[float, float]:
    """percentile_range of a volume, copying only its non-zero voxels (as float32)."""
    blocks = [arr[z0:z0 + CHUNK] for z0 in range(0, arr.shape[0], CHUNK)]
    counts = [np.count_nonzero(b) for b in blocks]
    if not sum(counts):
        return percentile_range(np.asarray(arr, np.float32), pct)
    sample = np.empty(sum(counts), np.float32)
    at = 0
    for b, n in zip(blocks, counts, strict=True):
        sample[at:at + n] = b[b != 0]
        at += n
    low, high = np.percentile(sample, pct, overwrite_input=True)  # same order statistics
    return float(low), float(high)


PLANES = (View.sagittal, View.coronal, View.axial)  # the LPS axis (x, y, z) each one cuts


def acquisition_plane(img: sitk.Image, shape_zyx: tuple[int, ...],
                      spacing: tuple[float, float, float], tolerance: float) -> View:
    """The plane the slices were acquired in, as an LPS axis (x, y, z) normal to it: an
    axis one voxel deep; else the coarsest axis where the voxels are anisotropic (the
    slice step; a NIfTI file may store its axes in any order); else the LPS axis nearest
    the direction of the stored third index axis."""
    sizes = shape_zyx[::-1]  # per LPS axis x, y, z
    if min(sizes) == 1:
        return PLANES[int(np.argmin(sizes))]
    if max(spacing) > tolerance * min(spacing):
        return PLANES[int(np.argmax(spacing))]
    d = np.asarray(img.GetDirection(), float).reshape(3, 3)
    return PLANES[int(np.abs(d[:, 2]).argmax())]


def in_plane(arr: np.ndarray, plane: View) -> np.ndarray:
    """An LPS (z, y, x) array as (slices, rows, cols) cut in `plane` (a view, no copy):
    axial rows run anterior to posterior and columns to the patient's left (radiological
    display); coronal (columns to the patient's left) and sagittal (columns anterior to
    posterior) have the head at the top."""
    if plane == View.axial:
        return arr
    if plane == View.coronal:
        return arr.transpose(1, 0, 2)[:, ::-1, :]
    return arr.transpose(2, 0, 1)[:, ::-1, :]


def plane_spacing(spacing: tuple[float, float, float], plane: View) -> tuple[float, ...]:
    """(row, col, slice) mm of the in_plane array, from LPS (x, y, z) spacing."""
    sx, sy, sz = spacing
    return {View.axial: (sy, sx, sz), View.coronal: (sz, sx, sy),
            View.sagittal: (sz, sy, sx)}[plane]


def view_planes(case: VolumeCase, shape_zyx, spacing, cfg: NormalizeConfig) -> list[View]:
    """The acquisition plane, plus the planes the recipe asks for when the voxels are
    near-isotropic (no plane is ever cut across thick slices)."""
    acquired = acquisition_plane(case.image, shape_zyx, spacing, cfg.isotropic_tolerance)
    isotropic = max(spacing) <= cfg.isotropic_tolerance * min(spacing)
    out = []
    for name in cfg.planes:
        plane = acquired if name == "acquisition" else View(name)
        if (plane == acquired or isotropic) and plane not in out:
            out.append(plane)
    return out or [acquired]


def volume_views(case: VolumeCase, cfg: NormalizeConfig, rng: np.random.Generator,
                 window: str | None = None, expert_rois: list[tuple] = (),
                 steer: dict | None = None) -> list[View2D]:
    """2D views of a volume, cut in its acquisition plane (and others the recipe asks for
    when it is near-isotropic); expert_rois are (expert, ExpertROI) on the LPS grid of
    this volume, sliced onto the views (and, where nothing is annotated, steering slice
    choice towards the lesions they found). Views thinner than cfg.min_view_px are not
    made (noted on the case). `steer` maps a plane to (slices, rows, cols) lesion masks
    that 2D experts found by scanning the volume: they choose slices where nothing is
    annotated, and ship no ROI themselves (the experts run again on the chosen views).

    Only what ships is materialised at full precision: the volume is read through an
    LPS view of its stored buffer, windowed slice by slice, and label components are
    found inside each label's bounding box. Peak memory stays near the stored volume's.
    """
    lps, spacing = lps_array(case.image)  # (z, y, x), stored pixel type
    lps_labels = lps_array(case.label)[0] if case.label is not None else None
    points = [(p["label"], p.get("zone"), lps_index(case.image, p["index"]))
              for p in case.points]
    views = []
    for plane in view_planes(case, lps.shape, spacing, cfg):
        arr = in_plane(lps, plane)
        if min(arr.shape[1:]) < cfg.min_view_px:
            case.meta.notes.append(f"{plane.value} views would be {arr.shape[1]}x"
                                   f"{arr.shape[2]} px, under normalize.min_view_px "
                                   f"({cfg.min_view_px}); not made")
            continue
        views += _plane_views(case, cfg, rng, window, plane, arr,
                              None if lps_labels is None else in_plane(lps_labels, plane),
                              plane_spacing(spacing, plane),
                              [(name, r, in_plane(r.mask, plane)) for name, r in expert_rois],
                              (steer or {}).get(plane, []),
                              [(label, zone, plane_point(zyx, lps.shape, plane))
                               for label, zone, zyx in points])
    if not views:
        raise IngestError("every view of this volume would be thinner than "
                          f"normalize.min_view_px ({cfg.min_view_px} px)")
    return views


def scan_slices(case: VolumeCase, cfg: NormalizeConfig, window: str | None, step: int,
                run) -> dict:
    """Lesion masks that `run(view) -> [ExpertROI]` finds on every `step`-th slice of the
    volume's acquisition plane, as {plane: [(slices, rows, cols) bool]} for volume_views'
    `steer` (slices not scanned hold nothing)."""
    lps, spacing = lps_array(case.image)
    plane = view_planes(case, lps.shape, spacing, cfg)[0]
    arr = in_plane(lps, plane)
    sy, sx, _ = plane_spacing(spacing, plane)
    modality = (case.meta.modality or "").upper()
    name = pick_window(modality, case.meta.anatomy, window or cfg.ct_window)
    found = np.zeros(arr.shape, bool)
    for k in range(0, arr.shape[0], max(1, step)):
        raw = np.array(arr[k], np.float32, order="C")
        u8, win = window_ct(raw, name) if modality == "CT" else (
            scale_to_uint8(raw, *percentile_range(raw, cfg.mr_percentiles)),
            {"method": "percentile"})
        view = View2D(image=u8, raw=raw, plane=plane, index=k, count=arr.shape[0],
                      spacing=(sy, sx), window=win, meta=case.meta,
                      body=raw > -500 if modality == "CT" else None)
        for roi in run(view):
            if roi.kind == "lesion" and roi.mask.shape == raw.shape:
                found[k] |= roi.mask
    return {plane: [found]} if found.any() else {}


def _plane_views(case: VolumeCase, cfg: NormalizeConfig, rng: np.random.Generator,
                 window: str | None, plane: View, arr: np.ndarray, labels: np.ndarray | None,
                 spacing: tuple[float, float, float], expert_rois: list[tuple],
                 steer: list[np.ndarray] = (), points: list[tuple] = ()) -> list[View2D]:
    sy, sx, _ = spacing
    modality = (case.meta.modality or "").upper()
    if modality == "CT":
        name = pick_window(modality, case.meta.anatomy, window or cfg.ct_window)
        def body_of(block):  # noqa: E306
            return block > -500
        def intensity(sl):  # noqa: E306
            return window_ct(sl, name)
    else:
        low, high = volume_percentiles(arr, cfg.mr_percentiles)
        cut = low + 0.1 * (high - low)
        def body_of(block):  # noqa: E306
            return block.astype(np.float32, copy=False) > cut
        win = {"method": "percentile", "name": f"p{cfg.mr_percentiles[0]}-p{cfg.mr_percentiles[1]}",
               "low": low, "high": high}
        def intensity(sl):  # noqa: E306
            return scale_to_uint8(sl, low, high), win
    nz = arr.shape[0]
    body_count = np.concatenate([np.count_nonzero(body_of(arr[z0:z0 + CHUNK]), axis=(1, 2))
                                 for z0 in range(0, nz, CHUNK)])
    body_frac = body_count / (arr.shape[1] * arr.shape[2])
    comps = label_components(labels, spacing) if labels is not None else None
    if comps is not None:
        areas = comps.areas
    else:
        lesions = [m for _, r, m in expert_rois if r.kind == "lesion"] + list(steer)
        areas = lesion_areas(lesions, nz) if lesions else {}
    # a point lies on one slice, the one whose voxels hold it
    held = [(label, zone, min(nz - 1, max(0, int(np.floor(k + 0.5)))), row, col)
            for label, zone, (k, row, col) in points]
    for i, (_, _, k, _, _) in enumerate(held):
        areas = {**areas, ("point", i): (np.arange(nz) == k).astype(int)}
    picks = pick_slices(areas, body_frac, cfg, rng) if nz > 1 else [0]
    if not picks:  # unlabelled volume: the central slice
        picks = [nz // 2]
    views = []
    for k in picks:
        raw = np.array(arr[k], np.float32, order="C")
        u8, win = intensity(raw)
        views.append(resize_view(View2D(
            image=u8, raw=raw, plane=plane, index=k, count=nz, spacing=(sy, sx),
            window=win, meta=case.meta,
            labels=None if labels is None else np.array(labels[k], order="C"),
            body=body_of(raw), components=None if comps is None else comps.at(k),
            component_mm3={} if comps is None else comps.mm3,
            expert_slices=[(name, r.label, r.kind, r.score, np.array(m[k]))
                           for name, r, m in expert_rois if m[k].any()],
            points=[(label, zone, col, row) for label, zone, kp, row, col in held if kp == k],
        ), cfg.max_size))
    return views


def image_view(case: ImageCase, cfg: NormalizeConfig) -> View2D:
    px = case.pixels
    if case.window is not None:
        u8, win = px, case.window
    elif case.hu and px.ndim == 2:  # a CT slice stored as an image (DeepLesion)
        u8, win = window_ct(px.astype(np.float32),
                            pick_window("CT", case.meta.anatomy, cfg.ct_window))
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
    # pixel centres: x at pixel i's centre maps to (i + 0.5) / sx - 0.5
    view.points = [(label, zone, (x + 0.5) / sx - 0.5, (y + 0.5) / sy - 0.5)
                   for label, zone, x, y in view.points]
    return view
