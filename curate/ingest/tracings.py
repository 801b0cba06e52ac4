"""Outlines traced as chords on chosen video frames (EchoNet-Dynamic's VolumeTracings.csv).

Per video and frame, the rows are line segments across the structure; the first one is its
long axis. The outline runs through the chords' first end points and back through their
second end points (as the dataset authors' own loader builds it) and is filled.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from curate.ingest.annotations import open_table
from curate.model.errors import ConfigError


def read_tracing_table(spec, root: Path) -> dict[str, list[list]]:
    """video key -> [[frame, [[x1, y1, x2, y2], ...]], ...] in the table's row order."""
    cfg = spec.layout.tracings
    path = root / cfg.file
    if not path.is_file():
        raise ConfigError(f"source {spec.name}: tracing file {cfg.file} not found under {root}")
    cols = [cfg.x1_column, cfg.y1_column, cfg.x2_column, cfg.y2_column]
    by_video: dict[str, dict[int, list]] = defaultdict(dict)
    with open_table(path) as f:
        reader = csv.DictReader(f)
        missing = [c for c in [cfg.image_column, cfg.frame_column, *cols]
                   if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"source {spec.name}: {cfg.file} lacks columns {missing}")
        for i, row in enumerate(reader, start=2):
            try:
                frame = int(float(row[cfg.frame_column]))
                chord = [float(row[c]) for c in cols]
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"source {spec.name}: {cfg.file} line {i}: not a number "
                                  f"({exc})") from exc
            by_video[row[cfg.image_column].strip()].setdefault(frame, []).append(chord)
    return {k: [[fr, rows] for fr, rows in v.items()] for k, v in by_video.items()}


def chords_mask(chords: list[list[float]], shape: tuple[int, int], first_is_axis: bool = True
                ) -> np.ndarray:
    """The filled outline of one frame's chords on a grid of shape (rows, cols), 0/1."""
    from skimage.draw import polygon

    c = np.asarray(chords, float).reshape(-1, 4)
    if first_is_axis:
        c = c[1:]
    mask = np.zeros(shape, np.uint8)
    if len(c) < 2:
        return mask
    x = np.concatenate([c[:, 0], c[::-1, 2]])
    y = np.concatenate([c[:, 1], c[::-1, 3]])
    rr, cc = polygon(np.rint(y), np.rint(x), shape)
    mask[rr, cc] = 1
    return mask
