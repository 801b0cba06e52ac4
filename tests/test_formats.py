"""2D families: COCO/VOC/CSV boxes, class labels, video frames, whole-slide tiles."""

import json

import numpy as np
import pytest
from PIL import Image

from curate.ingest import ADAPTERS, adapter
from curate.model.recipe import SUPPORTED_FAMILIES, SourceSpec


def read_all(spec, root):
    plan, read = adapter(spec.format)
    units, problems = plan(spec, root)
    assert not problems
    return units, [read(spec, root, u) for u in units]


def test_supported_families_match_the_adapter_registry():
    assert set(ADAPTERS) == set(SUPPORTED_FAMILIES)


@pytest.fixture
def images(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((40, 60), 90, np.uint8)).save(tmp_path / "img" / f"{name}.png")
    return tmp_path


def test_coco_boxes_convert_xywh_to_xyxy(images):
    coco = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
            "categories": [{"id": 7, "name": "polyp"}],
            "annotations": [{"image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 8]}]}
    (images / "ann.json").write_text(json.dumps(coco))
    spec = SourceSpec(name="c", format="image_boxes", layout={
        "images": ["img/*.png"], "boxes": {"file": "ann.json", "format": "coco"}})
    _, cases = read_all(spec, images)
    (a,), (b,) = cases
    box = a.boxes[0]
    assert (box.label, box.x0, box.y0, box.x1, box.y1) == ("polyp", 10, 5, 30, 13)
    assert b.boxes == []


def test_voc_boxes_are_zero_based_exclusive(images):
    (images / "xml").mkdir()
    (images / "xml" / "a.xml").write_text(
        "<annotation><object><name>mass</name><bndbox><xmin>11</xmin><ymin>6</ymin>"
        "<xmax>30</xmax><ymax>13</ymax></bndbox></object></annotation>")
    spec = SourceSpec(name="v", format="image_boxes", layout={
        "images": ["img/*.png"], "boxes": {"file": "xml/{stem}.xml", "format": "voc"}})
    units, cases = read_all(spec, images)
    box = cases[0][0].boxes[0]
    assert (box.x0, box.y0, box.x1, box.y1) == (10, 5, 30, 13)
    assert cases[1][0].boxes == [] and "voc" not in units[1].extra


def test_csv_multilabel_classes_reach_findings_and_vqa(images):
    from curate.model.recipe import Recipe
    from curate.unit.pipeline import process_unit
    (images / "labels.csv").write_text("image,Effusion,Pneumothorax\na.png,1,0\nb.png,0,0\n")
    spec = SourceSpec(name="l", format="image_labels", modality="XR",
                      findings={"Effusion": "pleural_effusion"},
                      layout={"images": ["img/*.png"], "view": "frontal", "classes": {
                          "file": "labels.csv", "label_columns": ["Effusion", "Pneumothorax"]}})
    plan, _ = adapter(spec.format)
    units, _ = plan(spec, images)
    res = [process_unit(spec, images, u.stamp(images, "x"), Recipe(name="t", sources=[]))
           for u in units]
    a, b = (r.samples[0] for r in res)
    assert a["findings"] == ["pleural_effusion"] and b["findings"] == []
    clinical = [q for q in a["vqa"] if q["category"] == "clinical/image"]
    assert clinical and all(q["answer"] in ("yes", "Effusion") for q in clinical
                            if "effusion" in q["question"] or q["type"] == "choice")
    assert all(q["answer"] == "no" for q in clinical if "pneumothorax" in q["question"])
    assert "labels the whole image as: Effusion" in a["caption"]


def test_folder_class_labels(tmp_path):
    for cls in ("benign", "malignant"):
        (tmp_path / cls).mkdir()
        Image.fromarray(np.full((20, 20, 3), 120, np.uint8)).save(tmp_path / cls / "x.png")
    spec = SourceSpec(name="f", format="image_labels",
                      layout={"images": ["*/*.png"], "classes": {"from_folder": True}})
    _, cases = read_all(spec, tmp_path)
    assert sorted(c[0].meta.image_labels[0] for c in cases) == ["benign", "malignant"]


def test_video_frames_are_sampled_evenly(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(40):  # brightness encodes the frame number
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 6, np.uint8), "rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    spec = SourceSpec(name="v", format="video", modality="endoscopy",
                      layout={"images": ["*.mp4"], "max_frames": 4})
    _, (cases,) = read_all(spec, tmp_path)
    assert len(cases) == 4
    levels = [float(c.pixels.mean()) / 6 for c in cases]
    assert levels == sorted(levels)
    assert levels[0] == pytest.approx(5, abs=2) and levels[-1] == pytest.approx(35, abs=2)


def test_corrupt_video_is_an_ingest_error(tmp_path):
    pytest.importorskip("av")
    from curate.model.errors import IngestError
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    spec = SourceSpec(name="v", format="video", layout={"images": ["*.mp4"]})
    plan, read = adapter(spec.format)
    units, _ = plan(spec, tmp_path)
    with pytest.raises(IngestError):
        read(spec, tmp_path, units[0])


def test_slide_tiles_come_from_tissue_at_the_requested_level(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("tiffslide")
    img = np.full((1024, 1536, 3), 240, np.uint8)
    img[256:768, 512:1280] = (180, 80, 160)  # tissue
    with tifffile.TiffWriter(tmp_path / "s.tif") as tif:
        tif.write(img, tile=(256, 256), subifds=2, photometric="rgb",
                  resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
        tif.write(img[::2, ::2], tile=(256, 256), subfiletype=1, photometric="rgb")
        tif.write(img[::4, ::4], tile=(128, 128), subfiletype=1, photometric="rgb")
    spec = SourceSpec(name="w", format="wsi", modality="pathology", layout={
        "images": ["*.tif"], "tile_size": 128, "tile_level": 1, "max_tiles": 3})
    _, (cases,) = read_all(spec, tmp_path)
    assert len(cases) == 3
    for c in cases:
        assert c.pixels.shape == (128, 128, 3)
        assert np.allclose(c.pixels.reshape(-1, 3).mean(0), (180, 80, 160), atol=1)
        assert c.spacing == pytest.approx((0.001, 0.001))  # 0.5 um/px x 2 at level 1


def test_case_regex_pairs_nnunet_channel_suffixes(tmp_path):
    import SimpleITK as sitk
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    img = sitk.GetImageFromArray(np.zeros((3, 8, 8), np.float32))
    sitk.WriteImage(img, str(tmp_path / "imagesTr" / "FL_0001_0000.nii.gz"))
    sitk.WriteImage(sitk.Cast(img, sitk.sitkUInt8), str(tmp_path / "labelsTr" / "FL_0001.nii.gz"))
    spec = SourceSpec(name="n", format="nifti", layout={
        "images": ["imagesTr/*.nii.gz"], "masks": "labelsTr/{case}.nii.gz",
        "case_regex": "^(.*)_0000$"})
    plan, _ = adapter(spec.format)
    (unit,), _ = plan(spec, tmp_path)
    assert unit.extra["label"] == "labelsTr/FL_0001.nii.gz"


def test_xywh_boxes_keyed_by_stem_on_dicom_images(tmp_path):
    import shutil

    from pydicom.data import get_testdata_file
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "pat1.dcm")
    (tmp_path / "labels.csv").write_text("patientId,x,y,width,height,cls\npat1,10,20,5,6,opacity\n")
    spec = SourceSpec(name="r", format="image_boxes", modality="XR", layout={
        "images": ["*.dcm"], "view": "frontal", "boxes": {
            "file": "labels.csv", "coords": "xywh", "image_column": "patientId",
            "label_column": "cls", "x0_column": "x", "y0_column": "y",
            "x1_column": "width", "y1_column": "height"}})
    _, ((case,),) = read_all(spec, tmp_path)
    b = case.boxes[0]
    assert (b.label, b.x0, b.y0, b.x1, b.y1) == ("opacity", 10, 20, 15, 26)
    assert case.pixels.shape == (64, 64) and case.spacing == pytest.approx((0.3125, 0.3125))
    assert case.meta.modality == "MR"  # the header wins over the declared modality


def test_vqa_source_pairs_are_kept_beside_fact_questions(tmp_path):
    import json as _json

    from curate.model.recipe import Recipe
    from curate.unit.pipeline import process_unit
    (tmp_path / "imgs" / "xmlab1").mkdir(parents=True)
    (tmp_path / "imgs" / "xmlab2").mkdir(parents=True)
    for d in ("xmlab1", "xmlab2"):
        Image.fromarray((np.random.default_rng(1).random((32, 32)) * 255).astype(np.uint8)).save(
            tmp_path / "imgs" / d / "source.jpg")
    qa = [{"img_name": "xmlab1/source.jpg", "question": "Which organ is abnormal?",
           "answer": "Lung", "answer_type": "OPEN", "modality": "CT", "q_lang": "en"},
          {"img_name": "xmlab1/source.jpg", "question": "哪个器官异常?", "answer": "肺",
           "answer_type": "OPEN", "modality": "CT", "q_lang": "zh"}]
    (tmp_path / "train.json").write_text(_json.dumps(qa))
    spec = SourceSpec(name="s", format="vqa", layout={
        "images": ["imgs/*/source.jpg"], "qa": {
            "file": "train.json", "image_column": "img_name", "type_column": "answer_type",
            "modality_column": "modality", "include": {"q_lang": ["en"]}}})
    plan, _ = adapter(spec.format)
    units, _ = plan(spec, tmp_path)
    assert len(units) == 1  # xmlab2 has no question in the split
    (sample,) = process_unit(spec, tmp_path, units[0].stamp(tmp_path, "x"),
                             Recipe(name="t", sources=[])).samples
    src = [q for q in sample["vqa"] if q["origin"] == "source"]
    assert [(q["question"], q["answer"]) for q in src] == [("Which organ is abnormal?", "Lung")]
    assert sample["modality"] == "CT"
    assert any(q["origin"] == "facts" and q["category"] == "modality/image"
               for q in sample["vqa"])


def test_class_labels_joined_by_a_separator(images):
    (images / "Data_Entry.csv").write_text(
        "Image Index,Finding Labels\na.png,Effusion|Infiltration\nb.png,No Finding\n")
    spec = SourceSpec(name="nih", format="image_labels", layout={
        "images": ["img/*.png"], "classes": {"file": "Data_Entry.csv", "image_column":
                                             "Image Index", "label_column": "Finding Labels",
                                             "separator": "|"}})
    _, cases = read_all(spec, images)
    assert [c[0].meta.image_labels for c in cases] == [["Effusion", "Infiltration"],
                                                        ["No Finding"]]


def test_tiff_pillow_cannot_open_is_read_with_tifffile():
    from pathlib import Path

    import skimage

    from curate.ingest.image2d import load_image
    arr = load_image(Path(skimage.__file__).parent / "data" / "multipage_rgb.tif")
    assert arr.shape == (10, 10, 3)
