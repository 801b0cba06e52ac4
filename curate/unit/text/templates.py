"""The deterministic grounded generator: multigranular text from ROI facts, no model.

It is the default when no language model is configured. Every sentence is built from a
computed fact or from source metadata, and every record it writes says so in
`generation.backend` and `generation.note`.
"""

from __future__ import annotations

import hashlib
import json

from curate.unit.text.patient import patient_sentence
from curate.unit.text.place import is_organ, where

BACKEND = "grounded-template"
PROMPT_VERSION = "grounded-v2"
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
    "US": {"hyper": "hyperechoic", "hypo": "hypoechoic", "iso": "isoechoic"},
}
GENERIC_INTENSITY = {"hyper": "brighter than", "hypo": "darker than", "iso": "similar in brightness to"}
# modality code -> the family whose words describe brightness (density, signal, echo...)
FAMILY = {"CT": "CT", "MR": "MR", "MRI": "MR", "US": "US", "PT": "PET", "PET": "PET",
          "XR": "XR", "CR": "XR", "DX": "XR", "MG": "XR", "RF": "XR", "XA": "XR", "PX": "XR",
          "IO": "XR", "DERMOSCOPY": "dermoscopy", "PATHOLOGY": "pathology",
          "SM": "pathology", "MICROSCOPY": "pathology", "GM": "pathology"}
# how a region compares with its surroundings, in each family's own words
APPEARANCE = {
    "CT": {"hyper": "hyperdense, of higher attenuation than the surrounding tissue",
           "hypo": "hypodense, of lower attenuation than the surrounding tissue",
           "iso": "isodense, of similar attenuation to the surrounding tissue"},
    "MR": {"hyper": "hyperintense, of higher signal than the surrounding tissue on this sequence",
           "hypo": "hypointense, of lower signal than the surrounding tissue on this sequence",
           "iso": "isointense to the surrounding tissue on this sequence"},
    "US": {"hyper": "hyperechoic compared with the surrounding tissue",
           "hypo": "hypoechoic compared with the surrounding tissue",
           "iso": "isoechoic to the surrounding tissue"},
    "PET": {"hyper": "of higher tracer uptake than the surrounding tissue",
            "hypo": "of lower tracer uptake than the surrounding tissue",
            "iso": "of similar tracer uptake to the surrounding tissue"},
    "XR": {"hyper": "more opaque (denser) than the surrounding area",
           "hypo": "more lucent than the surrounding area",
           "iso": "of similar opacity to the surrounding area"},
    "dermoscopy": {"hyper": "lighter in colour than the surrounding skin",
                   "hypo": "darker in colour than the surrounding skin",
                   "iso": "of similar colour to the surrounding skin"},
    "pathology": {"hyper": "paler-staining than the surrounding tissue",
                  "hypo": "more darkly stained than the surrounding tissue",
                  "iso": "of similar staining to the surrounding tissue"},
}
GENERIC_APPEARANCE = {"hyper": "brighter than the surrounding area",
                      "hypo": "darker than the surrounding area",
                      "iso": "of similar brightness to the surrounding area"}


def modality_name(modality: str | None) -> str:
    """A readable modality, or "medical image" when the data does not say which."""
    if not modality:
        return "medical image"
    name = MODALITY_NAMES.get(modality, MODALITY_NAMES.get(modality.upper(), modality))
    return name or "medical image"


def family(modality: str | None) -> str | None:
    """The wording family of a modality code (CT, MR, US, PET, XR, dermoscopy, pathology)."""
    return FAMILY.get((modality or "").upper())


def intensity_phrase(modality: str | None, code: str) -> str:
    words = INTENSITY_WORDS.get((modality or "").upper())
    if words:
        return f"{words[code]} relative to"
    return GENERIC_INTENSITY[code]


def appearance(modality: str | None, code: str) -> str | None:
    """"hyperdense, of higher attenuation than the surrounding tissue" for a CT "hyper"
    region; None when the comparison is unknown."""
    if code not in ("hyper", "hypo", "iso"):
        return None
    return APPEARANCE.get(family(modality) or "", GENERIC_APPEARANCE)[code]


def size_phrase(roi: dict, spacing) -> str:
    """Sizes in mm (area for masks, box sides for boxes, 3D volume where known); pixels
    only when the pixel spacing is unknown; nothing for a point, which has no extent."""
    if roi.get("area_kind") == "point":
        return ""
    x0, y0, x1, y1 = roi["bbox"]
    if not spacing or roi.get("area_mm2") is None:
        return (f"spanning about {x1 - x0} × {y1 - y0} pixels, "
                f"{100 * roi['area_frac']:.1f}% of the image")
    if roi["area_kind"] == "mask":
        text = f"measuring about {roi['longest_diameter_mm']:.1f} mm in longest diameter " \
               f"with an in-plane area of about {roi['area_mm2']:.0f} mm²"
    else:
        text = (f"measuring about {(x1 - x0) * spacing[1]:.1f} × "
                f"{(y1 - y0) * spacing[0]:.1f} mm (width × height of the box)")
    if roi.get("volume_mm3") is not None:
        text += f"; this slice cuts a 3D region of about {roi['volume_mm3']:.0f} mm³"
    return text


