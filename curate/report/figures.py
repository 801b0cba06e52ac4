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
    from curate.describe.backends import roi_overlay_png

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


def contact_sheet(shards: Path, examples: list[dict], dest: Path, per_source: int = 2,
                  max_tiles: int = 12) -> Path | None:
    """Write dest (PNG) from the smallest sample ids of each source; None when there are none.

    examples are manifest rows with sample_id, source, shard, rois and caption, such as the
    bounded `examples` of merged data card stats (curate.report.datacard.card_stats); only the
    shards that hold a picked sample are opened, each once.
    """
    import tarfile

    picked: list[dict] = []
    counts: dict[str, int] = {}
    for row in sorted(examples, key=lambda r: (r["source"] or "", r["sample_id"])):
        if counts.get(row["source"], 0) < per_source and len(picked) < max_tiles:
            counts[row["source"]] = counts.get(row["source"], 0) + 1
            picked.append(row)
    if not picked:
        return None
    images: dict[str, bytes] = {}
    for shard in sorted({row["shard"] for row in picked}):
        wanted = {f"{row['sample_id']}.png" for row in picked if row["shard"] == shard}
        with tarfile.open(shards / shard) as tar:
            for member in tar:  # stream: stop once every wanted image is read
                if member.name in wanted:
                    images[member.name] = tar.extractfile(member).read()
                    if wanted <= images.keys():
                        break
    tiles = [_tile(images[f"{row['sample_id']}.png"], row["rois"], row["caption"], row["source"])
             for row in picked]
    cols = min(4, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    w, h = tiles[0].size
    sheet = Image.new("RGB", (cols * w, rows * h), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * w, (i // cols) * h))
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest, optimize=False)
    return dest
