"""A contact sheet for the data card: a few samples per source with their boxes and text,
so a reader can check at a glance that descriptions match images."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

TILE = 256
TEXT_LINES = 7


def _tile(png: bytes, rois: list[dict], caption: str, source: str) -> Image.Image:
    from curate.generate import roi_overlay_png

    marked = roi_overlay_png(png, rois) if rois else png
    with Image.open(io.BytesIO(marked)) as im:
        im = im.convert("RGB")
        scale = TILE / max(im.size)  # small images are enlarged too, pixels kept sharp
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                       Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)
        tile = Image.new("RGB", (TILE, TILE + 14 * (TEXT_LINES + 1)), "white")
        tile.paste(im, ((TILE - im.width) // 2, 0))
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default()
    plain = caption.translate(str.maketrans({"×": "x", "²": "2", "³": "3"}))  # bitmap font
    lines = [source] + textwrap.wrap(plain, width=42)[:TEXT_LINES - 1]
    for i, line in enumerate(lines):
        draw.text((4, TILE + 2 + 14 * i), line, fill="black" if i else "navy", font=font)
    return tile


def contact_sheet(shards: Path, manifest_rows: list[dict], dest: Path, per_source: int = 2,
                  max_tiles: int = 12) -> Path | None:
    """Write dest (PNG) from the first samples of each source; None when there are none."""
    import tarfile

    picked: list[dict] = []
    counts: dict[str, int] = {}
    for row in sorted(manifest_rows, key=lambda r: (r["source"], r["sample_id"])):
        if counts.get(row["source"], 0) < per_source and len(picked) < max_tiles:
            counts[row["source"]] = counts.get(row["source"], 0) + 1
            picked.append(row)
    if not picked:
        return None
    tiles = []
    for row in picked:
        with tarfile.open(shards / row["shard"]) as tar:
            png = tar.extractfile(f"{row['sample_id']}.png").read()
        tiles.append(_tile(png, row["rois"], row["caption"], row["source"]))
    cols = min(4, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    w, h = tiles[0].size
    sheet = Image.new("RGB", (cols * w, rows * h), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * w, (i // cols) * h))
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest, optimize=False)
    return dest
