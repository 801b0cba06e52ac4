"""Per-frame labels of a video from one table per video (Cholec80's phase and tool files).

A table lists frame numbers in increasing order; a decoded frame takes the labels of the
last row at or before its frame number, so a table written every 25th frame (tools at
1 fps) labels the frames between its rows. A frame past the table's end by more than the
table's own step has no row and gets no label from that table.
"""

from __future__ import annotations

import bisect
import csv
from pathlib import Path

from curate.model.errors import IngestError


def read_frame_table(path: Path, cfg, rel: str) -> tuple[list[int], list[list[str]]]:
    """(frame numbers, labels of each row), rows sorted by frame number."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter=cfg.separator)
        names = [n.strip() for n in reader.fieldnames or []]
        need = [cfg.frame_column] + ([cfg.label_column] if cfg.label_column else []) + \
            cfg.label_columns
        missing = [c for c in need if c not in names]
        if missing:
            raise IngestError(f"frame label table lacks columns {missing} (has {names})",
                              file=rel)
        rows = []
        for i, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            try:
                frame = int(float(row[cfg.frame_column]))
            except ValueError as exc:
                raise IngestError(f"line {i}: frame {row[cfg.frame_column]!r} is not a number",
                                  file=rel) from exc
            labels = [row[cfg.label_column]] if cfg.label_column and row[cfg.label_column] \
                else []
            labels += [c for c in cfg.label_columns if row[c] in cfg.positive_values]
            rows.append((frame, labels))
    rows.sort(key=lambda r: r[0])
    return [r[0] for r in rows], [r[1] for r in rows]


def labels_at(frames: list[int], labels: list[list[str]], frame: int) -> list[str] | None:
    """The labels of the last row at or before frame; None before the first row or past
    the last one by more than the table's step."""
    i = bisect.bisect_right(frames, frame) - 1
    if i < 0:
        return None
    steps = [b - a for a, b in zip(frames, frames[1:], strict=False) if b > a]
    step = sorted(steps)[len(steps) // 2] if steps else 1
    if i == len(frames) - 1 and frame - frames[-1] >= step:
        return None
    return labels[i]
