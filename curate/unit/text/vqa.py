"""VQA pairs whose answers follow from the computed facts and the source metadata."""

from __future__ import annotations

import random

from curate.unit.text.templates import modality_name

MODALITY_CHOICES = ["CT", "MRI", "X-ray", "ultrasound", "PET", "histopathology", "dermoscopy",
                    "endoscopy", "fundus photography"]


def _qa(question: str, answer: str, kind: str, category: str, options=None) -> dict:
    return {"question": question, "answer": answer, "type": kind, "category": category,
            "options": list(options or []), "origin": "facts"}


def ask(ctx: dict, max_questions: int, seed: str) -> list[dict]:
    """Questions in a fixed order of value; choice distractors are seeded per sample."""
    rng = random.Random(seed)
    qas: list[dict] = []
    mod = modality_name(ctx["modality"])
    if mod != "medical image":  # unknown modality: no question whose answer we don't know
        qas.append(_qa("What imaging modality was used for this image?", mod, "open",
                       "modality"))
    if mod in MODALITY_CHOICES:
        options = [mod] + rng.sample([m for m in MODALITY_CHOICES if m != mod], 3)
        rng.shuffle(options)
        qas.append(_qa("Which modality is this image? Choose one.", mod, "choice", "modality",
                       options))
    if ctx["plane"] == "axial":
        qas.append(_qa("In which plane is this slice shown?", "axial", "open", "plane"))
    if ctx["anatomy"]:
        qas.append(_qa("Which body region does this image show?", ctx["anatomy"], "open", "organ"))
    rois = ctx["rois"]
    by_label: dict[str, list[dict]] = {}
    for roi in rois:
        by_label.setdefault(roi["label"], []).append(roi)
    if ctx["annotated"]:
        for label in ctx["labels"]:
            present = label in by_label or label in ctx.get("image_labels", [])
            qas.append(_qa(f"Is {label} annotated in this image?",
                           "yes" if present else "no", "closed", "presence"))
    for label, group in by_label.items():
        n = len(group)
        qas.append(_qa(f"How many separate {label} regions are outlined?", str(n), "open",
                       "counting"))
        roi = max(group, key=lambda r: r["area_px"])
        which = f"the largest {label}" if n > 1 else f"the {label}"
        qas.append(_qa(f"Where is {which} located?", roi["location"], "open", "location"))
        if roi["laterality"] in ("left", "right"):
            qas.append(_qa(f"On which side of the patient is {which}?", roi["laterality"],
                           "closed", "laterality", ["left", "right"]))
        if roi["area_mm2"] is not None and roi["area_kind"] == "mask":
            qas.append(_qa(f"What is the approximate area of {which}?",
                           f"about {roi['area_mm2']:.0f} mm²", "open", "size"))
        if roi["intensity"] in ("hyper", "hypo"):
            answer = "brighter" if roi["intensity"] == "hyper" else "darker"
            qas.append(_qa(f"Is {which} brighter or darker than the surrounding tissue?", answer,
                           "closed", "attribute", ["brighter", "darker"]))
    return qas[:max_questions]
