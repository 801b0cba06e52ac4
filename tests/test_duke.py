"""Duke-Breast-Cancer-MRI: 3D Slicer segmentations on the series the authors' table names.

Phantoms with known ground truth: a pre-contrast and a post-contrast series of one
patient on the same grid (slices stored in reverse order, a flipped orientation as some
Duke series have), the authors' file mapping naming the pre-contrast series by its UID
in classic_path, and .seg.nrrd files written on another but equivalent grid (flipped
axes), with label values swapped or in two layers as the authors' loader warns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom import uid

from curate.ingest import adapter
from curate.ingest.slicer_seg import _part, series_with_role
from curate.model.errors import IngestError
from curate.model.recipe import load_source
from curate.model.source import SeriesRoles
from tests.phantom_parts import dicom_dataset

ROOT = Path(__file__).resolve().parent.parent
SPEC = load_source(ROOT / "sources/duke-breast-cancer-mri.yaml")
PID = "Breast_MRI_007"
SHAPE = (5, 6, 7)  # slices, rows, columns
SPACING = (0.7, 0.8, 2.5)  # column step, row step, slice step (mm)
IOP = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0]  # rows run to patient right, columns anterior
ORIGIN = np.array([40.0, 30.0, -20.0])  # the first pixel of the lowest slice


def _position(k: int) -> list[float]:
    return [float(v) for v in ORIGIN + np.array([0, 0, SPACING[2] * k])]


def _series(root: Path, folder: str, study: str) -> str:
    """An MR series of SHAPE, slice k at z = -20 + 2.5 k, files in reverse z order."""
    series_uid = uid.generate_uid()
    d = root / "Duke-Breast-Cancer-MRI" / PID / study / folder
    d.mkdir(parents=True)
    for n, k in enumerate(reversed(range(SHAPE[0]))):
        ds = dicom_dataset(uid.MRImageStorage, "MR", PID, study, series_uid)
        ds.InstanceNumber = n + 1
        ds.ImageOrientationPatient, ds.ImagePositionPatient = IOP, _position(k)
        ds.PixelSpacing, ds.SliceThickness = [SPACING[1], SPACING[0]], SPACING[2]
        ds.Rows, ds.Columns = SHAPE[1], SHAPE[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.full(SHAPE[1:], 100 + k, np.uint16).tobytes()
        ds.save_as(d / f"1-{n + 1:02d}.dcm", enforce_file_format=True)
    return series_uid


def _series_grid() -> sitk.Image:
    """The series' own grid, built from the values written above (not by curate)."""
    image = sitk.Image(SHAPE[2], SHAPE[1], SHAPE[0], sitk.sitkUInt8)
    image.SetOrigin(tuple(ORIGIN))
    image.SetSpacing(SPACING)
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    return image


def _seg(path: Path, layers: list[np.ndarray], segments: dict[str, tuple[int, int]]) -> None:
    """A Slicer-style .seg.nrrd on a flipped copy of the series grid (same voxels in
    space, another index order), with SegmentN_* header fields."""
    arr = np.stack(layers, axis=-1) if len(layers) > 1 else layers[0]
    image = sitk.GetImageFromArray(arr.astype(np.uint8), isVector=len(layers) > 1)
    image.CopyInformation(_series_grid())
    image = sitk.Flip(image, [True, False, True])  # keeps every voxel where it is in space
    for n, (name, (value, layer)) in enumerate(segments.items()):
        image.SetMetaData(f"Segment{n}_Name", name)
        image.SetMetaData(f"Segment{n}_LabelValue", str(value))
        image.SetMetaData(f"Segment{n}_Layer", str(layer))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)


def _mapping(root: Path, study: str, rows: list[tuple[str, str]]) -> None:
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["original_path_and_filename", "classic_path", "descriptive_path"])
    for series_uid, seq in rows:
        for i in (1, 2):
            book.active.append([f"DICOM_Images/{PID}/{seq}/{PID}_{seq}_{i:03d}.dcm",
                                f"Duke-Breast-Cancer-MRI/{PID}/{study}/{series_uid}/1-{i:02d}.dcm",
                                f"Duke-Breast-Cancer-MRI/{PID}/01-01-1990-NA-BREAST/x/1-{i}.dcm"])
    book.save(root / "Breast-Cancer-MRI-filepath_filename-mapping.xlsx")


BREAST = (slice(1, 4), slice(1, 5), slice(1, 6))  # slices 1-3, rows 1-4, columns 1-5
DENSE = (2, 2, slice(2, 4))  # slice 2 (z = -15 mm), row 2, columns 2-3
VESSEL = (3, 3, 4)  # slice 3 (z = -12.5 mm), row 3, column 4


def _source(tmp_path: Path, two_layers: bool = False) -> tuple[Path, str, str]:
    study = uid.generate_uid()
    pre = _series(tmp_path, "pre_folder", study)
    post = _series(tmp_path, "post_folder", study)
    _mapping(tmp_path, study, [(pre, "pre"), (post, "post_1")])
    breast = np.zeros(SHAPE, np.uint8)
    breast[BREAST] = 1
    seg_dir = tmp_path / "Segmentation_Masks_NRRD" / PID
    _seg(seg_dir / f"Segmentation_{PID}_Breast.seg.nrrd", [breast], {"Segment_1": (1, 0)})
    dense, vessel = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    if two_layers:  # overlapping segments: one layer each, value 1 in both
        dense[DENSE], vessel[VESSEL] = 1, 1
        vessel[DENSE] = 1  # overlaps the dense tissue: the declared order lets Dense win
        layers, segs = [vessel, dense], {"Vessels": (1, 0), "Dense": (1, 1)}
    else:  # one layer, the values the other way round from the authors' preferred ones
        dense[DENSE], dense[VESSEL] = 1, 2
        layers, segs = [dense], {"Dense": (1, 0), "Vessels": (2, 0)}
    _seg(seg_dir / f"Segmentation_{PID}_Dense_and_Vessels.seg.nrrd", layers, segs)
    return tmp_path, pre, post


