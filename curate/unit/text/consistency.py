"""Text-fact consistency: does a text state only what the computed facts support?

An independent reader: it reads sentences with its own vocabulary
(curate.unit.text.lexicon: RadLex/FMA-style anatomy, modality paraphrases, planes), not
the words the templates write, and it runs on every text a sample gets (template
captions, model-written text in the describe stage, VQA answers). Each flag starts with
the kind of fact contradicted, `side:`, `organ:`, `lobe:`, `count:`, `size:`,
`modality:`, `plane:` or `scope:` (a patient-scope label, such as a cohort's diagnosis,
stated as seen in the image or placed in it: curate.unit.text.patient), and a flagged
sample is dropped at filtering with its flags as the reason. It cannot prove a text right, only catch these kinds of wrong.

How it reads: the text is cut into sentences; a sentence's claims are checked against
the ROIs it is about (those whose label or finding it names, else all of them). Negated
claims ("no nodule in the left lung", "the left lung is clear") are not claims. Facts:
the sample context of curate.unit.pipeline.sample_context: modality, anatomy, plane,
spacing, and per ROI laterality, sizes, relations ("in the liver" from expert organs)
and, when present, `organ`, `lobe`, `zone`/`lung_zone`, `segment`/`liver_segment` and
`region`/`brain_region`.
"""

from __future__ import annotations

import functools
import re

from curate.unit.text import lexicon as lx
from curate.unit.text.patient import asks_about_record, scope_flags
from curate.unit.text.reader import (
    Part,
    clauses_negated,
    read_counts,
    read_modalities,
    read_organs,
    read_parts,
    read_planes,
    read_sides,
    read_sizes,
    sentences,
)

PART_FIELDS = ("organ", "lobe", "zone", "lung_zone", "segment", "liver_segment", "region",
               "brain_region", "label", "finding")
FRAME_PLANES = {"axial", "frontal", "coronal"}  # views where left/right is the patient's
ALL = re.compile(r"\b(?:both|all|each|every)\b|\bconfined to\b", re.I)


def _label_nouns(roi: dict) -> frozenset[str]:
    return _nouns(str(roi.get("label") or ""), str(roi.get("finding") or ""))


@functools.lru_cache(maxsize=4096)
def _nouns(*values: str) -> frozenset[str]:
    """The nouns a text may name an ROI by: its label and finding, and their last words
    (few distinct labels per source, so cached across samples)."""
    out = set()
    for value in values:
        value = value.lower().strip()
        if value:
            out |= {lx.singular(value), lx.singular(value.split()[-1])}
    return frozenset(out)


def _words(sentence: str) -> set[str]:
    return {lx.singular(w) for w in re.findall(r"[a-z][a-z-]*", sentence.lower())}


def _is_organ_roi(roi: dict) -> bool:
    label = str(roi.get("label") or "").lower()
    return bool(label) and any(w in lx.organ_terms() for w in (label, lx.singular(label)))


def _roi_organs(roi: dict) -> set[str]:
    texts = [str(roi.get(k)) for k in ("organ", "lobe", "zone", "lung_zone", "liver_segment",
                                       "region", "brain_region", "label") if roi.get(k)]
    texts += [r[7:] for r in roi.get("relations") or [] if r.startswith("in the ")]
    organs = {o for t in texts for o, *_ in read_organs(t, all_mentions=True)}
    organs |= {p.organ for t in texts for p in read_parts(t, liver_context=False)}
    return organs


def _roi_parts(roi: dict) -> list[Part]:
    parts = []
    for key in PART_FIELDS:
        value = roi.get(key)
        if value is None or value == "":
            continue
        text = str(value)
        if key in ("zone", "lung_zone") and "zone" not in text.lower():
            text = f"{text} zone"
        if key == "lobe" and "lobe" not in text.lower() and not text.isupper():
            text = f"{text} lobe"
        if key in ("segment", "liver_segment") and not text.lower().startswith("segment"):
            text = f"segment {text}"
        parts += read_parts(text, liver_context=key in ("segment", "liver_segment", "organ",
                                                         "lobe", "region"))
    for rel in roi.get("relations") or []:
        if rel.startswith("in the "):
            parts += read_parts(rel[7:], liver_context=True)
    return parts


def _named_sides(roi: dict) -> set[str]:
    """Sides named by the ROI's anatomical fields ("left lower lobe")."""
    return {s for key in ("organ", "lobe", "zone", "lung_zone", "region", "brain_region")
            if roi.get(key) for s, _, image in read_sides(str(roi[key]))
            if not image and s != "both"}


