"""The vocabulary the consistency reader reads text with: anatomy, modalities and planes.

Written apart from the text templates on purpose (a checker that shares the writer's
words only confirms the writer). Terms follow RadLex/FMA usage with the synonyms,
adjectives and abbreviations radiology reports and language models use: organs with the
body regions they appear in and whether they are paired, lung lobes and zones, Couinaud
liver segments, brain regions, prostate zones, modality names with their paraphrases and
the attribute words that imply a modality (hyperechoic implies ultrasound), and planes.

Everything here is plain data plus `canonical_*` look-ups; the regular expressions that
use it live in curate.unit.text.consistency.
"""

from __future__ import annotations

import re
from functools import lru_cache

# canonical organ -> (terms and adjectives, body regions it is seen in, paired, group).
# Organs of one group are not told apart ("in the pleura" for a lung ROI is no contradiction).
ORGANS: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool, str]] = {
    "lung": (("lung", "lungs", "pulmonary", "lung field", "lung fields", "lung parenchyma",
              "hemithorax", "hemithoraces", "lung apex", "lung base", "lung bases"),
             ("chest", "abdomen", "breast"), True, "lung"),
    "pleura": (("pleura", "pleural space", "pleural cavity", "pleural"), ("chest", "abdomen"),
               True, "lung"),
    "bronchus": (("bronchus", "bronchi", "bronchial", "airway", "airways"), ("chest",), True,
                 "lung"),
    "heart": (("heart", "cardiac", "myocardium", "myocardial", "pericardium", "pericardial"),
              ("chest", "abdomen"), False, "heart"),
    "mediastinum": (("mediastinum", "mediastinal", "hilum", "hila", "hilar"), ("chest",), False,
                    "mediastinum"),
    "trachea": (("trachea", "tracheal"), ("chest", "neck"), False, "trachea"),
    "esophagus": (("esophagus", "oesophagus", "esophageal", "oesophageal"), ("chest", "neck",
                                                                           "abdomen"), False,
                  "esophagus"),
    "aorta": (("aorta", "aortic"), ("chest", "abdomen"), False, "aorta"),
    "breast": (("breast", "breasts", "mammary"), ("breast", "chest"), True, "breast"),
    "rib": (("rib", "ribs", "costal"), ("chest", "abdomen", "breast"), True, "bone"),
    "thyroid": (("thyroid", "thyroid gland"), ("neck", "chest"), False, "thyroid"),
    "liver": (("liver", "hepatic", "hepatic parenchyma"), ("abdomen",), False, "liver"),
    "gallbladder": (("gallbladder", "gall bladder", "biliary", "bile duct", "bile ducts"),
                    ("abdomen",), False, "liver"),
    "spleen": (("spleen", "splenic"), ("abdomen",), False, "spleen"),
    "pancreas": (("pancreas", "pancreatic"), ("abdomen",), False, "pancreas"),
    "kidney": (("kidney", "kidneys", "renal"), ("abdomen", "pelvis"), True, "kidney"),
    "adrenal": (("adrenal", "adrenal gland", "adrenal glands", "adrenals"), ("abdomen",),
                True, "adrenal"),
    "stomach": (("stomach", "gastric"), ("abdomen",), False, "stomach"),
    "bowel": (("small bowel", "small intestine", "duodenum", "duodenal", "jejunum", "ileum",
               "bowel", "intestine", "intestinal"), ("abdomen", "pelvis"), False, "bowel"),
    "colon": (("colon", "colonic", "large bowel", "rectum", "rectal", "sigmoid", "caecum",
               "cecum", "colorectal"), ("abdomen", "pelvis"), False, "bowel"),
    "bladder": (("urinary bladder", "bladder", "vesical"), ("pelvis", "abdomen"), False,
                "bladder"),
    "prostate": (("prostate", "prostatic", "prostate gland"), ("pelvis", "abdomen"), False,
                 "prostate"),
    "uterus": (("uterus", "uterine", "endometrium", "endometrial", "cervix"),
               ("pelvis", "abdomen"), False, "uterus"),
    "ovary": (("ovary", "ovaries", "ovarian", "adnexa", "adnexal"), ("pelvis", "abdomen"), True,
              "ovary"),
    "brain": (("brain", "cerebral", "cerebrum", "intracranial", "brain parenchyma",
               "cerebral hemisphere", "hemisphere", "encephalic"), ("head",), False, "brain"),
    "skull": (("skull", "calvarium", "calvaria", "cranium", "calvarial"), ("head",), False,
              "bone"),
    "eye": (("eye", "eyes", "globe", "orbit", "orbits", "orbital", "retina", "retinal",
             "optic disc", "macula", "macular", "choroid"), ("head", "eye"), True, "eye"),
    "spine": (("spine", "spinal", "vertebra", "vertebrae", "vertebral", "vertebral body",
               "spinal cord", "intervertebral disc"), ("chest", "abdomen", "pelvis", "neck"),
              False, "bone"),
    "skin": (("skin", "cutaneous", "epidermis", "dermis", "dermal"), ("skin",), False, "skin"),
    "femur": (("femur", "femoral head", "femoral neck", "hip", "hip joint"), ("pelvis",
                                                                           "extremity"), True,
              "bone"),
}

