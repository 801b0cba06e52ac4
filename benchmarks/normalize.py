"""One big CT through ingest + normalize, the way a worker does: peak memory and time.

Writes a 512x512x400 int16 CT phantom (HU) with a uint8 lesion label as NIfTI, stored in
RAS order like most NIfTI files (so orientation is not the identity), with two lesions of
known centre and radius. Each path then runs in a fresh subprocess that imports what a
worker imports, notes its resident size (idle), reads the case with the nifti adapter,
normalizes it with the recipe below (5 slices ship) and grounds the views:

- ``current``: ``curate.ingest.volume.read_volume`` + ``curate.unit.normalize.volume_views``;
- ``baseline``: the previous path, kept here: image read as float32, label as uint16,
  the whole volume reoriented and copied to float32, 3D components over the whole label.

Prints the stored size, peak RSS above idle, its ratio to the stored size and normalize
seconds for each path, the ratios between them, checks that both ship the same bytes and
facts and that the lesion volumes match the phantom's truth. The last line is JSON.

    python benchmarks/normalize.py [--size 512] [--slices 400] [--repeat 3] [--no-baseline]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPACING = (0.7, 0.7, 1.0)  # x, y, z mm
LESIONS = {1: ((0.70, 0.45, 0.55), 9.0), 2: ((0.30, 0.55, 0.40), 6.0)}  # value: centre, r mm
LABEL_MAP = {1: "left lesion", 2: "right lesion"}
RECIPE = {"roi_slices": 2, "normal_slices": 1, "max_size": 512}  # 2 + 2 + 1 = 5 slices
TARGET_RSS_RATIO, TARGET_NORMALIZE_S = 3, 1


def make_phantom(root: Path, size: int, slices: int) -> dict:
    """image/ct.nii.gz and label/ct.nii.gz; returns the truth (voxels per lesion value)."""
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    hu = np.empty((slices, size, size), np.int16)
    lab = np.zeros((slices, size, size), np.uint8)
    y, x = np.ogrid[:size, :size]
    body = ((x - size / 2) / (0.45 * size)) ** 2 + ((y - size / 2) / (0.35 * size)) ** 2 <= 1
    for z in range(slices):  # LPS grid: x to the patient's left, y posterior
        hu[z] = np.where(body, 40, -1000) + rng.integers(-12, 13, (size, size))
        for value, ((cx, cy, cz), r) in LESIONS.items():
            d2 = ((x - cx * size) * SPACING[0]) ** 2 + ((y - cy * size) * SPACING[1]) ** 2 \
                + ((z - cz * slices) * SPACING[2]) ** 2
            lab[z][d2 <= r * r] = value
        hu[z][lab[z] > 0] = 120
    truth = {v: int((lab == v).sum()) for v in LESIONS}
    for name, arr in (("image", hu), ("label", lab)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(SPACING)
        (root / name).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.DICOMOrient(img, "RAS"), str(root / name / "ct.nii.gz"), True)
    return truth


# ---- the previous path, kept as the baseline ---------------------------------------------

def baseline_read(spec, root: Path, unit):
    import SimpleITK as sitk

    from curate.ingest.base import VolumeCase
    from curate.ingest.files import file_meta
    from curate.ingest.volume import _read

    image = _read(root / unit.files[0], sitk.sitkFloat32)[0]
    label = _read(root / unit.extra["label"], sitk.sitkUInt16)[0]
    label.CopyInformation(image)
    return [VolumeCase(image=image, label=label, meta=file_meta(spec, unit.key, None))]


def baseline_views(case, cfg, rng, window=None):
    import SimpleITK as sitk

    from curate.model.recipe import View
    from curate.unit.normalize import (
        View2D,
        choose_slices,
        components_3d,
        pick_window,
        resize_view,
        to_lps,
        window_ct,
    )
    img = to_lps(case.image)
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    labels = sitk.GetArrayFromImage(to_lps(case.label))
    sx, sy, _ = img.GetSpacing()
    name = pick_window("CT", case.meta.anatomy, window or cfg.ct_window)
    body = arr > -500
    body_frac = body.reshape(body.shape[0], -1).mean(axis=1)
    comps, comp_mm3 = components_3d(labels, img.GetSpacing())
    picks = choose_slices(labels, body_frac, cfg, rng)
    views = []
    for k in picks:
        u8, win = window_ct(arr[k], name)
        views.append(resize_view(View2D(
            image=u8, raw=arr[k], plane=View.axial, index=k, count=arr.shape[0],
            spacing=(sy, sx), window=win, meta=case.meta, labels=labels[k], body=body[k],
            components=comps[k], component_mm3=comp_mm3), cfg.max_size))
    return views


# ---- one path in a fresh process ----------------------------------------------------------

def rss_mb(field: str = "VmRSS") -> float:
    """Resident size now (VmRSS) or at its peak (VmHWM), from /proc: unlike ru_maxrss, the
    peak is this process's own, not one inherited from the parent it was forked from."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    return kb / 1024


def digest(views, spec) -> tuple[str, list]:
    """A hash of everything the views ship (pixels, masks, facts) and the lesion facts."""
    from curate.unit.ground import ground

    h, facts = hashlib.sha256(), []
    for v in views:
        rois, masks = ground(v, LABEL_MAP, {}, 4)
        for a in (v.image, v.raw, v.body, *masks):
            h.update(np.ascontiguousarray(a).tobytes() + str(a.dtype).encode())
        for a in (v.labels, v.components):  # values (a label read as stored may be uint8)
            h.update(np.asarray(a, np.int64).tobytes())
        h.update(json.dumps([v.index, v.count, v.spacing, v.window, rois, v.component_mm3],
                            sort_keys=True, default=str).encode())
        facts += [{"slice": v.index, "label": r["label"], "side": r["laterality"],
                   "volume_mm3": r["volume_mm3"]} for r in rois]
    return h.hexdigest(), facts


