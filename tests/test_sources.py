"""Every declared source: a miniature copy in its declared layout must pass check_layout
and be read by curate's own adapter for its format family.

Layouts are written from documentation, so this is the test that catches a glob that can
never match its own mask template, a regex that never yields a patient id, a table
declared with columns the template does not write, or a layout the readers cannot use.
What the miniature cannot synthesise (exotic extensions, undeclared question-answer
files) is reported as a skip reason; what curate cannot read yet is an expected failure
with its reason, so that it shows up in the test report until an adapter reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curate.ingest import adapter
from curate.ingest.base import VolumeCase
from curate.model.recipe import BoxTable, ClassLabels, FormatFamily, Layout, SourceSpec, load_source
from curate.sources import layout_check
from curate.sources.layout_check import check_command, check_layout, regex_example
from curate.sources.miniature import (
    SynthesisError,
    glob_match,
    make_miniature,
    miniature_notes,
    synth_path,
)

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "sources").glob("*.yaml"))
# sources whose files curate cannot read yet: the reason is the xfail (or skip) reason
UNREADABLE: dict[str, str] = {}


@pytest.fixture(scope="module")
def miniature(tmp_path_factory):
    """One miniature per source file, shared by the tests of this module."""
    cache: dict[Path, tuple[SourceSpec, Path, dict]] = {}

    def get(path: Path) -> tuple[SourceSpec, Path, dict]:
        if path not in cache:
            spec = load_source(path)
            root = make_miniature(spec, tmp_path_factory.mktemp(path.stem), n=2)
            cache[path] = (spec, root, miniature_notes(root))
        return cache[path]

    return get


def test_there_are_declared_sources():
    assert SOURCES, "sources/ holds no declared source"


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_declared_layout_is_found(path, miniature):
    spec, root, notes = miniature(path)
    lay, rep = spec.layout, check_layout(spec, root)
    msg = f"\n{rep.summary()}\nnot synthesised: {notes['skipped']}"
    assert rep.images == len(notes["images"]) + len(notes["annotations"]) > 0, msg
    assert all(rep.per_glob[g] > 0 for g in lay.images), msg
    left_out = {p for p in notes["excluded"] + notes["masks"]
                if any(glob_match(g, p) for g in lay.images)}
    assert rep.excluded == len(left_out), "exclude globs do not leave out the junk" + msg
    if lay.masks:
        # every mask the miniature could write is found where the template says
        assert rep.masks_expected == rep.images, msg
        assert len(rep.masks_missing) == rep.images - len(notes["masks"]), msg
        lossy = any("lossy" in s for s in notes["skipped"])
        if notes["masks"] and lay.label_map and not lossy:
            assert rep.unmapped_labels == [], msg
            assert rep.label_values == sorted(k for k in lay.label_map if k), msg
    if lay.boxes:
        assert rep.box_file_present and rep.images_with_boxes == rep.images, msg
    if lay.classes:
        assert rep.images_with_classes == rep.images, msg
    if lay.points:
        assert rep.images_with_points == rep.images, msg
    if lay.regions:
        assert rep.region_files == rep.images, msg
    if lay.frame_labels:
        assert rep.frame_tables == rep.images * len(lay.frame_labels), msg
    if lay.segmentations:  # the miniature's table gives the first series the role
        assert rep.role_series == rep.segmented_folders == 1, msg
    if lay.patient_id:
        assert rep.patient_ids == rep.images, (
            f"patient_id regex {lay.patient_id!r} matches no path the image globs can "
            "produce (or the miniature could not find one)" + msg)
    expected_problems = 1 if rep.masks_missing else 0
    assert len(rep.problems) == expected_problems, msg


def _read(path: Path) -> None:
    """Open a miniature file with the library curate reads that format with."""
    name = path.name.lower()
    if name.endswith((".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")):
        import SimpleITK as sitk

        assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).size > 0
    elif name.endswith((".dcm", ".dicom")) or "." not in name:
        import pydicom

        ds = pydicom.dcmread(path)
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns) and ds.Modality
    elif name.endswith(".npy"):
        assert np.load(path).size > 0
    elif name.endswith(".mat"):
        from scipy.io import loadmat
        assert any(v.size for k, v in loadmat(str(path)).items() if not k.startswith("__"))
    elif name.endswith(".xml"):
        import xml.etree.ElementTree as ET
        assert any(e.tag.rsplit("}", 1)[-1] in ("Vertex", "Coordinate", "edgeMap")
                   for e in ET.parse(path).getroot().iter())
    elif name.endswith((".img", ".raw")):
        assert path.stat().st_size > 0
    elif name.endswith((".mp4", ".avi", ".mov", ".mkv")):
        import av

        with av.open(str(path)) as c:
            assert next(c.decode(video=0)).width > 0
    else:
        from PIL import Image

        with Image.open(path) as im:
            im.load()


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_miniature_files_are_valid(path, miniature):
    spec, root, notes = miniature(path)
    for rel in notes["images"] + notes["masks"]:
        if (root / rel).stat().st_size:  # placeholders are listed in notes["skipped"]
            _read(root / rel)
    for rel in notes["annotations"]:  # SEG / RTSTRUCT objects, or ROI mask/crop images
        import pydicom

        ds = pydicom.dcmread(root / rel)
        assert ds.Modality in ("SEG", "RTSTRUCT") or (
            spec.layout.roi_folders and ds.pixel_array.shape == (ds.Rows, ds.Columns))
    if notes["skipped"]:
        pytest.skip(f"{spec.name} ({spec.format.value}): written files are valid and the globs "
                    f"are checked; not synthesised: {'; '.join(dict.fromkeys(notes['skipped']))}")


def _reader_params():
    for p in SOURCES:
        reason = UNREADABLE.get(p.stem)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(p, marks=marks, id=p.stem)


@pytest.mark.parametrize("path", _reader_params())
def test_miniature_is_read_by_curate(path, miniature):
    """plan + read of the family's adapter, and the first case carries what is declared."""
    spec, root, notes = miniature(path)
    placeholders = [s for s in notes["skipped"] if "placeholder" in s]
    if placeholders:
        pytest.skip(f"{spec.name}: image files cannot be synthesised, so nothing to read "
                    f"({placeholders[0]}); {UNREADABLE.get(spec.name, '')}")
    plan, read = adapter(spec.format)
    units, problems = plan(spec, root)
    assert not problems, [f"{p.file}: {p.exc}" for p in problems]
    assert units, f"{spec.name}: the adapter planned no unit"
    cases = read(spec, root, units[0])
    assert cases, f"{spec.name}: the first unit read as no case"
    case, lay = cases[0], spec.layout
    if lay.masks or spec.format in (FormatFamily.dicom_seg, FormatFamily.rtstruct):
        if isinstance(case, VolumeCase):
            assert case.label is not None, f"{spec.name}: no label volume read"
            import SimpleITK as sitk

            values = set(np.unique(sitk.GetArrayViewFromImage(case.label)).tolist()) - {0}
        else:
            assert case.mask is not None, f"{spec.name}: no mask read"
            values = set(np.unique(case.mask).tolist()) - {0}
        assert values, f"{spec.name}: the label volume or mask is empty"
        lossy = any("lossy" in s for s in notes["skipped"])
        if lay.masks and lay.label_map and not lossy:
            assert values == {k for k in lay.label_map if k}, f"{spec.name}: label values"
    if lay.boxes:
        assert case.boxes, f"{spec.name}: no box read"
        assert all(b.x1 > b.x0 and b.y1 > b.y0 for b in case.boxes)
        if lay.boxes.spacing_column:
            assert case.spacing == (0.8, 0.8), f"{spec.name}: spacing from the table"
    if lay.intensity_offset is not None:
        assert case.hu == ((spec.modality or "").upper() == "CT")
    if lay.classes:
        assert case.meta.image_labels, f"{spec.name}: no image label read"
    if lay.mdai:  # a square on each slice, a label on each exam
        import SimpleITK as sitk

        assert case.label is not None, f"{spec.name}: no MD.ai outline read"
        assert sitk.GetArrayViewFromImage(case.label)[0, 2:6, 2:6].all()
        assert "exam finding" in case.meta.image_labels
    if lay.readings:  # every reader outlines one square on the slice
        import SimpleITK as sitk

        assert case.label is not None, f"{spec.name}: no outline read"
        arr = sitk.GetArrayViewFromImage(case.label)
        assert arr[0, 2:6, 2:6].all() and arr.sum() == 16 and case.meta.label_map
    if lay.tracings:  # frames 1 and 2 traced: a filled 12 x 16 rectangle each
        assert [c.mask is not None and c.mask[8:25, 10:23].all() and c.mask.sum() == 13 * 17
                for c in cases] == [True, True], f"{spec.name}: traced frames"
    if lay.regions:  # the miniature's polygon crosses the slide's one tile
        assert case.mask is not None and case.mask[20:80, 20:110].all(), f"{spec.name}: region"
        assert case.meta.label_map and set(np.unique(case.mask).tolist()) == {0, 1}
    if lay.frame_labels:  # every sampled frame has a row in each table
        assert all(len(c.meta.image_labels) >= len(lay.frame_labels) for c in cases), \
            [c.meta.image_labels for c in cases]
    if lay.points and lay.points.extent == "point":  # one bare point: no label volume
        expect = next(iter(spec.findings), "finding") if lay.points.label_column \
            else lay.points.label
        assert case.label is None and [p["label"] for p in case.points] == [expect], \
            f"{spec.name}: the point was not placed"
        assert np.allclose(case.points[0]["index"][:2], [3.5, 3.5]), case.points
    elif lay.points:  # the miniature puts one sphere at the volume's centre
        import SimpleITK as sitk

        assert case.label is not None, f"{spec.name}: no sphere drawn from the points"
        arr = sitk.GetArrayViewFromImage(case.label)
        centre = arr[1:3, 3:5, 3:5] if arr.shape[0] > 2 else arr[:, 3:5, 3:5]  # one slice
        assert set(np.unique(arr).tolist()) == {0, 1} and centre.all()
        assert case.meta.label_map == {1: lay.points.label_column and
                                       next(iter(spec.findings), "finding") or lay.points.label}
    if lay.qa:
        assert case.meta.source_qa and case.meta.source_qa[0]["answer"] == "yes"
    if lay.slice_masks:  # every series, of every entry, read with its own labels
        import SimpleITK as sitk

        seen = []
        for unit in units:
            (vol,) = read(spec, root, unit)
            assert vol.label is not None, f"{spec.name}: no slice mask read for {unit.key}"
            assert set(np.unique(sitk.GetArrayViewFromImage(vol.label)).tolist()) - {0} == \
                set(vol.meta.label_map), f"{spec.name}: a declared label is missing"
            seen.append(set(vol.meta.label_map.values()))
        assert all(set(e.labels) in seen for e in lay.slice_masks), seen
    if lay.segmentations:  # the role's series carries every declared structure
        import SimpleITK as sitk

        assert case.label is not None, f"{spec.name}: no segmentation read"
        declared = {lab for f in lay.segmentations.files
                    for lab in ([f.label] if f.label else f.segments.values())}
        assert set(case.meta.label_map.values()) == declared
        assert set(np.unique(sitk.GetArrayViewFromImage(case.label)).tolist()) - {0} == \
            set(case.meta.label_map)
    if lay.roi_folders:  # abnormality 1 of each image: a 3 x 3 square, labelled from the table
        assert all(c.mask is not None and c.mask.sum() == 9 and c.mask[2:5, 2:5].all() and
                   c.meta.label_map == {1: next(iter(spec.findings))} for c in
                   [read(spec, root, u)[0] for u in units]), f"{spec.name}: ROI folders"
        assert len(units) == len(notes["images"]), "mask and crop folders are not images"
    if spec.cohort_diagnosis:  # the patient's recorded diagnosis, never an image label
        assert all(c.meta.patient_labels == [spec.cohort_diagnosis] for c in cases)
        assert spec.cohort_diagnosis not in case.meta.image_labels


