"""Phantoms with known truth for the experts (used by tests/test_experts.py).

Each returns a normalised view as curate.unit.normalize would produce it and the truth the
expert must recover, so accuracy is measured, not eyeballed. Deterministic per seed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from curate.ingest.base import CaseMeta
from curate.model.recipe import View
from curate.unit.normalize import View2D


def ellipse(shape: tuple[int, int], cx: float, cy: float, a: float, b: float) -> np.ndarray:
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1


def ct_view(hu: np.ndarray, spacing: tuple[float, float] | None = (0.7, 0.7),
            plane: View = View.axial, modality: str = "CT") -> View2D:
    """A CT view as curate.unit.normalize makes it: HU in raw, a lung-ish window in image."""
    u8 = np.clip((hu + 1350) / 1500 * 255, 0, 255).astype(np.uint8)
    return View2D(image=u8, raw=hu.astype(np.float32), plane=plane, index=0, count=1,
                  spacing=spacing, window={"method": "ct_window"},
                  meta=CaseMeta(modality=modality), body=hu > -500)


def rgb_view(img: np.ndarray, modality: str) -> View2D:
    return View2D(image=img, raw=img.mean(2).astype(np.float32), plane=View.none, index=-1,
                  count=1, spacing=None, window={}, meta=CaseMeta(modality=modality))


def chest_phantom(seed: int = 0, gap: int = 48, n: int = 256) -> tuple[View2D, dict]:
    """Axial chest in HU (LPS: image right = patient's left): body with a fat rim, two
    air-filled lungs with vessels, a vertebra, the table, and a nodule in the left lung."""
    rng = np.random.default_rng(seed)
    s = (n, n)
    hu = np.full(s, -1000.0)
    hu[ellipse(s, 128, 128, 110, 85)] = -100.0
    hu[ellipse(s, 128, 128, 102, 77)] = 40.0
    right, left = ellipse(s, 128 - gap, 120, 36, 55), ellipse(s, 128 + gap, 120, 36, 55)
    hu[left | right] = -850.0
    for _ in range(14):
        ys, xs = np.nonzero(ndimage.binary_erosion(left if rng.random() < 0.5 else right,
                                                   iterations=6))
        i = rng.integers(len(ys))
        hu[ellipse(s, xs[i], ys[i], 1.5, 1.5)] = 30.0
    hu[ellipse(s, 128, 190, 13, 11)] = 700.0
    hu[226:232, 20:236] = 150.0
    nodule = ellipse(s, 128 + gap + 8, 105, 6, 6)
    hu[nodule] = 40.0
    hu = ndimage.gaussian_filter(hu, 0.7) + rng.normal(0, 12, s)
    return ct_view(hu), {"left lung": left, "right lung": right, "nodule": nodule}


def abdomen_phantom(seed: int = 1, n: int = 256) -> tuple[View2D, dict]:
    """Abdomen in HU: a liver with a hypodense lesion, a hyperdense lesion elsewhere."""
    rng = np.random.default_rng(seed)
    s = (n, n)
    hu = np.full(s, -1000.0)
    hu[ellipse(s, 128, 128, 110, 85)] = -100.0
    hu[ellipse(s, 128, 128, 102, 77)] = 45.0
    liver = ellipse(s, 95, 115, 45, 45)
    hu[liver] = 60.0
    dark, bright = ellipse(s, 88, 110, 9, 9), ellipse(s, 170, 120, 7, 7)
    hu[dark], hu[bright] = 10.0, 140.0
    hu[ellipse(s, 128, 190, 13, 11)] = 700.0
    hu = ndimage.gaussian_filter(hu, 0.7) + rng.normal(0, 10, s)
    return ct_view(hu), {"liver": liver, "dark": dark, "bright": bright}


def he_phantom(seed: int = 0, n: int = 256, r: float = 5.0,
               nuclei: int = 40) -> tuple[View2D, np.ndarray]:
    """H&E-like tile made through the inverse stain model: haematoxylin nuclei on eosin,
    with a few touching pairs the watershed has to split. Truth is a label image."""
    from skimage.color import hed2rgb

    rng = np.random.default_rng(seed)
    s = (n, n)
    centres: list[np.ndarray] = []
    while len(centres) < nuclei:
        c = rng.uniform(10, n - 10, 2)
        if all(np.hypot(*(c - d)) > 2 * r + 4 for d in centres):
            centres.append(c)
    pairs = []
    for c in centres[:4]:
        ang = rng.uniform(0, np.pi)
        d = c + 1.7 * r * np.array([np.cos(ang), np.sin(ang)])
        others = [e for e in centres if e is not c]
        if all(np.hypot(*(d - e)) > 2 * r + 4 for e in others) and (8 < d).all() and (d < n - 8).all():
            pairs.append(d)
    truth = np.zeros(s, np.int32)
    for i, (cy, cx) in enumerate(centres + pairs, 1):
        rr = r * rng.uniform(0.85, 1.15)
        truth[ellipse(s, cx, cy, rr * rng.uniform(0.9, 1.1), rr) & (truth == 0)] = i
    h = np.where(truth > 0, 0.12, 0.01) if nuclei else np.full(s, 0.01)
    h = ndimage.gaussian_filter(h, 0.8) + rng.normal(0, 0.004, s)
    e = 0.05 + rng.normal(0, 0.004, s)
    rgb = hed2rgb(np.stack([h.clip(0), e.clip(0), np.zeros(s)], -1))
    return rgb_view((rgb * 255).clip(0, 255).astype(np.uint8), "pathology"), truth


def fundus_phantom(seed: int = 0, n: int = 320, disc: tuple[int, int, int] = (225, 150, 22)
                   ) -> tuple[View2D, np.ndarray]:
    """Fundus-like photo: orange field with vignetting, a bright disc that vessels cross,
    and small bright exudates that must not be taken for the disc."""
    rng = np.random.default_rng(seed)
    s = (n, n)
    y, x = np.mgrid[0:n, 0:n]
    fov = ellipse(s, n / 2, n / 2, n * 0.46, n * 0.46)
    illum = 1 - 0.25 * np.hypot(x - n / 2, y - n / 2) / (n / 2)
    img = np.array([200.0, 85.0, 45.0]) * illum[..., None]
    dx, dy, dr = disc
    truth = ellipse(s, dx, dy, dr, dr)
    soft = ndimage.gaussian_filter(truth.astype(float), 2.0)[..., None]
    img = img * (1 - soft) + np.array([250.0, 210.0, 140.0]) * soft
    for k in range(6):
        ang = k * np.pi / 3 + 0.3
        t = np.linspace(-dr, n, 500)
        vx, vy = dx + t * np.cos(ang), dy + t * np.sin(ang) + 10 * np.sin(t / 30)
        ok = (vx >= 0) & (vx < n) & (vy >= 0) & (vy < n)
        vm = np.zeros(s, bool)
        vm[vy[ok].astype(int), vx[ok].astype(int)] = True
        vm = ndimage.binary_dilation(vm, iterations=2)
        img[vm] *= 0.6
    for _ in range(5):
        ex, ey = rng.uniform(n * 0.25, n * 0.75, 2)
        img[ellipse(s, ex, ey, 3, 3)] = [245, 200, 120]
    img += rng.normal(0, 4, img.shape)
    img[~fov] = 0
    return rgb_view(img.clip(0, 255).astype(np.uint8), "fundus"), truth & fov
