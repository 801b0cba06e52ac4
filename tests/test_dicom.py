"""DICOM adapter on real test files (compressed, colour, multi-frame) and built SEG/RTSTRUCT."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from curate.ingest.base import ImageCase
from curate.ingest.dicom import BurnedInAnnotation, plan_dicom, read_dicom
from curate.model.recipe import SourceSpec
from curate.sources.phantoms import write_dicom_series

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent


def spec_for(images, **kw):
    return SourceSpec(name="d", format="dicom", layout={"images": list(images)}, **kw)


def read_one(name, root=TEST_FILES, **kw):
    spec = spec_for([name], **kw)
    units, problems = plan_dicom(spec, root)
    assert not problems, problems
    return read_dicom(spec, root, units[0])


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm",
                                  "MR_small_implicit.dcm"])
def test_compressed_and_other_syntaxes_decode_to_the_same_pixels(name):
    (ref,) = read_one("MR_small.dcm")
    (case,) = read_one(name)
    assert np.array_equal(sitk.GetArrayFromImage(case.image), sitk.GetArrayFromImage(ref.image))


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle.dcm", "SC_rgb_gdcm_KY.dcm",
                                  "SC_ybr_full_422_uncompressed.dcm", "examples_palette.dcm",
                                  "examples_rgb_color.dcm"])
def test_colour_files_become_rgb_uint8(name):
    cases = read_one(name)
    assert all(isinstance(c, ImageCase) and c.pixels.ndim == 3 and c.pixels.dtype == np.uint8
               for c in cases)


def test_ybr_jpeg_is_converted_to_rgb():
    (case,) = read_one("SC_rgb_jpeg_dcmtk.dcm")
    # the test image has a red band at the top: red channel dominates there
    top = case.pixels[:5].reshape(-1, 3).mean(axis=0)
    assert top[0] > 200 and top[1] < 60 and top[2] < 60


def test_multiframe_ultrasound_gives_evenly_spaced_frames():
    cases = read_one("examples_ybr_color.dcm")
    assert [c.index for c in cases] == [0, 10, 19, 29]


def test_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    raw = ds.pixel_array.astype(np.float32)
    ds.PhotometricInterpretation = "MONOCHROME1"
    del ds.ImageOrientationPatient  # a projection image, as a CR would be
    ds.save_as(tmp_path / "m1.dcm")
    (case,) = read_one("m1.dcm", root=tmp_path)
    hi = np.unravel_index(np.argmax(raw), raw.shape)
    assert case.photometric_inverted and case.pixels[hi] == case.pixels.min()


def test_burned_in_annotation_is_left_out_unless_allowed(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    ds.save_as(tmp_path / "b.dcm")
    with pytest.raises(BurnedInAnnotation):
        read_one("b.dcm", root=tmp_path)
    assert read_one("b.dcm", root=tmp_path, allow_burned_in=True)


def test_non_image_objects_are_reported_not_dropped():
    spec = spec_for(["reportsi.dcm", "rtplan.dcm", "CT_small.dcm"])
    units, problems = plan_dicom(spec, TEST_FILES)
    assert len(units) == 1
    assert {p.file for p in problems} == {"reportsi.dcm", "rtplan.dcm"}
    assert all("holds no image" in str(p.exc) for p in problems)


def test_seg_without_its_series_is_a_problem():
    units, problems = plan_dicom(spec_for(["liver_1frame.dcm"]), TEST_FILES)
    assert not units and "not under the source root" in str(problems[0].exc)


def _phantom_series(tmp_path):
    hu = np.full((6, 32, 40), -1000, np.float32)
    hu[:, 4:28, 4:36] = 40
    truth = np.zeros(hu.shape, bool)
    truth[2:4, 10:16, 28:34] = True
    hu[truth] = 150
    paths = write_dicom_series(tmp_path / "series", hu, (0.7, 0.7, 2.5), shuffle_seed=5)
    return hu, truth, paths


def test_dicom_seg_is_read_as_a_label_volume(tmp_path):
    hd = pytest.importorskip("highdicom")
    from pydicom.sr.codedict import codes
    _, truth, paths = _phantom_series(tmp_path)
    sources = sorted((pydicom.dcmread(p) for p in paths),
                     key=lambda d: float(d.ImagePositionPatient[2]))
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="tumour",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=truth.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[desc],
        series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="curate", manufacturer_model_name="test",
        software_versions="0", device_serial_number="0")
    seg.save_as(tmp_path / "series" / "seg.dcm")
    spec = spec_for(["series/*.dcm"], modality="CT")
    units, problems = plan_dicom(spec, tmp_path)
    assert not problems and len(units) == 1
    (case,) = read_dicom(spec, tmp_path, units[0])
    labels = sitk.GetArrayFromImage(case.label)
    assert np.array_equal(labels > 0, truth)
    assert case.meta.label_map == {1: "tumour"}


def test_rtstruct_contours_are_rasterised(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid
    _, _, paths = _phantom_series(tmp_path)
    first = pydicom.dcmread(paths[0])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RTStructureSetStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = RTStructureSetStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "RTSTRUCT", generate_uid()
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    study = Dataset()
    study.RTReferencedSeriesSequence = Sequence([series])
    ref = Dataset()
    ref.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 1, "GTV"
    ds.StructureSetROISequence = Sequence([roi])
    # a square from x=7..14 mm, y=7..14 mm on the slice at z=5 mm (index 2)
    contour = Dataset()
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.ContourData = [7.0, 7.0, 5.0, 14.0, 7.0, 5.0, 14.0, 14.0, 5.0, 7.0, 14.0, 5.0]
    contour.NumberOfContourPoints = 4
    rc = Dataset()
    rc.ReferencedROINumber = 1
    rc.ContourSequence = Sequence([contour])
    ds.ROIContourSequence = Sequence([rc])
    ds.save_as(tmp_path / "series" / "rs.dcm", enforce_file_format=True)
    spec = spec_for(["series/*.dcm"], modality="CT")
    units, problems = plan_dicom(spec, tmp_path)
    assert not problems
    (case,) = read_dicom(spec, tmp_path, units[0])
    labels = sitk.GetArrayFromImage(case.label)
    ks, ys, xs = np.nonzero(labels)
    assert set(ks) == {2}
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 20, 10, 20)  # 7/0.7 .. 14/0.7
    assert case.meta.label_map == {1: "GTV"}


def write_uneven_series(folder, hu):
    """A 5-slice series 2 mm apart whose last slice moved from z=8 to z=10 (steps 2,2,2,4:
    uneven, but under volume.max_gap x the median step, so not a gap)."""
    paths = write_dicom_series(folder, hu, (1.0, 1.0, 2.0))
    last = max(paths, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    ds = pydicom.dcmread(last)
    ds.ImagePositionPatient = [0.0, 0.0, 10.0]
    ds.save_as(last)


@pytest.mark.parametrize("rule", ["resample", "median", "reject"])
def test_uneven_spacing_follows_the_declared_rule(tmp_path, rule):
    from curate.model.errors import IngestError
    write_uneven_series(tmp_path / "s",
                        np.zeros((5, 8, 8), np.float32) + np.arange(5)[:, None, None] * 100)
    spec = SourceSpec(name="d", format="dicom", layout={"images": ["s/*.dcm"],
                                                         "volume": {"uneven_spacing": rule}})
    units, _ = plan_dicom(spec, tmp_path)
    if rule == "reject":
        with pytest.raises(IngestError, match="uneven"):
            read_dicom(spec, tmp_path, units[0])
        return
    (case,) = read_dicom(spec, tmp_path, units[0])
    arr = sitk.GetArrayFromImage(case.image)[:, 0, 0]
    assert case.image.GetSpacing()[2] == pytest.approx(2.0)
    if rule == "median":
        assert arr.tolist() == [0, 100, 200, 300, 400]
    else:  # z = 0, 2, ..., 10: the step between z=6 (300) and z=10 (400) is interpolated
        assert arr == pytest.approx([0, 100, 200, 300, 350, 400])


def write_gap_series(folder, gap_mm=200.0):
    """Six 2 mm slices in two runs of three, `gap_mm` apart (missing slices between)."""
    hu = np.zeros((6, 8, 8), np.float32) + np.arange(6)[:, None, None] * 100
    paths = write_dicom_series(folder, hu, (1.0, 1.0, 2.0))
    for p in paths:
        ds = pydicom.dcmread(p)
        z = float(ds.ImagePositionPatient[2])
        if z >= 6:
            ds.ImagePositionPatient = [0.0, 0.0, z + gap_mm]
            ds.save_as(p)
    return paths


@pytest.mark.parametrize("rule", ["split", "reject"])
def test_a_gap_splits_the_series_or_rejects_it_never_interpolates(tmp_path, rule):
    from curate.model.errors import IngestError
    write_gap_series(tmp_path / "s")
    spec = SourceSpec(name="d", format="dicom", layout={"images": ["s/*.dcm"],
                                                         "volume": {"gaps": rule}})
    units, _ = plan_dicom(spec, tmp_path)
    assert len(units) == 1
    if rule == "reject":
        with pytest.raises(IngestError, match="gap"):
            read_dicom(spec, tmp_path, units[0])
        return
    cases = read_dicom(spec, tmp_path, units[0])
    assert [sitk.GetArrayFromImage(c.image)[:, 0, 0].tolist() for c in cases] == \
        [[0, 100, 200], [300, 400, 500]]  # 3 + 3 slices, none made up across 200 mm
    assert [c.image.GetOrigin()[2] for c in cases] == [0.0, 206.0]
    assert all(c.image.GetSpacing()[2] == pytest.approx(2.0) for c in cases)
    assert all("split into 2 sub-volumes" in " ".join(c.meta.notes) for c in cases)


def break_pixels(path):
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]  # too short for Rows x Columns
    ds.save_as(path)


def test_a_slice_that_does_not_decode_loses_only_itself_and_is_named(tmp_path):
    from curate.model.recipe import Recipe
    from curate.unit.pipeline import process_unit
    hu = np.zeros((5, 24, 24), np.float32) + np.arange(5)[:, None, None] * 100
    hu[:, 8:16, 8:16] += 300  # something to see: not a blank view
    paths = sorted(write_dicom_series(tmp_path / "s", hu, (1.0, 1.0, 2.0)))
    bad = next(p for p in paths if float(pydicom.dcmread(p).ImagePositionPatient[2]) == 4.0)
    break_pixels(bad)
    spec = SourceSpec(name="d", format="dicom", modality="CT",
                      layout={"images": ["s/*.dcm"], "volume": {"uneven_spacing": "median"}})
    units, _ = plan_dicom(spec, tmp_path)
    (case,) = read_dicom(spec, tmp_path, units[0])
    assert sitk.GetArrayFromImage(case.image)[:, 0, 0].tolist() == [0, 100, 300, 400]
    assert [Path(rel).name for rel, _ in case.meta.skipped] == [bad.name]
    assert "did not decode" in " ".join(case.meta.notes)
    recipe = Recipe(name="t", sources=[spec.model_dump(exclude_none=True)])
    result = process_unit(spec, tmp_path, units[0].stamp(tmp_path, "test"), recipe)
    assert result.samples  # the good slices still ship
    assert [(Path(q["file"]).name, q["stage"]) for q in result.quarantine] == \
        [(bad.name, "ingest")]


def test_files_without_geometry_in_one_series_fail_one_by_one(tmp_path):
    hu = np.zeros((3, 8, 8), np.float32) + 100
    paths = sorted(write_dicom_series(tmp_path / "s", hu, (1.0, 1.0, 2.0)))
    for p in paths:  # secondary-capture-like: a shared series, no patient geometry
        ds = pydicom.dcmread(p)
        del ds.ImagePositionPatient, ds.ImageOrientationPatient
        ds.save_as(p)
    break_pixels(paths[1])
    spec = spec_for(["s/*.dcm"])
    units, _ = plan_dicom(spec, tmp_path)
    assert len(units) == 1
    cases = read_dicom(spec, tmp_path, units[0])
    assert len(cases) == 2
    assert [Path(rel).name for rel, _ in cases[0].meta.skipped] == [paths[1].name]


def test_jpeg_extended_12_bit_decodes_like_its_jpeg_2000_twin():
    """pydicom's JPEG-lossy.dcm (JPEG Extended, 12-bit, refused by every pydicom plugin)
    and JPEG2000.dcm hold the same image of one series, each lossy-compressed."""
    (lossy,) = read_one("JPEG-lossy.dcm")
    (twin,) = read_one("JPEG2000.dcm")
    a, b = (np.asarray(c.pixels if isinstance(c, ImageCase) else
                       sitk.GetArrayFromImage(c.image), float).ravel() for c in (lossy, twin))
    assert a.shape == b.shape == (1024 * 256,)
    assert np.corrcoef(a, b)[0, 1] > 0.9
    assert np.median(np.abs(a - b)) <= 4  # on a 0-264 range: lossy noise, not another image


@pytest.mark.parametrize("rule,count", [("first", 1), ("mean", 1), ("split", 2)])
def test_four_d_nifti_follows_the_declared_rule(tmp_path, rule, count):
    from curate.ingest import adapter
    arr = np.zeros((2, 3, 4, 5), np.float32)  # t, z, y, x
    arr[1] = 10
    img = sitk.JoinSeries([sitk.GetImageFromArray(a) for a in arr])
    sitk.WriteImage(img, str(tmp_path / "v.nii.gz"))
    spec = SourceSpec(name="n", format="nifti", layout={"images": ["*.nii.gz"],
                                                         "volume": {"four_d": rule}})
    plan, read = adapter(spec.format)
    (unit,), _ = plan(spec, tmp_path)
    cases = read(spec, tmp_path, unit)
    assert len(cases) == count
    means = [float(sitk.GetArrayFromImage(c.image).mean()) for c in cases]
    assert means == {"first": [0.0], "mean": [5.0], "split": [0.0, 10.0]}[rule]


def test_real_monochrome1_chest_cr_reads_with_bone_bright_and_heart_on_image_right():
    """pydicom-data's RG1_UNCR.dcm: a PA chest CR stored MONOCHROME1, with a VOI window."""
    path = get_testdata_file("RG1_UNCR.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    path = Path(path)
    (case,) = read_one(path.name, root=path.parent)
    px = case.pixels.astype(float)
    h, w = px.shape
    assert case.photometric_inverted and case.window["method"] == "voi_lut"
    assert case.view.value == "frontal" and case.spacing is None  # the file says 0 x 0 mm
    band = slice(h // 3, 2 * h // 3)
    spine = px[band, int(0.45 * w):int(0.55 * w)].mean()
    lungs = (px[band, int(0.2 * w):int(0.3 * w)].mean() + px[band, int(0.7 * w):int(0.8 * w)].mean())
    assert spine > lungs / 2 + 30  # bone and mediastinum bright, aerated lung dark
    # radiological display: the heart (patient's left) bulges to the image right
    low = slice(int(0.55 * h), int(0.75 * h))
    assert px[low, int(0.55 * w):int(0.65 * w)].mean() > px[low, int(0.35 * w):int(0.45 * w)].mean()


@pytest.mark.parametrize("rule", ["keep", "reject"])
def test_gantry_tilt_is_detected_and_follows_the_rule(tmp_path, rule):
    from curate.model.errors import IngestError
    hu = np.zeros((4, 8, 8), np.float32)
    paths = write_dicom_series(tmp_path / "s", hu, (1.0, 1.0, 2.0))
    for p in paths:  # slide each slice's origin along y as z grows: a tilted gantry
        ds = pydicom.dcmread(p)
        z = float(ds.ImagePositionPatient[2])
        ds.ImagePositionPatient = [0.0, 0.4 * z, z]
        ds.save_as(p)
    spec = SourceSpec(name="d", format="dicom", layout={"images": ["s/*.dcm"],
                                                         "volume": {"gantry_tilt": rule}})
    units, _ = plan_dicom(spec, tmp_path)
    if rule == "reject":
        with pytest.raises(IngestError, match="gantry tilt"):
            read_dicom(spec, tmp_path, units[0])
    else:
        (case,) = read_dicom(spec, tmp_path, units[0])
        assert any("gantry tilt" in n for n in case.meta.notes)
        assert case.image.GetSpacing()[2] == pytest.approx(2.0)


def test_rule_decisions_reach_the_record(tmp_path):
    from curate.model.recipe import Recipe
    from curate.unit.pipeline import process_unit
    write_uneven_series(tmp_path / "s", np.full((5, 16, 16), 40, np.float32))
    spec = SourceSpec(name="d", format="dicom", layout={"images": ["s/*.dcm"]})
    (unit,), _ = plan_dicom(spec, tmp_path)
    res = process_unit(spec, tmp_path, unit.stamp(tmp_path, "x"), Recipe(name="t", sources=[]))
    assert res.samples and all(any("resampled" in n for n in s["notes"]) for s in res.samples)


def test_enhanced_multiframe_ct_reads_like_its_legacy_series(tmp_path):
    """A legacy CT series converted to one enhanced multi-frame object (highdicom) must give
    the same volume: frames ordered by their per-frame positions, spacing from the shared
    groups, HU from the rescale."""
    hd = pytest.importorskip("highdicom")
    hu = np.zeros((5, 16, 20), np.float32) + np.arange(5)[:, None, None] * 100
    hu[:, 2:5, 15:18] = 900  # off-centre, to catch a flip
    paths = write_dicom_series(tmp_path / "s", hu, (0.7, 0.8, 2.5), shuffle_seed=1)
    legacy = [pydicom.dcmread(p) for p in paths]
    for ds in legacy:
        ds.KVP, ds.ImageType, ds.AcquisitionNumber = 120, ["ORIGINAL", "PRIMARY", "AXIAL"], 1
        ds.PositionReferenceIndicator = ""
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=legacy, series_instance_uid=hd.UID(), series_number=3,
        sop_instance_uid=hd.UID(), instance_number=1)
    (tmp_path / "e").mkdir()
    enhanced.save_as(tmp_path / "e" / "enh.dcm")
    (series,) = read_dicom(spec_for(["s/*.dcm"]), tmp_path,
                           plan_dicom(spec_for(["s/*.dcm"]), tmp_path)[0][0])
    (multi,) = read_dicom(spec_for(["e/*.dcm"]), tmp_path,
                          plan_dicom(spec_for(["e/*.dcm"]), tmp_path)[0][0])
    assert np.array_equal(sitk.GetArrayFromImage(multi.image), sitk.GetArrayFromImage(series.image))
    assert multi.image.GetSpacing() == pytest.approx(series.image.GetSpacing())
    assert multi.image.GetOrigin() == pytest.approx(series.image.GetOrigin())


def test_a_sagittal_series_is_cut_in_its_own_plane():
    """pydicom's 16x16 sagittal MR files: 16x16 sagittal views, never 1-pixel-wide axial
    strips of the LPS volume."""
    from curate.model.recipe import NormalizeConfig
    from curate.unit.normalize import volume_views
    spec = spec_for(["dicomdirtests/98892003/MR1/*"])
    units, _ = plan_dicom(spec, TEST_FILES)
    cases = [c for u in units for c in read_dicom(spec, TEST_FILES, u)]
    views = [v for c in cases if not isinstance(c, ImageCase)
             for v in volume_views(c, NormalizeConfig(), np.random.default_rng(0))]
    assert views and all(v.image.shape == (16, 16) for v in views)
    assert {v.plane.value for v in views} == {"sagittal"}


def test_a_coronal_series_keeps_head_up_and_the_patients_left_on_image_right(tmp_path):
    """A coronal CT phantom whose lesion is high in the patient's left: coronal views,
    the lesion in the upper part on the image right, laterality left, from geometry."""
    from curate.model.recipe import NormalizeConfig
    from curate.unit.ground import ground
    from curate.unit.normalize import volume_views
    nx, ny, nz = 40, 6, 48  # LPS voxels: x to the patient's left, z to the head
    hu = np.full((nz, ny, nx), -1000.0, np.float32)
    hu[4:44, :, 4:36] = 40  # body
    lesion = np.zeros_like(hu, bool)
    lesion[34:40, 2:5, 26:32] = True  # superior, patient's left
    hu[lesion] = 150
    # slice k is the plane y = 3k; rows run from the head down (z decreasing), cols along x
    slices = np.stack([hu[::-1, k, :] for k in range(ny)])
    paths = write_dicom_series(tmp_path / "s", slices, (1.0, 1.0, 3.0))
    lab = np.stack([lesion[::-1, k, :] for k in range(ny)]).astype(np.uint8)
    for p in paths:
        ds = pydicom.dcmread(p)
        k = int(round(float(ds.ImagePositionPatient[2]) / 3.0))
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.ImagePositionPatient = [0.0, 3.0 * k, float(nz - 1)]
        ds.save_as(p)
    spec = spec_for(["s/*.dcm"], modality="CT", anatomy="abdomen")
    units, _ = plan_dicom(spec, tmp_path)
    (case,) = read_dicom(spec, tmp_path, units[0])
    lab_img = sitk.GetImageFromArray(lab)
    lab_img.CopyInformation(case.image)
    case.label = lab_img
    views = volume_views(case, NormalizeConfig(max_size=4096, roi_slices=2, normal_slices=0),
                         np.random.default_rng(0))
    assert views and {v.plane.value for v in views} == {"coronal"}
    assert all(v.image.shape == (nz, nx) for v in views)
    rois, _ = ground(views[0], {1: "lesion"}, {"lesion": "lesion"}, min_pixels=4)
    (roi,) = rois
    x0, y0, x1, y1 = roi["bbox"]
    assert (x0, x1) == (26, 32) and (y0, y1) == (nz - 40, nz - 34)  # head at the top
    assert roi["laterality"] == "left" and roi["location"] == "upper, on the patient's left side"


def test_a_dicom_series_takes_a_nifti_label_stored_in_another_orientation(tmp_path):
    """TCIA's Pancreas-CT: DICOM series with NIfTI label files elsewhere; the label is
    resampled onto the series by its patient-space geometry, whatever its orientation."""
    hu = np.zeros((6, 24, 24), np.float32) - 1000
    hu[:, 4:20, 4:20] = 40
    lesion = np.zeros(hu.shape, np.uint8)
    lesion[2:4, 6:10, 14:19] = 1
    hu[lesion == 1] = 150
    write_dicom_series(tmp_path / "dcm" / "case01", hu, (0.8, 0.8, 2.0))
    lab = sitk.GetImageFromArray(lesion)
    lab.SetSpacing((0.8, 0.8, 2.0))
    (tmp_path / "labels").mkdir()
    sitk.WriteImage(sitk.DICOMOrient(lab, "RAS"), str(tmp_path / "labels" / "case01.nii.gz"))
    spec = SourceSpec(name="d", format="dicom", modality="CT", layout={
        "images": ["dcm/*/*.dcm"], "masks": "{parent:^dcm/=labels/}.nii.gz",
        "label_map": {1: "tumour"}})
    units, problems = plan_dicom(spec, tmp_path)
    assert not problems and units[0].extra["label_files"] == ["labels/case01.nii.gz"]
    (case,) = read_dicom(spec, tmp_path, units[0])
    assert np.array_equal(sitk.GetArrayFromImage(case.label), lesion)


@pytest.mark.parametrize("record", [True, False])
def test_each_sample_names_the_files_it_came_from_unless_the_source_opts_out(tmp_path, record):
    from curate.model.recipe import Recipe
    from curate.unit.pipeline import process_unit
    hu = np.zeros((4, 24, 24), np.float32) + np.arange(4)[:, None, None] * 100
    hu[:, 8:16, 8:16] += 300
    paths = write_dicom_series(tmp_path / "s", hu, (1.0, 1.0, 2.0))
    spec = SourceSpec(name="d", format="dicom", modality="CT", record_paths=record,
                      layout={"images": ["s/*.dcm"]})
    units, _ = plan_dicom(spec, tmp_path)
    recipe = Recipe(name="t", sources=[spec.model_dump(exclude_none=True)])
    result = process_unit(spec, tmp_path, units[0].stamp(tmp_path, "test"), recipe)
    want = sorted(f"s/{p.name}" for p in paths) if record else []
    assert result.samples and all(s["source_files"] == want for s in result.samples)