def _spec(**layout) -> SourceSpec:
    fmt = layout.pop("format", "nifti")
    return SourceSpec(name="t", format=fmt, layout=Layout(**layout))


def test_broken_copy_reports_missing_masks(tmp_path):
    spec = _spec(images=["imagesTr/*.nii.gz"], exclude=["imagesTr/._*"],
                 masks="labelsTr/{name}", label_map={1: "liver", 2: "tumour"},
                 patient_id=r"liver_(\d+)")
    root = make_miniature(spec, tmp_path, n=3)
    assert check_layout(spec, root).ok
    gone = miniature_notes(root)["masks"][1]
    (root / gone).unlink()
    rep = check_layout(spec, root)
    assert not rep.ok and rep.masks_missing == [gone]
    assert "2 of 3 present" in rep.summary() and f"missing: {gone}" in rep.summary()
    assert "1 of 3 mask files missing" in rep.problems[0]


def test_unmapped_label_values_are_reported(tmp_path):
    import SimpleITK as sitk

    spec = _spec(images=["img/*.nii.gz"], masks="seg/{stem}_seg.nii.gz", label_map={1: "a"})
    root = make_miniature(spec, tmp_path, n=1)
    mask = root / miniature_notes(root)["masks"][0]
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))
    arr[0, 0, 0] = 7
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(mask))
    rep = check_layout(spec, root)
    assert rep.unmapped_labels == [7] and not rep.ok and "not in label_map: [7]" in rep.summary()


