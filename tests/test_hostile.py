"""Hostile inputs are bounded and named: each becomes a quarantine row with a clear message
(or, where the source declares it, a decided and noted behaviour)."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk
from PIL import Image

from curate.build import build
from curate.ingest.base import Unit
from curate.ingest.files import (
    EmptyInput,
    NonFinite,
    OutsideRoot,
    TooLarge,
    UnknownLabels,
    annotation_path,
    stem,
)
from curate.ingest.image2d import load_image, plan_images, read_image
from curate.ingest.volume import plan_volumes, read_volume
from curate.model.errors import IngestError
from curate.model.recipe import SourceSpec


def spec(fmt: str = "image_mask", **layout) -> SourceSpec:
    return SourceSpec.model_validate({"name": "s", "format": fmt, "modality": "MR",
                                      "layout": {"images": ["img/*"], **layout}})


def grey(h: int = 32, w: int = 40, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w)) * 255).astype(np.uint8)


def mask_source(root: Path, values=(1,)) -> Path:
    (root / "img").mkdir(parents=True)
    (root / "seg").mkdir()
    for i, value in enumerate(values):
        Image.fromarray(grey(seed=i)).save(root / "img" / f"p{i}.png")
        m = np.zeros((32, 40), np.uint8)
        m[5:15, 5:15] = value
        Image.fromarray(m).save(root / "seg" / f"p{i}.png")
    return root


def run(tmp_path, write_recipe, root: Path, **layout) -> tuple[list[dict], Path]:
    recipe = write_recipe([{"name": "s", "path": str(root), "format": "image_mask",
                            "modality": "XR", "layout": {"images": ["img/*.png"],
                                                         "masks": "seg/{stem}.png", **layout}}])
    out = tmp_path / "out"
    build(recipe, out, executor="local", log=lambda m: None)
    q = out / "quarantine.parquet"
    return (pq.read_table(q).to_pylist() if q.exists() else []), out


def manifest(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest.parquet").to_pylist()


# (a) pixel budgets, checked from the header before decoding


def test_huge_png_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)  # 400 megapixels, a few KB on disk
    assert path.stat().st_size < 200_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TooLarge, match="bomb.png"):
        load_image(path)
    # decoding would take 400 MB as uint8; a header read takes nothing measurable
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB


def test_13000_square_png_under_pillows_limit_is_refused_by_the_budget(tmp_path):
    path = tmp_path / "big.png"
    Image.new("1", (13000, 13000)).save(path)  # 169 Mpx: under Pillow's bomb limit
    with pytest.raises(TooLarge, match="169,000,000 pixels"):
        load_image(path)


def test_dicom_sizes_are_checked_from_headers():
    import pydicom

    from curate.ingest.dicom import check_dicom_size

    def ds(rows, cols, frames=1):
        d = pydicom.Dataset()
        d.Rows, d.Columns, d.NumberOfFrames, d.PixelData = rows, cols, frames, b"\0\0"
        return d

    with pytest.raises(TooLarge, match="image"):
        check_dicom_size(spec("dicom"), [ds(20000, 20000)])
    with pytest.raises(TooLarge, match="volume"):
        check_dicom_size(spec("dicom", volume={"max_voxels": 1000}), [ds(10, 10)] * 11)
    with pytest.raises(EmptyInput):
        check_dicom_size(spec("dicom"), [ds(0, 512)])
    check_dicom_size(spec("dicom"), [ds(512, 512, 4)] * 3)  # within both budgets


def test_image_over_the_declared_budget_is_a_quarantine_row(tmp_path, write_recipe):
    root = mask_source(tmp_path / "src", values=(1, 1))
    Image.fromarray(np.zeros((120, 120), np.uint8)).save(root / "img" / "big.png")
    q, out = run(tmp_path, write_recipe, root, max_image_pixels=10_000)
    assert [(r["file"], r["error"]) for r in q] == [("img/big.png", "TooLarge")]
    assert "14,400 pixels" in q[0]["message"] and "10,000" in q[0]["message"]
    assert len(manifest(out)) == 2
    assert issubclass(TooLarge, IngestError)


def test_volume_over_the_voxel_budget_is_refused_from_its_header(tmp_path):
    (tmp_path / "img").mkdir()
    sitk.WriteImage(sitk.Image(20, 20, 20, sitk.sitkFloat32), str(tmp_path / "img/v.nii.gz"))
    s = spec("nifti", volume={"max_voxels": 1000})
    units, problems = plan_volumes(s, tmp_path)
    with pytest.raises(TooLarge, match="8,000 pixels"):
        read_volume(s, tmp_path, units[0])


# (b) symlinks that leave the source root


def test_symlink_outside_the_root_is_refused_unless_allowed(tmp_path, write_recipe):
    root = mask_source(tmp_path / "src")
    elsewhere = tmp_path / "secret.png"
    Image.fromarray(grey(seed=5)).save(elsewhere)
    (root / "img" / "link.png").symlink_to(elsewhere)
    (root / "other").mkdir()
    Image.fromarray(grey(seed=9)).save(root / "other" / "x.png")
    (root / "img" / "inside.png").symlink_to(root / "other" / "x.png")  # inside: fine
    q, out = run(tmp_path, write_recipe, root)
    assert [(r["file"], r["error"], r["stage"]) for r in q] == [
        ("img/link.png", "OutsideRoot", "plan")]
    assert "outside the source root" in q[0]["message"]
    assert len(manifest(out)) == 2
    units, problems = plan_images(spec(allow_symlinks_outside=True), root)
    assert "img/link.png" in [u.key for u in units] and not problems


def test_mask_symlinked_outside_the_root_is_refused(tmp_path):
    root = mask_source(tmp_path / "src")
    Image.fromarray(np.ones((32, 40), np.uint8)).save(tmp_path / "m.png")
    (root / "seg" / "p0.png").unlink()
    (root / "seg" / "p0.png").symlink_to(tmp_path / "m.png")
    units, problems = plan_images(spec(masks="seg/{stem}.png"), root)
    assert units == [] and [p.file for p in problems] == ["seg/p0.png"]
    assert isinstance(problems[0].exc, OutsideRoot)


# (c) mask values absent from a declared label_map


def test_unknown_mask_values_are_quarantined_with_the_values(tmp_path, write_recipe):
    root = mask_source(tmp_path / "src", values=(1, 7))
    q, out = run(tmp_path, write_recipe, root, label_map={1: "lesion"})
    assert [(r["file"], r["error"]) for r in q] == [("seg/p1.png", "UnknownLabels")]
    assert "mask values 7 " in q[0]["message"]
    assert len(manifest(out)) == 1


@pytest.mark.parametrize("policy", ["keep", "ignore"])
def test_unknown_mask_values_keep_or_ignore(tmp_path, policy):
    root = mask_source(tmp_path / "src", values=(7,))
    s = spec(masks="seg/{stem}.png", label_map={1: "lesion"}, unknown_labels=policy)
    units, _ = plan_images(s, root)
    case = read_image(s, root, units[0])[0]
    assert set(np.unique(case.mask)) == ({0, 7} if policy == "keep" else {0})
    with pytest.raises(UnknownLabels):
        read_image(spec(masks="seg/{stem}.png", label_map={1: "lesion"}), root, units[0])
    # no label_map declared: nothing to check against
    assert read_image(spec(masks="seg/{stem}.png"), root, units[0])[0].mask.max() == 7


def test_unknown_label_values_in_volumes(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    img = sitk.GetImageFromArray(np.random.default_rng(0).random((4, 8, 8)).astype(np.float32))
    lab = np.zeros((4, 8, 8), np.uint8)
    lab[1, 2:4, 2:4] = 3
    sitk.WriteImage(img, str(tmp_path / "img/v.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(lab), str(tmp_path / "lab/v.nii.gz"))
    s = spec("nifti", masks="lab/{name}", label_map={1: "tumour"})
    units, _ = plan_volumes(s, tmp_path)
    with pytest.raises(UnknownLabels, match="mask values 3 "):
        read_volume(s, tmp_path, units[0])
    s.layout.unknown_labels = "ignore"
    assert sitk.GetArrayFromImage(read_volume(s, tmp_path, units[0])[0].label).max() == 0
    s.layout.unknown_labels = "keep"
    assert sitk.GetArrayFromImage(read_volume(s, tmp_path, units[0])[0].label).max() == 3


# (d) {stem} cuts the last suffix only


def test_stem_drops_only_the_last_suffix():
    assert stem("case.v1.png") == "case.v1"
    assert stem("case001.nii.gz") == "case001"
    assert stem("a.b.nii.gz") == "a.b"
    assert stem("p0.png") == "p0" and stem("noext") == "noext"
    assert annotation_path("seg/{stem}_m.png", "img/case.v1.png") == "seg/case.v1_m.png"


def test_dotted_file_names_keep_their_masks(tmp_path):
    root = tmp_path / "src"
    (root / "img").mkdir(parents=True)
    (root / "seg").mkdir()
    Image.fromarray(grey()).save(root / "img" / "case.v1.png")
    Image.fromarray(np.ones((32, 40), np.uint8)).save(root / "seg" / "case.v1.png")
    units, _ = plan_images(spec(masks="seg/{stem}.png"), root)
    assert units[0].extra["masks"] == ["seg/case.v1.png"]


# (e) non-finite pixels and voxels


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])  # ITK's NIfTI reader zeroes them
def test_nonfinite_voxels_are_quarantined_or_zeroed_with_a_note(tmp_path, suffix):
    (tmp_path / "img").mkdir()
    arr = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    arr[1, 1, 1] = np.nan
    arr[2, 2, 2] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / f"img/v{suffix}"))
    s = spec("nifti")
    units, _ = plan_volumes(s, tmp_path)
    with pytest.raises(NonFinite, match="2 of 256 voxels"):
        read_volume(s, tmp_path, units[0])
    s.layout.nonfinite = "zero"
    case = read_volume(s, tmp_path, units[0])[0]
    assert np.isfinite(sitk.GetArrayFromImage(case.image)).all()
    assert any(n.startswith("2 non-finite") for n in case.meta.notes)


def test_nonfinite_pixels_in_a_float_tiff(tmp_path):
    import tifffile

    (tmp_path / "img").mkdir()
    arr = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    arr[3, 3] = np.nan
    tifffile.imwrite(tmp_path / "img" / "f.tif", arr)
    unit = Unit("s", key="img/f.tif", files=["img/f.tif"])
    with pytest.raises(NonFinite, match="NaN or infinite"):
        read_image(spec(), tmp_path, unit)
    case = read_image(spec(nonfinite="zero"), tmp_path, unit)[0]
    assert np.isfinite(case.pixels).all() and case.pixels[3, 3] == 0
    assert any("non-finite" in n for n in case.meta.notes)


# (f) empty files and degenerate volumes


def test_empty_file_is_a_quarantine_row(tmp_path, write_recipe):
    root = mask_source(tmp_path / "src")
    (root / "img" / "empty.png").write_bytes(b"")
    q, out = run(tmp_path, write_recipe, root)
    assert [(r["file"], r["error"]) for r in q] == [("img/empty.png", "EmptyInput")]
    assert "empty (0 bytes)" in q[0]["message"]


@pytest.mark.parametrize("size", [(1, 1, 1), (1, 8, 8), (8, 1, 4)])
def test_degenerate_volumes_are_refused(tmp_path, size):
    (tmp_path / "img").mkdir()
    sitk.WriteImage(sitk.Image(*size, sitk.sitkFloat32), str(tmp_path / "img/v.nii.gz"))
    s = spec("nifti")
    units, _ = plan_volumes(s, tmp_path)
    with pytest.raises(EmptyInput, match="degenerate volume"):
        read_volume(s, tmp_path, units[0])


def test_single_slice_volume_is_still_read(tmp_path):
    (tmp_path / "img").mkdir()
    sitk.WriteImage(sitk.Image(8, 8, 1, sitk.sitkFloat32), str(tmp_path / "img/v.nii.gz"))
    s = spec("nifti")
    units, _ = plan_volumes(s, tmp_path)
    assert read_volume(s, tmp_path, units[0])[0].image.GetSize() == (8, 8, 1)


@pytest.mark.filterwarnings("ignore:.*zero-size array")
def test_image_with_no_pixels_is_refused(tmp_path):
    import tifffile

    path = tmp_path / "zero.tif"
    tifffile.imwrite(path, np.zeros((0, 5), np.uint8))
    with pytest.raises(IngestError) as err:
        load_image(path)
    assert isinstance(err.value, EmptyInput) or "not readable" in str(err.value)


# (f) videos, slides and DICOM volumes


def _video(path: Path, w: int = 64, h: int = 48) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), i * 20, np.uint8), "rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_video_frames_over_the_budget_are_refused_before_decoding(tmp_path):
    from curate.ingest.media import plan_files, read_video

    (tmp_path / "img").mkdir()
    _video(tmp_path / "img" / "clip.mp4")
    s = spec("video", max_frames=2)
    units, _ = plan_files(s, tmp_path)
    assert len(read_video(s, tmp_path, units[0])) == 2
    s.layout.max_image_pixels = 3000
    with pytest.raises(TooLarge, match=r"clip.mp4 \(frame\).*3,072 pixels.*max_image_pixels"):
        read_video(s, tmp_path, units[0])
    (tmp_path / "img" / "empty.mp4").write_bytes(b"")
    with pytest.raises(EmptyInput):
        read_video(s, tmp_path, Unit("s", key="img/empty.mp4", files=["img/empty.mp4"]))


def _slide(path: Path, levels: int) -> None:
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("tiffslide")
    img = np.full((1024, 1536, 3), 240, np.uint8)
    img[256:768, 512:1280] = (180, 80, 160)  # tissue
    with tifffile.TiffWriter(path) as tif:
        tif.write(img, tile=(256, 256), subifds=levels - 1, photometric="rgb")
        for k in range(1, levels):
            tif.write(img[::2 ** (k + 1), ::2 ** (k + 1)], tile=(128, 128), subfiletype=1,
                      photometric="rgb")


def test_slides_are_bounded_by_their_lowest_level_and_tile_size(tmp_path):
    from curate.ingest.media import plan_files, read_slide

    (tmp_path / "img").mkdir()
    _slide(tmp_path / "img" / "flat.tif", levels=1)
    _slide(tmp_path / "img" / "pyramid.tif", levels=2)
    s = spec("wsi", tile_size=128, max_tiles=2, max_image_pixels=200_000)
    units = {u.key: u for u in plan_files(s, tmp_path)[0]}
    # without a pyramid the tissue mask would read the whole 1.5 Mpx image
    with pytest.raises(TooLarge, match="flat.tif .lowest level.*1,572,864 pixels"):
        read_slide(s, tmp_path, units["img/flat.tif"])
    assert len(read_slide(s, tmp_path, units["img/pyramid.tif"])) == 2
    s.layout.tile_size = 512
    with pytest.raises(TooLarge, match="one tile of layout.tile_size.*262,144 pixels"):
        read_slide(s, tmp_path, units["img/pyramid.tif"])


def _inf_dicom(folder: Path, geometry: bool) -> None:
    """A DICOM series whose rescale overflows float32 to inf in one slice (or, without
    patient geometry, one projection image)."""
    import pydicom

    from curate.sources.phantoms import write_dicom_series

    hu = np.zeros((3, 16, 16), np.float32)
    paths = sorted(write_dicom_series(folder, hu, (1.0, 1.0, 2.0)))
    if not geometry:
        for p in paths[1:]:
            p.unlink()
        paths = paths[:1]
    ds = pydicom.dcmread(paths[0])
    ds.RescaleSlope = 1e39  # past float32: every voxel of this slice becomes inf
    if not geometry:
        del ds.ImageOrientationPatient, ds.ImagePositionPatient
    ds.save_as(paths[0])


@pytest.mark.parametrize("geometry", [True, False], ids=["volume", "projection"])
def test_nonfinite_dicom_values_are_quarantined_or_zeroed_with_a_note(tmp_path, geometry):
    from curate.ingest.dicom import plan_dicom, read_dicom

    _inf_dicom(tmp_path / "img", geometry)
    s = spec("dicom")
    s.layout.images = ["img/*.dcm"]
    units, _ = plan_dicom(s, tmp_path)
    with pytest.raises(NonFinite, match="NaN or infinite"):
        read_dicom(s, tmp_path, units[0])
    s.layout.nonfinite = "zero"
    case = read_dicom(s, tmp_path, units[0])[0]
    values = sitk.GetArrayFromImage(case.image) if geometry else case.pixels
    assert np.isfinite(values).all()
    assert any("non-finite" in n for n in case.meta.notes), case.meta.notes
