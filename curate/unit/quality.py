"""Image quality scores and the keep decision; a score survives even when the sample is kept."""

from __future__ import annotations

import numpy as np

from curate.model.recipe import FilterConfig


def image_scores(image: np.ndarray) -> dict[str, float]:
    if image.ndim == 2 and image.dtype == np.uint8:  # the usual view: from its histogram
        counts = np.bincount(image.ravel(), minlength=256)
        p1, p99 = histogram_percentiles(counts, (1, 99))
        values = np.arange(256, dtype=np.float64)
        n = image.size
        mean = float(counts @ values) / n
        std = float(np.sqrt(max(0.0, float(counts @ (values * values)) / n - mean * mean)))
        return {"std": std, "contrast": float(p99 - p1)}
    grey = image.astype(np.float32) if image.ndim == 2 else image.astype(np.float32).mean(axis=2)
    p1, p99 = np.percentile(grey, [1, 99])
    return {"std": float(grey.std()), "contrast": float(p99 - p1)}


def histogram_percentiles(counts: np.ndarray, qs) -> list[float]:
    """np.percentile's (linear) percentiles of integer data given as value counts."""
    n = int(counts.sum())
    cum = np.cumsum(counts)
    out = []
    for q in qs:
        pos = q / 100 * (n - 1)
        lo, frac = int(np.floor(pos)), pos - np.floor(pos)
        v_lo = int(np.searchsorted(cum, lo, side="right"))  # the value at rank lo
        v_hi = int(np.searchsorted(cum, min(lo + 1, n - 1), side="right"))
        out.append(v_lo + frac * (v_hi - v_lo))
    return out


def decide(scores: dict, cfg: FilterConfig) -> dict:
    """Keep, or drop with every reason that applies."""
    reasons = []
    if scores.get("text_flags"):
        reasons.append("text_fact_mismatch: " + "; ".join(scores["text_flags"]))
    if scores["std"] < cfg.blank_std:
        reasons.append(f"blank: pixel std {scores['std']:.2f} < {cfg.blank_std}")
    elif scores["contrast"] < cfg.min_contrast:
        reasons.append(f"low_contrast: p99-p1 {scores['contrast']:.1f} < {cfg.min_contrast}")
    named = {s["name"]: s["value"] for s in scores.get("scores") or []}
    for name, low in sorted(cfg.min_scores.items()):
        if named.get(name) is not None and named[name] < low:
            reasons.append(f"low_score: {name} {named[name]:.3g} < {low:g}")
    return {**scores, "keep": not reasons, "reasons": reasons}
