"""The consistency reader on sentences written for this test (not the benchmark's set,
not the templates' wording): each names the kind of contradiction it holds, or none."""

import json
from pathlib import Path

import pytest

from curate.unit.text.consistency import check_qa, check_text
from curate.unit.text.lexicon import canonical_modality, region_of, singular
from curate.unit.text.reader import read_counts, read_parts, read_sides, read_sizes
from curate.unit.text.templates import describe


def roi(label="nodule", lat="right", bbox=(10, 10, 30, 30), size=(100, 100), **kw):
    x0, y0, x1, y1 = bbox
    base = {"label": label, "finding": label, "bbox": list(bbox),
            "bbox_norm": [x0 / size[0], y0 / size[1], x1 / size[0], y1 / size[1]],
            "area_px": 400, "area_frac": 0.04, "area_mm2": 100.0, "area_kind": "mask",
            "longest_diameter_mm": 12.0, "volume_mm3": None, "centroid": [20, 20],
            "laterality": lat, "location": "upper zone of the image, on the patient's right side",
            "intensity": "hyper", "relations": [], "origin": "annotation", "confidence": 1.0}
    base.update(kw)
    return base


def ctx(rois=None, **kw):
    base = {"modality": "CT", "anatomy": "chest", "plane": "axial",
            "window": {"method": "ct_window", "name": "lung", "low": -1350, "high": 150},
            "rois": [roi()] if rois is None else rois, "annotated": True, "labels": ["nodule"],
            "image_labels": [], "spacing": (0.5, 0.5)}
    base.update(kw)
    return base


def kinds(text, c):
    return {f.split(":", 1)[0] for f in check_text(text, c)}


CXR_CONSOLIDATION = ctx([roi("consolidation", "right", (150, 500, 400, 700), (1000, 1000),
                             longest_diameter_mm=70.0, area_mm2=1900.0, lung_zone="lower")],
                        modality="CR", plane="frontal", spacing=(0.2, 0.2),
                        labels=["consolidation"])
HEAD_BLEED = ctx([roi("hemorrhage", "right", (60, 40, 90, 70), (256, 256),
                      longest_diameter_mm=38.0, area_mm2=700.0, volume_mm3=25000.0,
                      brain_region="right frontal lobe")],
                 anatomy="head", spacing=(1.0, 1.0), labels=["hemorrhage", "edema"])
LIVER_SEG8 = ctx([roi("lesion", "right", (100, 100, 140, 150), (512, 512), longest_diameter_mm=42.0,
                      area_mm2=1150.0, liver_segment="8", relations=["in the liver"])],
                 anatomy="abdomen", spacing=(0.9, 0.9), labels=["lesion"])
RIGHT_CYSTS = ctx([roi("cyst", "right", (100, 250, 120, 270), (512, 512), longest_diameter_mm=16.0,
                       relations=["in the right kidney"]),
                   roi("cyst", "right", (110, 290, 125, 305), (512, 512), longest_diameter_mm=12.0,
                       relations=["in the right kidney"])],
                  anatomy="abdomen", spacing=(0.8, 0.8), labels=["cyst"])
ENDO_POLYP = ctx([roi("polyp", None, (300, 200, 420, 330), (640, 480), longest_diameter_mm=None,
                      area_mm2=None)],
                 modality="endoscopy", anatomy="colon", plane="none", spacing=None,
                 labels=["polyp"])

