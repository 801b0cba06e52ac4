"""Annotation readers on small files written in the authors' own formats: several readers'
votes per class (CQ500 reads.csv), class tables keyed by a study folder and gzipped
(MIMIC-CXR-JPG's CheXpert labels), and world-coordinate findings drawn as spheres (LUNA16's
annotations.csv) through a volume's real geometry."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from curate.ingest.annotations import classes_of, read_class_labels
from curate.ingest.volume import plan_volumes, read_volume
from curate.ingest.world_points import sphere_labels
from curate.model.errors import ConfigError, IngestError
from curate.model.recipe import SourceSpec
from curate.sources.layout_check import check_layout

CQ500_HEADER = ["name", "Category"] + [f"R{r}:{c}" for r in (1, 2, 3) for c in (
    "ICH", "IPH", "IVH", "SDH", "EDH", "SAH", "BleedLocation-Left", "BleedLocation-Right",
    "ChronicBleed", "Fracture", "CalvarialFracture", "OtherFracture", "MassEffect",
    "MidlineShift")]


def _spec(fmt: str = "nifti", **layout) -> SourceSpec:
    return SourceSpec.model_validate({"name": "t", "format": fmt, "modality": "CT",
                                      "layout": layout})


def _cq500_reads(path: Path, rows: dict[str, dict[str, int]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CQ500_HEADER)
        for name, marks in rows.items():
            w.writerow([name, "B1"] + [marks.get(col, 0) for col in CQ500_HEADER[2:]])


def test_a_class_needs_the_declared_majority_of_readers(tmp_path):
    _cq500_reads(tmp_path / "reads.csv", {
        "CQ500-CT-0": {"R1:ICH": 1, "R2:ICH": 1, "R3:SDH": 1, "R1:Fracture": 1},
        "CQ500-CT-12": {"R1:SAH": 1, "R2:SAH": 1, "R3:SAH": 1},
    })
    classes = {"file": "reads.csv", "image_column": "name", "readers": ["R1:", "R2:", "R3:"],
               "min_votes": 2, "label_columns": ["ICH", "SDH", "SAH", "Fracture"],
               "image_key": r"{parent:^CQ500CT(\d+).*$=CQ500-CT-\1}"}
    spec = _spec("dicom", images=["**/*.dcm"], classes=classes)
    table = read_class_labels(spec, tmp_path)
    assert table == {"CQ500-CT-0": ["ICH"], "CQ500-CT-12": ["SAH"]}  # one vote is not enough
    # the study folder as the zips extract it, a series below it
    rel = "CQ500CT12 CQ500CT12/Unknown Study/CT 0.625mm/CT000001.dcm"
    assert classes_of(spec, table, rel) == ["SAH"]
    assert classes_of(spec, table, "CQ500CT0 CQ500CT0/Unknown Study/CT PLAIN/CT1.dcm") == ["ICH"]
    assert classes_of(spec, table, "CQ500CT7 CQ500CT7/Unknown Study/CT/x.dcm") is None
    one_vote = _spec("dicom", images=["**/*.dcm"], classes={**classes, "min_votes": 1})
    assert read_class_labels(one_vote, tmp_path)["CQ500-CT-0"] == ["ICH", "SDH", "Fracture"]


def test_reader_columns_are_checked_and_votes_bounded(tmp_path):
    _cq500_reads(tmp_path / "reads.csv", {"CQ500-CT-0": {}})
    spec = _spec("dicom", images=["**/*.dcm"], classes={
        "file": "reads.csv", "image_column": "name", "readers": ["R1:", "R4:"],
        "label_columns": ["ICH"]})
    with pytest.raises(ConfigError, match="R4:ICH"):
        read_class_labels(spec, tmp_path)
    with pytest.raises(ValueError, match="min_votes 3 exceeds"):
        _spec("dicom", images=["*"], classes={"file": "r.csv", "readers": ["a", "b"],
                                              "min_votes": 3, "label_columns": ["x"]})


def test_a_gzipped_study_table_labels_every_image_of_the_study(tmp_path):
    """MIMIC-CXR: files/p10/p10000032/s50414267/<dicom_id>.dcm, labels per study_id."""
    cols = ["subject_id", "study_id", "Atelectasis", "Cardiomegaly", "No Finding"]
    with gzip.open(tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz", "wt", newline="") as f:
        w = csv.writer(f)
        w.writerows([cols, ["10000032", "50414267", "1.0", "-1.0", ""],
                     ["10000032", "53189527", "", "", "1.0"]])
    spec = _spec("dicom", images=["files/**/*.dcm"], classes={
        "file": "mimic-cxr-2.0.0-chexpert.csv.gz", "image_column": "study_id",
        "image_key": "{folder:^s=}", "label_columns": cols[2:]})
    table = read_class_labels(spec, tmp_path)
    rel = "files/p10/p10000032/s50414267/02aa804e-bde0afdd.dcm"
    assert classes_of(spec, table, rel) == ["Atelectasis"]  # -1.0 (uncertain) is not positive
    assert classes_of(spec, table, "files/p10/p10000032/s53189527/x.dcm") == ["No Finding"]


def _volume(path: Path, size=(20, 16, 12), spacing=(0.7, 0.7, 2.5), origin=(-100.0, 50.0, -300.0),
            direction=(0, 1, 0, -1, 0, 0, 0, 0, 1)) -> sitk.Image:
    img = sitk.Image(list(size), sitk.sitkInt16)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return img


def test_a_sphere_lands_where_the_world_point_is(tmp_path):
    img = _volume(tmp_path / "v.mha")
    idx = (12, 5, 6)
    centre = img.TransformIndexToPhysicalPoint(idx)
    label, names = sphere_labels(img, [{"label": "nodule", "xyz": list(centre), "diameter": 6.0}])
    arr = sitk.GetArrayFromImage(label)
    assert names == {1: "nodule"}
    assert arr[idx[2], idx[1], idx[0]] == 1
    zs, ys, xs = np.nonzero(arr)
    world = np.array([img.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
                      for x, y, z in zip(xs, ys, zs, strict=True)])
    assert np.linalg.norm(world - centre, axis=1).max() <= 3.0  # nothing outside the sphere
    # voxel count close to the sphere's volume over the voxel volume
    expected = 4 / 3 * np.pi * 3.0 ** 3 / (0.7 * 0.7 * 2.5)
    assert 0.6 * expected < arr.sum() < 1.4 * expected
    # a sphere smaller than a voxel still marks the voxel holding its centre
    tiny, _ = sphere_labels(img, [{"label": "n", "xyz": list(centre), "diameter": 0.1}])
    assert sitk.GetArrayViewFromImage(tiny).sum() == 1


def test_a_point_outside_its_volume_is_an_error_not_an_empty_label(tmp_path):
    img = _volume(tmp_path / "v.mha")
    far = [p + 500 for p in img.GetOrigin()]
    with pytest.raises(IngestError, match="outside the volume"):
        sphere_labels(img, [{"label": "nodule", "xyz": far, "diameter": 5.0}])


def _luna(root: Path, rows: list[list], frame: str = "LPS") -> SourceSpec:
    with open(root / "annotations.csv", "w", newline="") as f:
        csv.writer(f).writerows([["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"],
                                 *rows])
    return _spec(images=["subset*/*.mhd"], points={"file": "annotations.csv", "label": "nodule",
                                                   "frame": frame})


def test_luna16_annotations_become_spheres_on_the_mhd_grid(tmp_path):
    uid = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100225287222365663678666836860"
    img = _volume(tmp_path / "subset0" / f"{uid}.mhd")
    _volume(tmp_path / "subset1" / "1.2.3.mhd")  # a scan without nodules
    x, y, z = img.TransformIndexToPhysicalPoint((4, 8, 3))
    spec = _luna(tmp_path, [[uid, x, y, z, 5.0], ["9.9.9", 0, 0, 0, 4.0]])
    units, problems = plan_volumes(spec, tmp_path)
    assert not problems and len(units) == 2
    by_key = {u.key: u for u in units}
    case = read_volume(spec, tmp_path, by_key[f"subset0/{uid}.mhd"])[0]
    arr = sitk.GetArrayViewFromImage(case.label)
    assert arr[3, 8, 4] == 1 and case.meta.label_map == {1: "nodule"}
    assert read_volume(spec, tmp_path, by_key["subset1/1.2.3.mhd"])[0].label is None
    rep = check_layout(spec, tmp_path)
    assert rep.point_rows == 2 and rep.images_with_points == 1, rep.summary()
    # the same table read as RAS puts the point elsewhere: outside, so the case fails loudly
    ras = _luna(tmp_path, [[uid, x, y, z, 5.0]], frame="RAS")
    unit = next(u for u in plan_volumes(ras, tmp_path)[0] if uid in u.key)
    with pytest.raises(IngestError, match="outside the volume") as err:
        read_volume(ras, tmp_path, unit)
    assert err.value.file == "annotations.csv"


def test_a_point_table_naming_no_volume_is_a_layout_problem(tmp_path):
    _volume(tmp_path / "subset0" / "1.2.3.mhd")
    spec = _luna(tmp_path, [["4.5.6", 0, 0, 0, 4.0]])
    rep = check_layout(spec, tmp_path)
    assert not rep.ok and any("no volume is named" in p for p in rep.problems), rep.summary()
    (tmp_path / "annotations.csv").write_text("seriesuid,x,y,z\n")
    rep = check_layout(spec, tmp_path)
    assert any("lacks columns" in p for p in rep.problems), rep.summary()
    with pytest.raises(ValueError, match="points and masks"):
        _spec(images=["*.mhd"], masks="{stem}_seg.nii.gz",
              points={"file": "a.csv", "diameter_column": None, "diameter_mm": 3})


def test_video_frames_take_the_phase_and_tools_of_their_rows(tmp_path):
    """Cholec80: a phase row per frame, tool rows every 25th frame (1 fps at 25 fps)."""
    from curate.ingest.frame_labels import labels_at, read_frame_table
    from curate.model.source import FrameLabels

    (tmp_path / "video01-phase.txt").write_text(
        "Frame\tPhase\n" + "".join(f"{k}\t{'Preparation' if k < 30 else 'ClippingCutting'}\n"
                                   for k in range(60)))
    tools = ["Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag"]
    (tmp_path / "video01-tool.txt").write_text(
        "Frame\t" + "\t".join(tools) + "\n0\t1\t0\t0\t0\t0\t0\t0\n25\t1\t0\t1\t0\t0\t0\t0\n"
        "50\t0\t0\t0\t0\t1\t0\t0\n")
    phase = read_frame_table(tmp_path / "video01-phase.txt",
                             FrameLabels(file="x", label_column="Phase"), "p")
    tool = read_frame_table(tmp_path / "video01-tool.txt",
                            FrameLabels(file="x", label_columns=tools), "t")
    assert labels_at(*phase, 29) == ["Preparation"] and labels_at(*phase, 30) == ["ClippingCutting"]
    assert labels_at(*tool, 24) == ["Grasper"] and labels_at(*tool, 26) == ["Grasper", "Hook"]
    assert labels_at(*tool, 74) == ["Clipper"]
    assert labels_at(*tool, 75) is None and labels_at(*phase, 60) is None  # past the table
    with pytest.raises(IngestError, match="lacks columns"):
        read_frame_table(tmp_path / "video01-tool.txt",
                         FrameLabels(file="x", label_column="Phase"), "t")


ASAP = """<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58">
      <Coordinates>{outer}</Coordinates>
    </Annotation>
    <Annotation Name="Annotation 1" Type="Polygon" PartOfGroup="_2" Color="#64FE2E">
      <Coordinates>{inner}</Coordinates>
    </Annotation>
  </Annotations>
  <AnnotationGroups>
    <Group Name="_0" PartOfGroup="None" Color="#ff0000"><Attributes /></Group>
  </AnnotationGroups>
