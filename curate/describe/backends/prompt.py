"""Versioned prompts and the request builder: what a model is shown, and nothing more.

The prompt text lives in `curate/prompts/<version>.md` and the output schema beside it in
`<version>.schema.json`, so a prompt change is a reviewed file change, and the rendered
prompt is part of every cache key. The builder copies only whitelisted context fields
(`CTX_FIELDS`, `ROI_FIELDS`); anything else in the context, such as a stray DICOM
attribute, is never sent.
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from curate.describe.backends.types import LEVEL_KEYS, DescribeRequest
from curate.model.errors import CurateError

DEFAULT_PROMPT = "describe-v1"
CTX_FIELDS = ("modality", "anatomy", "plane", "window", "annotated", "labels")
WINDOW_FIELDS = ("method", "name", "low", "high")
ROI_FIELDS = ("label", "bbox", "location", "laterality", "area_mm2", "area_kind",
              "longest_diameter_mm", "intensity", "relations")
MAX_ROIS = 12
MAX_PASSAGES = 5
MAX_PASSAGE_CHARS = 1200
MAX_CAPTION_CHARS = 600
BOX_COLOURS = ((255, 64, 64), (64, 200, 255), (255, 210, 0), (80, 255, 120), (255, 90, 255))
_SECTION = re.compile(r"^# (system|user|images: overlay|images: clean)\s*$", re.M)


@dataclass(frozen=True)
class PromptSpec:
    """One prompt version: its templates and its output JSON schema."""

    version: str
    system: str
    user: Template
    images_overlay: str
    images_clean: str
    schema: dict[str, Any]


def read_prompt(version: str, what: str = "prompt") -> tuple[dict[str, str], dict[str, Any]]:
    """The `# section` texts of `curate/prompts/<version>.md` (HTML comments removed) and
    its JSON schema `<version>.schema.json`."""
    base = resources.files("curate") / "prompts"
    try:
        text = (base / f"{version}.md").read_text(encoding="utf-8")
        schema = json.loads((base / f"{version}.schema.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CurateError(f"{what} {version!r} not found in curate/prompts/") from exc
    parts = _SECTION.split(re.sub(r"<!--.*?-->", "", text, flags=re.S))
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}, schema


def load_prompt(version: str = DEFAULT_PROMPT) -> PromptSpec:
    """Read `curate/prompts/<version>.md` and its schema; fail loudly when they disagree."""
    sections, schema = read_prompt(version)
    missing = {"system", "user", "images: overlay", "images: clean"} - set(sections)
    if missing:
        raise CurateError(f"prompt {version!r} lacks sections: {sorted(missing)}")
    if tuple(schema.get("required", ())) != LEVEL_KEYS or set(schema.get("properties", {})) \
            != set(LEVEL_KEYS):
        raise CurateError(f"schema of prompt {version!r} must require exactly {LEVEL_KEYS}")
    return PromptSpec(version, sections["system"], Template(sections["user"]),
                      sections["images: overlay"], sections["images: clean"], schema)


def _round(value: Any) -> Any:
    return round(value, 1) if isinstance(value, float) else value


def prompt_facts(ctx: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(image facts, ROI facts) copied field by field from a sample context.

    Only names in CTX_FIELDS, WINDOW_FIELDS and ROI_FIELDS are read; floats are rounded to
    one decimal, which is also the precision the answer check accepts.
    """
    image = {k: ctx.get(k) for k in CTX_FIELDS}
    window = ctx.get("window") or {}
    image["window"] = {k: _round(window.get(k)) for k in WINDOW_FIELDS} if window else None
    image["labels"] = [str(x) for x in (ctx.get("labels") or [])]
    rois = []
    for i, roi in enumerate((ctx.get("rois") or [])[:MAX_ROIS], 1):
        fact: dict[str, Any] = {"box": i}
        for k in ROI_FIELDS:
            value = roi.get(k)
            if k == "bbox" and value is not None:
                value = [int(v) for v in value]
            elif k == "relations":
                value = [str(r) for r in (value or [])]
            fact[k] = _round(value)
        rois.append(fact)
    return image, rois