# the source's `anatomy` values (and organs, via ORGANS) -> body region
REGIONS: dict[str, tuple[str, ...]] = {
    "chest": ("chest", "thorax", "thoracic", "lung", "lungs", "cxr", "cardiothoracic"),
    "abdomen": ("abdomen", "abdominal", "abdominopelvic", "upper abdomen"),
    "pelvis": ("pelvis", "pelvic"),
    "head": ("head", "brain", "neuro", "skull", "cranial", "head and neck"),
    "neck": ("neck", "cervical"),
    "breast": ("breast", "breasts", "mammography"),
    "skin": ("skin", "dermatology"),
    "eye": ("eye", "retina", "fundus", "ophthalmic"),
    "extremity": ("extremity", "limb", "knee", "hand", "wrist", "ankle", "foot", "shoulder"),
}
WHOLE_BODY = ("whole body", "whole-body", "total body", "body")

# canonical modality -> terms. Terms in CASE_SENSITIVE are matched as written.
MODALITIES: dict[str, tuple[str, ...]] = {
    "CT": ("CT", "computed tomography", "computerised tomography", "computerized tomography",
           "CAT scan", "CECT", "NCCT", "HRCT", "CTA", "CT angiography", "MDCT", "CTPA"),
    "MRI": ("MRI", "MR", "magnetic resonance", "MR imaging", "T1-weighted", "T2-weighted",
            "T1W", "T2W", "T1WI", "T2WI", "FLAIR", "DWI", "diffusion-weighted", "ADC map",
            "STIR", "gadolinium-enhanced", "proton density", "SWI", "MRA"),
    "X-ray": ("X-ray", "x-ray", "xray", "X ray", "radiograph", "radiographs", "radiography",
              "radiographic", "plain film", "plain films", "chest film", "CXR", "roentgenogram",
              "fluoroscopy", "fluoroscopic", "angiogram"),
    "mammography": ("mammogram", "mammograms", "mammography", "mammographic", "tomosynthesis"),
    "ultrasound": ("ultrasound", "ultrasonography", "ultrasonographic", "sonography",
                   "sonographic", "sonogram", "US", "echography", "Doppler", "echocardiogram",
                   "echocardiography"),
    "PET": ("PET", "PET/CT", "PET-CT", "PET/MR", "positron emission tomography", "FDG"),
    "nuclear medicine": ("scintigraphy", "scintigram", "SPECT", "bone scan", "gamma camera"),
    "histopathology": ("histopathology", "histopathological", "histology", "histological",
                       "histologic", "H&E", "haematoxylin and eosin", "hematoxylin and eosin",
                       "micrograph", "photomicrograph", "whole-slide image", "stained section"),
    "dermoscopy": ("dermoscopy", "dermoscopic", "dermatoscopy", "dermatoscopic",
                   "epiluminescence microscopy"),
    "endoscopy": ("endoscopy", "endoscopic", "colonoscopy", "colonoscopic", "gastroscopy",
                  "laparoscopy", "laparoscopic", "capsule endoscopy", "sigmoidoscopy"),
    "fundus photography": ("fundus photograph", "fundus photography", "fundus image",
                           "fundoscopy", "fundoscopic", "retinal photograph", "colour fundus",
                           "color fundus", "funduscopic"),
    "OCT": ("OCT", "optical coherence tomography"),
}
# attribute words that only make sense in some modalities
IMPLIED_MODALITY: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "density": (("hyperdense", "hypodense", "isodense", "hyperattenuating", "hypoattenuating",
                 "Hounsfield", "HU"), frozenset({"CT", "X-ray", "mammography", "PET"})),
    "signal": (("hyperintense", "hypointense", "isointense", "hyperintensity", "hypointensity",
                "signal intensity", "T2 signal", "T1 signal"), frozenset({"MRI"})),
    "echo": (("hyperechoic", "hypoechoic", "anechoic", "isoechoic", "echogenic", "echogenicity",
              "posterior acoustic shadowing", "acoustic enhancement"), frozenset({"ultrasound"})),
    "uptake": (("FDG-avid", "SUVmax", "SUV", "hypermetabolic", "tracer uptake", "avid uptake"),
               frozenset({"PET", "nuclear medicine"})),
}
CASE_SENSITIVE = {"CT", "MR", "US", "PET", "OCT", "HU", "SUV", "CTA", "MRA", "SWI", "DWI",
                  "STIR", "FDG", "CXR", "CECT", "NCCT", "HRCT", "MDCT", "CTPA", "T1W", "T2W",
                  "T1WI", "T2WI", "FLAIR", "SPECT", "SUVmax", "H&E"}
