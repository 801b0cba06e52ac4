"""Patient-scope labels in text: what a source records about the patient, not the image.

A source such as CPTAC-LUAD publishes no region annotation, only its cohort: every
subject is a lung adenocarcinoma case (`SourceSpec.cohort_diagnosis`). That is a fact
about the patient. A CT slice of that patient may or may not show the tumour, and
nothing says where it is, so the label is never written as a finding of the image:
captions state it as patient context, VQA asks only what the record says about the
patient (`clinical/patient`), and the text-fact check flags text that states it as seen
in the image or places it (`scope:` flags).
"""

from __future__ import annotations

import re

from curate.unit.text.reader import clauses_negated, read_parts, read_sides

# words that frame a statement as the patient's record rather than the image's content
_RECORD = re.compile(r"\b(?:patients?|records?|recorded|diagnos\w*|cohort|history|"
                     r"clinical(?:ly)?|known)\b", re.I)
# how the question bank asks about the record (phrasings "clinical.record")
_ASKS_RECORD = re.compile(r"\b(?:patient|records?|recorded)\b.*\bdiagnos|\bdiagnos\w*\b.*"
                          r"\b(?:patient|records?|recorded)\b", re.I)


def term(label: str) -> str:
    """A label as it reads in a sentence ("Lung Adenocarcinoma" -> "lung adenocarcinoma");
    an acronym stays as written."""
    return label if label.isupper() else label.lower()


def patient_sentence(labels: list[str]) -> str:
    """The caption's statement of the patient's recorded labels: context, not a finding."""
    if not labels:
        return ""
    said = " and ".join(term(x) for x in labels)
    noun = "diagnosis is" if len(labels) == 1 else "diagnoses are"
    return (f"The image is from a patient whose recorded {noun} {said}; no annotation says "
            f"whether or where this image shows {'it' if len(labels) == 1 else 'them'}.")


def asks_about_record(question: str) -> bool:
    """Whether a question asks what the record says about the patient (its answer is then
    a statement about the patient, not about the image)."""
    return bool(_ASKS_RECORD.search(question))


def _mentions(sentence: str, label: str) -> list[int]:
    words = r"\s+".join(re.escape(w) for w in label.split())
    return [m.start() for m in re.finditer(rf"\b{words}\b", sentence, re.I)]


def scope_flags(sentence: str, ctx: dict) -> list[str]:
    """`scope:` flags for one sentence: it names a patient-scope label as something the
    image shows (no patient or record framing) or places it (a side or a lobe), while the
    source records it only for the patient. A label this sample also has as an ROI or an
    image label is a finding here too and is not checked."""
    shown = {str(x).lower() for x in ctx.get("image_labels") or []} | {
        str(r.get(k) or "").lower() for r in ctx.get("rois") or [] for k in ("label", "finding")}
    flags = []
    for label in ctx.get("patient_labels") or []:
        if label.lower() in shown:
            continue
        said = [p for p in _mentions(sentence, label) if not clauses_negated(sentence, p)]
        if not said:
            continue
        if not _RECORD.search(sentence):
            flags.append(f"scope: states {term(label)} as seen in the image, but the source "
                         "records it only as the patient's diagnosis")
        elif any(not image and not clauses_negated(sentence, pos)
                 for _, pos, image in read_sides(sentence)) or any(
                not clauses_negated(sentence, part.pos)
                for part in read_parts(sentence, liver_context=False)):
            flags.append(f"scope: places {term(label)}, but the source records it for the "
                         "patient with no location")
    return flags
