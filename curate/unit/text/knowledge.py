"""The knowledge level: background sentences from retrieved passages, each with its source.

A passage is used only when its document is tagged (front matter `findings:`) with a
finding the source declares *and* that is present in this view; a phantom with a
"hyperdense_lesion" gets no colon-cancer passage however close the embedding. From each
such passage one sentence is taken verbatim, never paraphrased: the one that best
describes how the finding looks (modality and appearance words), with no numbers, no
sides and nothing the text-fact check flags against this sample's facts. Each statement
ends with the passage id in brackets ("[lung-nodules#2]"), which is also in the
sample's `knowledge_refs`: statement-level provenance. The statements are general
background about the declared finding, framed as such, never a diagnosis of this image.
"""

from __future__ import annotations

import re

from curate.unit.text.place import is_organ
from curate.unit.text.templates import modality_name

MAX_STATEMENTS = 2
MAX_WORDS = 45
_SLUG = re.compile(r"[^a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
LOOK_WORDS = ("appear", "attenuation", "dense", "opacit", "opaque", "lucen", "signal",
              "intens", "echo", "margin", "border", "round", "oval", "shape", "solid",
              "enhanc", "pigment", "colour", "color", "stain", "texture", "well-defined",
              "irregular", "homogeneous", "heterogeneous", "calcif", "seen as", "shows as")
AVOID = re.compile(r"\d|\b(left|right)\b|\?|\bwe\b|\byou\b|\bthis (patient|image)\b", re.I)


def slug(label: str) -> str:
    return _SLUG.sub("_", label.lower()).strip("_")


def view_findings(ctx: dict) -> dict[str, str]:
    """Finding codes present in this view -> readable name (organs outlined by experts
    are context, not findings)."""
    organ_codes = {slug(r["finding"]) for r in ctx.get("rois", []) if is_organ(r)}
    out: dict[str, str] = {}
    for finding in ctx.get("findings") or []:
        code = slug(finding)
        if code and code not in organ_codes:
            out.setdefault(code, code.replace("_", " "))
    return out


def sentences(text: str) -> list[str]:
    flat = " ".join(line.strip() for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith(("#", "-", "*", "|")))
    return [s.strip() for s in _SENTENCE.split(flat) if s.strip()]


MODALITY_WORDS = {"X-ray": ("x-ray", "radiograph"), "MRI": ("mri", "magnetic resonance"),
                  "CT": ("ct", "computed tomography"), "ultrasound": ("ultrasound", "sonograph"),
                  "histopathology": ("histolog", "patholog", "h&e", "stain"),
                  "dermoscopy": ("dermoscop",)}


SPELLINGS = (("tumor", "tumour"), ("hemorrhag", "haemorrhag"), ("edema", "oedema"),
             ("nevus", "naevus"), ("nevi", "naevi"), ("esophag", "oesophag"))


def noun_pattern(name: str) -> str:
    """A regex for a finding name as a whole word, singular or plural, either spelling."""
    forms = {name.lower()}
    for us, gb in SPELLINGS:
        forms |= {f.replace(us, gb) for f in forms} | {f.replace(gb, us) for f in forms}
    alts = "|".join(re.escape(f) for f in sorted(forms))
    return rf"\b(?:{alts})(?:s|es)?\b"


def score_sentence(sentence: str, name: str, modality: str) -> int:
    """0 unless the sentence names the finding's head noun (so a sentence on a different
    entity is never borrowed); then 3 (5 for the full name), plus 1 per appearance word
    and 2 for naming this modality."""
    low = sentence.lower()
    if not re.search(noun_pattern(name.split()[-1]), low):  # "liver tumor": about a tumour
        return 0
    score = 5 if re.search(noun_pattern(name), low) else 3
    score += sum(1 for w in LOOK_WORDS if w in low)
    names = MODALITY_WORDS.get(modality, (modality.lower(),))
    score += 2 if any(re.search(rf"\b{re.escape(n)}", low) for n in names) else 0
    return score


def best_sentence(text: str, name: str, ctx: dict, check) -> str | None:
    """The passage sentence that best says how the finding looks, or None."""
    modality = modality_name(ctx.get("modality"))
    best, best_score = None, 0
    for sent in sentences(text):
        if len(sent.split()) > MAX_WORDS or len(sent.split()) < 6 or AVOID.search(sent):
            continue
        score = score_sentence(sent, name, modality)
        if score > best_score and not check(sent, ctx):
            best, best_score = sent, score
    return best


def knowledge_statements(ctx: dict, passages: list[dict], check=None,
                         max_statements: int = MAX_STATEMENTS) -> list[dict]:
    """[{text, ref, finding}] for the passages that match a finding present in this view.

    `passages` are retrieval results ({id, text, findings: [tag codes]}); `check` is the
    text-fact check (sentence, ctx) -> flags, the packaged one when not given.
    """
    if check is None:
        from curate.unit.text.consistency import check_text as check
    present = view_findings(ctx)
    out: list[dict] = []
    used: set[str] = set()
    for passage in passages:
        tags = {slug(t) for t in passage.get("findings") or []}
        matched = [code for code in present if code in tags]
        if not matched or passage["id"] in used:
            continue
        code = matched[0]
        sentence = best_sentence(passage.get("text") or "", present[code], ctx, check)
        if sentence is None:
            continue
        used.add(passage["id"])
        text = f"Background on {present[code]}: {sentence.rstrip('.')} [{passage['id']}]."
        out.append({"text": text, "ref": passage["id"], "finding": code})
        if len(out) >= max_statements:
            break
    return out


def knowledge_text(ctx: dict, passages: list[dict], check=None) -> str:
    """The knowledge level as one string ("" when no passage matches)."""
    return " ".join(s["text"] for s in knowledge_statements(ctx, passages, check))


REF = re.compile(r"\[([^\[\]\s]+#\d+)\]")


def statement_refs(text: str) -> list[str]:
    """The passage ids cited in a text, in order ("[lung-nodules#2]" -> "lung-nodules#2")."""
    return REF.findall(text)
