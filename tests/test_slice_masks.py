"""Per-slice mask images beside a DICOM series (layout.slice_masks, CHAOS's Ground PNGs):
masks pair with the folder's DICOM files by name order or stem, and each lands on the
slice its own DICOM file holds, whatever the names say about position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image

from curate.ingest.dicom import plan_dicom, read_dicom
from curate.ingest.files import UnknownLabels
from curate.ingest.slice_masks import natural_key
from curate.model.errors import IngestError
from curate.model.recipe import SourceSpec
from curate.sources.phantoms import write_dicom_series

MR_LABELS = {"liver": [56, 70], "right_kidney": [111, 135], "left_kidney": [176, 200],
             "spleen": [241, 255]}


def chaos_like(root: Path, folder: str = "CT/1/DICOM_anon", n: int = 6, mark: int = 1,
               value: int = 1, shape=(8, 10), uid: str | None = None) -> list[Path]:
    """A series of n 2 mm slices (HU = 100 x position index) named as CHAOS's CT is, the
    name order running against the position order (i0000 is the highest z), and its Ground
    folder: one PNG per file, all empty but the `mark`-th by name, which holds `value` in
    rows 2-3, columns 6-8."""
    hu = np.zeros((n, *shape), np.float32) + 100 * np.arange(n)[:, None, None]
    paths = write_dicom_series(root / folder, hu, (1.0, 1.0, 2.0), series_uid=uid)
    renamed = []
    for p in paths:
        k = int(round(float(pydicom.dcmread(p, stop_before_pixels=True)
                            .ImagePositionPatient[2]) / 2.0))
        target = p.with_name(f"i{n - 1 - k:04d},0000b.dcm")
        p.rename(target)
        renamed.append(target)
    ground = (root / folder).parent / "Ground"
    if folder.rsplit("/", 1)[-1] in ("InPhase", "OutPhase"):
        ground = (root / folder).parent.parent / "Ground"
    ground.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        m = np.zeros(shape, np.uint8)
        if i == mark:
            m[2:4, 6:9] = value
        Image.fromarray(m).save(ground / f"liver_GT_{i:03d}.png")
    return sorted(renamed)


def spec_of(labels=None, pair="name_order", series="CT/*/DICOM_anon",
            folder="{parent:DICOM_anon$=Ground}", images=("CT/*/DICOM_anon/*.dcm",), **layout):
    return SourceSpec(name="chaos-like", format="dicom", layout={
        "images": list(images), **layout,
        "slice_masks": [{"series": series, "folder": folder, "pair": pair,
                         "labels": labels or {"liver": [1, 255]}}]})


def label_array(case) -> np.ndarray:
    return sitk.GetArrayFromImage(case.label)


def test_the_mask_lands_on_its_own_files_slice_not_its_name_position(tmp_path):
    chaos_like(tmp_path, mark=1)  # the 2nd name, i0001: position index 4 of 0..5
    spec = spec_of()
    units, problems = plan_dicom(spec, tmp_path)
    assert not problems and len(units) == 1
    assert len(units[0].extra["slice_masks"]) == 6
    (case,) = read_dicom(spec, tmp_path, units[0])
    image, label = sitk.GetArrayFromImage(case.image), label_array(case)
    assert label.shape == image.shape == (6, 8, 10)
    assert np.nonzero(label.any(axis=(1, 2)))[0].tolist() == [4]  # not slice 1
    assert image[4].mean() == pytest.approx(400)  # the slice of i0001 (HU 100 x 4)
    expected = np.zeros((8, 10), np.uint16)
    expected[2:4, 6:9] = 1
    assert (label[4] == expected).all()  # rows and columns as the PNG has them
    assert case.meta.label_map == {1: "liver"}


def test_grey_levels_become_labels_through_their_ranges(tmp_path):
    chaos_like(tmp_path, folder="MR/1/T2SPIR/DICOM_anon", mark=0, value=63)
    png = tmp_path / "MR/1/T2SPIR/Ground/liver_GT_000.png"
    m = np.array(Image.open(png))
    m[5:7, 0:2], m[0, 0], m[7, 9] = 126, 60, 252
    Image.fromarray(m).save(png)
    spec = spec_of(MR_LABELS, series="MR/*/T2SPIR/DICOM_anon",
                   images=["MR/*/T2SPIR/DICOM_anon/*.dcm"])
    units, problems = plan_dicom(spec, tmp_path)
    (case,) = read_dicom(spec, tmp_path, units[0])
    top = label_array(case)[5]  # i0000 is the highest position
    assert case.meta.label_map == {1: "liver", 2: "right_kidney", 3: "left_kidney",
                                   4: "spleen"}
    assert top[2:4, 6:9].tolist() == [[1] * 3] * 2 and top[0, 0] == 1  # 63 and 60: liver
    assert (top[5:7, 0:2] == 2).all() and top[7, 9] == 4
    assert int((top > 0).sum()) == 6 + 1 + 4 + 1


@pytest.mark.parametrize("policy", ["quarantine", "ignore", "keep"])
def test_a_value_in_no_range_follows_unknown_labels(tmp_path, policy):
    chaos_like(tmp_path, mark=2, value=99)
    spec = spec_of(MR_LABELS, unknown_labels=policy)
    units, _ = plan_dicom(spec, tmp_path)
    if policy == "quarantine":
        with pytest.raises(UnknownLabels, match="99") as info:
            read_dicom(spec, tmp_path, units[0])
        assert info.value.file == "CT/1/Ground/liver_GT_002.png"
        return
    (case,) = read_dicom(spec, tmp_path, units[0])
    if policy == "ignore":
        assert not label_array(case).any()
        assert any("99" in n for n in case.meta.notes)
    else:
        assert case.meta.label_map[5] == "label 99"
        assert (label_array(case)[3][2:4, 6:9] == 5).all()


def test_a_count_mismatch_leaves_the_series_out_naming_its_folder(tmp_path):
    chaos_like(tmp_path)
    (tmp_path / "CT/1/Ground/liver_GT_005.png").unlink()
    units, problems = plan_dicom(spec_of(), tmp_path)
    assert units == []
    (p,) = problems
    assert p.file == "CT/1/DICOM_anon/"
    assert "6 DICOM file(s)" in str(p.exc) and "5 mask(s)" in str(p.exc)


def test_a_missing_mask_folder_leaves_the_series_out(tmp_path):
    chaos_like(tmp_path)
    for png in (tmp_path / "CT/1/Ground").iterdir():
        png.unlink()
    units, problems = plan_dicom(spec_of(), tmp_path)
    assert units == [] and problems[0].file == "CT/1/DICOM_anon/"
    assert "no mask file" in str(problems[0].exc)


def test_an_unusable_file_still_counts_in_the_name_order(tmp_path):
    """An empty DICOM file is a planning problem, but it keeps its place in the folder's
    name order, so the masks after it do not shift onto the wrong files."""
    chaos_like(tmp_path, mark=3)
    (tmp_path / "CT/1/DICOM_anon/i0000,0000b.dcm").write_bytes(b"")  # the top slice
    spec = spec_of()
    units, problems = plan_dicom(spec, tmp_path)
    assert [p.file for p in problems] == ["CT/1/DICOM_anon/i0000,0000b.dcm"]
    assert len(units[0].extra["slice_masks"]) == 5
    (case,) = read_dicom(spec, tmp_path, units[0])
    # five slices at positions 0..4; i0003 is position index 2
    assert np.nonzero(label_array(case).any(axis=(1, 2)))[0].tolist() == [2]
    assert sitk.GetArrayFromImage(case.image)[2].mean() == pytest.approx(200)


def test_stem_pairing(tmp_path):
    paths = chaos_like(tmp_path, mark=0)
    ground = tmp_path / "CT/1/Ground"
    for i, png in enumerate(sorted(ground.iterdir())):  # names follow the DICOM stems
        png.rename(ground / f"{paths[i].stem}.png")
    spec = spec_of(pair="stem")
    units, problems = plan_dicom(spec, tmp_path)
    assert not problems
    (case,) = read_dicom(spec, tmp_path, units[0])
    assert np.nonzero(label_array(case).any(axis=(1, 2)))[0].tolist() == [5]
    (ground / f"{paths[0].stem}.png").rename(ground / "other.png")
    units, problems = plan_dicom(spec, tmp_path)
    assert units == [] and "without a mask of the same stem" in str(problems[0].exc)


def test_in_and_opposed_phase_share_one_ground_folder(tmp_path):
    chaos_like(tmp_path, folder="MR/1/T1DUAL/DICOM_anon/InPhase", mark=1, value=63)
    chaos_like(tmp_path, folder="MR/1/T1DUAL/DICOM_anon/OutPhase", mark=1, value=63)
    spec = spec_of(MR_LABELS, series="MR/*/T1DUAL/DICOM_anon/*",
                   folder="{parent:/DICOM_anon/(InPhase|OutPhase)$=/Ground}",
                   images=["MR/*/T1DUAL/DICOM_anon/*/*.dcm"])
    units, problems = plan_dicom(spec, tmp_path)
    assert not problems and len(units) == 2
    for unit in units:
        assert {m for _, m, _ in unit.extra["slice_masks"]} == \
            {f"MR/1/T1DUAL/Ground/liver_GT_{i:03d}.png" for i in range(6)}
        (case,) = read_dicom(spec, tmp_path, unit)
        assert np.nonzero(label_array(case).any(axis=(1, 2)))[0].tolist() == [4]


def test_a_split_series_gives_each_sub_volume_its_own_masks(tmp_path):
    paths = chaos_like(tmp_path, mark=4)  # i0004: position index 1, in the lower run
    for p in paths:  # move the upper three slices 200 mm up: two runs of three
        ds = pydicom.dcmread(p)
        if float(ds.ImagePositionPatient[2]) >= 6:
            ds.ImagePositionPatient = [0.0, 0.0, float(ds.ImagePositionPatient[2]) + 200]
            ds.save_as(p)
    spec = spec_of()
    units, _ = plan_dicom(spec, tmp_path)
    low, high = read_dicom(spec, tmp_path, units[0])
    assert np.nonzero(label_array(low).any(axis=(1, 2)))[0].tolist() == [1]
    assert label_array(high).shape == (3, 8, 10) and not label_array(high).any()


def test_a_mask_of_another_size_is_an_error_naming_it(tmp_path):
    chaos_like(tmp_path)
    Image.fromarray(np.zeros((10, 8), np.uint8)).save(tmp_path / "CT/1/Ground/liver_GT_004.png")
    spec = spec_of()
    units, _ = plan_dicom(spec, tmp_path)
    with pytest.raises(IngestError, match="8x10 pixels") as info:
        read_dicom(spec, tmp_path, units[0])
    assert info.value.file == "CT/1/Ground/liver_GT_004.png"


def test_a_one_bit_png_is_read_as_zero_and_one(tmp_path):
    chaos_like(tmp_path, mark=1)
    png = tmp_path / "CT/1/Ground/liver_GT_001.png"
    Image.fromarray(np.array(Image.open(png)) > 0).save(png)  # mode "1", as CHAOS's CT
    assert Image.open(png).mode == "1"
    spec = spec_of()
    units, _ = plan_dicom(spec, tmp_path)
    (case,) = read_dicom(spec, tmp_path, units[0])
    assert int(label_array(case).sum()) == 6 and label_array(case)[4].any()


def test_declarations_are_checked():
    with pytest.raises(ValueError, match="overlapping"):
        spec_of({"a": [1, 100], "b": [100, 200]})
    with pytest.raises(ValueError, match="1 <= low"):
        spec_of({"a": [0, 10]})
    with pytest.raises(ValueError, match="both label volumes"):
        spec_of(masks="{parent}/{stem}.png")


def test_natural_name_order():
    names = ["slice10.png", "slice2.png", "slice1.png", "IMG-0002-00010.png", "IMG-0002-00002.png"]
    assert sorted(names, key=natural_key) == [
        "IMG-0002-00002.png", "IMG-0002-00010.png", "slice1.png", "slice2.png", "slice10.png"]


def test_sources_check_reports_unpaired_series_and_stray_values(tmp_path):
    from curate.sources.layout_check import check_layout

    chaos_like(tmp_path, folder="CT/1/DICOM_anon", mark=3, value=99)
    chaos_like(tmp_path, folder="CT/2/DICOM_anon")
    spec = spec_of(MR_LABELS)
    rep = check_layout(spec, tmp_path)
    assert rep.ok is False
    assert any("CT/1/Ground/liver_GT_003.png: values [99]" in p for p in rep.problems), \
        rep.problems  # the middle mask of the series, by name
    assert check_layout(spec_of(), tmp_path).ok  # any non-zero is liver: both series pair
    (tmp_path / "CT/2/Ground/liver_GT_000.png").unlink()
    rep = check_layout(spec_of(), tmp_path)
    assert any("1 series folder(s) cannot be paired" in p and "CT/2/DICOM_anon/" in p
               for p in rep.problems), rep.problems
