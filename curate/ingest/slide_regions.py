"""Polygon annotations of a whole-slide image (ASAP XML, level-0 pixels) drawn on its tiles.

The XML is parsed once per slide; each tile gets the polygons that cross it, scaled to the
tile's pyramid level. Groups that mark excluded regions (declared with a null label) are
cleared after the labelled groups are drawn. A group the source does not declare is an
error naming it, so a new annotation group never becomes a silent label.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from curate.model.errors import IngestError


def read_asap(path: Path, groups: dict[str, str | None], rel: str
              ) -> list[tuple[str | None, np.ndarray]]:
    """[(label or None for an exclusion, (N, 2) level-0 x/y vertices)] of every polygon."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise IngestError(f"not an ASAP annotation file: {exc}", file=rel) from exc
    out = []
    for ann in root.iter("Annotation"):
        group = ann.get("PartOfGroup", "None")
        if group not in groups:
            raise IngestError(f"annotation group {group!r} is not in regions.groups "
                              f"{sorted(groups)}", file=rel)
        coords = sorted(ann.iter("Coordinate"), key=lambda c: float(c.get("Order", 0)))
        try:
            xy = np.array([(float(c.get("X")), float(c.get("Y"))) for c in coords], float)
        except (TypeError, ValueError) as exc:
            raise IngestError(f"a coordinate of {ann.get('Name')!r} is not a number",
                              file=rel) from exc
        if len(xy) >= 3:
            out.append((groups[group], xy))
    return out


def tile_mask(polygons: list[tuple[str | None, np.ndarray]], names: list[str],
              origin: tuple[float, float], downsample: float, size: int) -> np.ndarray:
    """The (size, size) label mask of the tile whose top-left corner is at level-0 pixel
    origin, read at `downsample`: value i+1 for names[i], excluded regions cleared."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (size, size))
    draw = ImageDraw.Draw(canvas)
    x0, y0 = origin
    extent = size * downsample
    ordered = [p for p in polygons if p[0] is not None] + [p for p in polygons if p[0] is None]
    for label, xy in ordered:
        lo, hi = xy.min(0), xy.max(0)
        if hi[0] < x0 or hi[1] < y0 or lo[0] >= x0 + extent or lo[1] >= y0 + extent:
            continue  # the polygon does not cross this tile
        pts = [(float(x), float(y)) for x, y in (xy - (x0, y0)) / downsample]
        value = 0 if label is None else names.index(label) + 1
        draw.polygon(pts, fill=value, outline=value)
    return np.asarray(canvas)
