"""CT volume -> windowed 2D PNG slices: curate's path beside a plain MONAI pipeline.

Both read the same NIfTI CT phantom (HU), put it in one canonical orientation, window it
to 0-255 and write every slice as PNG. Prints slices/s for each and the ratio.

    python benchmarks/normalize.py [--size 512] [--slices 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from curate.config import NormalizeConfig, SourceSpec
from curate.ground import encode_png
from curate.ingest.base import Unit
from curate.ingest.volume import read_volume
from curate.normalize import CT_WINDOWS, volume_views


def make_ct(path: Path, size: int, slices: int) -> None:
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:slices, :size, :size]
    body = ((x - size / 2) / (0.45 * size)) ** 2 + ((y - size / 2) / (0.35 * size)) ** 2 <= 1
    hu = np.where(body, 40, -1000) + rng.normal(0, 10, (slices, size, size))
    img = sitk.GetImageFromArray(hu.astype(np.int16))
    img.SetSpacing((0.7, 0.7, 2.5))
    sitk.WriteImage(img, str(path))


def curate_path(path: Path, slices: int) -> int:
    spec = SourceSpec(name="b", format="nifti", modality="CT", anatomy="abdomen",
                      layout={"images": [path.name]})
    (case,) = read_volume(spec, path.parent, Unit("b", path.name, [path.name]))
    cfg = NormalizeConfig(max_size=4096, normal_slices=slices)
    views = volume_views(case, cfg, np.random.default_rng(0))
    return len([encode_png(v.image) for v in views])


def monai_path(path: Path) -> int:
    from monai.transforms import (
        Compose,
        EnsureChannelFirst,
        LoadImage,
        Orientation,
        ScaleIntensityRange,
    )

    width, level = CT_WINDOWS["abdomen"]
    pipe = Compose([LoadImage(image_only=True), EnsureChannelFirst(),
                    Orientation(axcodes="LPS"),
                    ScaleIntensityRange(a_min=level - width / 2, a_max=level + width / 2,
                                        b_min=0.0, b_max=255.0, clip=True)])
    vol = pipe(str(path))[0].numpy()  # (x, y, z) in MONAI's index order
    n = 0
    for k in range(vol.shape[2]):
        buf = io.BytesIO()
        Image.fromarray(np.round(vol[:, :, k].T).astype(np.uint8)).save(buf, format="PNG")
        n += 1
    return n


def timed(fn, *args, repeat: int) -> tuple[float, int]:
    best, n = float("inf"), 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn(*args)
        best = min(best, time.perf_counter() - t)
    return best, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ct.nii.gz"
        make_ct(path, args.size, args.slices)
        t_m, n_m = timed(monai_path, path, repeat=args.repeat)
        t_c, n_c = timed(curate_path, path, args.slices, repeat=args.repeat)
    print(f"volume {args.size}x{args.size}x{args.slices}, best of {args.repeat}")
    print(f"monai  baseline: {n_m / t_m:8.1f} slices/s ({n_m} slices, {t_m:.2f} s)")
    print(f"curate         : {n_c / t_c:8.1f} slices/s ({n_c} slices, {t_c:.2f} s)")
    print(f"ratio curate/monai: {(n_c / t_c) / (n_m / t_m):.2f}x")


if __name__ == "__main__":
    main()
