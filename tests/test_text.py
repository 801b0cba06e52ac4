"""Grounded descriptions, the knowledge level and GMAI-MMBench-style VQA, from hand-made facts."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from curate.unit.text.knowledge import knowledge_statements, statement_refs
from curate.unit.text.phrasings import BANK, template_of
from curate.unit.text.place import lobe_approximation, lung_zone, organ_phrase, where
from curate.unit.text.templates import describe, levels_for
from curate.unit.text.vqa import CATEGORIES, GRANULARITIES, SIZE_TOLERANCE, ask

W, H = 200, 160


def roi(label="nodule", bbox=(20, 30, 40, 50), lat="right", kind="mask", area_px=300,
        intensity="hyper", origin="annotation", relations=(), finding=None, **kw):
    x0, y0, x1, y1 = bbox
    out = {"label": label, "finding": finding or label, "bbox": list(bbox),
           "bbox_norm": [x0 / W, y0 / H, x1 / W, y1 / H], "area_px": area_px,
           "area_frac": area_px / (W * H), "area_mm2": area_px * 0.25, "area_kind": kind,
           "longest_diameter_mm": 12.0, "volume_mm3": None,
           "centroid": [(x0 + x1) / 2, (y0 + y1) / 2], "laterality": lat, "location": "",
           "intensity": intensity, "intensity_inside": 1.0, "intensity_around": 0.0,
           "relations": list(relations), "origin": origin, "confidence": 1.0}
    out.update(kw)
    return out


def ctx(rois=(), modality="CT", plane="axial", anatomy="chest", spacing=(0.5, 0.5),
        labels=("nodule",), image_labels=(), annotated=True):
    rois = list(rois)
    return {"modality": modality, "anatomy": anatomy, "plane": plane,
            "window": {"method": "none", "name": None, "low": 0.0, "high": 1.0},
            "rois": rois, "annotated": annotated, "labels": sorted(labels),
            "image_labels": list(image_labels),
            "findings": sorted({r["finding"] for r in rois} | set(image_labels)),
            "spacing": spacing}


def lungs_and_nodule(zone_y: int, side: str = "right"):
    """A frontal view with expert lungs (rows 20-140) and a nodule in one of them."""
    # image right is the patient's left
    right_lung = roi("right lung", (10, 20, 90, 140), "right", origin="expert:ct_lungs",
                     area_px=8000)
    left_lung = roi("left lung", (110, 20, 190, 140), "left", origin="expert:ct_lungs",
                    area_px=8000)
    x0 = 40 if side == "right" else 140
    nodule = roi("nodule", (x0, zone_y - 5, x0 + 10, zone_y + 5), side,
                 relations=[f"in the {side} lung"])
    return ctx([left_lung, nodule, right_lung], modality="XR", plane="frontal")


# --- place -------------------------------------------------------------------------------

def test_lung_zones_are_thirds_of_the_lung_field_and_map_to_lobes():
    bbox = [0, 20, 50, 140]  # rows 20..140: thirds at 60 and 100
    assert [lung_zone(y, bbox) for y in (21, 59, 61, 99, 101, 139)] == [
        "upper", "upper", "middle", "middle", "lower", "lower"]
    assert lung_zone(0, bbox) == "upper" and lung_zone(500, bbox) == "lower"  # clamped
    assert lobe_approximation("right", "middle") == "right middle lobe"
    assert lobe_approximation("left", "middle") == "lingula of the left upper lobe"
    assert lobe_approximation("left", "lower") == "left lower lobe"
    assert lobe_approximation(None, "upper") is None


@pytest.mark.parametrize("y,side,zone,lobe", [
    (30, "right", "upper", "right upper lobe"), (80, "right", "middle", "right middle lobe"),
    (130, "left", "lower", "left lower lobe")])
def test_frontal_nodule_gets_zone_and_lobe_from_the_expert_lung(y, side, zone, lobe):
    c = lungs_and_nodule(y, side)
    text = where(c["rois"][1], c)
    assert text == f"in the {zone} zone of the {side} lung (approximately the {lobe})"


def test_an_organ_whose_side_contradicts_the_laterality_is_not_named():
    c = lungs_and_nodule(80, "right")
    c["rois"][1]["relations"] = ["in the left lung"]  # expert says left, midline says right
    assert organ_phrase(c["rois"][1], c["rois"], "frontal") is None
    assert "left" not in where(c["rois"][1], c)


def test_location_phrases_use_one_frame_of_reference():
    axial = ctx([roi(bbox=(20, 60, 40, 80), lat="left")])
    text = where(axial["rois"][0], axial)
    assert text == "in the chest on the patient's left side"
    assert "slice" not in text and "central" not in text
    assert where(roi(bbox=(90, 5, 110, 20), lat="midline"), axial) == \
        "in the anterior chest near the midline"
    skin = ctx([roi(bbox=(150, 120, 190, 150), lat=None)], modality="dermoscopy", plane="none")
    text = where(skin["rois"][0], skin)
    assert text == "towards the bottom-right of the image" and "patient" not in text
    sagittal = ctx([roi(bbox=(10, 10, 30, 30), lat=None)], plane="sagittal", anatomy="brain")
    assert where(sagittal["rois"][0], sagittal) == "in the upper anterior part of the brain"


# --- descriptions --------------------------------------------------------------------------

def test_sizes_are_in_mm_with_volume_and_pixels_only_without_spacing():
    r = roi(volume_mm3=905.0)
    _, caption, _ = describe(ctx([r]))
    assert "12.0 mm in longest diameter" in caption and "75 mm²" in caption
    assert "905 mm³" in caption and "pixel" not in caption
    box = roi(kind="box", bbox=(20, 30, 44, 46))
    _, caption, _ = describe(ctx([box], modality="XR", plane="frontal"))
    assert "12.0 × 8.0 mm" in caption  # 24 x 16 px at 0.5 mm
    unknown = dict(roi(), area_mm2=None, longest_diameter_mm=None)
    _, caption, _ = describe(ctx([unknown], spacing=None))
    assert "20 × 20 pixels" in caption and "spacing is not recorded" in caption
    assert " mm" not in caption


@pytest.mark.parametrize("modality,code,words", [
    ("CT", "hyper", "hyperdense, of higher attenuation"),
    ("CT", "hypo", "hypodense"),
    ("MR", "hyper", "hyperintense, of higher signal"),
    ("US", "hypo", "hypoechoic"),
    ("DX", "hyper", "more opaque (denser)"),
    ("XR", "hypo", "more lucent"),
    ("dermoscopy", "hypo", "darker in colour than the surrounding skin"),
    ("pathology", "hypo", "more darkly stained"),
    ("endoscopy", "hyper", "brighter than the surrounding area"),
])
def test_appearance_uses_the_modality_s_own_words(modality, code, words):
    levels = levels_for(ctx([roi(intensity=code)], modality=modality))
    assert words in levels["texture"]


def test_templates_pass_the_text_fact_check_and_are_deterministic():
    from curate.unit.text.consistency import check_text

    cases = [ctx([roi(), roi(bbox=(150, 100, 170, 130), lat="left", intensity="hypo")]),
             lungs_and_nodule(130, "left"), lungs_and_nodule(30, "right"),
             ctx([roi(kind="box", volume_mm3=None)], modality="XR", plane="frontal"),
             ctx([roi(lat=None)], modality="dermoscopy", plane="none", spacing=None),
             ctx([], labels=("nodule", "mass")), ctx([], image_labels=("Effusion",))]
    for c in cases:
        _, caption, _ = describe(c)
        assert check_text(caption, c) == [], caption
        assert describe(c)[1] == caption


def test_normal_views_name_what_is_absent_and_organs_are_context():
    levels = levels_for(ctx([], labels=("nodule",)))
    assert levels["roi"].startswith("No nodule is outlined in this view")
    levels = levels_for(lungs_and_nodule(80))
    assert "Organs outlined by expert models (ct_lungs): left lung, right lung." in levels["organ"]
    assert "1 nodule region" in levels["relations"] and "lung region" not in levels["relations"]


# --- knowledge level ---------------------------------------------------------------------

PASSAGES = [
    {"id": "colon-cancer-ct#0", "findings": ["colon_tumor"],
     "text": "Colon cancer appears as irregular wall thickening with a shouldered margin on CT."},
    {"id": "lung-nodules#1", "findings": ["nodule", "lung_nodule"],
     "text": "# Nodules\nA nodule measures up to 30 mm. A solid nodule appears as a round "
             "opacity with a well-defined margin on CT. Nodules in the right lung are common."},
    {"id": "lung-nodules#2", "findings": ["nodule"],
     "text": "Ground-glass nodules appear hazy on CT, with vessels visible through the opacity."},
]


def test_knowledge_uses_only_passages_of_a_finding_present_and_cites_each():
    c = ctx([roi()])
    out = knowledge_statements(c, PASSAGES)
    assert [s["ref"] for s in out] == ["lung-nodules#1", "lung-nodules#2"]
    first = out[0]["text"]
    # the sentence is verbatim, and the ones with numbers or sides were passed over
    assert "A solid nodule appears as a round opacity with a well-defined margin on CT" in first
    assert "30 mm" not in first and "right lung" not in first
    assert statement_refs(" ".join(s["text"] for s in out)) == ["lung-nodules#1", "lung-nodules#2"]
    # a view without the finding, or a finding no passage is tagged with, gets nothing
    assert knowledge_statements(ctx([]), PASSAGES) == []
    assert knowledge_statements(ctx([roi(label="lesion", finding="hyperdense_lesion")]),
                                PASSAGES) == []


def test_grounded_describe_appends_cited_knowledge_to_the_caption():
    from types import SimpleNamespace

    from curate.describe.stage import apply_results

    c = ctx([roi()])
    rows = [{"sample_id": "s", "caption": describe(c)[1], "knowledge_refs": [],
             "quality": {"text_flags": ["stale"]}}]
    req = SimpleNamespace(ctx=c, passages=PASSAGES)
    (row,), failed = apply_results(rows, [req], None, "grounded", "u", "src")
    assert failed == [] and row["quality"]["text_flags"] == []
    assert row["caption"].startswith(rows[0]["caption"] + " Background on nodule: ")
    assert statement_refs(row["caption"]) == ["lung-nodules#1", "lung-nodules#2"]
    assert set(statement_refs(row["caption"])) <= set(row["knowledge_refs"])


def test_knowledge_sentences_must_name_the_finding_as_a_word():
    c = ctx([roi(label="lesion", finding="melanoma")], modality="dermoscopy", plane="none")
    passages = [{"id": "skin#0", "findings": ["melanoma"], "text": (
        "Melanocytic naevi are common benign proliferations of melanocytes with a regular "
        "pigment network. Melanomas often show an irregular pigment network and blue-white "
        "structures in dermoscopy.")}]
    (statement,) = knowledge_statements(c, passages)
    assert "Melanomas often show an irregular pigment network" in statement["text"]
    assert "naevi" not in statement["text"]


def test_knowledge_sentences_that_the_fact_check_flags_are_skipped():
    c = ctx([roi()], modality="XR", plane="frontal")  # "on CT" contradicts an X-ray
    assert knowledge_statements(c, PASSAGES) == []


# --- VQA -----------------------------------------------------------------------------------

def test_the_bank_has_five_phrasings_per_kind_and_every_phrasing_is_recognised():
    fill = {"x": "nodule", "a_x": "a nodule", "mod": "CT", "a_mod": "a CT", "box": "[1, 2, 3, 4]",
            "box2": "[5, 6, 7, 8]", "m": "1", "m2": "2", "side": "left", "word": "hyperdense",
            "t": "12", "k": "two", "k_x": "two nodule regions", "region": "chest", "tol": "20%",
            "place": "in the right lung"}
    assert {k.split(".")[0] for k in BANK} == set(CATEGORIES)
    for kind, phrasings in BANK.items():
        assert len(set(phrasings)) >= 5, kind
        for i, text in enumerate(phrasings):
            assert template_of(text.format(**fill)) == f"{kind}#{i}"


def varied_contexts(n: int = 120) -> list[tuple[dict, str]]:
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            c = ctx([roi(lat="right" if i % 8 else "left")], labels=("nodule", "mass"))
        elif kind == 1:
            c = ctx([roi(), roi(bbox=(150, 100, 170, 130), lat="left", area_px=500)])
        elif kind == 2:
            c = ctx([], labels=("nodule",))
        else:
            c = ctx([roi(lat=None, intensity="hypo")], modality="dermoscopy", plane="none",
                    spacing=None, labels=("lesion",), anatomy="skin")
            c["rois"][0]["label"] = c["rois"][0]["finding"] = "lesion"
            c["findings"] = ["lesion"]
        out.append((c, f"sample-{i}"))
    return out


def test_questions_are_categorised_capped_and_deterministic():
    for c, seed in varied_contexts(40):
        qas = ask(c, max_questions=10, seed=seed, per_category=2)
        assert qas == ask(c, max_questions=10, seed=seed, per_category=2)
        assert 0 < len(qas) <= 10
        cats = Counter(q["category"].split("/")[0] for q in qas)
        assert all(n <= 2 for n in cats.values())
        for q in qas:
            cat, gran = q["category"].split("/")
            assert cat in CATEGORIES and gran in GRANULARITIES
            assert template_of(q["question"]), q["question"]
            if q["type"] == "choice":
                assert q["answer"] in q["options"] and len(set(q["options"])) == len(q["options"])
            if q["type"] == "closed":
                assert q["answer"] in ("yes", "no")
        assert len(ask(c, max_questions=3, seed=seed)) <= 3
        assert all(n <= 1 for n in Counter(
            q["category"].split("/")[0] for q in ask(c, 10, seed, per_category=1)).values())


def test_yes_no_answers_are_balanced():
    answers = [q["answer"] for c, seed in varied_contexts() for q in ask(c, 10, seed)
               if q["type"] == "closed"]
    assert len(answers) > 200
    assert 0.4 <= answers.count("yes") / len(answers) <= 0.6


def test_presence_negatives_come_from_normal_views_absent_findings_and_empty_boxes():
    normal = ask(ctx([], labels=("nodule",)), 10, "n")
    assert [(q["category"], q["answer"]) for q in normal if q["category"].startswith("presence")] \
        == [("presence/image", "no")]
    c = ctx([roi()], labels=("nodule", "mass"))
    qas = [q for s in range(30) for q in ask(c, 20, f"s{s}", per_category=4)
           if q["category"].startswith("presence")]
    negatives = [q for q in qas if q["answer"] == "no"]
    assert any("mass" in q["question"] for q in negatives)
    for q in negatives:
        if q["category"] == "presence/box":
            x0, y0, x1, y1 = map(int, re.findall(r"\d+", q["question"].split("[")[1])[:4])
            assert x1 <= 20 or x0 >= 40 or y1 <= 30 or y0 >= 50  # no overlap with the nodule
    assert {q["answer"] for q in qas if "mass" not in q["question"]
            and q["category"] == "presence/image"} == {"yes"}


def test_size_answers_state_a_tolerance_and_distractors_lie_outside_it():
    c = ctx([roi()])
    seen = set()
    for s in range(60):
        for q in ask(c, 20, f"s{s}", per_category=3):
            if not q["category"].startswith("size"):
                continue
            seen.add(q["category"])
            if q["type"] == "open":
                assert f"{100 * SIZE_TOLERANCE:.0f}%" in q["question"]
            if q["type"] == "choice":
                true = float(q["answer"].split()[0])
                others = [float(o.split()[0]) for o in q["options"] if o != q["answer"]]
                assert all(abs(o - true) > SIZE_TOLERANCE * true for o in others)
    assert seen == {"size/image", "size/mask", "size/box"}
    assert not any(q["category"].startswith("size") for q in
                   ask(ctx([roi()], spacing=None), 20, "x", per_category=3))


def test_mask_and_box_questions_point_at_the_right_region():
    left = roi(bbox=(150, 100, 170, 130), lat="left", area_px=500)
    c = ctx([roi(area_px=300), left])
    for s in range(40):
        for q in ask(c, 20, f"s{s}", per_category=3):
            if q["category"] == "comparison/mask":
                assert q["answer"] == "mask 2"  # the larger one
            if q["category"] == "laterality/box":
                box = "[150, 100, 170, 130]"
                assert (q["answer"] == "left") == (box in q["question"])
            if q["category"] == "localisation/box":
                assert q["answer"] in ("[20, 30, 40, 50]", "[150, 100, 170, 130]")


def test_source_class_labels_become_clinical_questions():
    c = ctx([], labels=("Effusion", "Pneumothorax"), image_labels=("Effusion",))
    qas = [q for s in range(10) for q in ask(c, 10, f"s{s}")
           if q["category"] == "clinical/image"]
    yes = {q["question"] for q in qas if q["answer"] == "yes"}
    no = {q["question"] for q in qas if q["answer"] == "no"}
    assert yes and no and all("effusion" in q for q in yes) and all("pneumothorax" in q for q in no)
    assert any(q["type"] == "choice" and q["answer"] == "Effusion" for q in qas)


def test_the_recipe_caps_reach_the_unit_pipeline(tmp_path):
    from curate.describe.stage import row_context
    from curate.ingest import adapter
    from curate.model.recipe import Recipe, SourceSpec
    from curate.sources.phantoms import ensure_phantoms, phantom_layout
    from curate.unit.pipeline import process_unit
    from curate.unit.text.consistency import check_text

    spec = SourceSpec(name="x", format="image_boxes", modality="XR", anatomy="chest",
                      findings={"nodule": "nodule", "mass": "mass"},
                      generate={"kind": "xray_boxes", "cases": 2, "seed": 2},
                      layout=dict(phantom_layout("xray_boxes").model_dump(),
                                  pixel_spacing_mm=[0.7, 0.7]))
    root = ensure_phantoms(spec.generate, tmp_path / "x")
    recipe = Recipe.model_validate({"name": "t", "sources": [],
                                    "ask": {"max_questions": 6, "per_category": 1}})
    units, _ = adapter(spec.format)[0](spec, root)
    samples = [s for u in units for s in process_unit(spec, root, u.stamp(root, "x"),
                                                       recipe).samples]
    assert samples
    for s in samples:
        cats = [q["category"].split("/")[0] for q in s["vqa"]]
        assert 0 < len(cats) <= 6 and len(set(cats)) == len(cats)
        assert " mm" in s["caption"] and "pixel" not in s["caption"]
        assert s["quality"]["text_flags"] == []
        c = row_context(s, spec)
        assert all(check_text(q["answer"], c) == [] for q in s["vqa"] if q["type"] == "open")