# the source's modality codes (DICOM and curate's own) -> canonical modality
MODALITY_CODES = {
    "CT": "CT", "MR": "MRI", "MRI": "MRI", "XR": "X-ray", "CR": "X-ray", "DX": "X-ray",
    "DR": "X-ray", "RF": "X-ray", "XA": "X-ray", "PX": "X-ray", "IO": "X-ray",
    "MG": "mammography", "US": "ultrasound", "PT": "PET", "PET": "PET", "NM": "nuclear medicine",
    "PATHOLOGY": "histopathology", "SM": "histopathology", "GM": "histopathology",
    "MICROSCOPY": "histopathology", "HISTOPATHOLOGY": "histopathology",
    "DERMOSCOPY": "dermoscopy", "ENDOSCOPY": "endoscopy", "ES": "endoscopy",
    "FUNDUS": "fundus photography", "OP": "fundus photography", "OCT": "OCT", "OPT": "OCT",
    "X-RAY": "X-ray", "ULTRASOUND": "ultrasound", "MAMMOGRAPHY": "mammography",
}
# what a text may call an image of each modality besides its own name
COMPATIBLE_MODALITIES = {
    "mammography": {"X-ray"}, "PET": {"CT", "MRI"}, "nuclear medicine": {"PET"},
    "fundus photography": set(), "histopathology": set(),
}

# planes: canonical -> terms; which planes each view of curate.model.source.View admits
PLANES: dict[str, tuple[str, ...]] = {
    "axial": ("axial", "transverse", "transaxial", "axial slice", "axial section"),
    "coronal": ("coronal",),
    "sagittal": ("sagittal", "midsagittal", "parasagittal"),
    "frontal": ("frontal", "posteroanterior", "anteroposterior", "PA", "AP"),
    "lateral": ("lateral",),
}
VIEW_PLANES = {"axial": {"axial"}, "frontal": {"frontal", "coronal"},
               "lateral": {"lateral", "sagittal"}, "coronal": {"coronal"},
               "sagittal": {"sagittal"}}

# parts of organs, by system. Lung lobes and zones, liver segments/lobes, brain regions,
# prostate zones; each canonical part names its organ.
LUNG_LOBES = {"upper": "upper lobe", "superior": "upper lobe", "middle": "middle lobe",
              "lower": "lower lobe", "inferior": "lower lobe"}
LOBE_ABBREVIATIONS = {"RUL": ("right", "upper lobe"), "RML": ("right", "middle lobe"),
                      "RLL": ("right", "lower lobe"), "LUL": ("left", "upper lobe"),
                      "LLL": ("left", "lower lobe")}
LUNG_ZONES = {"upper": "upper zone", "mid": "middle zone", "middle": "middle zone",
              "lower": "lower zone", "apex": "upper zone", "apical": "upper zone",
              "base": "lower zone", "basal": "lower zone", "basilar": "lower zone",
              "perihilar": "middle zone"}
ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "iva": 4, "ivb": 4, "v": 5, "vi": 6, "vii": 7,
         "viii": 8}
LIVER_LOBES = {"right": frozenset({5, 6, 7, 8}), "left": frozenset({2, 3, 4}),
               "caudate": frozenset({1}), "quadrate": frozenset({4})}