def test_box_table_columns_and_presence(tmp_path):
    spec = _spec(format="image_boxes", images=["png/*.png"],
                 boxes=BoxTable(file="ann/boxes.csv", image_column="image_id", x0_column="xmin"))
    root = make_miniature(spec, tmp_path, n=2)
    rep = check_layout(spec, root)
    assert rep.ok and rep.images_with_boxes == 2 and rep.box_rows == 2
    (root / "ann/boxes.csv").write_text("image,label,x0,y0,x1,y1\n")
    rep = check_layout(spec, root)
    assert rep.box_columns_missing == ["image_id", "xmin"] and not rep.ok
    (root / "ann/boxes.csv").unlink()
    assert "box file ann/boxes.csv not found" in check_layout(spec, root).problems


def test_xywh_boxes_with_a_fixed_label_keyed_by_stem(tmp_path):
    table = BoxTable(file="labels.csv", coords="xywh", image_column="patientId",
                     label_column=None, label="opacity", x1_column="width", y1_column="height")
    spec = _spec(format="image_boxes", images=["train/*.png"], boxes=table)
    root = make_miniature(spec, tmp_path, n=2)
    assert check_layout(spec, root).ok
    names = [Path(r).stem for r in miniature_notes(root)["images"]]  # ids without suffix
    (root / "labels.csv").write_text("patientId,x0,y0,width,height\n"
                                     + "".join(f"{n},1,1,4,4\n" for n in names))
    rep = check_layout(spec, root)
    assert rep.ok and rep.images_with_boxes == 2, rep.summary()