def worker(path: str, root: Path, repeat: int) -> None:
    from scipy import ndimage  # noqa: F401 - imported by normalize on first use

    import curate.unit.pipeline  # noqa: F401 - what a worker has imported before its first unit
    from curate.ingest import adapter
    from curate.model.recipe import Recipe, SourceSpec

    idle = rss_mb()
    spec = SourceSpec(name="bench", format="nifti", modality="CT", anatomy="abdomen", layout={
        "images": ["image/*.nii.gz"], "masks": "label/{name}", "label_map": LABEL_MAP})
    recipe = Recipe.model_validate({"name": "bench", "sources": [], "normalize": RECIPE})
    plan, read = adapter(spec.format)
    (unit,), _ = plan(spec, root)
    unit = unit.stamp(root, "bench")
    if path == "baseline":
        read, views_of = baseline_read, baseline_views
    else:
        from curate.unit.normalize import volume_views as views_of
    t = time.perf_counter()
    (case,) = read(spec, root, unit)  # as process_unit: adapter read, then volume_views
    ingest_s = time.perf_counter() - t
    times = []
    for _ in range(repeat):
        rng = np.random.default_rng(int(unit.unit_id[:8], 16) ^ recipe.seed)
        t = time.perf_counter()
        views = views_of(case, recipe.normalize, rng, spec.window)
        times.append(time.perf_counter() - t)
    peak = rss_mb("VmHWM")
    sha, facts = digest(views, spec)
    print(json.dumps({"idle_mb": idle, "peak_rss_above_idle_mb": peak - idle,
                      "ingest_s": ingest_s, "normalize_s": min(times),
                      "normalize_first_s": times[0], "slices": len(views), "digest": sha,
                      "facts": facts, "image_dtype": case.image.GetPixelIDTypeAsString()}))


def run_path(path: str, root: Path, repeat: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", path, "--root", str(root),
                          "--repeat", str(repeat)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_truth(facts: list, truth: dict) -> None:
    voxel = float(np.prod(SPACING))
    sides = {1: "left", 2: "right"}
    for value, name in LABEL_MAP.items():
        mine = [f for f in facts if f["label"] == name]
        assert mine, f"{name}: no slice shipped"
        for f in mine:
            assert f["side"] == sides[value], (name, f)
            assert abs(f["volume_mm3"] - truth[value] * voxel) < 1e-6 * truth[value], (name, f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--slices", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-baseline", action="store_true", help="skip the previous path")
    ap.add_argument("--worker", choices=["current", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.root, args.repeat)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t = time.perf_counter()
        truth = make_phantom(root, args.size, args.slices)
        print(f"phantom {args.size}x{args.size}x{args.slices} int16 CT, RAS-stored, "
              f"written in {time.perf_counter() - t:.1f} s")
        runs = {"current": run_path("current", root, args.repeat)}
        if not args.no_baseline:
            runs["baseline"] = run_path("baseline", root, args.repeat)
    stored_mb = args.size * args.size * args.slices * 2 / 2**20
    print(f"volume as stored: {stored_mb:.0f} MiB (int16); sizes below in MiB")
    for name, r in runs.items():
        r["rss_ratio"] = r["peak_rss_above_idle_mb"] / stored_mb
        print(f"{name:9s} idle {r['idle_mb']:.0f} MB, peak above idle "
              f"{r['peak_rss_above_idle_mb']:.0f} MB ({r['rss_ratio']:.2f}x stored), ingest "
              f"{r['ingest_s']:.2f} s, normalize {r['normalize_s']:.2f} s (best of "
              f"{args.repeat}; first {r['normalize_first_s']:.2f} s), {r['slices']} slices, "
              f"image {r['image_dtype']}")
    cur = runs["current"]
    check_truth(cur["facts"], truth)
    result = {"volume_mb": round(stored_mb, 1),
              "peak_rss_above_idle_mb": round(cur["peak_rss_above_idle_mb"], 1),
              "rss_ratio": round(cur["rss_ratio"], 2), "normalize_s": round(cur["normalize_s"], 3),
              "normalize_first_s": round(cur["normalize_first_s"], 3),
              "ingest_s": round(cur["ingest_s"], 3), "slices": cur["slices"],
              "target_rss_ratio": TARGET_RSS_RATIO, "target_normalize_s": TARGET_NORMALIZE_S}
    if "baseline" in runs:
        base = runs["baseline"]
        same = base["digest"] == cur["digest"]
        print(f"baseline/current: peak RSS {base['peak_rss_above_idle_mb'] / cur['peak_rss_above_idle_mb']:.1f}x, "
              f"normalize {base['normalize_s'] / cur['normalize_s']:.1f}x; "
              f"same shipped bytes and facts: {same}")
        result.update({"baseline_peak_rss_above_idle_mb": round(base["peak_rss_above_idle_mb"], 1),
                       "baseline_rss_ratio": round(base["rss_ratio"], 2),
                       "baseline_normalize_s": round(base["normalize_s"], 3),
                       "baseline_normalize_first_s": round(base["normalize_first_s"], 3),
                       "rss_improvement": round(base["peak_rss_above_idle_mb"]
                                                / cur["peak_rss_above_idle_mb"], 2),
                       "normalize_speedup": round(base["normalize_s"] / cur["normalize_s"], 2),
                       "same_output": same})
    result["meets_targets"] = (result["rss_ratio"] <= TARGET_RSS_RATIO
                               and result["normalize_s"] <= TARGET_NORMALIZE_S)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
