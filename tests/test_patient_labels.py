"""Patient-scope labels: a cohort's diagnosis (CPTAC-LUAD) is the patient's, not the image's.

Phantoms with known ground truth: a DICOM CT series of a body with a hyperdense lesion that
no annotation marks (the CPTAC-LUAD situation: the patient has the disease, nothing says
where), and a NIfTI CT phantom whose lesion is outlined, for a source that has both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from curate.ingest import adapter
from curate.model.recipe import Recipe, SourceSpec, load_source
from curate.model.records import MANIFEST, SAMPLE, to_table
from curate.unit.pipeline import process_unit
from curate.unit.text.consistency import check_qa, check_text
from curate.unit.text.patient import patient_sentence, scope_flags
from curate.unit.text.templates import levels_for
from curate.unit.text.vqa import ask

ROOT = Path(__file__).resolve().parent.parent
DIAGNOSIS = "lung adenocarcinoma"


def _cohort_spec(**extra) -> SourceSpec:
    return SourceSpec(name="cohort", format="dicom", modality="CT", anatomy="lung",
                      cohort_diagnosis=DIAGNOSIS,
                      layout={"images": ["*/**/*.dcm"], "patient_id": r"(C3[LN]-\d{5})"}, **extra)


@pytest.fixture(scope="module")
def cohort_samples(tmp_path_factory):
    """A 12-slice DICOM CT of an elliptic body with a hyperdense sphere on the patient's
    left, unannotated, under a CPTAC-style patient folder; read through the unit pipeline."""
    from curate.sources.phantoms import write_dicom_series

    root = tmp_path_factory.mktemp("cohort")
    z, y, x = np.mgrid[0:12, 0:48, 0:64].astype(np.float32)
    hu = np.full(x.shape, -1000.0, np.float32)
    hu[((x - 31.5) / 28) ** 2 + ((y - 23.5) / 20) ** 2 <= 1] = 40.0
    hu[(x - 45) ** 2 + (y - 24) ** 2 + ((z - 6) * 3) ** 2 <= 36] = 150.0
    write_dicom_series(root / "C3L-00001" / "study" / "CT_series", hu, (0.7, 0.7, 2.0),
                       patient_id="C3L-00001")
    spec = _cohort_spec()
    plan, read = adapter(spec.format)
    units, problems = plan(spec, root)
    assert not problems and len(units) == 1
    cases = read(spec, root, units[0])
    result = process_unit(spec, root, units[0].stamp(root, "t"), Recipe(name="t", sources=[]))
    assert result.samples, result.quarantine
    return cases, result.samples


def test_declared_cohort_diagnosis_is_a_patient_label():
    spec = _cohort_spec()
    assert spec.patient_labels() == [DIAGNOSIS]
    assert SourceSpec(name="x", format="image", layout={"images": ["*.png"]}).patient_labels() == []
    with pytest.raises(ValidationError):
        _cohort_spec().model_validate({**_cohort_spec().model_dump(), "cohort_diagnosis": ""})
    cptac = load_source(ROOT / "sources" / "cptac-luad.yaml")
    assert cptac.patient_labels() == [DIAGNOSIS] and cptac.findings == {}


def test_reader_puts_the_diagnosis_on_the_patient_not_the_image(cohort_samples):
    cases, _ = cohort_samples
    (case,) = cases
    assert case.meta.patient_labels == [DIAGNOSIS]
    assert case.meta.image_labels == [] and case.meta.patient_id == "C3L-00001"
    assert case.label is None  # no annotation is invented for the lesion


def test_samples_carry_it_as_context_never_as_a_finding(cohort_samples):
    _, samples = cohort_samples
    for s in samples:
        assert s["patient_labels"] == [DIAGNOSIS]
        assert s["findings"] == [] and s["image_labels"] == [] and s["rois"] == []
        assert s["annotated"] is False
        assert f"patient whose recorded diagnosis is {DIAGNOSIS}" in s["caption"]
        assert "whether or where this image shows it" in s["caption"]
        assert "labels the whole image" not in s["caption"]
        assert s["quality"]["text_flags"] == []
        about = [q for q in s["vqa"] if "adenocarcinoma" in (q["question"] + q["answer"]).lower()]
        assert about, "the record question is asked"
        for q in about:  # only what the record says about the patient
            assert q["category"] == "clinical/patient" and q["answer"] == DIAGNOSIS
            assert "patient" in q["question"].lower() and "image show" not in q["question"]
            assert check_qa(q, {"patient_labels": [DIAGNOSIS], "rois": []}) == []
    rows = to_table(samples, SAMPLE)
    assert rows.column("patient_labels").to_pylist() == [[DIAGNOSIS]] * len(samples)
    manifest = rows.select(MANIFEST.names).cast(MANIFEST)
    from curate.report.datacard import card_stats

    assert card_stats(manifest)["roi_findings"] == {}  # the card counts no finding for it


def test_with_an_outlined_lesion_the_two_stay_apart(tmp_path):
    """A source with both: the outlined lesion is the finding (its side from geometry),
    the cohort diagnosis stays the patient's."""
    import json

    from curate.sources.phantoms import ensure_phantoms, phantom_layout

    spec = SourceSpec(name="both", format="nifti", modality="CT", cohort_diagnosis=DIAGNOSIS,
                      generate={"kind": "ct_lesion", "cases": 1, "seed": 3},
                      layout=phantom_layout("ct_lesion").model_dump())
    src = ensure_phantoms(spec.generate, tmp_path / "p")
    truth = json.loads((src / "truth" / "case000.json").read_text())
    plan, _ = adapter(spec.format)
    units, _ = plan(spec, src)
    res = process_unit(spec, src, units[0].stamp(src, "t"), Recipe(name="t", sources=[]))
    with_lesion = [s for s in res.samples if s["rois"]]
    assert with_lesion
    for s in res.samples:
        assert s["patient_labels"] == [DIAGNOSIS] and DIAGNOSIS not in s["findings"]
        assert s["quality"]["text_flags"] == [], s["quality"]["text_flags"]
    for s in with_lesion:
        assert s["findings"] == ["lesion"]
        assert {r["laterality"] for r in s["rois"]} == {truth["side"]}
        assert f"recorded diagnosis is {DIAGNOSIS}" in s["caption"]


