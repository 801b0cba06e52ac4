"""What the Parquet export (shard.parquet_images) costs a shard writer, and what the
packed masks.npz saves.

Writes one synthetic shard (N samples: a noisy grey PNG of SIZE x SIZE, 0-3 ROIs of which
some are mask ROIs) with curate.dataset.ship.write_shard twice in the same process: the
baseline without the export (tar + manifest part), then with it (tar + manifest part +
data/ part), best of REPEATS each, and prints the ratio of times and the bytes of each
output. Then it compares the masks member as written (1-D packed bits, see
curate.model.masks) with the earlier (R, H, W) uint8 array, both np.savez_compressed.

    python benchmarks/parquet_export.py [--samples 200] [--size 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curate.dataset.ship import KEPT, write_shard  # noqa: E402
from curate.model.masks import masks_array, pack  # noqa: E402


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def roi(box: list[int], kind: str) -> dict:
    return {"label": "lesion", "finding": "lesion", "bbox": box, "bbox_norm": [0.1] * 4,
            "area_px": 100, "area_frac": 0.01, "area_mm2": None, "area_kind": kind,
            "longest_diameter_mm": None, "volume_mm3": None, "centroid": [1.0, 1.0],
            "laterality": None, "location": "centre", "intensity": "hyper",
            "intensity_inside": 1.0, "intensity_around": 0.5, "relations": [],
            "origin": "annotation", "confidence": None}


def shard(n: int, size: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        img = rng.normal(100, 20, (size, size)).clip(0, 255).astype(np.uint8)
        rois, masks = [], []
        for _ in range(int(rng.integers(0, 4))):
            x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
            box = [x0, y0, x0 + size // 8, y0 + size // 8]
            if rng.random() < 0.5:
                m = np.zeros((size, size), np.uint8)
                yy, xx = np.ogrid[:size, :size]
                m[(yy - y0 - size // 16) ** 2 + (xx - x0 - size // 16) ** 2 < (size // 16) ** 2] = 1
                rois.append(roi(box, "mask"))
                masks.append(png(m))
            else:
                rois.append(roi(box, "box"))
                masks.append(None)
        rows.append({
            "sample_id": f"{i:032x}", "unit_id": "u", "source": "s", "case_id": f"c{i}",
            "series": "x", "image_sha256": "0" * 64, "image_phash": "0" * 16, "license": "MIT",
            "modality": "CT", "anatomy": "chest", "findings": [], "annotated": True,
            "image_labels": [], "view": {"plane": "axial", "index": i, "count": n},
            "width": size, "height": size, "channels": 1, "pixel_spacing_mm": None,
            "window": {"method": "none", "name": None, "low": None, "high": None},
            "notes": [], "rois": rois,
            "levels": {"modality": "m", "organ": "o", "roi": "r", "texture": "t",
                       "relations": "x"},
            "caption": "a caption " * 20, "knowledge_refs": [], "vqa": [],
            "generation": {"backend": "b", "model": None, "prompt_version": "p",
                           "cache_key": "k", "note": "n"},
            "quality": {"std": 1.0, "contrast": 1.0, "text_flags": [], "scores": [],
                        "keep": True, "reasons": []},
            "split": "train", "shard": "train-000000.tar", "image": png(img),
            "roi_masks": masks, "_order": f"{i:08d}"})
    return pa.Table.from_pylist(rows, schema=KEPT)


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = shard(args.samples, args.size)
    tmp = Path(tempfile.mkdtemp(prefix="curate-bench-"))
    try:
        figures = {"samples": args.samples, "size": args.size}
        for label, on in (("baseline", False), ("export", True)):
            out = tmp / label
            figures[f"{label}_s"] = round(best(lambda o=out, e=on: (
                shutil.rmtree(o, ignore_errors=True),
                write_shard(rows, o, parquet_images=e)), args.repeats), 3)
            figures[f"{label}_tar_bytes"] = size_of(out / "shards")
            figures[f"{label}_data_bytes"] = size_of(out / "data")
        figures["time_ratio"] = round(figures["export_s"] / figures["baseline_s"], 2)
        figures["bytes_ratio"] = round(
            (figures["export_tar_bytes"] + figures["export_data_bytes"])
            / figures["baseline_tar_bytes"], 2)
        packed = uint8 = 0
        for r in rows.select(["rois", "roi_masks", "height", "width"]).to_pylist():
            m = masks_array(r["rois"], r["roi_masks"], r["height"], r["width"])
            packed += len(pack(m))
            buf = io.BytesIO()
            np.savez_compressed(buf, masks=m)
            uint8 += len(buf.getvalue())
        figures["masks_packed_bytes"], figures["masks_uint8_bytes"] = packed, uint8
        figures["masks_bytes_ratio"] = round(packed / uint8, 2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"write_shard, {args.samples} samples of {args.size}px: "
          f"{figures['baseline_s']:.2f} s without the Parquet export, "
          f"{figures['export_s']:.2f} s with it ({figures['time_ratio']}x); bytes written "
          f"{figures['bytes_ratio']}x")
    print(f"masks.npz: packed bits {packed} B vs uint8 {uint8} B "
          f"({figures['masks_bytes_ratio']}x)")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
