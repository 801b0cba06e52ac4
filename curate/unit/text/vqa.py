"""VQA whose answers follow from the computed facts, organised after GMAI-MMBench.

Each question has a category (a clinical task) and a granularity (what the question
gives the reader): `image` (the whole image), `box` (a pixel box [x0, y0, x1, y1] in the
question, x to the right, y down, x1/y1 exclusive) or `mask` ("mask 2": the second
layer of the sample's masks.npz, i.e. `rois[1]`); `patient` asks what the source records
about the patient (a cohort's diagnosis), never what the image shows. Both go in the
QA's `category` as "<category>/<granularity>" (e.g. "laterality/box"), so the Arrow QA
struct is unchanged.

Balance by construction: yes/no questions ask about the true value or a wrong one with
even odds (seeded by the sample id), presence pairs a present finding with an absent one
(the source's declared findings not in this view, a normal view, or a box elsewhere),
multiple choice draws distractors from the same vocabulary, and sizes carry a stated
tolerance with distractors outside it. `per_category` caps each category per image and
categories take turns, so no task crowds out the rest under `max_questions`.
"""

from __future__ import annotations

import random

from curate.unit.text.patient import term as patient_term
from curate.unit.text.phrasings import BANK
from curate.unit.text.place import (
    FRAME_PLANES,
    image_size,
    is_organ,
    organ_of,
    short_where,
    where,
)
from curate.unit.text.templates import family, modality_name

CATEGORIES = ("modality", "organ", "presence", "counting", "localisation", "laterality",
              "size", "attribute", "comparison", "clinical")
GRANULARITIES = ("image", "box", "mask", "patient")  # patient: what the record says
PAIRED = ("presence", "clinical")  # pools ordered yes/no in pairs: kept in order under the cap
FORMS = ("open", "choice", "yesno")
FORM_WEIGHTS = (1, 2, 2)  # open answers are the easiest to guess from the text alone
SIZE_TOLERANCE = 0.2  # a size answer within 20% of the computed value is correct
SIZE_FACTORS = (0.25, 0.4, 0.6, 1.6, 2.5, 4.0)  # distractors, all outside the tolerance
MODALITY_CHOICES = ["CT", "MRI", "X-ray", "ultrasound", "PET", "histopathology", "dermoscopy",
                    "endoscopy", "fundus photography", "mammography", "OCT"]
REGIONS = ["head", "brain", "neck", "chest", "abdomen", "pelvis", "spine", "breast", "heart",
           "knee", "skin", "eye", "colon", "prostate", "liver", "kidney"]
ORGANS = ["right lung", "left lung", "liver", "spleen", "right kidney", "left kidney",
          "pancreas", "heart", "stomach", "bladder", "brain"]
# short appearance words per modality family: (hyper, hypo, iso)
LOOKS = {"CT": ("hyperdense", "hypodense", "isodense"),
         "MR": ("hyperintense", "hypointense", "isointense"),
         "US": ("hyperechoic", "hypoechoic", "isoechoic"),
         "XR": ("more opaque", "more lucent", "of similar opacity"),
         "dermoscopy": ("lighter", "darker", "of similar colour"),
         "pathology": ("paler-staining", "more darkly stained", "of similar staining")}
GENERIC_LOOKS = ("brighter", "darker", "of similar brightness")
MASS_NOUNS = {"pneumothorax", "cardiomegaly", "edema", "oedema", "consolidation", "atelectasis",
              "emphysema", "fibrosis", "pneumonia", "infiltration", "hernia", "no finding"}


def term(label: str) -> str:
    """A label as it reads in a sentence: "Effusion" -> "effusion", "ET" stays."""
    return label if label.isupper() or any(c.isdigit() for c in label) else label.lower()


NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def article(word: str) -> str:
    """"a" or "an" by sound: an MRI, an X-ray, an ultrasound, a CT."""
    if len(word) > 1 and word[:2].isupper():
        return "an" if word[0] in "AEFHILMNORSX" else "a"
    return "an" if word[0].lower() in "aeiou" else "a"


def with_article(label: str) -> str:
    word = term(label)
    if word in MASS_NOUNS or word.endswith("s"):
        return word
    return f"{article(word)} {word}"


def count_words(k: int) -> str:
    return NUMBER_WORDS[k] if k < len(NUMBER_WORDS) else str(k)