CASES = [
    # consistent paraphrases
    (CXR_CONSOLIDATION, "PA radiograph: airspace consolidation at the right base.", set()),
    (CXR_CONSOLIDATION, "Right lower zone consolidation; the left lung is well aerated and clear.",
     set()),
    (CXR_CONSOLIDATION, "Consolidation occupies the left-hand side of the image, lower zone.",
     set()),
    (CXR_CONSOLIDATION, "No consolidation in the left lung.", set()),
    (CXR_CONSOLIDATION, "Both lungs, the heart and the left hemidiaphragm are visible.", set()),
    (HEAD_BLEED, "Non-contrast CT head: an acute hemorrhage in the right frontal lobe, ~25 mL.",
     set()),
    (HEAD_BLEED, "A right frontal intraparenchymal haemorrhage measuring 3.8 cm is present.", set()),
    (LIVER_SEG8, "A 4.2 cm hepatic lesion in segment VIII, right lobe of the liver.", set()),
    (LIVER_SEG8, "Transaxial CT: one lesion within the liver dome (Couinaud 8 region).", set()),
    (RIGHT_CYSTS, "Two simple cysts in the right kidney, the larger 1.6 cm.", set()),
    (RIGHT_CYSTS, "Both renal cysts are right-sided.", set()),
    (ENDO_POLYP, "Colonoscopic view of a pedunculated polyp.", set()),
    (ENDO_POLYP, "A single polyp sits in the right lower part of the image.", set()),
    # contradictions, one kind each
    (CXR_CONSOLIDATION, "Left basilar consolidation.", {"side"}),
    (CXR_CONSOLIDATION, "Consolidation projects over the right side of the image.", {"side"}),
    (CXR_CONSOLIDATION, "Right upper zone airspace consolidation.", {"lobe"}),
    (CXR_CONSOLIDATION, "Consolidation is seen on this axial slice.", {"plane"}),
    (CXR_CONSOLIDATION, "Sonographic consolidation of the right lung.", {"modality"}),
    (CXR_CONSOLIDATION, "Two foci of consolidation are seen.", {"count"}),
    (HEAD_BLEED, "Left frontal haemorrhage.", {"side"}),
    (HEAD_BLEED, "The bleed is centred in the right occipital lobe.", {"lobe"}),
    (HEAD_BLEED, "A hemorrhage within the spleen.", {"organ"}),
    (HEAD_BLEED, "A small 9 mm hemorrhage is present.", {"size"}),
    (HEAD_BLEED, "The haemorrhage is T2 hyperintense on this MR image.", {"modality"}),
    (HEAD_BLEED, "Coronal image of the head with a right frontal bleed.", {"plane"}),
    (LIVER_SEG8, "A lesion in segment 2 of the liver.", {"lobe"}),
    (LIVER_SEG8, "A lesion in the pancreas.", {"organ"}),
    (LIVER_SEG8, "Multiple hepatic lesions are seen.", {"count"}),
    (LIVER_SEG8, "The lesion has a volume of 250 ml.", {"size"}),
    (RIGHT_CYSTS, "Two cysts in the left kidney.", {"side"}),
    (RIGHT_CYSTS, "A single right renal cyst.", {"count"}),
    (RIGHT_CYSTS, "Two cysts arising from the liver.", {"organ"}),
    (RIGHT_CYSTS, "Two 5 cm renal cysts.", {"size"}),
    (ENDO_POLYP, "The polyp measures 8 mm.", {"size"}),
    (ENDO_POLYP, "A polyp in the left colon of the patient, on the patient's left.", {"side"}),
    (ENDO_POLYP, "Axial CT colonography shows a polyp.", {"modality"}),
    (ENDO_POLYP, "Three polyps are seen.", {"count"}),
]


@pytest.mark.parametrize("c,text,want", CASES, ids=[t for _, t, _ in CASES])
def test_reader_finds_the_contradiction_kind(c, text, want):
    assert kinds(text, c) == want, check_text(text, c)


def test_existing_contradictions_still_flagged():
    for text, flag in [("A nodule on the patient's left side.", "side:"),
                       ("The nodule measures 250 mm² in area.", "size: 250 mm²"),
                       ("It is 40 mm across.", "size: 40 mm"),
                       ("It covers 20% of the image.", "size: 20%"),
                       ("There are two nodules.", "count: says 2 nodule"),
                       ("This MRI shows a nodule.", "modality: names MRI")]:
        assert any(f.startswith(flag) for f in check_text(text, ctx())), (text, check_text(text, ctx()))
    text = ("Axial CT: one nodule on the patient's right, about 100 mm², 12 mm longest, "
            "4% of the image, 10 mm wide box.")
    assert check_text(text, ctx()) == []


def test_template_captions_pass_the_independent_reader():
    c = ctx()
    _, caption, _ = describe(c)
    assert check_text(caption, c) == []


def test_sides_need_a_patient_frame_and_volumes_are_checked():
    assert kinds("A lesion on the patient's right.", ctx(plane="none", modality="dermoscopy")) \
        == {"side"}
    c = ctx()
    c["rois"][0]["volume_mm3"] = 900.0
    assert check_text("part of a 3D region of about 900 mm³", c) == []
    assert kinds("a 5000 mm³ mass", c) == {"size"}
    assert kinds("a 0.9 mL nodule", c) == set()