@pytest.mark.parametrize("boxes", [
    BoxTable(file="coco.json", format="coco"),
    BoxTable(file="Annotations/{stem}.xml", format="voc"),
])
def test_coco_and_voc_boxes(tmp_path, boxes):
    spec = _spec(format="image_boxes", images=["JPEGImages/*.jpg"], boxes=boxes)
    root = make_miniature(spec, tmp_path, n=2)
    rep = check_layout(spec, root)
    assert rep.ok and rep.images_with_boxes == 2, rep.summary()


@pytest.mark.parametrize("classes", [
    ClassLabels(file="labels.csv", image_column="Image Index", label_column="Finding"),
    ClassLabels(file="labels.csv", label_columns=["Edema", "Effusion"]),
    ClassLabels(from_folder=True),
])
def test_class_labels(tmp_path, classes):
    spec = _spec(format="image_labels", images=["train/*/*.png"], classes=classes)
    root = make_miniature(spec, tmp_path, n=2)
    rep = check_layout(spec, root)
    assert rep.ok and rep.images_with_classes == 2, rep.summary()


def test_nothing_matches_and_template_outside_root(tmp_path):
    spec = _spec(images=["imagesTr/*.nii.gz"], masks="../labels/{name}")
    (tmp_path / "imagesTr").mkdir()
    rep = check_layout(spec, tmp_path)
    assert not rep.ok and "no file matches image glob 'imagesTr/*.nii.gz'" in rep.problems
    (tmp_path / "imagesTr/a.nii.gz").write_bytes(b"")
    rep = check_layout(spec, tmp_path)
    assert any("leaves the source root" in p for p in rep.problems)
    assert check_layout(spec, tmp_path / "absent").problems == [f"{tmp_path / 'absent'} is not a folder"]


def test_glob_synthesis():
    any_path = lambda p: (True,)  # noqa: E731
    assert synth_path("a/**/x_?.png", 0, any_path) == "a/sub/x_1.png"
    assert synth_path("scan[0-9][!0-9].dcm", 0, any_path) == "scan0a.dcm"
    p = synth_path("files/p1*/p*/s*/*.dcm", 1,
                   lambda p: (glob_match("files/p1*/p*/s*/*.dcm", p),
                              "/p00000002/" in p), ["p00000002"])
    assert "/p00000002/" in p and glob_match("files/p1*/p*/s*/*.dcm", p)
    assert glob_match("**/x.png", "x.png") and glob_match("**/x.png", "a/b/x.png")
    assert not glob_match("a/*.png", "a/b/x.png")
    with pytest.raises(SynthesisError, match="leaves the source root"):
        synth_path("../up/*.png", 0, any_path)
    with pytest.raises(SynthesisError, match="no safe character"):
        synth_path("x[%].png", 0, any_path)