def _compact(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def passages_block(passages: Any) -> str:
    """Passages as tagged blocks with their ids; only id, title and text are read."""
    out = []
    for p in list(passages or [])[:MAX_PASSAGES]:
        pid, title = str(p.get("id", "")), str(p.get("title", ""))
        text = str(p.get("text", ""))[:MAX_PASSAGE_CHARS]
        out.append(f'<passage id="{pid}" title="{title}">\n{text}\n</passage>')
    return "\n".join(out) if out else "(none)"


def data_url(image: bytes) -> str:
    """A data URL with the image's own type (PNG, or JPEG for colour overlays)."""
    mime = "image/jpeg" if image[:3] == b"\xff\xd8\xff" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(image).decode("ascii")


def _canvas(im: Image.Image) -> tuple[Image.Image, list[Any]]:
    """An image to draw on and the box colours to use on it.

    Grey views become a palette image (251 grey levels, 5 box colours): one byte per
    pixel and no PNG filtering make the copy about three times cheaper to encode than RGB.
    """
    if im.mode in ("I;16", "I;16B", "I", "F"):  # >8-bit grey: scale to 0-255 for drawing
        arr = np.asarray(im, dtype=np.float64)
        span = float(arr.max() - arr.min()) or 1.0
        im = Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8))
    if im.mode == "L":
        levels = 256 - len(BOX_COLOURS)
        grey = (np.asarray(im, dtype=np.uint16) * (levels - 1) // 255).astype(np.uint8)
        canvas = Image.fromarray(grey)
        ramp = [round(i * 255 / (levels - 1)) for i in range(levels)]
        canvas.putpalette([v for g in ramp for v in (g, g, g)]
                          + [v for c in BOX_COLOURS for v in c])
        return canvas, list(range(levels, 256))
    return im.convert("RGB"), list(BOX_COLOURS)


def roi_overlay_png(image_png: bytes, rois: list[dict[str, Any]]) -> bytes:
    """A copy of the image with each ROI's bbox drawn as a numbered box (prompt use only):
    PNG for grey images, JPEG for colour ones.

    The clean image stays the training image; the copy tells the model which region each
    fact refers to. Numbers follow the order of the ROI facts (#1, #2, ...).
    """
    with Image.open(io.BytesIO(image_png)) as im:
        im.load()
        canvas, colours = _canvas(im)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(min(canvas.size) / 256))
    size = max(10, min(canvas.size) // 20)
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=size)
    except (OSError, TypeError, ImportError):  # Pillow without FreeType: small bitmap font
        font, size = ImageFont.load_default(), 10
    for i, roi in enumerate(rois[:MAX_ROIS], 1):
        x0, y0, x1, y1 = (int(v) for v in roi["bbox"])
        colour = colours[(i - 1) % len(colours)]
        if roi.get("area_kind") == "point":  # no extent: a small cross, never a box
            arm = max(3, min(canvas.size) // 40)
            draw.line([x0 - arm, y0, x0 + arm, y0], fill=colour, width=width)
            draw.line([x0, y0 - arm, x0, y0 + arm], fill=colour, width=width)
            y0, y1 = y0 - arm, y0 + arm + 1
        else:
            draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour,
                           width=width)
        ty = y0 - size - 1 if y0 > size else min(y1 + 1, canvas.size[1] - size - 1)
        draw.text((x0, ty), str(i), fill=colour, font=font)
    buf = io.BytesIO()
    if canvas.mode == "RGB":
        # colour copies (dermoscopy, endoscopy, slides) as high-quality JPEG: a tenth of
        # the PNG encoding time, and the clean image the model also sees stays lossless
        canvas.save(buf, format="JPEG", quality=92)
    else:
        canvas.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def build_messages(spec: PromptSpec, req: DescribeRequest) -> list[dict[str, Any]]:
    """OpenAI-format chat messages for one request: system text, then the image parts and
    the user text. Deterministic for a given request, so it can be hashed for the cache."""
    image_facts, roi_facts = prompt_facts(req.ctx)
    rois = req.ctx.get("rois") or []
    parts: list[dict[str, Any]] = [{"type": "image_url",
                                    "image_url": {"url": data_url(req.image_png)}}]
    if rois:
        overlay = req.overlay_png or roi_overlay_png(req.image_png, rois)
        parts.append({"type": "image_url", "image_url": {"url": data_url(overlay)}})
    user = spec.user.substitute(
        images_note=spec.images_overlay if rois else spec.images_clean,
        coarse_caption=(req.coarse_caption or "(none)")[:MAX_CAPTION_CHARS],
        image_facts=_compact(image_facts), roi_facts=_compact(roi_facts),
        passages=passages_block(req.passages))
    parts.append({"type": "text", "text": user})
    return [{"role": "system", "content": spec.system}, {"role": "user", "content": parts}]


def json_schema_format(spec: PromptSpec) -> dict[str, Any]:
    """`response_format` asking for the schema in strict mode (OpenAI and vLLM both read it)."""
    schema = {k: v for k, v in spec.schema.items() if k not in ("$schema", "title", "description")}
    return {"type": "json_schema",
            "json_schema": {"name": "describe_levels", "strict": True, "schema": schema}}