def test_vqa_answers_are_read_with_their_question():
    c = ctx()
    assert check_qa({"question": "How many nodules are annotated?", "answer": "3"}, c)
    assert not check_qa({"question": "How many nodules are annotated?", "answer": "1"}, c)
    assert check_qa({"question": "Is this an MRI scan?", "answer": "yes"}, c)
    assert check_qa({"question": "Is this a CT scan?", "answer": "no"}, c)
    assert not check_qa({"question": "Is this a CT scan?", "answer": "yes"}, c)
    assert check_qa({"question": "On which side of the patient is the nodule?",
                     "answer": "left"}, c)
    assert not check_qa({"question": "Where is the nodule?", "answer": "right lower lobe"}, c)
    assert check_qa({"question": "In which plane is this slice shown?", "answer": "sagittal"}, c)
    assert not check_qa({"question": "Is the region in the box [10, 10, 30, 30] on the patient's "
                                     "left or right side?", "answer": "right"}, c)
    assert not check_qa({"question": "Does the nodule exceed 7.8 mm?", "answer": "yes"}, c)


def test_reader_pieces():
    assert singular("tumours") == "tumor" and singular("foci") == "focus"
    assert canonical_modality("MR") == "MRI" and canonical_modality("DX") == "X-ray"
    assert region_of("liver") == "abdomen" and region_of("Chest") == "chest"
    assert sorted(s for s, _, _ in read_sides("RLL nodule, no left-sided effusion")) == \
        ["left", "right"]
    assert read_sides("top left corner of the image")[0][2] is True
    assert not read_sides("the left ventricle is dilated")
    assert [p.name for p in read_parts("segments VI and VII", liver_context=True)] == \
        ["segment 6/7"]
    assert read_parts("left middle lobe", liver_context=False)[0].impossible
    assert read_counts("two small well-defined nodules", {"nodule"}) == [(2, False, "nodule", False)]
    assert read_counts("a solitary nodule", {"nodule"}) == [(1, False, "nodule", True)]
    assert read_counts("segment 4 lesion", {"lesion"}) == []
    assert read_sizes("nodules larger than 8 mm need follow-up") == []
    assert read_sizes("axial CT, 5 mm slices, pixel spacing of 0.7 mm") == []
    assert [v for _, v, _, _ in read_sizes("2.3 x 1.8 cm")] == [[23.0, 18.0]]