</ASAP_Annotations>
"""


def _coords(points) -> str:
    # written out of order: the Order attribute, not the file order, sets the outline
    items = [f'<Coordinate Order="{k}" X="{x}" Y="{y}" />' for k, (x, y) in enumerate(points)]
    return "".join(items[1:] + items[:1])


def test_asap_polygons_land_on_tiles_at_their_level_with_exclusions_cleared(tmp_path):
    """CAMELYON16: level-0 polygons, '_0' tumour, '_2' a non-tumour island inside it."""
    from curate.ingest.slide_regions import read_asap, tile_mask

    outer = [(10000, 20000), (12000, 20000), (12000, 22000), (10000, 22000)]
    inner = [(10800, 20800), (11200, 20800), (11200, 21200), (10800, 21200)]
    path = tmp_path / "tumor_001.xml"
    path.write_text(ASAP.format(outer=_coords(outer), inner=_coords(inner)))
    groups = {"_0": "metastasis", "_1": "metastasis", "_2": None}
    polys = read_asap(path, groups, "tumor_001.xml")
    assert [label for label, _ in polys] == ["metastasis", None]
    # a 256-pixel tile at downsample 16 whose level-0 corner is (9728, 19712)
    mask = tile_mask(polys, ["metastasis"], (9728, 19712), 16.0, 256)
    x = lambda v: round((v - 9728) / 16)  # noqa: E731 - level-0 x -> tile column
    y = lambda v: round((v - 19712) / 16)  # noqa: E731
    assert mask[y(20100), x(10100)] == 1  # inside the tumour
    assert mask[y(21000), x(11000)] == 0  # the excluded island
    assert mask[y(19800), x(9800)] == 0  # outside
    assert mask[y(21900), x(11900)] == 1 and mask.max() == 1
    far = tile_mask(polys, ["metastasis"], (0, 0), 1.0, 256)  # a tile the polygons miss
    assert not far.any()
    with pytest.raises(IngestError, match="'_2' is not in regions.groups"):
        read_asap(path, {"_0": "metastasis"}, "tumor_001.xml")


def test_echonet_chords_fill_the_traced_outline(tmp_path):
    """VolumeTracings.csv: per video and frame a long axis, then chords across it."""
    from curate.ingest.tracings import chords_mask, read_tracing_table

    rows = ["FileName,X1,Y1,X2,Y2,Frame"]
    rows += ["0X100009310A3BD7FC.avi,50.0,20.0,50.0,80.0,46"]  # the long axis
    # a ventricle narrowing towards its apex at the top: chords from y 30 (10 px) to 70 (20 px)
    rows += [f"0X100009310A3BD7FC.avi,{40 + (70 - y) / 8},{y},{60 - (70 - y) / 8},{y},46"
             for y in range(30, 71, 10)]
    rows += ["0X100009310A3BD7FC.avi,50,25,50,75,61", "0X100009310A3BD7FC.avi,45,40,55,40,61",
             "0X100009310A3BD7FC.avi,44,60,56,60,61"]
    (tmp_path / "VolumeTracings.csv").write_text("\n".join(rows) + "\n")
    spec = _spec("video", images=["Videos/*.avi"],
                 tracings={"file": "VolumeTracings.csv", "label": "left_ventricle"})
    table = read_tracing_table(spec, tmp_path)
    (frame, chords), (frame2, chords2) = table["0X100009310A3BD7FC.avi"]
    assert (frame, frame2, len(chords), len(chords2)) == (46, 61, 6, 3)
    mask = chords_mask(chords, (112, 112))
    assert mask[50, 50] == 1 and mask[30, 36] == 0 and mask[80, 50] == 0  # axis not filled
    assert mask[30, 45:56].all() and mask[70, 40:61].all() and not mask[30, 40:44].any()
    assert 0.9 * 15 * 40 < mask.sum() < 1.2 * 15 * 40  # the trapezoid: mean width x height
    with_axis = chords_mask(chords, (112, 112), first_is_axis=False)
    assert with_axis[20:30, 50].any()  # counting the axis as a chord reaches its end
    spec_bad = _spec("video", images=["Videos/*.avi"],
                     tracings={"file": "VolumeTracings.csv", "label": "lv", "x1_column": "x1"})
    with pytest.raises(ConfigError, match="lacks columns"):
        read_tracing_table(spec_bad, tmp_path)


def _ct_series(folder: Path, n: int = 3, size: int = 16) -> list:
    """A CT series of n axial slices, 0.7 mm pixels, 2.5 mm apart, written in reverse."""
    from pydicom import uid

    from tests.phantom_parts import dicom_dataset

    folder.mkdir(parents=True, exist_ok=True)
    series, study, out = uid.generate_uid(), uid.generate_uid(), []
    for k in range(n):
        ds = dicom_dataset(uid.CTImageStorage, "CT", "LIDC-IDRI-0001", study, series)
        ds.InstanceNumber, ds.SliceThickness, ds.PixelSpacing = n - k, 2.5, [0.7, 0.7]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-5.0, 10.0, -100.0 + 2.5 * k]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.full((size, size), 1000 + k, np.uint16).tobytes()
        ds.save_as(folder / f"1-{n - k:03d}.dcm", enforce_file_format=True)
        out.append(ds)
    return out


def _roi(sop: str, points, inclusion: bool = True) -> str:
    edges = "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>"
                    for x, y in points)
    return (f"<roi><imageZposition>0</imageZposition><imageSOP_UID>{sop}</imageSOP_UID>"
            f"<inclusion>{'TRUE' if inclusion else 'FALSE'}</inclusion>{edges}</roi>")


def _session(*nodules: str) -> str:
    return ("<readingSession><annotationVersion>3.12</annotationVersion>"
            "<servicingRadiologistID>anon</servicingRadiologistID>"
            + "".join(f"<unblindedReadNodule><noduleID>n</noduleID>{rois}</unblindedReadNodule>"
                      for rois in nodules) + "</readingSession>")


def _lidc_xml(series_uid: str, *sessions: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?><LidcReadMessage xmlns="http://www.nih.gov">'
            f"<ResponseHeader><SeriesInstanceUid>{series_uid}</SeriesInstanceUid>"
            "</ResponseHeader>" + "".join(sessions) + "</LidcReadMessage>")


def test_lidc_outlines_reach_the_consensus_on_the_slice_their_uid_names(tmp_path):
    from curate.ingest.dicom import plan_dicom, read_dicom

    folder = tmp_path / "LIDC-IDRI-0001" / "01-01-2000-study" / "3000566-series"
    slices = _ct_series(folder)
    mid = str(slices[1].SOPInstanceUID)
    square = [(4, 4), (11, 4), (11, 11), (4, 11)]
    r1 = _session(_roi(mid, square) + _roi(mid, [(6, 6), (8, 6), (8, 8), (6, 8)], False))
    r2 = _session(_roi(mid, [(6, 4), (13, 4), (13, 11), (6, 11)]))
    r3 = _session(_roi(str(slices[0].SOPInstanceUID), square),  # one reader only: dropped
                  _roi(mid, [(1, 1)]))  # a nodule under 3 mm: a point, not drawn
    (folder / "069.xml").write_text(_lidc_xml(str(slices[0].SeriesInstanceUID), r1, r2, r3))
    spec = _spec("dicom", images=["LIDC-IDRI-*/**/*.dcm"],
                 readings={"file": "{parent}/*.xml", "min_readers": 2})
    units, problems = plan_dicom(spec, tmp_path)
    assert not problems and len(units) == 1 and units[0].extra["readings"]
    case = read_dicom(spec, tmp_path, units[0])[0]
    arr = sitk.GetArrayFromImage(case.label)
    z = int(round(case.image.TransformPhysicalPointToContinuousIndex(
        [float(v) for v in slices[1].ImagePositionPatient])[2]))
    expected = np.zeros_like(arr)
    expected[z, 4:12, 6:12] = 1  # readers 1 and 2 overlap: columns 6-11, rows 4-11
    expected[z, 6:9, 6:9] = 0  # reader 1's hole leaves one vote there
    assert (arr == expected).all(), np.argwhere(arr != expected)[:5]
    assert case.meta.label_map == {1: "nodule"}


def test_lidc_file_of_another_series_or_of_no_slice(tmp_path):
    from curate.ingest.dicom import plan_dicom, read_dicom

    folder = tmp_path / "LIDC-IDRI-0002" / "s" / "series"
    slices = _ct_series(folder, n=2)
    other = _session(_roi("1.2.3.4", [(1, 1), (5, 1), (5, 5)]))
    spec = _spec("dicom", images=["LIDC-IDRI-*/**/*.dcm"], readings={"file": "{parent}/*.xml"})
    (folder / "001.xml").write_text(_lidc_xml("9.9.9", other, other))
    unit = plan_dicom(spec, tmp_path)[0][0]
    case = read_dicom(spec, tmp_path, unit)[0]
    assert case.label is None and any("another series" in n for n in case.meta.notes)
    (folder / "001.xml").write_text(_lidc_xml(str(slices[0].SeriesInstanceUID), other))
    with pytest.raises(IngestError, match="none on a slice of this series"):
        read_dicom(spec, tmp_path, plan_dicom(spec, tmp_path)[0][0])


def test_lndb_nodules_are_spheres_of_their_volume_and_non_nodules_left_out(tmp_path):
    img = _volume(tmp_path / "data0" / "LNDb-0012.mhd", spacing=(0.5, 0.5, 0.5),
                  direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), size=(40, 40, 40))
    x, y, z = img.TransformIndexToPhysicalPoint((20, 20, 20))
    (tmp_path / "trainset_csv").mkdir()
    volume = 4 / 3 * np.pi * 4.0 ** 3  # a sphere of radius 4 mm
    (tmp_path / "trainset_csv" / "trainNodules_gt.csv").write_text(
        "LNDbID,RadID,RadFindingID,FindingID,x,y,z,AgrLevel,Nodule,Volume,Text\n"
        f"12,\"1,2\",\"1,1\",1,{x},{y},{z},2,1,{volume},5\n"
        f"12,3,2,2,{x + 50},{y},{z},1,0,0,0\n")  # a non-nodule far outside: left out
    spec = _spec(images=["**/LNDb-*.mhd"], points={
        "file": "trainset_csv/trainNodules_gt.csv", "image_column": "LNDbID",
        "image_key": "{stem:^LNDb-0*=}", "x_column": "x", "y_column": "y", "z_column": "z",
        "diameter_column": None, "volume_column": "Volume", "include": {"Nodule": ["1"]},
        "label": "nodule"})
    unit = plan_volumes(spec, tmp_path)[0][0]
    assert len(unit.extra["points"]) == 1 and unit.extra["points"][0]["diameter"] == \
        pytest.approx(8.0)
    case = read_volume(spec, tmp_path, unit)[0]
    voxels = sitk.GetArrayViewFromImage(case.label).sum()
    assert 0.85 * volume / 0.125 < voxels < 1.15 * volume / 0.125  # voxels of 0.125 mm3
    with pytest.raises(ValueError, match="exactly one of"):
        _spec(images=["*.mhd"], points={"file": "a.csv", "volume_column": "Volume"})


def test_bhx_boxes_find_their_slice_by_the_uid_in_its_header(tmp_path):
    from curate.ingest.image2d import plan_images, read_image

    slices = _ct_series(tmp_path / "CQ500CT7 CQ500CT7" / "Unknown Study" / "CT 5mm", n=3)
    uid = str(slices[1].SOPInstanceUID)
    (tmp_path / "1_Initial_Manual_Labeling.csv").write_text(
        ",SOPInstanceUID,SeriesInstanceUID,StudyInstanceUID,x,y,width,height,labelName,labelType\n"
        f"0,{uid},{slices[1].SeriesInstanceUID},{slices[1].StudyInstanceUID},"
        "2.5,3.0,6.0,4.5,Subdural,Freeform\n"
        f"1,{uid}.9,s,s,1,1,2,2,Epidural,Freeform\n")  # another slice: its UID only starts alike
    spec = _spec("image_boxes", images=["CQ500CT*/**/*.dcm"], view="axial", boxes={
        "file": "1_Initial_Manual_Labeling.csv", "image_key_tag": "SOPInstanceUID",
        "image_column": "SOPInstanceUID", "label_column": "labelName", "coords": "xywh",
        "x0_column": "x", "y0_column": "y", "x1_column": "width", "y1_column": "height",
        "listed_only": True})
    units, problems = plan_images(spec, tmp_path)
    assert not problems and len(units) == 1  # the two slices without a row are not planned
    case = read_image(spec, tmp_path, units[0])[0]
    (box,) = case.boxes
    assert (box.label, box.x0, box.y0, box.x1, box.y1) == ("Subdural", 2.5, 3.0, 8.5, 7.5)
    rep = check_layout(spec, tmp_path)
    assert rep.images_with_boxes == 1 and rep.box_rows == 2, rep.summary()


def test_prostatex_findings_mark_each_series_of_the_patient_or_say_why_not(tmp_path):
    from curate.ingest.dicom import plan_dicom, read_dicom

    _ct_series(tmp_path / "ProstateX-0004" / "study" / "4.000000-t2tsetra", n=3)
    x, y, z = (-5.0 + 0.7 * 8, 10.0 + 0.7 * 5, -100.0 + 2.5)  # column 8, row 5, slice 1
    table = tmp_path / "ProstateX-Findings-Train.csv"
    table.write_text("ProxID,fid,pos,zone,ClinSig\n"
                     f"ProstateX-0004,1,{x} {y} {z},PZ,TRUE\n"
                     f"ProstateX-0004,2,{x} {y} {z + 80},TZ,FALSE\n"  # beyond this series
                     "ProstateX-0005,1,0 0 0,AS,FALSE\n")
    points = {"file": "ProstateX-Findings-Train.csv", "image_column": "ProxID",
              "image_key": r"{parent:^.*?(ProstateX-\d\d\d\d).*$=\1}", "coords_column": "pos",
              "diameter_column": None, "diameter_mm": 1.0, "label_column": "ClinSig",
              "outside": "skip"}
    spec = _spec("dicom", images=["*/**/*.dcm"], points=points)
    unit = plan_dicom(spec, tmp_path)[0][0]
    assert len(unit.extra["points"]) == 2
    case = read_dicom(spec, tmp_path, unit)[0]
    arr = sitk.GetArrayFromImage(case.label)
    k = int(round(case.image.TransformPhysicalPointToContinuousIndex([x, y, z])[2]))
    assert case.meta.label_map == {1: "FALSE", 2: "TRUE"} and arr[k, 5, 8] == 2
    assert arr.sum() == 2 and any("outside this volume" in n for n in case.meta.notes)
    strict = _spec("dicom", images=["*/**/*.dcm"], points={**points, "outside": "error"})
    with pytest.raises(IngestError, match="outside the volume"):
        read_dicom(strict, tmp_path, plan_dicom(strict, tmp_path)[0][0])


def test_cmmd_each_breast_takes_its_own_row_of_the_spreadsheet(tmp_path):
    """CMMD_clinicaldata_revision.xlsx: a row per breast (ID1, LeftRight, classification)."""
    import openpyxl
    import pydicom

    from curate.ingest.dicom import plan_dicom, read_dicom

    for side in ("L", "R"):
        (ds,) = _ct_series(tmp_path / "CMMD" / "D1-0042" / "07-18-2010-NA" / f"1.000000-{side}",
                           n=1)
        path = next((tmp_path / "CMMD" / "D1-0042" / "07-18-2010-NA" / f"1.000000-{side}")
                    .glob("*.dcm"))
        ds = pydicom.dcmread(path)
        ds.ImageLaterality = side
        ds.save_as(path)
    book = openpyxl.Workbook()
    for row in [["ID1", "LeftRight", "Age", "number", "abnormality", "classification",
                 "subtype"], ["D1-0042", "L", 44, 2, "mass", "Benign", None],
                ["D1-0042", "R", 44, 2, "calcification", "Malignant", "Luminal A"],
                ["D1-0043", "R", 51, 1, "mass", "Malignant", "HER2-enriched"]]:
        book.active.append(row)
    book.save(tmp_path / "CMMD_clinicaldata_revision.xlsx")
    spec = _spec("dicom", images=["*/**/*.dcm"], classes={
        "file": "CMMD_clinicaldata_revision.xlsx", "image_column": "ID1",
        "image_key": r"{parent:^.*?(D[12]-\d\d\d\d).*$=\1}", "key_columns": ["LeftRight"],
        "image_key_tags": ["ImageLaterality"], "label_column": "classification"})
    units, problems = plan_dicom(spec, tmp_path)
    assert not problems
    labels = {u.files[0].split("/")[-2]: read_dicom(spec, tmp_path, u)[0].meta.image_labels
              for u in units}
    assert labels == {"1.000000-L": ["Benign"], "1.000000-R": ["Malignant"]}
    book.active.append(["D1-0042", "R", 44, 2, "mass", "Benign", None])  # the breast twice
    book.save(tmp_path / "CMMD_clinicaldata_revision.xlsx")
    with pytest.raises(ConfigError, match="two rows for D1-0042|R"):
        plan_dicom(spec, tmp_path)


def test_mdai_outlines_and_exam_labels_reach_their_series(tmp_path):
    """MIDRC-RICORD: an MD.ai export, outlines per SOP UID, labels per exam."""
    import json

    from curate.ingest.dicom import plan_dicom, read_dicom

    slices = _ct_series(tmp_path / "MIDRC-RICORD-1A-419639-000082" / "study" / "series", n=3)
    uids = {k: str(getattr(slices[1], k)) for k in ("StudyInstanceUID", "SeriesInstanceUID",
                                                     "SOPInstanceUID")}
    export = {"datasets": [{"name": "RICORD", "studies": [], "annotations": [
        {**uids, "labelId": "L_op", "data": {"vertices": [4, 4, 11, 4, 11, 11, 4, 11]}},
        {**uids, "labelId": "L_box", "data": {"x": 1, "y": 12, "width": 2, "height": 2}},
        {"StudyInstanceUID": uids["StudyInstanceUID"], "labelId": "L_typ", "data": None}]}],
        "labelGroups": [{"id": "G", "name": "Default group", "labels": [
            {"id": "L_op", "name": "Infectious opacity", "annotationMode": "freeform"},
            {"id": "L_box", "name": "Nodule", "annotationMode": "bbox"},
            {"id": "L_typ", "name": "Typical Appearance", "annotationMode": None}]}]}
    (tmp_path / "export.json").write_text(json.dumps(export))
    spec = _spec("dicom", images=["*/**/*.dcm"], mdai={"file": "export.json"})
    unit = plan_dicom(spec, tmp_path)[0][0]
    case = read_dicom(spec, tmp_path, unit)[0]
    arr = sitk.GetArrayFromImage(case.label)
    z = int(round(case.image.TransformPhysicalPointToContinuousIndex(
        [float(v) for v in slices[1].ImagePositionPatient])[2]))
    assert case.meta.label_map == {1: "Infectious opacity", 2: "Nodule"}
    assert arr[z, 4:12, 4:12].all() and (arr[z, 4:12, 4:12] == 1).all()
    assert (arr[z, 12:15, 1:4] == 2).all() and arr.sum() == 64 + 2 * 9
    assert case.meta.image_labels == ["Typical Appearance"]
    export["datasets"][0]["annotations"].append({**uids, "labelId": "L_gone", "data": None})
    (tmp_path / "export.json").write_text(json.dumps(export))
    with pytest.raises(ConfigError, match="'L_gone' is in no labelGroup"):
        plan_dicom(spec, tmp_path)