def test_patient_regex_and_excludes_shape_the_names(tmp_path):
    spec = _spec(images=["data/case_*/imaging.nii.gz"], exclude=["data/case_0000*/*"],
                 masks="{parent}/segmentation.nii.gz", label_map={1: "kidney"},
                 patient_id=r"case_(\d{5})")
    root = make_miniature(spec, tmp_path, n=2)
    images = miniature_notes(root)["images"]
    assert all("case_" in p and not glob_match("data/case_0000*/*", p) for p in images)
    rep = check_layout(spec, root)
    assert rep.ok and rep.patient_ids == 2, rep.summary()


def test_unsynthesisable_source_says_why(tmp_path):
    spec = _spec(images=["../outside/*.nii.gz"])
    with pytest.raises(SynthesisError, match="no image could be synthesised.*leaves the source"):
        make_miniature(spec, tmp_path)


def test_case_placeholder_pairs_masks_by_case(tmp_path):
    spec = _spec(images=["**/volume-*.nii"], masks="{parent}/segmentation-{case}.nii",
                 case_regex=r"volume-(\d+)", label_map={1: "liver", 2: "tumor"})
    root = make_miniature(spec, tmp_path, n=2)
    notes = miniature_notes(root)
    assert [Path(m).name for m in notes["masks"]] == ["segmentation-1.nii", "segmentation-2.nii"]
    assert [Path(m).name for m in notes["images"]] == ["volume-1.nii", "volume-2.nii"]
    rep = check_layout(spec, root)
    assert rep.ok and rep.masks_expected == 2 and not rep.warnings, rep.summary()


def test_regex_mismatches_are_explained_with_an_example(tmp_path):
    spec = _spec(images=["PETCT_*/*.nii.gz"], masks="seg/{case}.nii.gz", case_regex=r"^(\d+)_0000$",
                 label_map={1: "a"}, patient_id=r"^(PETCT_[0-9a-f]+)/")
    root = make_miniature(spec, tmp_path, n=1)
    assert check_layout(spec, root).ok and not check_layout(spec, root).warnings
    (root / "PETCT_a").mkdir()
    (root / "PETCT_a" / "x.nii.gz").write_bytes((root / miniature_notes(root)["images"][0])
                                                .read_bytes())
    rep = check_layout(spec, root)
    warnings = " ".join(rep.warnings)
    assert "does not match 1 image stem(s), e.g. 'x' (it expects something like '1_0000')" \
        in warnings, rep.summary()
    assert rep.patient_ids == 2
    assert regex_example(r"(PETCT_[0-9a-f]+)") == "PETCT_1"


def test_old_import_path_still_works():
    assert layout_check.make_miniature is make_miniature
    assert layout_check.miniature_notes is miniature_notes
    with pytest.raises(AttributeError):
        layout_check.no_such_name  # noqa: B018


def test_check_command(tmp_path):
    ok, text = check_command("no-such-source", tmp_path)
    assert not ok and "unknown source 'no-such-source'" in text
    if SOURCES:
        spec = load_source(SOURCES[0])
        root = make_miniature(spec, tmp_path / "m")
        ok, text = check_command(spec.name, root)
        assert ok and text.startswith(f"{spec.name} at {root}: OK")
        ok, text = check_command(spec.name, tmp_path / "empty")
        assert not ok and "DOES NOT MATCH" in text


def _png(path: Path, value: int = 0) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def test_check_sees_a_subjects_further_images_that_no_glob_takes(tmp_path):
    """HC18's real layout: NNN_HC.png, and for some subjects NNN_2HC.png, NNN_3HC.png,
    each with its _Annotation.png; the declared glob *_HC.png misses the further ones."""
    spec = load_source(Path(__file__).resolve().parent.parent / "sources" / "hc18.yaml")
    for name in ("001_HC", "002_HC", "002_2HC", "002_3HC"):
        _png(tmp_path / "training_set" / f"{name}.png", 100)
        _png(tmp_path / "training_set" / f"{name}_Annotation.png", 255)
    assert check_layout(spec, tmp_path).ok  # the declared glob takes them all
    narrow = spec.model_copy(deep=True)
    narrow.layout.images = ["training_set/*_HC.png"]  # as it was declared before
    rep = check_layout(narrow, tmp_path)
    assert rep.unmatched == ["training_set/002_2HC.png", "training_set/002_3HC.png"]
    assert rep.unpaired_masks == ["training_set/002_2HC_Annotation.png",
                                  "training_set/002_3HC_Annotation.png"]
    assert not rep.ok and "match no image glob" in rep.summary()