def _roi_sides(roi: dict) -> set[str]:
    sides = {roi["laterality"]} if roi.get("laterality") in ("left", "right", "midline") else set()
    return sides | _named_sides(roi)


def _memo(memo: dict, fn, roi: dict):
    """fn(roi) once per check_text call (ROI facts are read for every sentence)."""
    key = (fn.__name__, id(roi))
    if key not in memo:
        memo[key] = fn(roi)
    return memo[key]


def _about(sentence: str, rois: list[dict], words: set[str] | None = None) -> list[dict]:
    """The ROIs a sentence speaks of: those whose label/finding it names, else all."""
    words = _words(sentence) if words is None else words
    low = sentence.lower()
    named = [r for r in rois if any((n in words) or (" " in n and n in low)
                                    for n in _label_nouns(r))]
    return named or rois


FINDING_WORDS = lx.GENERIC_FINDINGS | {
    "it", "they", "this", "these", "nodule", "cyst", "effusion", "opacity", "consolidation",
    "metastasis", "polyp", "hemorrhage", "bleed", "hematoma", "infarct", "fracture",
    "pneumothorax", "collection", "abscess", "node", "carcinoma", "cancer", "glioma", "edema"}


def _speaks_of_findings(sentence: str, rois: list[dict], words: set[str] | None = None) -> bool:
    """Whether a sentence is about findings (or the ROIs) rather than only anatomy:
    "both lungs are visible" places nothing, "nodules in both lungs" does."""
    words = _words(sentence) if words is None else words
    nouns = FINDING_WORDS | {n.split()[-1] for r in rois for n in _label_nouns(r)}
    return bool(words & nouns)


def _close(value: float, facts: list[float], tol: float) -> bool:
    return any(abs(value - f) <= max(tol, 0.15 * abs(f)) for f in facts)


def _check_sides(sent: str, about: list[dict], ctx: dict, flags: list[str], memo: dict) -> None:
    claims = [(s, pos, image) for s, pos, image in read_sides(sent)
              if not clauses_negated(sent, pos)]
    if not claims or not ctx.get("rois"):
        return
    frame = ctx.get("plane") in FRAME_PLANES
    sides = set().union(*(_memo(memo, _roi_sides, r) for r in about))
    for side, _, image in claims:
        if image:
            if frame:  # radiological display: image left is the patient's right
                patient = {"left": "right", "right": "left"}[side]
                if patient not in sides:
                    flags.append(f"side: says the image {side} (the patient's {patient}) but no "
                                 f"ROI lies on the patient's {patient}")
            else:
                xs = [(r["bbox_norm"][0] + r["bbox_norm"][2]) / 2 for r in about
                      if r.get("bbox_norm")]
                if xs and not any((x < 0.55) if side == "left" else (x > 0.45) for x in xs):
                    flags.append(f"side: says the {side} of the image but the ROI lies on the "
                                 f"other half")
            continue
        if not frame and not set().union(*(_memo(memo, _named_sides, r) for r in about)):
            flags.append(f"side: states the patient's {side} in a view without a patient frame")
        elif side == "both" and not {"left", "right"} <= sides:
            flags.append(f"side: says bilateral but the ROIs lie only on the "
                         f"{'/'.join(sorted(sides)) or 'unknown side'}")
        elif side != "both" and side not in sides:
            flags.append(f"side: states the {side} but no ROI lies on the patient's {side}")
        elif side != "both" and ALL.search(sent) and sides - {side}:
            flags.append(f"side: puts them all on the {side} but some lie on the "
                         f"{'/'.join(sorted(sides - {side}))}")


def _check_organs(sent: str, about: list[dict], ctx: dict, flags: list[str], memo: dict) -> None:
    facts = set().union(*(_memo(memo, _roi_organs, r) for r in about)) if about else set()
    region = lx.region_of(ctx.get("anatomy"))
    declared = lx.organ_terms().get(str(ctx.get("anatomy") or "").lower().strip())
    if not facts and declared:  # the source names an organ, not a region: findings lie in it
        facts = {declared}
    claims = [(o, pos) for o, pos, loc in read_organs(sent) if loc]
    claims += [(p.organ, p.pos) for p in read_parts(sent, liver_context=_liver(sent, ctx, memo))]
    for organ, pos in claims:
        if clauses_negated(sent, pos):
            continue
        if facts and not any(lx.same_organ(organ, f) for f in facts):
            flags.append(f"organ: places it in the {organ} but the ROI lies in the "
                         f"{'/'.join(sorted(facts))}")
        elif not facts and region and not lx.organ_in_region(organ, region):
            flags.append(f"organ: names the {organ} but the image shows the "
                         f"{ctx.get('anatomy')}")