# Written after the reader, in another voice (report style), against the benchmark's fact
# contexts; run once before any change to the reader: 46 of 50 right (a "solitary" nodule
# with two annotated, "clear right costophrenic angle", "lateral chest radiograph" and
# "liver metastases" for tumours were missed or flagged), then fixed in general.
HELD_OUT = [
    ('ct_chest_rll_nodule', 'consistent',
     'Within the posterior basal right lower lobe there is a round, solid pulmonary nodule measuring approximately 1.5 x 1.3 cm.'),
    ('ct_chest_rll_nodule', 'consistent',
     'Findings: solitary right lower lobe nodule; no contralateral lesion identified.'),
    ('ct_chest_rll_nodule', 'consistent',
     'The single nodule shows smooth margins and no cavitation on this axial computed tomography image.'),
    ('ct_chest_rll_nodule', 'consistent',
     'There is no evidence of nodules in the left hemithorax.'),
    ('ct_chest_rll_nodule', 'side',
     'Impression: left lower lobe pulmonary nodule, 15 mm.'),
    ('ct_chest_rll_nodule', 'lobe',
     'A well-defined nodule is identified in the lateral segment of the right middle lobe.'),
    ('ct_chest_rll_nodule', 'count',
     'Two adjacent nodules are present in the right lower lobe, the larger 15 mm.'),
    ('ct_chest_rll_nodule', 'size',
     'A 6 mm nodule is present in the right lower lobe.'),
    ('ct_chest_rll_nodule', 'modality',
     'T1-weighted image shows a nodule in the right lower lobe.'),
    ('ct_chest_rll_nodule', 'organ',
     'There is a nodule arising from the right adrenal gland.'),
    ('ct_chest_two_nodules', 'consistent',
     'Two small solid nodules: one in the left upper lobe (8 mm) and one in the right middle lobe (11 mm).'),
    ('ct_chest_two_nodules', 'consistent',
     'Nodules are present bilaterally.'),
    ('ct_chest_two_nodules', 'side',
     'Both nodules are located in the left lung.'),
    ('ct_chest_two_nodules', 'count',
     'A solitary pulmonary nodule is seen in the right middle lobe.'),
    ('ct_chest_two_nodules', 'lobe',
     'The left-sided nodule lies in the left lower lobe superior segment.'),
    ('cxr_left_effusion', 'consistent',
     'Left-sided pleural effusion with meniscus sign, and clear right costophrenic angle.'),
    ('cxr_left_effusion', 'consistent',
     'PA view of the chest demonstrates blunting of the left costophrenic angle due to a pleural effusion.'),
    ('cxr_left_effusion', 'side',
     'There is a large right pleural effusion with mediastinal shift.'),
    ('cxr_left_effusion', 'plane',
     'This lateral chest radiograph shows a posterior pleural effusion.'),
    ('cxr_left_effusion', 'modality',
     'A contrast-enhanced CT image shows a left pleural effusion.'),
    ('cxr_right_pneumothorax', 'consistent',
     'There is a moderate right apical pneumothorax without tension.'),
    ('cxr_right_pneumothorax', 'side',
     'Left-sided pneumothorax with a visible visceral pleural line.'),
    ('cxr_right_pneumothorax', 'lobe',
     'A basal pneumothorax is present on the right, in the right lower zone.'),
    ('ct_liver_two_tumours', 'consistent',
     'Two hypoattenuating hepatic masses are identified: a 3.5 cm lesion in segment VI and a 1.3 cm lesion in segment III.'),
    ('ct_liver_two_tumours', 'consistent',
     'The hepatic lesions demonstrate rim enhancement.'),
    ('ct_liver_two_tumours', 'lobe',
     'The larger liver tumour occupies segment VIII near the dome.'),
    ('ct_liver_two_tumours', 'count',
     'Four liver metastases are seen.'),
    ('ct_liver_two_tumours', 'organ',
     'Two renal masses are seen.'),
    ('ct_liver_two_tumours', 'modality',
     'On this diffusion-weighted image, two liver tumours show restricted diffusion.'),
    ('mri_brain_left_temporal', 'consistent',
     'There is an infiltrative T2/FLAIR hyperintense mass centred in the left temporal lobe measuring about 3 cm.'),
    ('mri_brain_left_temporal', 'consistent',
     'No lesion is present in the right hemisphere.'),
    ('mri_brain_left_temporal', 'side',
     'An expansile mass is present in the right temporal lobe.'),
    ('mri_brain_left_temporal', 'lobe',
     'There is a mass in the left insula.'),
    ('mri_brain_left_temporal', 'size',
     'A 12 mm enhancing nodule is seen in the left temporal lobe.'),
    ('mri_brain_left_temporal', 'plane',
     'The sagittal FLAIR image demonstrates the tumour.'),
    ('mri_prostate_pz', 'consistent',
     'A focal T2-hypointense lesion in the right peripheral zone, approximately 11 mm.'),
    ('mri_prostate_pz', 'lobe',
     'A T2-hypointense lesion in the right transition zone.'),
    ('ct_left_kidney_tumour', 'consistent',
     'A large exophytic enhancing mass arises from the left kidney, in keeping with a renal tumour.'),
    ('ct_left_kidney_tumour', 'side',
     'An exophytic right renal mass measuring 5.2 cm.'),
    ('ct_left_kidney_tumour', 'organ',
     'There is a 5 cm mass in the pancreatic tail.'),
    ('us_breast_mass', 'consistent',
     'An irregular, hypoechoic, non-parallel mass measuring 14 mm.'),
    ('us_breast_mass', 'size',
     'A 25 mm oval mass is seen.'),
    ('dermoscopy_lesion', 'consistent',
     'Dermatoscopic image showing a melanocytic lesion with regular globules.'),
    ('dermoscopy_lesion', 'modality',
     'Sonographic image of a skin lesion.'),
    ('pathology_glands', 'consistent',
     'Haematoxylin and eosin stained section showing four colonic crypts and glands.'),
    ('pathology_glands', 'count',
     'Three glands are visible in this section.'),
    ('pet_right_hilar_node', 'consistent',
     'Intense FDG uptake in a right hilar lymph node.'),
    ('pet_right_hilar_node', 'side',
     'Intense FDG uptake in a left hilar lymph node.'),
    ('fundus_haemorrhage', 'consistent',
     'Fundus photograph showing a single blot haemorrhage temporal to the optic disc.'),
    ('fundus_haemorrhage', 'count',
     'Fundus photograph showing three blot haemorrhages.'),
]


def _contexts():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / \
        "consistency_sentences.jsonl"
    out = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        out.setdefault(row["context"], row["facts"])
    return out


def test_held_out_sentences():
    contexts = _contexts()
    wrong = []
    for name, label, text in HELD_OUT:
        got = kinds(text, contexts[name])
        if got != (set() if label == "consistent" else {label}):
            wrong.append((label, sorted(got), text))
    assert not wrong, wrong