CTX = {"modality": "CT", "anatomy": "lung", "plane": "axial", "rois": [], "annotated": False,
       "labels": [], "image_labels": [], "findings": [], "spacing": (0.7, 0.7),
       "window": {"method": "ct_window", "name": "lung", "low": -1350, "high": 150},
       "patient_labels": [DIAGNOSIS]}


@pytest.mark.parametrize("text, kind", [
    ("The image shows a lung adenocarcinoma.", "as seen in the image"),
    ("A lung adenocarcinoma is seen in the right upper lobe.", "as seen in the image"),
    ("Lung adenocarcinoma is present.", "as seen in the image"),
    ("The patient's lung adenocarcinoma lies in the left lung.", "places"),
    ("The recorded lung adenocarcinoma is in the left upper lobe.", "places"),
])
def test_text_stating_or_placing_it_in_the_image_is_flagged(text, kind):
    flags = check_text(text, CTX)
    assert any(f.startswith("scope:") and kind in f for f in flags), flags


@pytest.mark.parametrize("text", [
    "The image is from a patient whose recorded diagnosis is lung adenocarcinoma.",
    "This patient has a known lung adenocarcinoma; its location is not annotated.",
    "Axial CT slice of the chest in a lung window.",
    "No lung adenocarcinoma is outlined here.",
])
def test_patient_context_is_not_flagged(text):
    assert [f for f in check_text(text, CTX) if f.startswith("scope:")] == []


def test_a_label_the_image_also_has_is_a_finding_there():
    roi = {"label": DIAGNOSIS, "finding": DIAGNOSIS}
    assert scope_flags("A lung adenocarcinoma is seen.", {**CTX, "rois": [roi]}) == []
    assert scope_flags("A lung adenocarcinoma is seen.", {**CTX, "patient_labels": []}) == []


def test_vqa_asks_the_record_not_the_image():
    qs = [q for seed in map(str, range(40)) for q in ask(CTX, 12, seed=seed)]
    record = [q for q in qs if q["category"] == "clinical/patient"]
    assert len(record) == 40 and {q["answer"] for q in record} == {DIAGNOSIS}
    assert not [q for q in qs if q["category"] == "clinical/image"]
    yes = {"question": "Does this image show lung adenocarcinoma?", "answer": "yes"}
    assert any(f.startswith("scope:") for f in check_qa(yes, CTX))
    assert [q for q in ask({**CTX, "patient_labels": []}, 12, seed="0")
            if q["category"] == "clinical/patient"] == []


def test_caption_wording():
    organ = levels_for(CTX)["organ"]
    assert organ.endswith(patient_sentence([DIAGNOSIS]))
    assert "recorded diagnoses are lung adenocarcinoma and COPD" in patient_sentence(
        ["Lung Adenocarcinoma", "COPD"])
    assert "diagnosis" not in levels_for({**CTX, "patient_labels": []})["organ"]


def test_a_build_ships_it_in_the_manifest_and_the_parquet_export(tmp_path, write_recipe):
    """End to end (local executor): the manifest, the Parquet export and the card."""
    import pyarrow.parquet as pq

    from curate.build import build
    from curate.sources.phantoms import write_dicom_series

    root = tmp_path / "data"
    hu = np.full((6, 32, 40), 40.0, np.float32)
    hu[:, :4] = -1000.0
    hu[2:4, 12:18, 24:30] = 150.0  # an unannotated lesion
    for i in (1, 2):
        write_dicom_series(root / f"C3N-0000{i}" / "s" / "CT", hu + i, (0.8, 0.8, 2.0),
                           patient_id=f"C3N-0000{i}")
    source = {**_cohort_spec().model_dump(mode="json", exclude_none=True), "path": str(root)}
    build(write_recipe([source]), tmp_path / "out", executor="local", log=lambda m: None)
    manifest = pq.read_table(tmp_path / "out" / "manifest.parquet")
    assert manifest.num_rows > 0
    assert set(map(tuple, manifest.column("patient_labels").to_pylist())) == {(DIAGNOSIS,)}
    assert all(f == [] for f in manifest.column("findings").to_pylist())
    hub = pq.read_table(next((tmp_path / "out" / "data").glob("*.parquet")),
                        columns=["patient_labels"])
    assert hub.column("patient_labels").to_pylist()[0] == [DIAGNOSIS]
    assert "patient_labels" in (tmp_path / "out" / "README.md").read_text()
