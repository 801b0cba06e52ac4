"""Read claims out of radiology prose: sides, organs, lobes and zones, counts, sizes,
modalities and planes, each with where it stands in the sentence.

The patterns are built from curate.unit.text.lexicon; curate.unit.text.consistency
compares what is read here with a sample's facts. Readers return positions so that a
claim can be tested for negation in its own clause ("no nodule in the left lung").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from curate.unit.text import lexicon as lx

_B, _E = r"(?<![A-Za-z0-9])", r"(?![A-Za-z0-9])"


@dataclass(frozen=True)
class Part:
    """A named part of an organ: a lung lobe or zone, liver segment(s), a brain region."""

    system: str  # lung lobe | lung zone | liver | brain | prostate
    name: str
    organ: str
    pos: int
    segments: frozenset = frozenset()
    impossible: str | None = None


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n+", text)
    return [p.strip() for p in parts if p and p.strip()]


_CLAUSE = re.compile(r"[;:,()]|\b(?:but|however|whereas|while|although|though|except)\b"
                     r"|\band\b(?=\s+(?:no|there|the|a|an|its|it)\b)", re.I)
_NEG_BEFORE = re.compile(r"\b(?:no|not|without|absent|negative for|free of|excluded|"
                         r"rules? out|ruled out|nor|neither|never|nothing)\b", re.I)
_NEG_AFTER = re.compile(r"\b(?:is|are|appears?|remains?|looks?|seems?)\s+(?:[a-z-]+\s+){0,4}?"
                        r"(?:clear|well[- ]aerated|normal|unremarkable|spared|intact|free|preserved|uninvolved|"
                        r"not involved|within normal limits)\b|\b(?:spared|unremarkable|is clear)"
                        r"\b", re.I)


_NORMAL_BEFORE = re.compile(r"\b(?:normal|clear|unremarkable|intact|preserved|spared|"
                            r"uninvolved|healthy)\s+$", re.I)


def clauses_negated(sentence: str, pos: int) -> bool:
    """Whether the claim at `pos` sits in a negated clause (NegEx-style cues), or is
    said to be normal ("clear right costophrenic angle")."""
    if _NORMAL_BEFORE.search(sentence[:pos]):
        return True
    starts = [0] + [m.end() for m in _CLAUSE.finditer(sentence) if m.end() <= pos]
    ends = [m.start() for m in _CLAUSE.finditer(sentence) if m.start() > pos] + [len(sentence)]
    start, end = starts[-1], ends[0]
    return bool(_NEG_BEFORE.search(sentence[start:pos]) or _NEG_AFTER.search(sentence[pos:end]))


# ---- sides -------------------------------------------------------------------------------
_SIDE = re.compile(r"\b(left|right)\b", re.I)
_IMAGE_AFTER = re.compile(
    r"^(?:[- ]hand)?(?:[\s-]+(?:upper|lower|top|bottom|side|half|part|portion|edge|border|"
    r"margin|corner|quadrant|aspect|third|field|area|region))*\s+(?:of|in|on)\s+the\s+"
    r"(?:image|picture|frame|field of view|photograph|photo|slide|figure|panel|screen|display)",
    re.I)
_IMAGE_BEFORE = re.compile(r"(?:\bimage(?:'s)?|\bviewer'?s|\bscreen)\s*$", re.I)
_NOT_SIDE_AFTER = re.compile(
    r"^[- ](?:ventric|atri|heart|coronary|main\b|anterior descending|circumflex|bundle|angle|"
    r"untreated|behind|over\b|out\b)|^\s+of\b(?!\s+(?:the\s+)?midline)", re.I)
_LIVER_LOBE_AFTER = re.compile(r"^\s+(?:hepatic\s+lobe|(?:hepatic\s+)?lobe\s+of\s+the\s+liver|"
                               r"lobe\b(?=[^.]*\b(?:liver|hepatic)\b))", re.I)
_BOTH = re.compile(r"\b(?:bilateral(?:ly)?|bibasilar|bibasal|both\s+(?:lungs|kidneys|sides|"
                   r"hemithoraces|breasts|adrenals?|ovaries|hemispheres|lower lobes|upper lobes|"
                   r"lung bases|bases|apices))\b", re.I)
_IMPLIED_SIDE = re.compile(r"\b(?:(RUL|RML|RLL)|(LUL|LLL))\b|\b(lingula(?:r)?)\b|"
                           r"(?<!left )(?<!right )\b(middle lobe)\b", re.I)


@lru_cache(maxsize=8192)  # pure; a caption's sentences are read by several checks
def read_sides(sentence: str) -> tuple[tuple[str, int, bool], ...]:
    """(side, position, is_image_side): left/right/both as the text states them."""
    out: list[tuple[str, int, bool]] = []
    for m in _SIDE.finditer(sentence):
        before, after = sentence[:m.start()], sentence[m.end():]
        side = m.group(1).lower()
        if _IMAGE_AFTER.match(after) or _IMAGE_BEFORE.search(before):
            out.append((side, m.start(), True))
        elif not (_NOT_SIDE_AFTER.match(after) or _LIVER_LOBE_AFTER.match(after)):
            out.append((side, m.start(), False))
    for m in _BOTH.finditer(sentence):
        out.append(("both", m.start(), False))
    for m in _IMPLIED_SIDE.finditer(sentence):
        if m.group(1) and m.group(1).isupper():
            out.append(("right", m.start(), False))
        elif m.group(2) and m.group(2).isupper():
            out.append(("left", m.start(), False))
        elif m.group(3):
            out.append(("left", m.start(), False))
        elif m.group(4) and not re.search(r"\b(?:left|right)\s+$", sentence[:m.start()], re.I):
            out.append(("right", m.start(), False))
    return tuple(out)


# ---- organs ------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _organ_re() -> re.Pattern:
    terms = sorted(lx.organ_terms(), key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(re.escape(t) for t in terms) + r")\b(?!\s+window)",
                      re.I)


_LOC_BEFORE = re.compile(
    r"\b(?:in|within|of|involving|inside|into|throughout|affecting|from|at|on|along|"
    r"arising (?:from|in)|originating (?:from|in)|located in|seen in|projecting over|"
    r"overlying|centred in|centered in|confined to)\s+(?:the\s+|both\s+|a\s+)?"
    r"(?:(?:left|right|upper|lower|anterior|posterior|medial|lateral|mid|superior|inferior|"
    r"peripheral|central|dependent|apical|basal|inner|outer)[- ]?\s*){0,3}$", re.I)
_FINDING_AFTER = re.compile(
    r"^\s+(?:[a-z-]+\s+)?(?:lesions?|mass(?:es)?|nodules?|tumou?rs?|cysts?|metasta\w*|"
    r"opacit\w+|consolidation|infiltrates?|effusion|abscess|ha?emorrhage|ha?ematoma|"
    r"calcification|infarct\w*|carcinoma|cancer|focus|foci|abnormalit\w+|collection|"
    r"laceration|contusion|fracture|stones?|calculus|neoplasm|hypodensit\w+|"
    r"hyperintensit\w+)\b", re.I)
_SUBJECT_AFTER = re.compile(r"^\s+(?:shows|contains|demonstrates|has|harbou?rs|bears|"
                            r"is\s+(?:enlarged|involved|affected))\b", re.I)


@lru_cache(maxsize=8192)  # pure; a caption's sentences are read by several checks
def read_organs(sentence: str, all_mentions: bool = False) -> tuple[tuple[str, int, bool], ...]:
    """(organ, position, locative): locative when the text places something in the
    organ ("in the liver", "a renal mass", "the spleen contains ...")."""
    out = []
    for m in _organ_re().finditer(sentence):
        organ = lx.organ_terms()[m.group(1).lower()]
        before, after = sentence[:m.start()], sentence[m.end():]
        loc = bool(_LOC_BEFORE.search(before) or _FINDING_AFTER.match(after) or (
            _SUBJECT_AFTER.match(after) and re.fullmatch(r"\s*(?:the\s+)?(?:(?:left|right)\s+)?",
                                                         before, re.I)))
        if loc or all_mentions:
            out.append((organ, m.start(), loc))
    return tuple(out)


# ---- parts of organs ---------------------------------------------------------------------
_LUNG_LOBE = re.compile(r"\b(?:(right|left)\s+)?(upper|middle|lower|superior|inferior)\s+lobes?"
                        r"\b(?:\s+of\s+the\s+(right|left)\s+lung)?(?!\s+of\s+the\s+(?:liver|"
                        r"thyroid))", re.I)
_LOBE_ABBR = re.compile(r"\b(RUL|RML|RLL|LUL|LLL)\b")
_LINGULA = re.compile(r"\b(?:(right|left)\s+)?lingula(?:r)?\b", re.I)
_LUNG_ZONE = re.compile(
    r"\b(?:(right|left)\s+)?(upper|mid|middle|lower)[- ]?zones?\b(?!\s+of\s+the\s+(?:image|"
    r"slice|picture|frame|view))|\b(?:(right|left)\s+(?:lung\s+)?(apex|base)|lung\s+(apex|"
    r"apices|base|bases)|(apical|basal|basilar)\s+(?:zone|region|lung)s?|(bibasilar|bibasal)|"
    r"(perihilar))\b", re.I)
_ROMAN = r"(?:viii|vii|vi|iv[ab]?|v|iii|ii|i|[1-8][ab]?)"
_SEGMENT = re.compile(rf"\b(?:(?:couinaud\s+)?segments?|couinaud)\s+({_ROMAN}(?:\s*(?:,|and|/|-|to|&)\s*"
                      rf"{_ROMAN})*)\b", re.I)
_LIVER_LOBE = re.compile(r"\b(right|left|caudate|quadrate)\s+(?:hepatic\s+lobe|(?:hepatic\s+)?"
                         r"lobe\s+of\s+the\s+liver)\b|\b(caudate|quadrate)\s+lobe\b", re.I)
_BARE_LOBE = re.compile(r"\b(right|left)\s+lobe\b(?!\s+of\s+the\s+(?:thyroid|prostate|lung))",
                        re.I)
_BRAIN = re.compile(
    r"\b(frontal|parietal|temporal|occipital)\s+(?:lobes?|cortex|cortical|region|white matter|"
    r"pole|horn|operculum)\b|\b(cerebellum|cerebellar|insula|insular|brainstem|brain stem|"
    r"pons|pontine|midbrain|medulla oblongata|basal ganglia|thalamus|thalamic|hippocampus|"
    r"hippocampal|corpus callosum)\b", re.I)
_PROSTATE = re.compile(r"\b(peripheral|transition(?:al)?|central)\s+zones?\b", re.I)


def _segments(spec: str) -> frozenset:
    items = re.findall(_ROMAN, spec.lower())
    nums = {int(i[0]) if i[0].isdigit() else lx.ROMAN[i] for i in items}
    return frozenset(nums)


@lru_cache(maxsize=8192)  # pure; a caption's sentences are read by several checks
def read_parts(sentence: str, liver_context: bool) -> tuple[Part, ...]:
    """Lung lobes and zones, liver segments and lobes (segments only in a liver
    context), brain regions and prostate zones named in the sentence."""
    out: list[Part] = []
    for m in _LUNG_LOBE.finditer(sentence):
        side = (m.group(1) or m.group(3) or "").lower()
        name = lx.LUNG_LOBES[m.group(2).lower()]
        bad = ("there is no left middle lobe (the middle lobe is right-sided)"
               if side == "left" and name == "middle lobe" else None)
        out.append(Part("lung lobe", name, "lung", m.start(), impossible=bad))
    for m in _LOBE_ABBR.finditer(sentence):
        out.append(Part("lung lobe", lx.LOBE_ABBREVIATIONS[m.group(1)][1], "lung", m.start()))
    for m in _LINGULA.finditer(sentence):
        bad = "the lingula is part of the left lung" if (m.group(1) or "").lower() == "right" \
            else None
        out.append(Part("lung lobe", "lingula", "lung", m.start(), impossible=bad))
    for m in _LUNG_ZONE.finditer(sentence):
        word = next(g for g in (m.group(2), m.group(4), m.group(5), m.group(6), m.group(7),
                                m.group(8)) if g).lower()
        key = {"apices": "apex", "bases": "base", "bibasilar": "base", "bibasal": "base"}.get(
            word, word)
        out.append(Part("lung zone", lx.LUNG_ZONES[key], "lung", m.start()))
    taken = []
    for m in _LIVER_LOBE.finditer(sentence):
        lobe = (m.group(1) or m.group(2)).lower()
        taken.append(m.start())
        out.append(Part("liver", f"{lobe} lobe of the liver", "liver", m.start(),
                        segments=lx.LIVER_LOBES[lobe]))
    if liver_context:
        for m in _SEGMENT.finditer(sentence):
            segs = _segments(m.group(1))
            if segs:
                name = "segment " + "/".join(str(s) for s in sorted(segs))
                out.append(Part("liver", name, "liver", m.start(), segments=segs))
        for m in _BARE_LOBE.finditer(sentence):
            if m.start() not in taken and not _LUNG_LOBE.match(sentence, m.start()):
                lobe = m.group(1).lower()
                out.append(Part("liver", f"{lobe} lobe of the liver", "liver", m.start(),
                                segments=lx.LIVER_LOBES[lobe]))
    for m in _BRAIN.finditer(sentence):
        word = (m.group(1) or m.group(2)).lower()
        out.append(Part("brain", lx.BRAIN_REGIONS[word], "brain", m.start()))
    for m in _PROSTATE.finditer(sentence):
        out.append(Part("prostate", lx.PROSTATE_ZONES[m.group(1).lower()], "prostate",
                        m.start()))
    return tuple(sorted(out, key=lambda p: p.pos))


# ---- counts ------------------------------------------------------------------------------
_COUNT_WORDS = sorted(lx.NUMBER_WORDS, key=len, reverse=True)
_SEVERAL = ("multiple", "several", "numerous", "a few", "many", "various")
_COUNT = re.compile(r"(?<![\w.,#×/-])(\d+|" + "|".join(re.escape(w) for w in _COUNT_WORDS
                                                       + list(_SEVERAL)) + r")(?![\w.,%×/])",
                    re.I)
_COUNT_STOP = {"of", "to", "in", "on", "at", "and", "or", "with", "by", "x", "mm", "cm", "from",
               "than", "the", "per", "between", "is", "are", "was", "were", "a", "an", "pixel",
               "pixels", "px", "years", "year", "days", "weeks", "months", "hours", "times"}
_COUNT_SKIP = {"additional", "other", "more", "further", "new", "remaining", "largest",
               "smallest", "biggest", "dominant", "previously", "prior", "index", "target"}
_NOT_COUNT_BEFORE = re.compile(r"(?:\b(?:segments?|grade|stage|level|type|class|series|image|"
                               r"slice|zone|lobe|figure|bi-rads|gleason|number|no\.|size|day|couinaud|"
                               r"cranial nerve|nerve|rib|vertebra|of)|#)\s*$", re.I)


def read_counts(sentence: str, nouns: set[str]) -> list[tuple[int, bool, str, bool]]:
    """(n, at_least, noun, only): "two nodules" -> (2, False, "nodule", False); "multiple
    lesions" -> (2, True, "lesion", False); "a solitary nodule" -> (1, False, "nodule",
    True): the only one of the image. Only nouns in `nouns` (singular) are counted."""
    out = []
    for m in _COUNT.finditer(sentence):
        if _NOT_COUNT_BEFORE.search(sentence[:m.start()]):
            continue
        word = m.group(1).lower()
        at_least = word in _SEVERAL
        n = 2 if at_least else (int(word) if word.isdigit() else lx.NUMBER_WORDS[word])
        only = word in lx.ONLY_WORDS
        words = re.findall(r"[A-Za-z][A-Za-z'-]*|\d+|[^\sA-Za-z\d]", sentence[m.end():])[:6]
        for i, w in enumerate(words):
            low = w.lower()
            if low in _COUNT_SKIP:
                break
            triple = lx.singular(" ".join(x.lower() for x in words[i:i + 3])) \
                if i + 2 < len(words) else ""
            if triple in nouns:  # "clinically significant lesion"
                out.append((n, at_least, triple, only))
                break
            pair = lx.singular(f"{low} {words[i + 1].lower()}") if i + 1 < len(words) else ""
            if pair in nouns:
                out.append((n, at_least, pair, only))
                break
            if lx.singular(low) in nouns:
                out.append((n, at_least, lx.singular(low), only))
                break
            if low in _COUNT_STOP or not w[0].isalpha() or i >= 3:
                break
    return out


# ---- sizes -------------------------------------------------------------------------------
_NUM = r"(\d+(?:\.\d+)?)"
_ULEN = r"(mm|millimet(?:re|er)s?|cm|centimet(?:re|er)s?)"
_NOT_POWER = r"(?![²³^]|[23](?![\d.]))"
_AREA = re.compile(rf"{_NUM}[\s-]*(mm²|mm2|mm\^2|sq\.?\s?mm|square millimet\w*|cm²|cm2|cm\^2|"
                   rf"sq\.?\s?cm|square centimet\w*)", re.I)
_VOLUME = re.compile(rf"{_NUM}[\s-]*(mm³|mm3|mm\^3|cubic millimet\w*|cm³|cm3|cc|ml|"
                     rf"millilit\w*|cubic centimet\w*)(?![a-z])", re.I)
_DIMS = re.compile(rf"{_NUM}\s*(?:{_ULEN}\s*)?(?:x|×|by|\*)\s*{_NUM}(?:\s*(?:{_ULEN}\s*)?"
                   rf"(?:x|×|by|\*)\s*{_NUM})?\s*{_ULEN}\b{_NOT_POWER}", re.I)
_LEN = re.compile(rf"{_NUM}[\s-]*{_ULEN}\b{_NOT_POWER}", re.I)
_PCT = re.compile(rf"{_NUM}\s*(?:%|percent|per cent)\s+of\s+the\s+(?:image|slice|field|frame|"
                  rf"view|picture|image area)", re.I)
_SUBCM = re.compile(r"\bsub-?\s?centimet(?:re|er)|\bless than (?:a|one) centimet(?:re|er)", re.I)
_COMPARATIVE = re.compile(r"(?:less|smaller|more|greater|larger|bigger|fewer|longer|shorter|"
                          r"wider|narrower|thicker|thinner)\s+than\s*$|"
                          r"(?:under|below|over|above|exceed\w*|at least|up to|at most|"
                          r"threshold of|cut-?off of|[<>≤≥])\s*$", re.I)


# lengths that describe the acquisition, not a finding: "5 mm slices", "spacing of 0.7 mm"
_ACQUISITION_AFTER = re.compile(r"^[\s-]*(?:thick\w*|slices?|sections?|collimation|spacing|"
                                r"intervals?|increments?|pixels?|voxels?|resolution|apart|"
                                r"reconstructions?)\b", re.I)
_ACQUISITION_BEFORE = re.compile(r"(?:thickness|spacing|interval|increment|resolution|"
                                 r"collimation|pixel size|voxel size)\s+(?:of\s+)?$", re.I)


def _tol(number: str, factor: float) -> float:
    decimals = len(number.split(".")[1]) if "." in number else 0
    return 0.5 * 10 ** -decimals * factor


def read_sizes(sentence: str) -> list[tuple[str, list[float], float, str]]:
    """(kind, values in mm/mm²/mm³/%, rounding tolerance, the words): lengths (one per
    dimension of "2.3 x 1.8 cm"; a negative value means "at most"), areas, volumes and
    shares of the image. Thresholds ("nodules larger than 8 mm") are not claims."""
    out: list[tuple[str, list[float], float, str]] = []
    used: list[tuple[int, int]] = []

    def free(m: re.Match) -> bool:
        if any(a < m.end() and m.start() < b for a, b in used) or \
                _COMPARATIVE.search(sentence[:m.start()]) or \
                _ACQUISITION_AFTER.match(sentence[m.end():]) or \
                _ACQUISITION_BEFORE.search(sentence[:m.start()]):
            return False
        used.append(m.span())
        return True

    for m in _AREA.finditer(sentence):
        if free(m):
            f = 100.0 if "c" in m.group(2).lower() else 1.0
            out.append(("area", [float(m.group(1)) * f], _tol(m.group(1), f), m.group(0)))
    for m in _VOLUME.finditer(sentence):
        if free(m):
            f = 1.0 if "mm" in m.group(2).lower() or "millimet" in m.group(2).lower() else 1000.0
            out.append(("volume", [float(m.group(1)) * f], _tol(m.group(1), f), m.group(0)))
    for m in _DIMS.finditer(sentence):
        if free(m):
            f = 10.0 if m.group(6).lower().startswith("c") else 1.0
            nums = [g for g in (m.group(1), m.group(3), m.group(5)) if g]
            out.append(("length", [float(x) * f for x in nums], max(_tol(x, f) for x in nums),
                        m.group(0)))
    for m in _LEN.finditer(sentence):
        if free(m):
            f = 10.0 if m.group(2).lower().startswith("c") else 1.0
            out.append(("length", [float(m.group(1)) * f], _tol(m.group(1), f), m.group(0)))
    for m in _SUBCM.finditer(sentence):
        out.append(("length", [-10.0], 0.0, m.group(0)))
    for m in _PCT.finditer(sentence):
        if free(m):
            out.append(("percent", [float(m.group(1))], _tol(m.group(1), 1.0), m.group(0)))
    return out


# ---- modalities and planes ---------------------------------------------------------------
@lru_cache(maxsize=1)
def _modality_table() -> tuple[re.Pattern, dict[str, tuple[str, frozenset | None]]]:
    table: dict[str, tuple[str, frozenset | None]] = {}
    for name, terms in lx.MODALITIES.items():
        for t in terms:
            table[t if t in lx.CASE_SENSITIVE else t.lower()] = (name, None)
    for group, (terms, allowed) in lx.IMPLIED_MODALITY.items():
        for t in terms:
            table[t if t in lx.CASE_SENSITIVE else t.lower()] = (group, allowed)
    alts = []
    for t in sorted(table, key=len, reverse=True):
        alts.append(re.escape(t) if t in lx.CASE_SENSITIVE else f"(?i:{re.escape(t)})")
    return re.compile(_B + "(" + "|".join(alts) + ")" + _E), table


@lru_cache(maxsize=8192)  # pure; a caption's sentences are read by several checks
def read_modalities(text: str) -> tuple[tuple[str, frozenset | None, str], ...]:
    """(modality or attribute group, modalities the attribute admits or None, word)."""
    pattern, table = _modality_table()
    out = []
    for m in pattern.finditer(text):
        word = m.group(1)
        name, allowed = table.get(word) or table[word.lower()]
        out.append((name, allowed, word))
    return tuple(out)


_PLANES = [
    ("axial", re.compile(r"\b(?:trans)?axial\b(?!\s+(?:skeleton|load\w*|length))|\btransverse\s+"
                         r"(?:slice|section|plane|image|view|scan|cut|CT|MRI?|reformat)", re.I)),
    ("coronal", re.compile(r"\bcoronal\b(?!\s+(?:suture|synostosis))", re.I)),
    ("sagittal", re.compile(r"\b(?:mid|para)?sagittal\b(?!\s+(?:suture|sinus|band|synostosis))",
                            re.I)),
    ("frontal", re.compile(r"\b(?i:frontal)\s+(?i:view|projection|radiograph|film|image|chest|"
                           r"CXR|X-ray|plane)\b|\b(?i:postero-?anterior|antero-?posterior)\b|"
                           r"\b(?:PA|AP)\s+(?i:view|projection|radiograph|film|chest|CXR|X-ray|"
                           r"image)\b")),
    ("lateral", re.compile(r"\blateral\s+(?:chest\s+)?(?:view|projection|radiograph|film|image|"
                           r"X-ray)\b", re.I)),
]


@lru_cache(maxsize=8192)  # pure; a caption's sentences are read by several checks
def read_planes(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for plane, pattern in _PLANES:
        out += [(plane, m.group(0)) for m in pattern.finditer(text)]
    return tuple(out)
