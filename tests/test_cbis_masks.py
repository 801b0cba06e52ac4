"""CBIS-DDSM ROI folders (curate.ingest.dicom_roi_files) on phantom DICOMs with known
ground truth: a mammogram, abnormality folders holding a mask and a crop (two described
series folders, or one undescribed folder), and a case table keyed by folder name."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid

from curate.ingest.dicom import plan_dicom, read_dicom
from curate.ingest.dicom_roi_files import first_part, read_roi_tables
from curate.model.errors import ConfigError, IngestError
from curate.model.recipe import Layout, Recipe, SourceSpec
from curate.model.source import RoiFolders
from curate.unit.pipeline import process_unit
from tests.phantom_parts import dicom_dataset

CASE = "Mass-Training_P_00001_LEFT_CC"
SHAPE = (20, 30)
COLUMNS = ["patient_id", "abnormality id", "abnormality type", "pathology",
           "image file path", "cropped image file path", "ROI mask file path"]


def _spec() -> SourceSpec:
    return SourceSpec(
        name="cbis", format="dicom", modality="MG", anatomy="breast",
        findings={"malignant mass": "malignant_breast_mass", "benign mass": "benign_breast_mass"},
        layout=Layout(images=["*/**/*.dcm"], patient_id=r"(Mass-Training_P_\d{5})",
                      roi_folders=RoiFolders(
                          tables=["*_case_description_*_set.csv"],
                          label_columns=["pathology", "abnormality type"],
                          label_words={"pathology": {"MALIGNANT": "malignant",
                                                     "BENIGN": "benign"}},
                          number_column="abnormality id", image_column="image file path")))


def _dicom(path: Path, arr: np.ndarray, description: str | None = None,
           series: str | None = None) -> None:
    ds = dicom_dataset(uid.SecondaryCaptureImageStorage, "MG", "Mass-Training_P_00001",
                       series=series, pixels=arr)
    if description:
        ds.SeriesDescription = description
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _square(y: int, x: int, n: int = 4, shape=SHAPE) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[y:y + n, x:x + n] = 255
    return m


def _table(root: Path, rows: list[dict], name: str = "mass_case_description_train_set.csv"):
    with open(root / name, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in COLUMNS})


def _row(n: int, pathology: str = "MALIGNANT", image: str = CASE) -> dict:
    # the published cells: folder name first, then UID folders that differ from the copy;
    # a cell may end in a line break, as some of the published ones do
    return {"patient_id": "P_00001", "abnormality id": str(n), "abnormality type": "mass",
            "pathology": pathology, "image file path": f"{image}/1.3.6.1/1.3.6.2/000000.dcm",
            "cropped image file path": f"{CASE}_{n}/1.3.6.3/1.3.6.4/000000.dcm",
            "ROI mask file path": f"{CASE}_{n}/1.3.6.3/1.3.6.4/000001.dcm\n"}


def _mammogram(root: Path) -> np.ndarray:
    img = (np.arange(SHAPE[0] * SHAPE[1]).reshape(SHAPE) * 37 % 4000).astype(np.uint16)
    _dicom(root / CASE / "07-20-2016-DDSM-74994/1.000000-full mammogram images-24515/1-1.dcm",
           img, "full mammogram images")
    return img


def _described(root: Path, n: int, mask: np.ndarray) -> None:
    """Abnormality n in two series folders whose SeriesDescription says what each is."""
    _dicom(root / f"{CASE}_{n}/08-07-2016-DDSM-1/1.000000-ROI mask images-1/1-1.dcm", mask,
           "ROI mask images")
    _dicom(root / f"{CASE}_{n}/08-07-2016-DDSM-2/1.000000-cropped images-2/1-1.dcm",
           np.full((4, 4), 9, np.uint8), "cropped images")


def _undescribed(root: Path, n: int, files: list[np.ndarray]) -> None:
    """Abnormality n in one series folder, nothing described (1-1.dcm, 1-2.dcm, ...)."""
    series = uid.generate_uid()
    for k, arr in enumerate(files):
        _dicom(root / f"{CASE}_{n}/08-07-2016-DDSM-3/1.000000-ROI-3/1-{k + 1}.dcm", arr,
               series=series)


def _read_one(root: Path):
    spec = _spec()
    units, problems = plan_dicom(spec, root)
    assert not problems, [(p.file, str(p.exc)) for p in problems]
    assert len(units) == 1
    return spec, units[0], read_dicom(spec, root, units[0])


def test_raw_values_read_back_as_the_label():
    from curate.ingest.dicom_roi_files import raw_values

    cfg = _spec().layout.roi_folders.model_copy(update={"label_words": {"pathology": {
        "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign (no callback)"}}})
    assert raw_values(cfg, "benign (no callback) calcification") == [
        "BENIGN_WITHOUT_CALLBACK", "calcification"]
    assert raw_values(cfg, "benign mass") == ["BENIGN", "mass"]
    assert raw_values(cfg, "lesion") == ["finding", "finding"]  # no value reads as it


def test_both_folder_variants_land_on_their_pixels(tmp_path):
    img = _mammogram(tmp_path)
    _described(tmp_path, 1, _square(2, 3))
    crop = np.full((5, 6), 77, np.uint8)  # the crop first, the mask second, as 1-1 / 1-2
    _undescribed(tmp_path, 2, [crop, _square(12, 20)])
    _table(tmp_path, [_row(1), _row(2, "BENIGN")])
    spec, unit, cases = _read_one(tmp_path)
    assert len(unit.files) == 5 and len(cases) == 1  # masks and crops are no images
    case = cases[0]
    assert case.pixels.shape == SHAPE and case.meta.label_map == {
        1: "malignant mass", 2: "benign mass"}
    expected = np.zeros(SHAPE, np.uint8)
    expected[2:6, 3:7], expected[12:16, 20:24] = 1, 2
    assert np.array_equal(case.mask, expected)
    assert np.array_equal(read_dicom(spec, tmp_path, unit)[0].mask, expected)
    assert img.shape == SHAPE


def test_each_abnormality_becomes_one_roi_with_its_finding(tmp_path):
    _mammogram(tmp_path)
    _described(tmp_path, 1, _square(2, 3))
    two_pieces = _square(12, 20) | _square(12, 10)  # one abnormality outlined in two parts
    _undescribed(tmp_path, 2, [np.full((5, 6), 77, np.uint8), two_pieces])
    _table(tmp_path, [_row(1), _row(2, "BENIGN")])
    spec = _spec()
    units, _ = plan_dicom(spec, tmp_path)
    res = process_unit(spec, tmp_path, units[0].stamp(tmp_path, "t"), Recipe(name="t", sources=[]))
    assert not res.quarantine and len(res.samples) == 1, res.quarantine
    rois = res.samples[0]["rois"]
    assert sorted((r["label"], r["finding"], r["area_px"], r["bbox"]) for r in rois) == [
        ("benign mass", "benign_breast_mass", 32, [10, 12, 24, 16]),
        ("malignant mass", "malignant_breast_mass", 16, [3, 2, 7, 6])]


def test_a_mask_of_another_size_is_a_quarantine_row(tmp_path):
    _mammogram(tmp_path)
    _described(tmp_path, 1, _square(2, 3, shape=(10, 15)))
    _table(tmp_path, [_row(1)])
    spec = _spec()
    units, problems = plan_dicom(spec, tmp_path)
    assert not problems and len(units) == 1
    res = process_unit(spec, tmp_path, units[0].stamp(tmp_path, "t"), Recipe(name="t", sources=[]))
    assert not res.samples and len(res.quarantine) == 1
    row = res.quarantine[0]
    assert row["file"].endswith("1.000000-ROI mask images-1/1-1.dcm")
    assert "is 10x15, the image 20x30; a mask is never resized" in row["message"]


@pytest.mark.parametrize("files, why", [
    ([np.full((5, 6), 77, np.uint8)], "no file at the image's size 20x30 with binary pixels"),
    ([_square(2, 3), _square(10, 10)], "2 files ("),
    ([np.full(SHAPE, 3, np.uint8)], "no file"),  # the image's size, but one value only
])
def test_undescribed_folders_need_exactly_one_binary_file_at_the_image_size(tmp_path, files,
                                                                             why):
    _mammogram(tmp_path)
    _undescribed(tmp_path, 1, files)
    _table(tmp_path, [_row(1)])
    spec = _spec()
    units, _ = plan_dicom(spec, tmp_path)
    with pytest.raises(IngestError, match="abnormality folder") as err:
        read_dicom(spec, tmp_path, units[0])
    assert why in str(err.value) and "1-1.dcm (" in str(err.value)  # names the files


def test_described_masks_must_be_one_and_binary(tmp_path):
    _mammogram(tmp_path)
    grey = _square(2, 3)
    grey[0, 0] = 7
    _described(tmp_path, 1, grey)
    _table(tmp_path, [_row(1)])
    spec = _spec()
    units, _ = plan_dicom(spec, tmp_path)
    with pytest.raises(IngestError, match="is not binary"):
        read_dicom(spec, tmp_path, units[0])
    _dicom(tmp_path / f"{CASE}_1/x/2.000000-ROI mask images-9/1-1.dcm", _square(8, 8),
           "ROI mask images")
    units, _ = plan_dicom(spec, tmp_path)
    with pytest.raises(IngestError, match="2 files are described as 'ROI mask images'"):
        read_dicom(spec, tmp_path, units[0])


def test_an_inverted_mask_is_refused(tmp_path):
    _mammogram(tmp_path)
    _described(tmp_path, 1, _square(2, 3))
    _table(tmp_path, [_row(1)])
    path = next(tmp_path.glob(f"{CASE}_1/*/*ROI mask images*/1-1.dcm"))
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(path)
    spec = _spec()
    units, _ = plan_dicom(spec, tmp_path)
    with pytest.raises(IngestError, match="MONOCHROME1"):
        read_dicom(spec, tmp_path, units[0])


def test_overlapping_abnormalities_are_refused(tmp_path):
    _mammogram(tmp_path)
    _described(tmp_path, 1, _square(2, 3))
    _undescribed(tmp_path, 2, [_square(4, 5)])
    _table(tmp_path, [_row(1), _row(2)])
    spec = _spec()
    units, _ = plan_dicom(spec, tmp_path)
    with pytest.raises(IngestError, match=f"ROI masks of {CASE}_1 and {CASE}_2 overlap"):
        read_dicom(spec, tmp_path, units[0])


@pytest.mark.parametrize("rows, why", [
    ([], "no case-table row names this abnormality folder"),
    ([{**_row(1), "abnormality id": "2"}], "gives abnormality '2', the folder '1'"),
    ([_row(1, image="Mass-Training_P_00002_LEFT_CC")], "names image folder"),
    ([{**_row(1), "pathology": ""}], "leaves a label column empty"),
])
def test_an_abnormality_the_tables_do_not_back_quarantines_its_image(tmp_path, rows, why):
    _mammogram(tmp_path)
    _described(tmp_path, 1, _square(2, 3))
    _table(tmp_path, rows)
    units, problems = plan_dicom(_spec(), tmp_path)
    assert units == []  # never read with some of its ROIs missing
    assert len(problems) == 3 and all(why in str(p.exc) for p in problems)
    assert {p.file.split("/")[0] for p in problems} == {CASE, f"{CASE}_1"}


def test_an_abnormality_folder_without_its_image_is_not_read_as_an_image(tmp_path):
    _described(tmp_path, 1, _square(2, 3))
    _table(tmp_path, [_row(1)])
    units, problems = plan_dicom(_spec(), tmp_path)
    assert units == [] and len(problems) == 2
    assert all("its image folder Mass-Training_P_00001_LEFT_CC is not under the source root"
               in str(p.exc) for p in problems)


def test_case_tables(tmp_path):
    spec = _spec()
    with pytest.raises(ConfigError, match="no case table matches"):
        read_roi_tables(spec, tmp_path)
    _table(tmp_path, [_row(1)])
    _table(tmp_path, [_row(1)], "mass_case_description_test_set.csv")
    with pytest.raises(ConfigError, match=f"two rows for {CASE}_1"):
        read_roi_tables(spec, tmp_path)
    (tmp_path / "mass_case_description_test_set.csv").write_text("patient_id,pathology\n")
    with pytest.raises(ConfigError, match="lacks columns"):
        read_roi_tables(spec, tmp_path)
    assert first_part(" Calc-Test_P_00038_LEFT_CC_1\\1.3\\x.dcm\n") == "Calc-Test_P_00038_LEFT_CC_1"


def test_images_without_abnormality_folders_are_unchanged(tmp_path):
    _mammogram(tmp_path)
    units, problems = plan_dicom(_spec(), tmp_path)  # no folder to pair: no table needed
    assert not problems and len(units) == 1 and "roi_folders" not in units[0].extra
    case = read_dicom(_spec(), tmp_path, units[0])[0]
    assert case.mask is None and pydicom.dcmread(tmp_path / units[0].files[0]).Rows == 20


def test_sources_check_names_folders_without_image_or_row(tmp_path):
    from curate.sources.layout_check import check_layout

    _mammogram(tmp_path)
    _described(tmp_path, 1, _square(2, 3))
    _described(tmp_path, 2, _square(8, 8))
    spec = _spec()
    assert "no case table matches" in " ".join(check_layout(spec, tmp_path).problems)
    _table(tmp_path, [_row(1), _row(2)])
    assert check_layout(spec, tmp_path).ok
    _table(tmp_path, [_row(1)])
    (tmp_path / f"{CASE}_1").rename(tmp_path / "Calc-Test_P_00009_LEFT_CC_1")  # no image
    problems = check_layout(spec, tmp_path).problems
    assert problems == [
        "1 of 2 abnormality folders without their image folder, e.g. "
        "Calc-Test_P_00009_LEFT_CC_1",
        "1 of 2 abnormality folders without a matching case-table row (their images are "
        "quarantined), e.g. Mass-Training_P_00001_LEFT_CC_2"], problems