def _read_all(root: Path):
    plan, read = adapter(SPEC.format)
    units, problems = plan(SPEC, root)
    assert not problems, [f"{p.file}: {p.exc}" for p in problems]
    return {str(pydicom.dcmread(root / u.files[0], stop_before_pixels=True).SeriesInstanceUID):
            (u, read(SPEC, root, u)) for u in units}


@pytest.mark.parametrize("two_layers", [False, True], ids=["one_layer", "two_layers"])
def test_segments_land_on_their_voxels_of_the_pre_contrast_series(tmp_path, two_layers):
    root, pre, post = _source(tmp_path, two_layers)
    read = _read_all(root)
    (_, [case]) = read[pre]
    names = {v: k for k, v in case.meta.label_map.items()}
    assert set(names) == {"breast", "blood vessel", "fibroglandular tissue"}
    arr = sitk.GetArrayFromImage(case.label)
    assert arr.shape == SHAPE
    # the volume is ordered by position: slice k of the array is at z = -20 + 2.5 k
    z = [case.image.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(SHAPE[0])]
    assert np.allclose(z, [-20 + 2.5 * k for k in range(SHAPE[0])])
    expected = np.zeros(SHAPE, np.uint16)
    expected[BREAST] = names["breast"]
    expected[DENSE] = names["fibroglandular tissue"]
    expected[VESSEL] = names["blood vessel"]
    assert np.array_equal(arr, expected)
    # the pixel at row 2, column 2 of slice 2 is where the DICOM header puts it
    point = case.label.TransformIndexToPhysicalPoint((2, 2, 2))
    assert np.allclose(point, [40 - 2 * 0.7, 30 - 2 * 0.8, -15])
    (unit, [post_case]) = read[post]
    assert post_case.label is None and "segmentations" not in unit.extra


def test_the_table_not_the_folder_decides_the_series(tmp_path):
    root, pre, post = _source(tmp_path)
    study = str(pydicom.dcmread(next((root / "Duke-Breast-Cancer-MRI").rglob("*.dcm")),
                                stop_before_pixels=True).StudyInstanceUID)
    _mapping(root, study, [(pre, "post_1"), (post, "pre")])  # the roles the other way
    read = _read_all(root)
    assert read[pre][1][0].label is None
    assert read[post][1][0].label is not None


def test_an_undeclared_segment_is_a_quarantine_row(tmp_path):
    root, pre, _ = _source(tmp_path)
    path = root / "Segmentation_Masks_NRRD" / PID / f"Segmentation_{PID}_Dense_and_Vessels.seg.nrrd"
    arr = np.zeros(SHAPE, np.uint8)
    arr[DENSE] = 1
    _seg(path, [arr], {"Dense": (1, 0), "Vessels": (2, 0), "Clip": (3, 0)})
    plan, read = adapter(SPEC.format)
    units, _ = plan(SPEC, root)
    unit = next(u for u in units if "segmentations" in u.extra)
    with pytest.raises(IngestError, match="not declared \\['Clip'\\]") as err:
        read(SPEC, root, unit)
    assert err.value.file.endswith("_Dense_and_Vessels.seg.nrrd")


def test_a_segmentation_beyond_the_series_is_a_quarantine_row(tmp_path):
    root, pre, _ = _source(tmp_path)
    path = root / "Segmentation_Masks_NRRD" / PID / f"Segmentation_{PID}_Breast.seg.nrrd"
    image = sitk.ReadImage(str(path))
    image.SetOrigin(tuple(np.array(image.GetOrigin()) + [0, 0, 5.0]))  # two slices higher
    sitk.WriteImage(image, str(path), True)
    plan, read = adapter(SPEC.format)
    units, _ = plan(SPEC, root)
    unit = next(u for u in units if "segmentations" in u.extra)
    with pytest.raises(IngestError, match="beyond the series' grid"):
        read(SPEC, root, unit)


def test_role_table_parts_and_missing_table(tmp_path):
    assert _part("Duke-Breast-Cancer-MRI/P/1.2/1.2.3/1-01.dcm", -2) == "1.2.3"
    assert _part("DICOM_Images/P/pre/x.dcm", -2) == "pre" and _part(" 1.2 ", None) == "1.2"
    (tmp_path / "t.csv").write_text("uid,seq\n1.2.3,a/pre/b\n1.2.4,a/post_1/b\n")
    table = SeriesRoles(file="t.csv", uid_column="uid", role_column="seq", role_part=-2,
                        role="pre")
    assert series_with_role(table, tmp_path) == {"1.2.3"}
    with pytest.raises(IngestError, match="no column"):
        series_with_role(table.model_copy(update={"uid_column": "SeriesUID"}), tmp_path)
    with pytest.raises(IngestError, match="not under the source root"):
        series_with_role(table.model_copy(update={"file": "gone.csv"}), tmp_path)
