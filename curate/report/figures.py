"""The card's pictures: a contact sheet (a few samples per source with their ROIs and full
captions), one example sample, and distribution plots drawn from the merged card stats
(curate.report.datacard), never from the manifest."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from curate.dataset.hub import DATA
from curate.model.errors import MissingDependency
from curate.model.masks import MEMBER, unpack
from curate.report.datacard import CAPTION_BIN, CAPTION_MAX
from curate.report.hub_meta import hub_split

TILE = 256
LINE = 14  # pixels per caption line on a tile
TINT = (255, 64, 64)
MAX_BARS = 30  # sources drawn one by one; the rest share a bar

PLOTS = {  # file under figures/ -> what it shows (its alt text)
    "sources.png": "Samples per source, by modality",
    "splits.png": "Samples per split",
    "rois.png": "ROI area (share of the image) and longest diameter (mm)",
    "captions.png": "Caption length in characters",
    "vqa.png": "VQA pairs per category",
}


def _font(size: int = 11):
    """DejaVu Sans from matplotlib when installed (covers x, superscripts, umlauts), else
    Pillow's default font."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels; nothing is dropped (over-long words are split)."""
    lines, line = [], ""
    for word in text.split():
        while font.getlength(word) > width:  # a word wider than the line: split it
            cut = max(1, next((i for i in range(len(word), 0, -1)
                               if font.getlength(word[:i]) <= width), 1))
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:cut])
            word = word[cut:]
        trial = f"{line} {word}" if line else word
        if font.getlength(trial) <= width:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


