"""Image quality scores: the histogram path for 8-bit views equals NumPy's definition."""

import numpy as np
import pytest

from curate.unit.quality import image_scores


def _numpy_scores(image: np.ndarray) -> dict:
    grey = image.astype(np.float32) if image.ndim == 2 else image.astype(np.float32).mean(axis=2)
    p1, p99 = np.percentile(grey, [1, 99])
    return {"std": float(grey.std()), "contrast": float(p99 - p1)}


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (64, 64), (100, 3), (257, 129)])
@pytest.mark.parametrize("kind", ["uniform", "three levels", "constant", "rgb"])
def test_scores_match_numpy_percentiles_and_std(shape, kind):
    rng = np.random.default_rng(sum(shape))
    image = {"uniform": lambda: rng.integers(0, 256, shape, dtype=np.uint8),
             "three levels": lambda: rng.integers(0, 3, shape).astype(np.uint8) * 90,
             "constant": lambda: np.full(shape, 7, np.uint8),
             "rgb": lambda: rng.integers(0, 256, (*shape, 3), dtype=np.uint8)}[kind]()
    got, want = image_scores(image), _numpy_scores(image)
    assert got["std"] == pytest.approx(want["std"], abs=1e-3)
    assert got["contrast"] == pytest.approx(want["contrast"], abs=1e-6)


def test_a_blank_view_has_no_spread():
    assert image_scores(np.zeros((16, 16), np.uint8)) == {"std": 0.0, "contrast": 0.0}
