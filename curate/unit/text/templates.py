"""The deterministic grounded generator: multigranular text from ROI facts, no model.

It is the default when no language model is configured. Every sentence is built from a
computed fact or from source metadata, and every record it writes says so in
`generation.backend` and `generation.note`.
"""

from __future__ import annotations

import hashlib
import json

BACKEND = "grounded-template"
PROMPT_VERSION = "grounded-v1"
NOTE = ("Deterministic grounded generator (no language model): text is assembled from "
        "computed geometry and source metadata only.")

MODALITY_NAMES = {
    "CT": "CT", "MR": "MRI", "MRI": "MRI", "XR": "X-ray", "CR": "X-ray", "DX": "X-ray",
    "MG": "mammography", "US": "ultrasound", "PT": "PET", "PET": "PET",
    "pathology": "histopathology", "dermoscopy": "dermoscopy", "endoscopy": "endoscopy",
    "fundus": "fundus photography", "OCT": "OCT", "microscopy": "microscopy",
    # DICOM modality codes
    "NM": "nuclear medicine", "XA": "X-ray angiography", "RF": "fluoroscopy",
    "PX": "panoramic X-ray", "IO": "intra-oral X-ray", "OP": "ophthalmic photography",
    "OPT": "OCT", "SM": "slide microscopy", "GM": "microscopy", "ES": "endoscopy",
    "XC": "photography", "OT": None, "SC": None,  # "other" / secondary capture: unstated
}
INTENSITY_WORDS = {
    "CT": {"hyper": "hyperdense", "hypo": "hypodense", "iso": "isodense"},
    "MR": {"hyper": "hyperintense", "hypo": "hypointense", "iso": "isointense"},
}
GENERIC_INTENSITY = {"hyper": "brighter than", "hypo": "darker than", "iso": "similar in brightness to"}


def modality_name(modality: str | None) -> str:
    """A readable modality, or "medical image" when the data does not say which."""
    if not modality:
        return "medical image"
    name = MODALITY_NAMES.get(modality, MODALITY_NAMES.get(modality.upper(), modality))
    return name or "medical image"


def intensity_phrase(modality: str | None, code: str) -> str:
    words = INTENSITY_WORDS.get((modality or "").upper())
    if words:
        return f"{words[code]} relative to"
    return GENERIC_INTENSITY[code]


def _size(roi: dict) -> str:
    x0, y0, x1, y1 = roi["bbox"]
    parts = [f"a {x1 - x0}×{y1 - y0} pixel box"]
    if roi["area_mm2"] is not None:
        what = "area" if roi["area_kind"] == "mask" else "box area"
        parts.append(f"{what} about {roi['area_mm2']:.0f} mm²")
    if roi["longest_diameter_mm"] is not None and roi["area_kind"] == "mask":
        parts.append(f"longest diameter about {roi['longest_diameter_mm']:.1f} mm")
    parts.append(f"{100 * roi['area_frac']:.1f}% of the image area")
    if roi.get("volume_mm3") is not None:
        parts.append(f"part of a 3D region of about {roi['volume_mm3']:.0f} mm³")
    return ", ".join(parts)


def levels_for(ctx: dict) -> dict[str, str]:
    """The five MedTrinity levels for one sample context (see pipeline.sample_context)."""
    mod = modality_name(ctx["modality"])
    plane = ctx["plane"]
    win = ctx["window"]
    noun = "" if mod == "medical image" else " image"
    head = f"{plane.capitalize()} {mod} slice" if plane == "axial" else (
        f"Frontal {mod}{noun}" if plane == "frontal" else f"{mod[0].upper()}{mod[1:]}{noun}")
    if win["method"] == "ct_window":
        head += f", shown in the {win['name'].replace('_', ' ')} window ({win['low']:.0f} to {win['high']:.0f} HU)"
    modality_text = head + "."
    organ = (f"The source records the imaged region as {ctx['anatomy']}." if ctx["anatomy"]
             else "The source does not record the imaged body region.")
    rois = ctx["rois"]
    if ctx.get("image_labels"):
        organ += f" The source labels the whole image as: {', '.join(ctx['image_labels'])}."
    if not rois:
        if ctx.get("image_labels"):
            roi_text = "No region is outlined; the labels apply to the whole image."
        elif ctx["annotated"]:
            roi_text = "No annotated finding is present in this view."
        else:
            roi_text = "No region of interest is annotated for this image."
        return {"modality": modality_text, "organ": organ, "roi": roi_text, "texture": "",
                "relations": ""}
    roi_sents, tex_sents, rel_sents = [], [], []
    for i, roi in enumerate(rois[:5], 1):
        name = roi["label"]
        tag = f"{name} #{i}" if len(rois) > 1 else name
        if roi["origin"].startswith("expert:"):
            kind = (f"a region outlined by the {roi['origin'][7:]} expert model "
                    f"(confidence {roi['confidence']:.2f})")
        else:
            kind = "an annotated region" if roi["area_kind"] == "mask" else "an annotated box"
        roi_sents.append(f"The {tag} is {kind} in the {roi['location']}, {_size(roi)}.")
        if roi["intensity"] in ("hyper", "hypo", "iso"):
            tex_sents.append(f"The {tag} is {intensity_phrase(ctx['modality'], roi['intensity'])} "
                             f"the surrounding tissue.")
        for rel in roi["relations"][:3]:
            rel_sents.append(f"The {tag} lies {rel}.")
    if len(rois) > 5:
        roi_sents.append(f"{len(rois) - 5} further annotated regions are not described.")
    counts: dict[str, int] = {}
    for roi in rois:
        counts[roi["label"]] = counts.get(roi["label"], 0) + 1
    count_text = "; ".join(f"{n} {label} region{'s' if n > 1 else ''}" for label, n in counts.items())
    rel_sents.insert(0, f"Outlined in this view: {count_text}.")
    return {"modality": modality_text, "organ": organ, "roi": " ".join(roi_sents),
            "texture": " ".join(tex_sents), "relations": " ".join(rel_sents)}


def caption_from(levels: dict[str, str]) -> str:
    return " ".join(t for t in (levels[k] for k in ("modality", "organ", "roi", "texture",
                                                    "relations")) if t)


def describe(ctx: dict) -> tuple[dict, str, dict]:
    """(levels, caption, generation provenance) for one sample context."""
    levels = levels_for(ctx)
    key = hashlib.sha256(json.dumps([PROMPT_VERSION, levels], sort_keys=True).encode()).hexdigest()
    generation = {"backend": BACKEND, "model": "none", "prompt_version": PROMPT_VERSION,
                  "cache_key": key[:24], "note": NOTE}
    return levels, caption_from(levels), generation