def _liver(sent: str, ctx: dict, memo: dict) -> bool:
    low = sent.lower()
    return ("liver" in low or "hepatic" in low or "couinaud" in low
            or lx.region_of(ctx.get("anatomy")) == "abdomen" and "lung" not in low
            or any("liver" in _memo(memo, _roi_organs, r) for r in ctx.get("rois", [])))


def _part_ok(claim: Part, fact: Part) -> bool:
    if claim.system != fact.system:
        return True
    if claim.system == "liver":
        return bool(claim.segments & fact.segments)
    if claim.system == "brain":
        return claim.name == fact.name or fact.name in lx.BRAIN_CONTAINS.get(claim.name, ()) \
            or claim.name in lx.BRAIN_CONTAINS.get(fact.name, ())
    if claim.system == "lung lobe" and {claim.name, fact.name} == {"upper lobe", "lingula"}:
        return True
    return claim.name == fact.name


def _check_parts(sent: str, about: list[dict], ctx: dict, flags: list[str], memo: dict) -> None:
    facts = [p for r in about for p in _memo(memo, _roi_parts, r)]
    for claim in read_parts(sent, liver_context=_liver(sent, ctx, memo)):
        if claim.impossible:
            flags.append(f"lobe: {claim.impossible}")
            continue
        if clauses_negated(sent, claim.pos):
            continue
        same = [f for f in facts if f.system == claim.system]
        if same and not any(_part_ok(claim, f) for f in same):
            flags.append(f"lobe: says the {claim.name} but the ROI lies in the "
                         f"{'/'.join(sorted({f.name for f in same}))}")


def _check_counts(sent: str, about: list[dict], ctx: dict, flags: list[str]) -> None:
    rois = ctx.get("rois", [])
    if not rois and not ctx.get("annotated"):
        return
    vocab = {lx.singular(str(x)) for x in ctx.get("labels", [])} | {
        n for r in rois for n in _label_nouns(r)}
    heads = {n.split()[-1] for n in vocab}
    sides = {s for s, pos, image in read_sides(sent) if not image and s != "both"}
    for n, at_least, noun, only in read_counts(sent, vocab | heads | lx.GENERIC_FINDINGS):
        if noun in vocab or noun in heads:
            group = [r for r in rois if noun in _label_nouns(r)]
        else:
            group = [r for r in rois if not _is_organ_roi(r)] or rois
        counts = {len(group)} | ({len([r for r in group if r.get("laterality") == s])
                                  for s in sides} if not only else set())
        if at_least and max(counts) < n or not at_least and n not in counts:
            said = f"{'several' if at_least else n} {noun}"
            flags.append(f"count: says {said} but {len(group)} are annotated")


def _check_sizes(sent: str, about: list[dict], ctx: dict, flags: list[str]) -> None:
    spacing = ctx.get("spacing")
    rois = about or ctx.get("rois", [])
    step = max(spacing) if spacing else 0.0
    for kind, values, tol, stated in read_sizes(sent):
        if kind == "length":
            spans = []
            for r in rois:
                if r.get("area_kind") == "point":
                    continue  # a point has no extent: its 1-pixel box is not a size
                dims = [r["longest_diameter_mm"]] if r.get("longest_diameter_mm") else []
                if spacing and r.get("bbox"):
                    x0, y0, x1, y1 = r["bbox"]
                    dims += [(x1 - x0) * spacing[1], (y1 - y0) * spacing[0]]
                if dims:
                    spans.append((min(dims), max(dims)))
            if not spans:
                flags.append(f"size: states {stated} but no ROI has a size in mm")
                continue
            for v in values:
                t = max(tol, 0.15 * v, step)
                if v < 0:  # "sub-centimetre": at most |v|
                    if not any(lo <= -v + t for lo, _ in spans):
                        flags.append(f"size: says {stated} but the ROI is larger")
                elif not any(lo - t <= v <= hi + t for lo, hi in spans):
                    flags.append(f"size: {stated} matches no ROI dimension")
                    break
        else:
            key = {"area": "area_mm2", "volume": "volume_mm3", "percent": "area_frac"}[kind]
            facts = [r[key] * (100 if kind == "percent" else 1) for r in rois
                     if r.get(key) is not None]
            floor = {"area": 1.0, "volume": 1.0, "percent": 0.15}[kind]
            if not _close(values[0], facts, max(tol, floor)):
                flags.append(f"size: {stated} matches no ROI's {kind}")