def test_check_sees_a_second_mask_no_image_is_paired_with(tmp_path):
    """BUSI's real layout: benign/benign (1).png, its _mask.png and, for some, _mask_1.png."""
    spec = load_source(Path(__file__).resolve().parent.parent / "sources" / "busi.yaml")
    for cls in ("benign", "malignant", "normal"):
        _png(tmp_path / cls / f"{cls} (1).png", 100)
        _png(tmp_path / cls / f"{cls} (1)_mask.png", 255)
    _png(tmp_path / "benign" / "benign (1)_mask_1.png", 255)
    assert check_layout(spec, tmp_path).ok  # the declared pattern takes both masks
    narrow = spec.model_copy(deep=True)
    narrow.layout.masks = "{parent}/{stem}_mask.png"  # as it was declared before
    rep = check_layout(narrow, tmp_path)
    assert rep.unmatched == []
    assert rep.unpaired_masks == ["benign/benign (1)_mask_1.png"]
    assert "paired with no image" in " ".join(rep.problems)


def _read_cases(spec, root):
    from curate.ingest.image2d import plan_images, read_image
    units, problems = plan_images(spec, root)
    assert not problems, problems
    return [read_image(spec, root, u)[0] for u in units]


def test_each_lesion_mask_of_an_image_becomes_an_roi(tmp_path):
    """BUSI: benign (1)_mask.png and benign (1)_mask_1.png are two lesions of one image."""
    from PIL import Image

    from curate.model.recipe import NormalizeConfig
    from curate.unit.ground import ground
    from curate.unit.normalize import image_view
    spec = load_source(Path(__file__).resolve().parent.parent / "sources" / "busi.yaml")
    img = np.full((64, 64), 90, np.uint8)
    img[8:20, 8:20] = img[40:56, 36:60] = 30  # two dark lesions
    (tmp_path / "benign").mkdir()
    Image.fromarray(img).save(tmp_path / "benign" / "benign (1).png")
    for suffix, (ys, xs) in (("", (slice(8, 20), slice(8, 20))),
                             ("_1", (slice(40, 56), slice(36, 60)))):
        m = np.zeros((64, 64), np.uint8)
        m[ys, xs] = 255
        Image.fromarray(m).save(tmp_path / "benign" / f"benign (1)_mask{suffix}.png")
    (case,) = _read_cases(spec, tmp_path)
    rois, _ = ground(image_view(case, NormalizeConfig()), spec.layout.label_map,
                     spec.findings, min_pixels=4)
    assert sorted(r["bbox"] for r in rois) == [[8, 8, 20, 20], [36, 40, 60, 56]]


def test_jpeg_masks_are_thresholded_not_read_as_stray_labels(tmp_path):
    """Kvasir-SEG's masks are JPEGs: edges carry grey values; no 'label 254' ROIs."""
    from PIL import Image
    spec = load_source(Path(__file__).resolve().parent.parent / "sources" / "kvasir-seg.yaml")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(
        tmp_path / "images" / "c1.jpg")
    m = np.zeros((64, 64), np.uint8)
    m[16:48, 20:44] = 255
    Image.fromarray(m).save(tmp_path / "masks" / "c1.jpg", quality=60)
    with Image.open(tmp_path / "masks" / "c1.jpg") as im:
        assert len(np.unique(np.asarray(im))) > 2  # the compression made grey values
    (case,) = _read_cases(spec, tmp_path)
    assert set(np.unique(case.mask)) == {0, 255}
    ys, xs = np.nonzero(case.mask)
    assert abs(ys.min() - 16) <= 1 and abs(xs.max() - 43) <= 1


def test_an_outline_annotation_is_filled(tmp_path):
    """HC18: the head is drawn as an ellipse outline; the ROI is the filled ellipse."""
    from PIL import Image, ImageDraw
    spec = load_source(Path(__file__).resolve().parent.parent / "sources" / "hc18.yaml")
    (tmp_path / "training_set").mkdir()
    Image.fromarray(np.full((80, 100), 60, np.uint8)).save(
        tmp_path / "training_set" / "001_HC.png")
    ring = Image.new("L", (100, 80))
    ImageDraw.Draw(ring).ellipse([20, 10, 80, 70], outline=255, width=2)
    ring.save(tmp_path / "training_set" / "001_HC_Annotation.png")
    (case,) = _read_cases(spec, tmp_path)
    filled = int((case.mask > 0).sum())
    assert filled == pytest.approx(np.pi * 30 * 30, rel=0.08)  # the head, not a 2-px ring


def test_list_cells_are_read_without_eval():
    from curate.ingest.annotations import list_cell
    assert list_cell("['pneumonia', 'pleural effusion']") == ["pneumonia", "pleural effusion"]
    assert list_cell('["normal"]') == ["normal"] and list_cell("[]") == []
    assert list_cell("nan") == [] and list_cell("cardiomegaly") == ["cardiomegaly"]
    assert list_cell("[__import__('os').system('true')]") == [
        "[__import__('os').system('true')]"]  # not a literal: kept as text, never run