BRAIN_REGIONS = {
    "frontal": "frontal lobe", "parietal": "parietal lobe", "temporal": "temporal lobe",
    "occipital": "occipital lobe", "insula": "insula", "insular": "insula",
    "cerebellum": "cerebellum", "cerebellar": "cerebellum", "brainstem": "brainstem",
    "brain stem": "brainstem", "pons": "brainstem", "pontine": "brainstem",
    "midbrain": "brainstem", "medulla oblongata": "brainstem", "basal ganglia": "basal ganglia",
    "thalamus": "thalamus", "thalamic": "thalamus", "hippocampus": "hippocampus",
    "hippocampal": "hippocampus", "corpus callosum": "corpus callosum",
}
BRAIN_CONTAINS = {"temporal lobe": {"hippocampus"}}  # a claim of the whole admits the part
PROSTATE_ZONES = {"peripheral": "peripheral zone", "transition": "transition zone",
                  "transitional": "transition zone", "central": "central zone"}

# words that name what is counted: any ROI ("lesion") or ROIs of one label
GENERIC_FINDINGS = {"lesion", "abnormality", "finding", "focus", "mass", "tumor", "tumour",
                    "neoplasm", "region", "area", "roi", "structure", "abnormal area",
                    "metastasis", "deposit"}
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "single": 1,
                "solitary": 1, "sole": 1, "a single": 1, "only one": 1, "both": 2, "a pair of": 2,
                "twin": 2}
ONLY_WORDS = {"solitary", "only one", "sole"}  # "a solitary nodule": the image's only one
IRREGULAR_PLURALS = {"foci": "focus", "metastases": "metastasis", "masses": "mass",
                     "bronchi": "bronchus", "vertebrae": "vertebra", "diagnoses": "diagnosis",
                     "emboli": "embolus", "calculi": "calculus", "nuclei": "nucleus",
                     "ovaries": "ovary", "abscesses": "abscess", "lymph nodes": "lymph node",
                     "pneumothoraces": "pneumothorax", "hemithoraces": "hemithorax",
                     "apices": "apex", "metastasis": "metastasis", "glomeruli": "glomerulus"}
BRITISH = (("tumour", "tumor"), ("haem", "hem"), ("oedema", "edema"), ("oesoph", "esoph"),
           ("colour", "color"), ("caecum", "cecum"), ("centre", "center"))


@lru_cache(maxsize=65536)
def singular(word: str) -> str:
    """A lower-case English noun (or noun phrase's last word) in the singular."""
    w = word.lower().strip()
    for british, american in BRITISH:
        w = w.replace(british, american)
    if w in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[w]
    head, _, last = w.rpartition(" ")
    if head:
        return f"{head} {singular(last)}"
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("ches", "shes", "xes", "sses")):
        return w[:-2]
    if w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) > 3:
        return w[:-1]
    return w


@lru_cache(maxsize=1)
def organ_terms() -> dict[str, str]:
    """Every organ term (lower case) -> canonical organ."""
    return {t.lower(): organ for organ, (terms, *_rest) in ORGANS.items() for t in terms}


def canonical_modality(code: str | None) -> str | None:
    """The source's modality code or name as a canonical modality; None when unknown."""
    if not code:
        return None
    key = str(code).strip().upper()
    if key in MODALITY_CODES:
        return MODALITY_CODES[key]
    for name, terms in MODALITIES.items():
        if key == name.upper() or key in {t.upper() for t in terms}:
            return name
    return None


def modality_admits(actual: str, named: str) -> bool:
    return named == actual or named in COMPATIBLE_MODALITIES.get(actual, set())


def region_of(anatomy: str | None) -> str | None:
    """The body region of the source's `anatomy` value (a region or an organ name)."""
    if not anatomy:
        return None
    a = anatomy.strip().lower()
    if a in WHOLE_BODY:
        return "body"
    for region, names in REGIONS.items():
        if a in names:
            return region
    organ = organ_terms().get(a) or organ_terms().get(singular(a))
    if organ is None:
        for word in re.findall(r"[a-z]+", a):  # "liver ct" / "chest x-ray"
            organ = organ_terms().get(word)
            hit = next((r for r, names in REGIONS.items() if word in names), None)
            if hit:
                return hit
            if organ:
                break
    return ORGANS[organ][1][0] if organ else None


def organ_in_region(organ: str, region: str) -> bool:
    return region == "body" or region in ORGANS[organ][1]


def same_organ(a: str, b: str) -> bool:
    return a == b or ORGANS[a][3] == ORGANS[b][3]
