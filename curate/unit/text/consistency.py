"""Text-fact consistency: does a caption state only what the computed facts support?

Runs on every generated text (template or model). It checks what can be checked
mechanically — sides, sizes, area fractions, counts and modality names — and returns
one flag per contradiction; a flagged sample is dropped at filtering with the flags as
its reason. It cannot prove a text right, only catch these kinds of wrong.
"""

from __future__ import annotations

import re

from curate.unit.text.templates import modality_name

MODALITY_WORDS = {
    "CT": r"\bCT\b|computed tomography",
    "MRI": r"\bMRI?\b|magnetic resonance",
    "X-ray": r"\bX-?ray\b|radiograph",
    "ultrasound": r"ultrasound|sonograph",
    "PET": r"\bPET\b",
    "histopathology": r"histopatholog|\bH&E\b",
    "dermoscopy": r"dermoscop",
    "endoscopy": r"endoscop|colonoscop",
    "fundus photography": r"\bfundus\b",
}
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10, "single": 1}
SIDE = re.compile(r"patient'?s (left|right)(?! of)|\b(left|right)[- ]sided\b|\bon the (left|right)\b",
                  re.I)
MM2 = re.compile(r"(\d+(?:\.\d+)?)\s*(?:mm²|mm2|mm\^2|square millimet)", re.I)
MM = re.compile(r"(\d+(?:\.\d+)?)\s*mm\b(?!²|2|\^)", re.I)
MM3 = re.compile(r"(\d+(?:\.\d+)?)\s*(?:mm³|mm3|mm\^3|cubic millimet)", re.I)
PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")


def _close(value: float, candidates: list[float], rel: float, absolute: float) -> bool:
    return any(abs(value - c) <= max(rel * abs(c), absolute) for c in candidates)


def check_text(text: str, ctx: dict) -> list[str]:
    flags: list[str] = []
    rois = ctx.get("rois", [])
    sides = {r["laterality"] for r in rois if r.get("laterality") in ("left", "right")}
    for m in SIDE.finditer(text):
        side = next(g for g in m.groups() if g).lower()
        if ctx.get("plane") not in ("axial", "frontal"):
            flags.append(f"states the patient's {side} in a view without a patient frame")
        elif side not in sides:
            flags.append(f"states '{side}' but no ROI lies on the patient's {side}")
    areas = [r["area_mm2"] for r in rois if r.get("area_mm2") is not None]
    for m in MM2.finditer(text):
        v = float(m.group(1))
        if not _close(v, areas, 0.1, 1.0):
            flags.append(f"area {v:g} mm² matches no ROI")
    volumes = [r["volume_mm3"] for r in rois if r.get("volume_mm3") is not None]
    for m in MM3.finditer(text):
        v = float(m.group(1))
        if not _close(v, volumes, 0.1, 1.0):
            flags.append(f"volume {v:g} mm³ matches no ROI")
    spacing = ctx.get("spacing") or (1.0, 1.0)
    lengths = [r["longest_diameter_mm"] for r in rois if r.get("longest_diameter_mm")]
    for r in rois:
        if ctx.get("spacing"):
            x0, y0, x1, y1 = r["bbox"]
            lengths += [(x1 - x0) * spacing[1], (y1 - y0) * spacing[0]]
    for m in MM.finditer(text):
        v = float(m.group(1))
        if not _close(v, lengths, 0.1, max(spacing)):
            flags.append(f"length {v:g} mm matches no ROI dimension")
    fracs = [100 * r["area_frac"] for r in rois]
    for m in PERCENT.finditer(text):
        v = float(m.group(1))
        if not _close(v, fracs, 0.1, 0.15):
            flags.append(f"{v:g}% matches no ROI's share of the image")
    counts: dict[str, int] = {}
    for r in rois:
        counts[r["label"].lower()] = counts.get(r["label"].lower(), 0) + 1
    for label, n in counts.items():
        pattern = rf"\b(\d+|{'|'.join(NUMBER_WORDS)})\s+(?:separate\s+)?{re.escape(label)}s?\b"
        for m in re.finditer(pattern, text, re.I):
            said = m.group(1).lower()
            said_n = int(said) if said.isdigit() else NUMBER_WORDS[said]
            if said_n != n and not re.search(rf"#\s*{said_n}\b", m.group(0)):
                flags.append(f"says {said_n} {label} but {n} are annotated")
    actual = modality_name(ctx.get("modality"))
    for name, pattern in MODALITY_WORDS.items():
        if name != actual and actual in MODALITY_WORDS and re.search(pattern, text, re.I):
            flags.append(f"names {name} but the image is {actual}")
    return flags