def _kind(roi: dict) -> str:
    if roi["origin"].startswith("expert:"):
        return (f"is a region outlined by the {roi['origin'][7:]} expert model "
                f"(confidence {roi['confidence']:.2f})")
    if roi["area_kind"] == "point":
        return "is a finding marked by a point, with no extent given,"
    return "is an outlined region" if roi["area_kind"] == "mask" else "is marked by a box"


def _head(ctx: dict) -> str:
    mod = modality_name(ctx["modality"])
    plane, win = ctx["plane"], ctx["window"]
    noun = "" if mod == "medical image" else " image"
    head = f"{plane.capitalize()} {mod} slice" if plane in ("axial", "coronal", "sagittal") else (
        f"Frontal {mod}{noun}" if plane == "frontal" else f"{mod[0].upper()}{mod[1:]}{noun}")
    if win["method"] == "ct_window":
        head += (f", shown in the {win['name'].replace('_', ' ')} window "
                 f"({win['low']:.0f} to {win['high']:.0f} HU)")
    return head + "."


def levels_for(ctx: dict) -> dict[str, str]:
    """The five MedTrinity levels for one sample context (see pipeline.sample_context)."""
    organ = (f"Imaged region, as recorded by the source: {ctx['anatomy']}." if ctx["anatomy"]
             else "The source does not record the imaged body region.")
    all_rois = ctx["rois"]
    organs = [r for r in all_rois if is_organ(r)]
    if organs:
        names = ", ".join(dict.fromkeys(r["label"] for r in organs))
        origins = ", ".join(dict.fromkeys(r["origin"][7:] for r in organs))
        organ += f" Organs outlined by expert models ({origins}): {names}."
    if ctx.get("image_labels"):
        organ += f" The source labels the whole image as: {', '.join(ctx['image_labels'])}."
    if ctx.get("patient_labels"):  # the patient's record, never a finding of this image
        organ += " " + patient_sentence(ctx["patient_labels"])
    found = [(i, r) for i, r in enumerate(all_rois, 1) if not is_organ(r)]
    if not found:
        if ctx.get("image_labels"):
            roi_text = "No region is outlined; the labels apply to the whole image."
        elif ctx["annotated"] and ctx.get("labels"):
            verb = ("marked", "marks") if ctx.get("point_findings") else ("outlined", "outlines")
            roi_text = (f"No {' or '.join(ctx['labels'])} is {verb[0]} in this view, "
                        f"although the source {verb[1]} them where present.")
        elif ctx["annotated"]:
            roi_text = "No annotated finding is present in this view."
        else:
            roi_text = "No region of interest is annotated for this image."
        return {"modality": _head(ctx), "organ": organ, "roi": roi_text, "texture": "",
                "relations": ""}
    roi_sents, tex_sents, rel_sents = [], [], []
    for i, roi in found[:5]:
        tag = f"{roi['label']} #{i}" if len(all_rois) > 1 else roi["label"]
        size = size_phrase(roi, ctx.get("spacing"))
        roi_sents.append(f"The {tag} {_kind(roi)} {where(roi, ctx)}"
                         + (f", {size}." if size else "."))
        look = appearance(ctx["modality"], roi["intensity"])
        if look:
            tex_sents.append(f"The {tag} is {look}.")
        for rel in [r for r in roi["relations"] if not r.startswith("in the ")][:3]:
            rel_sents.append(f"The {tag} lies {rel}.")
    if len(found) > 5:
        roi_sents.append(f"{len(found) - 5} further outlined regions are not described.")
    if not ctx.get("spacing") and any(r["area_kind"] != "point" for _, r in found):
        roi_sents.append("The pixel spacing is not recorded, so sizes are given in pixels.")
    counts: dict[str, int] = {}
    for _, roi in found:
        counts[roi["label"]] = counts.get(roi["label"], 0) + 1
    points = {r["label"] for _, r in found if r["area_kind"] == "point"}
    count_text = "; ".join(
        f"{n} {label}{'s' if n > 1 else ''} ({'points' if n > 1 else 'a point'})"
        if label in points else f"{n} {label} region{'s' if n > 1 else ''}"
        for label, n in counts.items())
    rel_sents.insert(0, f"Marked in this view: {count_text}.")
    return {"modality": _head(ctx), "organ": organ, "roi": " ".join(roi_sents),
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