def overlay(png: bytes, masks: bytes | None, rois: list[dict], size: int) -> Image.Image:
    """The image scaled so its longest side is `size`, masks tinted and boxes drawn."""
    with Image.open(io.BytesIO(png)) as im:
        rgb = np.asarray(im.convert("RGB"), np.float32)
    if masks is not None and rois:
        try:
            any_mask = unpack(masks).any(axis=0)
        except (KeyError, ValueError, OSError):  # unreadable: `curate verify` reports it
            any_mask = np.zeros(0, bool)
        if any_mask.shape == rgb.shape[:2]:
            rgb[any_mask] = 0.6 * rgb[any_mask] + 0.4 * np.asarray(TINT, np.float32)
    im = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    scale = size / max(im.size)  # small images are enlarged too, pixels kept sharp
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                   Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(im)
    font = _font(max(10, size // 24))
    for i, roi in enumerate(rois, 1):
        x0, y0, x1, y1 = (round(v * scale) for v in roi["bbox"])
        if roi.get("area_kind") == "point":  # no extent: a small cross at the point
            cx, cy = ((c + 0.5) * scale for c in roi["centroid"])
            arm, width = max(3, size // 40), max(1, size // 256)
            draw.line([cx - arm, cy, cx + arm, cy], fill=(255, 210, 0), width=width)
            draw.line([cx, cy - arm, cx, cy + arm], fill=(255, 210, 0), width=width)
            y0 = round(cy - arm)
        else:
            draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=(255, 210, 0),
                           width=max(1, size // 256))
        draw.text((x0 + 2, max(0, y0 - font.size - 2)), str(i), fill=(255, 210, 0), font=font)
    return im


def read_members(shards: Path, rows: list[dict]) -> dict[str, bytes]:
    """The image and masks members of the given manifest rows, each shard opened once.

    A shard with a Parquet export part beside it is read from that part: its `sample_id`
    column, then only the row groups holding wanted rows (a few hundred rows each), so the
    cost does not grow with the shard. Otherwise the tar is read only until its wanted
    members are found."""
    found: dict[str, bytes] = {}
    for shard in sorted({row["shard"] for row in rows}):
        ids = {row["sample_id"] for row in rows if row["shard"] == shard}
        part = shards.parent / DATA / f"{Path(shard).stem}.parquet"
        if part.is_file():
            found.update(_parquet_members(part, ids))
            continue
        wanted = {f"{i}.{ext}" for i in ids for ext in ("png", MEMBER)}
        with tarfile.open(shards / shard) as tar:
            for member in tar:
                if member.name in wanted:
                    found[member.name] = tar.extractfile(member).read()
                    if wanted <= found.keys():
                        break
    return found


def _parquet_members(part: Path, ids: set[str]) -> dict[str, bytes]:
    """Members named as in the shards (`<id>.png`, `<id>.masks.npz`) from an export part."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(part)
    names = f.read(columns=["sample_id"]).column("sample_id").to_pylist()
    starts, at = [], 0
    for g in range(f.metadata.num_row_groups):
        starts.append(at)
        at += f.metadata.row_group(g).num_rows
    groups = sorted({max(g for g, s in enumerate(starts) if s <= i)
                     for i, name in enumerate(names) if name in ids})
    found: dict[str, bytes] = {}
    if groups:
        for row in f.read_row_groups(groups, columns=["sample_id", "image", "masks"]).to_pylist():
            if row["sample_id"] in ids:
                found[f"{row['sample_id']}.png"] = row["image"]["bytes"]
                found[f"{row['sample_id']}.{MEMBER}"] = row["masks"]
    return found


def _tile(image: Image.Image, caption: str, source: str, lines: int) -> Image.Image:
    font = _font()
    tile = Image.new("RGB", (TILE, TILE + LINE * (lines + 1) + 4), "white")
    tile.paste(image, ((TILE - image.width) // 2, 0))
    draw = ImageDraw.Draw(tile)
    for i, line in enumerate([source] + wrap(caption, font, TILE - 8)):
        draw.text((4, TILE + 2 + LINE * i), line, fill="black" if i else "navy", font=font)
    return tile


def contact_sheet(shards: Path, examples: list[dict], dest: Path, per_source: int = 2,
                  max_tiles: int = 12) -> Path | None:
    """Write dest (PNG) from the smallest sample ids of each source; None when there are none.

    examples are manifest rows with sample_id, source, shard, rois and caption, such as the
    bounded `examples` of merged data card stats (curate.report.datacard.card_stats); only the
    shards that hold a picked sample are opened, each once. Captions are wrapped in full:
    every tile is as tall as the longest caption needs.
    """
    picked: list[dict] = []
    counts: dict[str, int] = {}
    for row in sorted(examples, key=lambda r: (r["source"] or "", r["sample_id"])):
        if counts.get(row["source"], 0) < per_source and len(picked) < max_tiles:
            counts[row["source"]] = counts.get(row["source"], 0) + 1
            picked.append(row)
    if not picked:
        return None
    members = read_members(shards, picked)
    font = _font()
    cols = min(4, len(picked))
    lines = [len(wrap(row["caption"] or "", font, TILE - 8)) for row in picked]
    # each row of tiles is as tall as its longest caption needs
    row_lines = [max(lines[i:i + cols]) for i in range(0, len(picked), cols)]
    tiles = [_tile(overlay(members[f"{row['sample_id']}.png"],
                           members.get(f"{row['sample_id']}.{MEMBER}"), row["rois"], TILE),
                   row["caption"] or "", row["source"] or "", row_lines[i // cols])
             for i, row in enumerate(picked)]
    tops = [0]
    for i in range(0, len(tiles), cols):
        tops.append(tops[-1] + tiles[i].height)
    sheet = Image.new("RGB", (cols * TILE, tops[-1]), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * TILE, tops[i // cols]))
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest, optimize=False)
    return dest


def example_figure(shards: Path, row: dict, dest: Path, size: int = 384) -> Path:
    """One sample at `size` pixels with its masks tinted and its boxes numbered as in the
    card's ROI table."""
    members = read_members(shards, [row])
    im = overlay(members[f"{row['sample_id']}.png"], members.get(f"{row['sample_id']}.{MEMBER}"),
                 row["rois"], size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    im.save(dest, optimize=False)
    return dest


def _ordered(counts: dict[str, int], step: int | None = None) -> tuple[list[str], list[int]]:
    """Keys and counts in order; with `step`, numeric keys from the smallest to the largest
    in that step, empty bins as 0 (so gaps show), and "" (no value) last."""
    if step is None:
        keys = sorted(counts)
    else:
        nums = [int(k) for k in counts if k]
        keys = [str(k) for k in range(min(nums), max(nums) + 1, step)] if nums else []
        keys += [""] if "" in counts else []
    return keys, [counts.get(k, 0) for k in keys]


def _log2_labels(keys: list[str], scale: float, low: int, high: int, none: str) -> list[str]:
    """Labels of log2 bins (key k holds [2^k, 2^(k+1)) times scale); the clipped end bins
    are open: "<x" and "x+"."""
    def fmt(k: int) -> str:
        return f"{scale * 2.0 ** k:.2g}"

    return [none if not k else f"<{fmt(low + 1)}" if int(k) <= low
            else f"{fmt(int(k))}+" if int(k) >= high else f"{fmt(int(k))}-{fmt(int(k) + 1)}"
            for k in keys]


def _bars(ax, labels: list[str], values: list[int], title: str, horizontal: bool = False):
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if horizontal else ax.yaxis).set_major_locator(MaxNLocator(integer=True))
    if horizontal:
        ax.barh(range(len(values)), values, color="#4c72b0")
        ax.set_yticks(range(len(values)), labels)
        ax.invert_yaxis()
        ax.set_xlabel("count")
    else:
        ax.bar(range(len(values)), values, color="#4c72b0")
        ax.set_xticks(range(len(values)), labels, rotation=45 if len(labels) > 6 else 0,
                      ha="right" if len(labels) > 6 else "center")
        ax.set_ylabel("count")
    ax.set_title(title)


def distribution_plots(kept: dict, dest: Path) -> dict[str, str]:
    """Write the PLOTS that have data under dest (the build's figures/ folder); returns
    {file name: alt text} for those written. PNG metadata carries no version or date, so
    identical stats give identical files."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependency("matplotlib") from exc
    dest.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(dest / name, dpi=100, metadata={"Software": None})
        written[name] = PLOTS[name]

    by_source = dict(kept.get("per_source_modality", {}))
    if by_source:
        sources = sorted(by_source, key=lambda s: (-sum(by_source[s].values()), s))
        if len(sources) > MAX_BARS:  # the smallest sources as one bar
            rest: dict[str, int] = {}
            for s in sources[MAX_BARS - 1:]:
                for m, n in by_source.pop(s).items():
                    rest[m] = rest.get(m, 0) + n
            other = f"{len(sources) - MAX_BARS + 1} other sources"
            by_source[other] = rest
            sources = sources[:MAX_BARS - 1] + [other]
        modalities = sorted({m for v in by_source.values() for m in v})
        fig = Figure(figsize=(8, 1.5 + 0.35 * len(sources)))
        ax = fig.subplots()
        left = np.zeros(len(sources))
        for modality in modalities:
            vals = np.array([by_source[s].get(modality, 0) for s in sources], float)
            ax.barh(range(len(sources)), vals, left=left, label=modality or "unknown")
            left += vals
        ax.set_yticks(range(len(sources)), [s or "unknown" for s in sources])
        ax.invert_yaxis()
        ax.set_xlabel("samples")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(title="modality", fontsize="small", loc="center left",
                  bbox_to_anchor=(1.01, 0.5))
        ax.set_title(PLOTS["sources.png"])
        save(fig, "sources.png")
    splits = kept.get("per_split", {})
    if splits:
        fig = Figure(figsize=(5, 3))
        _bars(fig.subplots(), [hub_split(k) if k else "none" for k in splits],
              list(splits.values()), PLOTS["splits.png"])
        save(fig, "splits.png")
    area, diam = kept.get("roi_area_frac_log2", {}), kept.get("roi_diameter_mm_log2", {})
    if area or diam:
        fig = Figure(figsize=(10, 3.5))
        a1, a2 = fig.subplots(1, 2)
        keys, vals = _ordered(area, 1)
        _bars(a1, _log2_labels(keys, 100, -14, 1, "n/a"), vals,
              "ROI area, % of the image")
        keys, vals = _ordered(diam, 1)
        _bars(a2, _log2_labels(keys, 1, -1, 9, "no spacing"), vals,
              "ROI longest diameter, mm")
        save(fig, "rois.png")
    hist = kept.get("caption_chars", {}).get("hist", {})
    if hist:
        keys, vals = _ordered(hist, CAPTION_BIN)
        fig = Figure(figsize=(8, 3))
        _bars(fig.subplots(), [f"{k}+" if int(k) >= CAPTION_MAX else f"{k}-{int(k) + CAPTION_BIN - 1}"
                               for k in keys], vals, PLOTS["captions.png"])
        save(fig, "captions.png")
    categories = kept.get("vqa_categories", {})
    if categories:
        keys = sorted(categories, key=lambda k: (-categories[k], k))
        fig = Figure(figsize=(8, 1.5 + 0.3 * len(keys)))
        _bars(fig.subplots(), [k or "none" for k in keys], [categories[k] for k in keys],
              PLOTS["vqa.png"], horizontal=True)
        save(fig, "vqa.png")
    return written