def test_deeplesion_key_slices_read_in_hu_with_their_spacing(tmp_path):
    """DL_info.csv names 000001_01_01_109.png for Images_png/000001_01_01/109.png, holds
    the box as one string and the spacing per image; the PNG stores HU + 32768."""
    from PIL import Image

    from curate.ingest.image2d import plan_images, read_image
    from curate.model.recipe import NormalizeConfig
    from curate.unit.normalize import image_view
    spec = load_source(Path(__file__).resolve().parent.parent / "sources" / "deeplesion.yaml")
    folder = tmp_path / "Images_png" / "000001_01_01"
    folder.mkdir(parents=True)
    hu = np.full((64, 64), -1000, np.int32)
    hu[8:56, 8:56] = 40
    hu[20:30, 30:44] = 120
    for name in ("108.png", "109.png"):  # 108 is a neighbouring slice: not listed
        Image.fromarray((hu + 32768).astype(np.uint16)).save(folder / name)
    (tmp_path / "DL_info.csv").write_text(
        "File_name,Bounding_boxes,Spacing_mm_px_,Coarse_lesion_type\n"
        '000001_01_01_109.png,"30.0, 20.0, 44.0, 30.0","0.7, 0.7, 5",4\n')
    units, problems = plan_images(spec, tmp_path)
    assert not problems and [u.key for u in units] == ["Images_png/000001_01_01/109.png"]
    (case,) = read_image(spec, tmp_path, units[0])
    assert case.hu and case.spacing == (0.7, 0.7)
    assert [(b.x0, b.y0, b.x1, b.y1) for b in case.boxes] == [(30.0, 20.0, 44.0, 30.0)]
    view = image_view(case, NormalizeConfig())
    assert view.window["method"] == "ct_window" and view.raw[25, 35] == 120  # HU kept


def test_run_length_codes_decode_in_both_conventions():
    from curate.ingest.image2d import rle_decode
    # a 4x3 grid (rows, cols); column-major: pixel index k is (k % 4, k // 4)
    rel = rle_decode("1 2 3 2", (4, 3), "column", "relative")  # pixels 1-2, then 6-7
    ab = rle_decode("2 2 7 2", (4, 3), "column", "absolute")  # 1-based absolute starts
    assert np.array_equal(rel, ab)
    assert sorted(zip(*np.nonzero(rel), strict=True)) == [(1, 0), (2, 0), (2, 1), (3, 1)]
    assert not rle_decode("-1", (4, 3), "column", "relative").any()
    with pytest.raises(Exception, match="leaves"):
        rle_decode("10 5", (4, 3), "column", "relative")


def test_xml_polygons_and_mat_instance_maps_become_masks(tmp_path):
    from scipy.io import savemat

    from curate.ingest.image2d import load_mask_file
    spec = SourceSpec(name="t", format="image_mask",
                      layout=Layout(images=["*.png"], masks="{stem}.mat", mask_key="inst_map"))
    (tmp_path / "a.xml").write_text(
        '<Annotations><Annotation><Regions><Region><Vertices><Vertex X="2" Y="2"/>'
        '<Vertex X="9" Y="2"/><Vertex X="9" Y="5"/><Vertex X="2" Y="5"/></Vertices>'
        '</Region></Regions></Annotation></Annotations>')
    m = load_mask_file(tmp_path / "a.xml", spec, (8, 12))
    assert m.shape == (8, 12) and m[3, 5] == 1 and m[0, 0] == 0 and m[7, 11] == 0
    inst = np.zeros((8, 12), np.int32)
    inst[1:3, 1:3], inst[5:7, 5:9] = 7, 9
    savemat(str(tmp_path / "a.mat"), {"inst_map": inst, "type_map": inst > 0})
    assert np.array_equal(load_mask_file(tmp_path / "a.mat", spec, (8, 12)), inst)