def counted(k: int, label: str, points: bool = False) -> str:
    """"one lesion region", "two nodule regions"; findings marked by points are counted
    as themselves ("two clinically significant lesions"), not as regions."""
    if points:
        return f"{count_words(k)} {term(label)}{'' if k == 1 else 's'}"
    return f"{count_words(k)} {term(label)} region{'' if k == 1 else 's'}"


def box_text(bbox) -> str:
    return "[" + ", ".join(str(int(v)) for v in bbox) + "]"


def mm_text(value: float) -> str:
    return f"{value:.1f} mm" if value < 10 else f"{value:.0f} mm"


class Asker:
    """Builds the candidate questions of one sample, per category, in preference order."""

    def __init__(self, ctx: dict, seed: str):
        self.ctx, self.rng = ctx, random.Random(seed)
        self.pools: dict[str, list[dict]] = {c: [] for c in CATEGORIES}
        self.mod = modality_name(ctx["modality"])
        self.rois = list(enumerate(ctx["rois"], 1))  # (mask number, roi)
        self.found = [(i, r) for i, r in self.rois if not is_organ(r)]
        # a point's 1-pixel box marks where it is, not a region: never asked about as a box
        self.boxed = [(i, r) for i, r in self.found if r.get("area_kind") != "point"]
        self.frame = ctx.get("plane") in FRAME_PLANES
        self.spacing = ctx.get("spacing")

    def add(self, category: str, granularity: str, kind: str, answer: str,
            options=(), **fill) -> None:
        text = self.rng.choice(BANK[kind]).format(**fill)
        qtype = "choice" if options else ("closed" if answer in ("yes", "no") else "open")
        options = list(options)
        self.rng.shuffle(options)
        self.pools[category].append({
            "question": text, "answer": answer, "type": qtype,
            "category": f"{category}/{granularity}", "options": options, "origin": "facts"})

    def yes_no(self, truth: bool) -> str:
        return "yes" if truth else "no"

    def flip(self) -> bool:
        return self.rng.random() < 0.5

    def choices(self, answer: str, vocabulary, n: int = 3) -> list[str]:
        pool = [v for v in dict.fromkeys(vocabulary) if v != answer]
        return [answer] + self.rng.sample(pool, min(n, len(pool)))

    # --- categories -------------------------------------------------------------------
    def modality(self) -> None:
        if self.mod == "medical image":
            return  # unknown modality: no question whose answer we do not know
        form = self.rng.choices(FORMS, FORM_WEIGHTS)[0]
        if form == "choice" and self.mod in MODALITY_CHOICES:
            # distractors from the common modalities, so a prior over answers gains little
            self.add("modality", "image", "modality.choice", self.mod,
                     self.choices(self.mod, MODALITY_CHOICES[:6]))
        elif form == "yesno":
            asked = self.mod if self.flip() else self.rng.choice(
                [m for m in MODALITY_CHOICES if m != self.mod])
            self.add("modality", "image", "modality.yesno", self.yes_no(asked == self.mod),
                     mod=asked, a_mod=f"{article(asked)} {asked}")
        else:
            self.add("modality", "image", "modality.open", self.mod)

    def organ(self) -> None:
        self.zone()
        for _, roi in self.boxed:
            organ = organ_of(roi)
            if organ:
                self.add("organ", "box", "organ.box", organ,
                         self.choices(organ, [r["label"] for _, r in self.rois if is_organ(r)]
                                      + ORGANS), box=box_text(roi["bbox"]))
                break
        region = self.ctx.get("anatomy")
        if not region:
            return
        form = self.rng.choices(FORMS, FORM_WEIGHTS)[0]
        if form == "yesno":
            asked = region if self.flip() else self.rng.choice([r for r in REGIONS if r != region])
            self.add("organ", "image", "organ.yesno", self.yes_no(asked == region), region=asked)
        elif form == "choice":
            common = REGIONS[:6] if region in REGIONS[:6] else REGIONS
            self.add("organ", "image", "organ.choice", region, self.choices(region, common))
        else:
            self.add("organ", "image", "organ.open", region)

    def zone(self) -> None:
        """The zone a source names for a point finding (PROSTATEx), among its zone words."""
        zones = self.ctx.get("zones") or []
        for label, group in self.groups().items():
            named = {organ_of(r) for r in group if r.get("area_kind") == "point"}
            if len(group) != 1 or len(named) != 1 or None in named or len(zones) < 2:
                continue
            (zone,) = named
            if zone in zones:
                self.add("organ", "image", "organ.zone", zone, self.choices(zone, zones),
                         x=term(label))

    def presence(self) -> None:
        present = {r["label"] for _, r in self.found}
        organs = {r["label"] for _, r in self.rois if is_organ(r)}
        vocab = [x for x in self.ctx.get("labels", []) if x not in organs
                 and x not in self.ctx.get("image_labels", [])]
        yes, no = [], []
        if present:
            label = self.rng.choice(sorted(present))
            yes.append(("image", "presence.yesno", "yes", {"a_x": with_article(label)}))
            boxed = [(i, r) for i, r in self.boxed if r["label"] == label]
            i, roi = self.rng.choice(boxed) if boxed else (None, None)
            if roi is not None:
                yes.append(("box", "presence.box", "yes",
                            {"a_x": with_article(label), "box": box_text(roi["bbox"])}))
            empty = self.empty_box(roi["bbox"]) if roi is not None else None
            if empty:
                no.append(("box", "presence.box", "no",
                           {"a_x": with_article(label), "box": box_text(empty)}))
        absent = [x for x in vocab if x not in present]
        if self.ctx.get("annotated") and absent:
            no.insert(0, ("image", "presence.yesno", "no",
                          {"a_x": with_article(self.rng.choice(absent))}))
        self.rng.shuffle(yes)  # granularity at random on both sides, so a template
        self.rng.shuffle(no)  # ("is there ... inside the box") does not give the answer
        first, second = (yes, no) if self.flip() else (no, yes)
        for pair in zip(first, second, strict=False):
            for gran, kind, answer, fill in pair:
                self.add("presence", gran, kind, answer, **fill)
        longer = first if len(first) > len(second) else second
        for gran, kind, answer, fill in longer[min(len(first), len(second)):]:
            self.add("presence", gran, kind, answer, **fill)

    def empty_box(self, bbox) -> list[int] | None:
        """A box of the same size that overlaps no outlined finding (mirrored or shifted)."""
        size = image_size(self.found[0][1])
        if size is None:
            return None
        w, h = size
        bw, bh = bbox[2] - bbox[0], bbox[3] - bbox[1]
        starts = [(w - bbox[2], bbox[1]), (bbox[0], h - bbox[3]), (w - bbox[2], h - bbox[3]),
                  (0, 0), (w - bw, 0), (0, h - bh), (w - bw, h - bh)]
        self.rng.shuffle(starts)
        for x0, y0 in starts:
            box = [int(x0), int(y0), int(x0 + bw), int(y0 + bh)]
            if box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h:
                continue
            if not any(box[0] < r["bbox"][2] and r["bbox"][0] < box[2] and
                       box[1] < r["bbox"][3] and r["bbox"][1] < box[3] for _, r in self.found):
                return box
        return None

    def groups(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for _, roi in self.found:
            out.setdefault(roi["label"], []).append(roi)
        return out

    def counting(self) -> None:
        for label, group in self.groups().items():
            n = len(group)
            points = any(r.get("area_kind") == "point" for r in group)
            kind = "counting.points" if points else "counting"  # points are not "regions"
            if n >= 2 and self.flip():
                self.add("counting", "image", f"{kind}.open", str(n), x=term(label))
            else:
                k = n if self.flip() else (n + 1 if n == 1 or self.flip() else n - 1)
                self.add("counting", "image", f"{kind}.yesno", self.yes_no(k == n),
                         x=term(label), k=count_words(k), k_x=counted(k, label, points))

    def named(self, label: str, group: list[dict]) -> tuple[dict, str]:
        roi = max(group, key=lambda r: r["area_px"] or 0)
        return roi, (f"largest {term(label)}" if len(group) > 1 else term(label))

    def unnamed(self, group: list[dict]) -> bool:
        """Several findings of a label, one a point: none can be called the largest."""
        return len(group) > 1 and any(r.get("area_kind") == "point" for r in group)

    def localisation(self) -> None:
        for label, group in self.groups().items():
            if self.unnamed(group):
                continue
            roi, name = self.named(label, group)
            answer, options = self.where_options(roi)
            if len(options) >= 2 and self.flip():
                self.add("localisation", "image", "localisation.choice", answer, options, x=name)
            elif len(options) >= 2:
                full, alts = self.where_options(roi, short=False)
                asked = full if self.flip() else self.rng.choice(alts[1:])
                self.add("localisation", "image", "localisation.yesno",
                         self.yes_no(asked == full), x=name, place=asked)
            if len(group) == 1 and roi.get("area_kind") != "point":
                boxes = [box_text(roi["bbox"])] + [box_text(b) for b in self.other_boxes(roi)]
                if len(boxes) >= 3:
                    self.add("localisation", "box", "localisation.box", boxes[0], boxes,
                             x=name)
        masks = [(i, r) for i, r in self.found if r["area_kind"] == "mask"]
        if masks:
            i, roi = self.rng.choice(masks)
            answer, options = self.where_options(roi)
            if len(options) >= 2:
                self.add("localisation", "mask", "localisation.mask", answer, options, m=str(i))

    def where_options(self, roi: dict, short: bool = True) -> tuple[str, list[str]]:
        """The region's location and up to three others in the same words (same frame),
        the answer first; `short` drops the leading preposition ("in the ...")."""
        size = image_size(roi)
        bare = dict(roi, relations=[])
        say = short_where if short else where
        answer = say(bare, self.ctx)
        if size is None:
            return answer, [answer]
        w, h = size
        alts = []
        for fx in (1 / 6, 1 / 2, 5 / 6):
            for fy in (1 / 6, 1 / 2, 5 / 6):
                moved = dict(bare, centroid=[fx * w, fy * h], bbox_norm=roi["bbox_norm"])
                if self.frame:
                    # image right is the patient's left; keep the midline band
                    moved["laterality"] = ("right", "midline", "left")[int(fx * 3)]
                alts.append(say(moved, self.ctx))
        return answer, self.choices(answer, alts)

    def other_boxes(self, roi: dict) -> list[list[int]]:
        out = []
        for _ in range(3):
            box = self.empty_box(roi["bbox"])
            if box and box not in out:
                out.append(box)
        return out

    def laterality(self) -> None:
        if not self.frame:
            return
        for label, group in self.groups().items():
            sides = {r["laterality"] for r in group}
            if sides <= {"left", "right"} and len(sides) == 1 and not self.unnamed(group):
                (side,) = sides
                name = term(label) if len(group) == 1 else f"largest {term(label)}"
                if self.flip():
                    self.add("laterality", "image", "laterality.choice", side, ["left", "right"],
                             x=name)
                else:
                    asked = side if self.flip() else {"left": "right", "right": "left"}[side]
                    self.add("laterality", "image", "laterality.yesno",
                             self.yes_no(asked == side), x=name, side=asked)
        sided = [r for _, r in self.boxed if r["laterality"] in ("left", "right")]
        if sided:
            roi = self.rng.choice(sided)
            self.add("laterality", "box", "laterality.box", roi["laterality"], ["left", "right"],
                     box=box_text(roi["bbox"]))

    def size(self) -> None:
        if not self.spacing:
            return  # sizes in mm need the pixel spacing; pixels say little clinically
        tol = f"{100 * SIZE_TOLERANCE:.0f}%"
        for label, group in self.groups().items():
            roi, name = self.named(label, group)
            d = roi.get("longest_diameter_mm")
            if roi["area_kind"] != "mask" or not d:
                continue
            form = self.rng.choice(("open", "choice", "yesno"))
            if form == "open":
                self.add("size", "image", "size.open", mm_text(d), x=name, tol=tol)
            elif form == "choice":
                opts = [mm_text(d)] + [mm_text(d * f) for f in self.rng.sample(SIZE_FACTORS, 3)]
                self.add("size", "image", "size.choice", opts[0], opts, x=name)
            else:
                t = d * (0.6 if self.flip() else 1.6)
                self.add("size", "image", "size.yesno", self.yes_no(d > t), x=name,
                         t=mm_text(t).removesuffix(" mm"))
        masks = [(i, r) for i, r in self.found if r["area_kind"] == "mask" and r.get("area_mm2")]
        if masks:
            i, roi = self.rng.choice(masks)
            if self.flip():
                self.add("size", "mask", "size.mask", f"{roi['area_mm2']:.0f} mm²", m=str(i),
                         tol=tol)
            else:
                self.add("size", "box", "size.box", mm_text(roi["longest_diameter_mm"]),
                         box=box_text(roi["bbox"]), tol=tol)

    def looks(self) -> tuple[str, str, str]:
        return LOOKS.get(family(self.ctx["modality"]) or "", GENERIC_LOOKS)

    def attribute(self) -> None:
        words = self.looks()
        code_word = dict(zip(("hyper", "hypo", "iso"), words, strict=True))
        for label, group in self.groups().items():
            roi, name = self.named(label, group)
            if roi["intensity"] not in code_word:
                continue
            truth = code_word[roi["intensity"]]
            if self.rng.random() < 1 / 3:  # mostly yes/no: the options name the modality
                self.add("attribute", "image", "attribute.choice", truth, list(words), x=name)
            else:
                # ask about the true look or the opposite one (never the clumsy "similar")
                other = {words[0]: words[1], words[1]: words[0]}.get(truth) or \
                    self.rng.choice(words[:2])
                asked = truth if truth != words[2] and self.flip() else other
                self.add("attribute", "image", "attribute.yesno", self.yes_no(asked == truth),
                         x=name, word=asked)
        masks = [(i, r) for i, r in self.found
                 if r["area_kind"] == "mask" and r["intensity"] in code_word]
        if masks:
            i, roi = self.rng.choice(masks)
            self.add("attribute", "mask", "attribute.mask", code_word[roi["intensity"]],
                     list(words), m=str(i))

    def comparison(self) -> None:
        masks = [(i, r) for i, r in self.found if r["area_kind"] == "mask"]
        if len(masks) >= 2:
            (i, a), (j, b) = self.rng.sample(masks, 2)
            if max(a["area_px"], b["area_px"]) > 1.1 * min(a["area_px"], b["area_px"]):
                answer = f"mask {i}" if a["area_px"] > b["area_px"] else f"mask {j}"
                self.add("comparison", "mask", "comparison.mask", answer,
                         [f"mask {i}", f"mask {j}"], m=str(i), m2=str(j))
        if self.frame and len(self.boxed) >= 2:
            (_, a), (_, b) = self.rng.sample(self.boxed, 2)
            dx = a["centroid"][0] - b["centroid"][0]  # image right is the patient's left
            if abs(dx) > 0.5 * max(a["bbox"][2] - a["bbox"][0], b["bbox"][2] - b["bbox"][0]):
                self.add("comparison", "box", "comparison.box", self.yes_no(dx > 0),
                         box=box_text(a["bbox"]), box2=box_text(b["bbox"]))

    def clinical(self) -> None:
        labels = list(self.ctx.get("image_labels") or [])
        if not labels:
            return
        roi_labels = {r["label"] for _, r in self.rois}
        others = [x for x in self.ctx.get("labels", []) if x not in labels and x not in roi_labels]
        pair = [("yes", self.rng.choice(labels))]
        if others:
            pair.append(("no", self.rng.choice(others)))
        if self.flip():
            pair.reverse()
        if len(labels) == 1 and others and self.flip():  # a choice, then yes or no
            self.add("clinical", "image", "clinical.choice", labels[0],
                     self.choices(labels[0], others))
        for answer, label in pair:
            self.add("clinical", "image", "clinical.yesno", answer, x=term(label))

    def record(self) -> None:
        """What the source records about the patient (a cohort's diagnosis): asked of the
        patient, never whether this image shows it."""
        labels = self.ctx.get("patient_labels") or []
        if labels:
            self.add("clinical", "patient", "clinical.record",
                     ", ".join(patient_term(x) for x in labels))


def ask(ctx: dict, max_questions: int, seed: str, per_category: int = 2) -> list[dict]:
    """Questions for one sample: at most `per_category` per category, categories taking
    turns in a seeded order until `max_questions`."""
    asker = Asker(ctx, seed)
    for category in CATEGORIES:
        getattr(asker, category)()
    asker.record()  # after the clinical pairs, which keep their order under the cap
    for category, pool in asker.pools.items():
        if category not in PAIRED:  # granularities take their chance under the cap
            asker.rng.shuffle(pool)
    pools = {c: q[:per_category] for c, q in asker.pools.items() if q}
    order = list(pools)
    asker.rng.shuffle(order)
    out: list[dict] = []
    for rank in range(per_category):
        for category in order:
            if rank < len(pools[category]) and len(out) < max_questions:
                out.append(pools[category][rank])
    return out