def _check_modality(text: str, ctx: dict, flags: list[str]) -> None:
    actual = lx.canonical_modality(ctx.get("modality"))
    if actual is None:
        return
    for named, allowed, word in read_modalities(text):
        if allowed is None and not lx.modality_admits(actual, named):
            flags.append(f"modality: names {named} but the image is {actual}")
        elif allowed is not None and actual not in allowed:
            flags.append(f"modality: '{word}' describes {named}, not {actual}")


def _check_plane(text: str, ctx: dict, flags: list[str]) -> None:
    admitted = lx.VIEW_PLANES.get(str(ctx.get("plane")))
    if admitted is None:
        return
    for plane, word in read_planes(text):
        if plane not in admitted:
            flags.append(f"plane: says {word} but the view is {ctx.get('plane')}")


def check_text(text: str, ctx: dict, memo: dict | None = None) -> list[str]:
    """One flag per contradiction between `text` and the facts in `ctx`, kind first.

    memo: what is read from each ROI of ctx, shared by the calls that check one sample's
    texts (its caption and every VQA answer) so that it is read once."""
    flags: list[str] = []
    if not text:
        return flags
    _check_modality(text, ctx, flags)
    _check_plane(text, ctx, flags)
    rois = ctx.get("rois", [])
    memo = {} if memo is None else memo
    for sent in sentences(text):
        words = _words(sent)
        about = _about(sent, rois, words)
        if _speaks_of_findings(sent, rois, words):  # where: only claims about findings
            _check_sides(sent, about, ctx, flags, memo)
            _check_organs(sent, about, ctx, flags, memo)
            _check_parts(sent, about, ctx, flags, memo)
        _check_counts(sent, about, ctx, flags)
        _check_sizes(sent, about, ctx, flags)
        flags += scope_flags(sent, ctx)
    return list(dict.fromkeys(flags))


YES = {"yes", "y", "true", "present", "correct"}
NO = {"no", "n", "false", "absent", "none"}
BOX = re.compile(r"\[\s*(\d+),\s*(\d+),\s*(\d+),\s*(\d+)\s*\]")
HOW_MANY = re.compile(r"\bhow many\s+(?:separate\s+|distinct\s+)?([a-z][a-z -]*?)\s+"
                      r"(?:are|is|were|can|do|does|appear|lie|regions?\b)", re.I)


def _qa_subject(question: str, rois: list[dict]) -> list[dict]:
    """The ROIs a question asks about: the one whose box it gives, else those it names."""
    m = BOX.search(question)
    if m:
        box = [int(v) for v in m.groups()]
        hit = [r for r in rois if list(r.get("bbox") or []) == box]
        if hit:
            return hit
    return _about(question, rois)


def check_qa(qa: dict, ctx: dict, memo: dict | None = None) -> list[str]:
    """Flags for one VQA pair: the answer read together with its question.

    A "yes" asserts the question's claims; a "no" to a question whose modality or plane
    the facts support is a contradiction (other "no"s may deny any part of a compound
    question, so they are not read); an open or choice answer is read as
    a statement about the question's subject ("How many nodules...? 2" -> "2 nodules",
    "Which side...? left" -> "on the patient's left"), and the question's own premises
    are read too unless it offers alternatives ("left or right").
    """
    question, answer = str(qa.get("question") or ""), str(qa.get("answer") or "").strip()
    memo = {} if memo is None else memo
    a = answer.lower().rstrip(".")
    rois = ctx.get("rois", [])
    sub = dict(ctx, rois=_qa_subject(question, rois)) if rois else ctx
    if a in YES:
        return check_text(question, sub, memo)
    if a in NO:  # wrong only where the question names the very fact (modality, plane)
        flags = []
        kinds = {f.split(":", 1)[0] for f in check_text(question, sub, memo)}
        claims = {"modality": any(allowed is None for _, allowed, _ in read_modalities(question)),
                  "plane": bool(read_planes(question))}
        for kind, claimed in claims.items():
            if claimed and kind not in kinds:
                flags.append(f"{kind}: answers no, but the facts support what the question asks")
        return flags
    m = HOW_MANY.search(question)
    if m and re.fullmatch(r"\d+|[a-z]+", a):
        return check_text(f"{answer} {m.group(1)}.", ctx, memo)
    statement = f"The finding is on the patient's {a}." if a in ("left", "right") else \
        f"Recorded for the patient: {answer}." if asks_about_record(question) else \
        f"Finding: {answer}."
    flags = check_text(statement, sub, memo)
    if " or " not in question:
        flags += check_text(question, sub, memo)
    return list(dict.fromkeys(flags))