def test_one_mask_file_per_structure_is_one_label_each(tmp_path):
    """TotalSegmentator: sNNNN/ct.nii.gz with segmentations/<structure>.nii.gz; the stem
    names the structure, and every file is painted into one label volume."""
    import SimpleITK as sitk

    from curate.ingest.volume import plan_volumes, read_volume
    spec = load_source(Path(__file__).resolve().parent.parent / "sources" / "totalsegmentator.yaml")
    subject = tmp_path / "s0001"
    (subject / "segmentations").mkdir(parents=True)
    ct = np.full((4, 12, 12), -1000, np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(ct), str(subject / "ct.nii.gz"))
    for name, box in (("liver", (slice(0, 2), slice(1, 5), slice(1, 5))),
                      ("kidney_left", (slice(2, 4), slice(6, 10), slice(6, 11))),
                      ("spleen", None)):  # an empty structure file: no label value used
        m = np.zeros((4, 12, 12), np.uint8)
        if box:
            m[box] = 1
        sitk.WriteImage(sitk.GetImageFromArray(m), str(subject / "segmentations" / f"{name}.nii.gz"))
    units, problems = plan_volumes(spec, tmp_path)
    assert not problems and len(units) == 1 and len(units[0].extra["labels"]) == 3
    (case,) = read_volume(spec, tmp_path, units[0])
    labels = sitk.GetArrayFromImage(case.label)
    assert case.meta.label_map == {1: "kidney_left", 2: "liver", 3: "spleen"}
    assert (labels == 2).sum() == 2 * 4 * 4 and (labels == 1).sum() == 2 * 4 * 5
    assert not (labels == 3).any()


def test_a_template_rewrites_the_folder_and_a_folder_names_the_structure(tmp_path):
    """EndoVis 2017: left_frames/frameNNN.png with ground_truth/<Instrument>_labels/frameNNN.png."""
    from PIL import Image
    spec = load_source(Path(__file__).resolve().parent.parent / "sources" /
                       "endovis2017-robotic-instruments.yaml")
    seq = tmp_path / "instrument_dataset_1"
    (seq / "left_frames").mkdir(parents=True)
    Image.fromarray(np.full((16, 20, 3), 90, np.uint8)).save(seq / "left_frames" / "frame000.png")
    for tool, xs in (("Prograsp_Forceps", slice(0, 5)), ("Large_Needle_Driver", slice(10, 18))):
        (seq / "ground_truth" / f"{tool}_labels").mkdir(parents=True)
        m = np.zeros((16, 20), np.uint8)
        m[4:12, xs] = 10
        Image.fromarray(m).save(seq / "ground_truth" / f"{tool}_labels" / "frame000.png")
    (case,) = _read_cases(spec, tmp_path)
    assert case.meta.label_map == {1: "Large_Needle_Driver", 2: "Prograsp_Forceps"}
    assert set(np.unique(case.mask[:, 10:18])) == {0, 1} and case.mask[5, 2] == 2


def test_an_image_stack_is_one_case_per_index_with_channel_classes(tmp_path):
    """PanNuke: images.npy (N, H, W, 3) float 0-255 and masks.npy (N, H, W, 6) with one
    instance-labelled channel per class, the last background."""
    spec = load_source(Path(__file__).resolve().parent.parent / "sources" / "pannuke.yaml")
    (tmp_path / "Fold 1" / "images" / "fold1").mkdir(parents=True)
    (tmp_path / "Fold 1" / "masks" / "fold1").mkdir(parents=True)
    imgs = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3))
    masks = np.zeros((3, 32, 32, 6))
    masks[1, 2:8, 2:8, 1] = 17  # an inflammatory nucleus (instance 17) in image 1
    masks[1, 20:30, 20:30, 4] = 3  # an epithelial one
    masks[:, :, :, 5] = 1  # background channel
    np.save(tmp_path / "Fold 1" / "images" / "fold1" / "images.npy", imgs)
    np.save(tmp_path / "Fold 1" / "masks" / "fold1" / "masks.npy", masks)
    cases = _read_cases(spec, tmp_path)
    assert len(cases) == 3 and cases[1].pixels.dtype == np.uint8
    assert cases[1].pixels.shape == (32, 32, 3)
    assert set(np.unique(cases[1].mask)) == {0, 2, 5} and not cases[0].mask.any()
    assert cases[1].mask[4, 4] == 2 and cases[1].mask[25, 25] == 5
    assert check_layout(spec, tmp_path).ok


def test_docs_sources_md_is_generated_from_the_source_files():
    from curate.sources.docs import render_sources_doc
    on_disk = (Path(__file__).resolve().parent.parent / "docs" / "sources.md").read_text()
    assert on_disk == render_sources_doc(), "run `curate sources docs` to refresh docs/sources.md"


def test_every_declared_source_is_read_with_an_annotation():
    """Issue 8: no source is declared for its images only (docs/sources.md's "reads")."""
    from curate.sources.docs import reads
    bare = [p.stem for p in SOURCES if reads(load_source(p)) == "images only"]
    assert not bare, f"sources read for their images only: {bare}"
    assert not UNREADABLE, "every source's miniature must be read (no xfail or skip)"
