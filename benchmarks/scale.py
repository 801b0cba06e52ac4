"""Does the driver stay flat, and how close is the build to the floor of its own work?

Builds a synthetic 2D source (64x64 images, one lesion mask each, and a copy of a slice
of one "patient" republished in a second source every 50 cases, so near-duplicate
linking has work to do) on local Ray at N and 8N samples, each build in a fresh process
that reports, for the driver process alone, its peak RSS (VmHWM) and CPU seconds. Then:

- curate end to end with 1 and with 2 CPUs (samples/s, Ray start-up excluded);
- the floor: the same per-sample work as a plain Ray Data pipeline (decode image and
  mask, box and area, a perceptual hash, re-encode, write WebDataset shards);
- the near-duplicate linking step at N and 8N against n log n.

    python benchmarks/scale.py                 # N = 2000 (and 16000)
    python benchmarks/scale.py --n 500         # a quick look

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

HERE = Path(__file__).resolve().parent


def make_source(root: Path, n: int) -> None:
    """n image/mask pairs in a/ (one case each) plus every 50th image copied into b/."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    for sub in ("a/img", "a/seg", "b/img"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    copies = 0
    for i in range(n):
        coarse = rng.uniform(20, 140, (8, 8))  # a distinct low-frequency texture per case
        base = np.kron(coarse, np.ones((8, 8))) + rng.normal(0, 4, (64, 64))
        cy, cx, r = rng.integers(16, 48), rng.integers(16, 48), rng.integers(4, 10)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r
        img = np.clip(base + mask * 90, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"a/img/p{i:06d}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / f"a/seg/p{i:06d}.png")
        if i % 50 == 0 and copies < n // 50:
            Image.fromarray(img).save(root / f"b/img/c{i:06d}.png")
            copies += 1


def recipe(root: Path, dest: Path, link: bool) -> Path:
    r = {"name": "scale", "seed": 0, "salt": "bench",
         "split": {"train": 0.8, "val": 0.1, "test": 0.1,
                   **({"link_near_duplicates_bits": 4} if link else {})},
         "sources": [
             {"name": "a", "path": str(root / "a"), "format": "image_mask", "modality": "CT",
              "anatomy": "abdomen", "layout": {"images": ["img/*.png"],
                                               "masks": "seg/{stem}.png",
                                               "label_map": {1: "lesion"}}},
             {"name": "b", "path": str(root / "b"), "format": "image_mask", "modality": "CT",
              "anatomy": "abdomen", "layout": {"images": ["img/*.png"]}}]}
    dest.write_text(yaml.safe_dump(r, sort_keys=False))
    return dest


CHILD = r"""
import json, os, resource, sys, time
import ray
cpus, recipe, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR")
ray.data.DataContext.get_current().enable_progress_bars = False
from curate.build import build
t0, c0 = time.perf_counter(), time.process_time()
rec = build(recipe, out, executor="ray", log=lambda m: None)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print("RESULT " + json.dumps({"wall_s": wall, "driver_cpu_s": cpu,
      "driver_peak_rss_mb": int(hwm) / 1024, "kept": rec["counts"]["filter"]["kept"],
      "samples": rec["counts"]["normalize"]["views"], "linked": rec["counts"]["linked_cases"],
      "finalize_s": rec["timings_s"]["finalize"]}))
ray.shutdown()
"""

FLOOR = r"""
import io, json, sys, time
import numpy as np, ray, imagehash
from PIL import Image
cpus, root, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR")
ray.data.DataContext.get_current().enable_progress_bars = False
import glob
files = sorted(glob.glob(root + "/a/img/*.png"))

def work(batch):
    keys, pngs, masks, meta = [], [], [], []
    for path in batch["path"]:
        img = np.asarray(Image.open(path))
        mask = np.asarray(Image.open(path.replace("/img/", "/seg/"))) > 0
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else []
        ph = str(imagehash.phash(Image.fromarray(img)))
        b1, b2 = io.BytesIO(), io.BytesIO()
        Image.fromarray(img).save(b1, format="PNG")
        Image.fromarray(mask.astype(np.uint8) * 255).save(b2, format="PNG")
        keys.append(path.rsplit("/", 1)[1][:-4]); pngs.append(b1.getvalue())
        masks.append(b2.getvalue())
        meta.append(json.dumps({"bbox": box, "area": int(mask.sum()), "phash": ph}).encode())
    return {"__key__": keys, "png": pngs, "roi_000.png": masks, "json": meta}

t0 = time.perf_counter()
ds = ray.data.from_items([{"path": f} for f in files], override_num_blocks=max(2, len(files) // 256))
ds.map_batches(work, batch_size=64).write_webdataset(out, encoder=lambda s: s)
print("RESULT " + json.dumps({"wall_s": time.perf_counter() - t0, "samples": len(files)}))
ray.shutdown()
"""


def child(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="the small size; the large is 8x")
    ap.add_argument("--factor", type=int, default=8)
    args = ap.parse_args()
    small, large = args.n, args.n * args.factor
    work = Path(tempfile.mkdtemp(prefix="curate-scale-"))
    runs = {}
    for n in (small, large):
        data = work / f"data{n}"
        t = time.perf_counter()
        make_source(data, n)
        print(f"generated {n} samples in {time.perf_counter() - t:.1f} s", flush=True)
        rec = recipe(data, work / f"r{n}.yaml", link=True)
        runs[(n, 2)] = child(CHILD, "2", str(rec), str(work / f"out{n}-2"))
        print(f"N={n}, 2 CPUs: {runs[(n, 2)]}", flush=True)
    runs[(large, 1)] = child(CHILD, "1", str(work / f"r{large}.yaml"), str(work / f"out{large}-1"))
    print(f"N={large}, 1 CPU: {runs[(large, 1)]}", flush=True)
    floor = child(FLOOR, "2", str(work / f"data{large}"), str(work / "floor"))
    print(f"floor N={large}, 2 CPUs: {floor}", flush=True)
    floor1 = child(FLOOR, "1", str(work / f"data{large}"), str(work / "floor1"))
    print(f"floor N={large}, 1 CPU: {floor1}", flush=True)

    a, b = runs[(small, 2)], runs[(large, 2)]
    rate = {k: runs[k]["samples"] / runs[k]["wall_s"] for k in runs}
    floor_rate = floor["samples"] / floor["wall_s"]
    nlogn = (large * math.log(large)) / (small * math.log(small))
    fig = {
        "n_small": small, "n_large": large,
        "driver_peak_rss_mb_small": round(a["driver_peak_rss_mb"], 1),
        "driver_peak_rss_mb_large": round(b["driver_peak_rss_mb"], 1),
        "driver_rss_growth": round(b["driver_peak_rss_mb"] / a["driver_peak_rss_mb"] - 1, 3),
        "driver_cpu_s_small": round(a["driver_cpu_s"], 2),
        "driver_cpu_s_large": round(b["driver_cpu_s"], 2),
        "driver_cpu_ms_per_extra_sample": round(
            1000 * (b["driver_cpu_s"] - a["driver_cpu_s"]) / (b["samples"] - a["samples"]), 4),
        "curate_samples_per_s_1cpu": round(rate[(large, 1)], 1),
        "curate_samples_per_s_2cpu": round(rate[(large, 2)], 1),
        "floor_samples_per_s_2cpu": round(floor_rate, 1),
        "ratio_vs_floor": round(rate[(large, 2)] / floor_rate, 3),
        "ratio_2_vs_1_cpu": round(rate[(large, 2)] / rate[(large, 1)], 3),
        "floor_ratio_2_vs_1_cpu": round(floor_rate / (floor1["samples"] / floor1["wall_s"]), 3),
        "finalize_s_small": round(a["finalize_s"], 2), "finalize_s_large": round(b["finalize_s"], 2),
        "finalize_growth_vs_nlogn": round((b["finalize_s"] / a["finalize_s"]) / nlogn, 3),
        "linked_cases_large": b["linked"],
        "targets": {"driver_rss_growth": 0.15, "driver_cpu_ms_per_extra_sample": 0.2,
                    "ratio_vs_floor": 0.3, "ratio_2_vs_1_cpu": 1.7},
    }
    print(f"driver peak RSS {fig['driver_peak_rss_mb_small']} MB -> "
          f"{fig['driver_peak_rss_mb_large']} MB ({fig['driver_rss_growth']:+.1%}; target <= 15%)")
    print(f"driver CPU {fig['driver_cpu_ms_per_extra_sample']} ms per extra sample (target <= 0.2)")
    print(f"curate {fig['curate_samples_per_s_2cpu']} samples/s vs floor "
          f"{fig['floor_samples_per_s_2cpu']}: {fig['ratio_vs_floor']}x (target >= 0.3)")
    print(f"2 CPUs vs 1: {fig['ratio_2_vs_1_cpu']}x (target >= 1.7); the floor itself: "
          f"{fig['floor_ratio_2_vs_1_cpu']}x on this machine")
    print(f"finalize (dedup, linking, split, shards) grew {fig['finalize_growth_vs_nlogn']}x "
          "what n log n predicts")
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
