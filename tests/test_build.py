"""End-to-end builds: the demo on Ray, an inline local source, a corrupt file."""

import io
import json
import tarfile

import polars as pl
import pyarrow.parquet as pq
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from curate.build import build
from tests.conftest import ROOT, tree_bytes

REQUIRED = ["sample_id", "source", "case_id", "modality", "anatomy", "split", "rois", "caption",
            "vqa", "quality", "shard"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    first = build(ROOT / "recipes" / "demo.yaml", out, executor="ray", log=lambda m: None)
    manifest_bytes = tree_bytes(out / "manifest.parquet")
    second = build(ROOT / "recipes" / "demo.yaml", out, executor="ray", log=lambda m: None)
    return out, first, second, manifest_bytes


@pytest.mark.slow
def test_demo_writes_every_output(demo):
    out, first, _, _ = demo
    for name in ("run.json", "DATACARD.md", "validation.json", "croissant.json"):
        assert (out / name).is_file(), name
    for name in ("manifest.parquet", "quarantine.parquet", "filtered.parquet"):
        assert (out / name).is_dir(), name  # a folder of parts, read as one table
    assert list((out / "shards").glob("*.tar"))
    m = pl.read_parquet(out / "manifest.parquet")
    assert set(REQUIRED) <= set(m.columns)
    assert m.height == first["counts"]["filter"]["kept"] > 0
    assert set(m["source"]) == {"pydicom-ct-mr", "nibabel-anatomical", "phantom-ct-lesion",
                                "phantom-xray-boxes", "phantom-skin-mask"}
    rois = [r for rs in m["rois"].to_list() for r in rs]
    assert rois and all(len(r["bbox"]) == 4 and r["location"] and r["origin"] == "annotation"
                        for r in rois)
    assert all(g["backend"] == "grounded-template" and "no language model" in g["note"]
               for g in m["generation"].to_list())
    # the grounded generator never contradicts its own facts
    assert all(q["text_flags"] == [] for q in m["quality"].to_list())
    assert first["counts"]["filter"]["dropped"] == 0
    run = json.loads((out / "run.json").read_text())
    assert run["versions"]["pyarrow"] and run["recipe"]["name"] == "demo"
    assert "deterministic grounded generator" in (out / "DATACARD.md").read_text()


@pytest.mark.slow
def test_shards_hold_image_masks_and_the_manifest_record(demo):
    out, *_ = demo
    m = pl.read_parquet(out / "manifest.parquet")
    by_id = {r["sample_id"]: r for r in m.iter_rows(named=True)}
    seen = []
    for tar_path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members = tar.getmembers()
            keys = [mem.name.split(".", 1)[0] for mem in members]
            # members of one sample are adjacent
            runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
            assert len(runs) == len(set(runs))
            for mem in members:
                key, ext = mem.name.split(".", 1)
                data = tar.extractfile(mem).read()
                if ext == "json":
                    rec = json.loads(data)
                    row = by_id[key]
                    assert rec["caption"] == row["caption"] and rec["shard"] == tar_path.name
                elif ext == "png":
                    from PIL import Image
                    assert Image.open(io.BytesIO(data)).size == (row["width"], row["height"])
                else:  # every ROI's mask, one plane each, at the image's size
                    from curate.model.masks import unpack
                    assert ext == "masks.npz"
                    masks = unpack(data)
                    assert masks.shape == (len(by_id[key]["rois"]), by_id[key]["height"],
                                           by_id[key]["width"])
                    assert all(m.any() for m in masks)
            seen += runs
    assert sorted(seen) == sorted(by_id)
    assert all("." not in k for k in seen)


@pytest.mark.slow
def test_second_run_reuses_units_and_gives_identical_manifest(demo):
    out, first, second, manifest_bytes = demo
    assert first["counts"]["units_run"] == first["counts"]["units_planned"]
    assert second["counts"]["units_run"] == 0
    assert second["counts"]["units_reused"] == first["counts"]["units_planned"]
    assert second["counts"]["describe"]["generated_this_run"] == 0
    assert tree_bytes(out / "manifest.parquet") == manifest_bytes


@pytest.mark.slow
def test_no_patient_identifier_reaches_outputs(demo):
    """No value of any PS3.15 basic-profile attribute of the demo's DICOM files is written."""
    from curate.unit.deid import identifying_values
    out, *_ = demo
    ids = set()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        ds = dcmread(get_testdata_file(name))
        ids |= {str(ds.PatientID), str(ds.PatientName)} | identifying_values(ds)
    ids.discard("")
    assert len(ids) > 10  # names, ids, dates, UIDs, institution...
    for path in [*(out / "manifest.parquet").glob("*.parquet"), out / "run.json",
                 out / "DATACARD.md", *(out / "shards").glob("*.tar")]:
        blob = path.read_bytes()
        for value in ids:
            assert value.encode() not in blob, f"{value!r} found in {path.name}"


def test_inline_local_source_with_corrupt_file(tmp_path, mask_folder, write_recipe):
    recipe = write_recipe([{
        "name": "my-folder", "path": str(mask_folder), "format": "image_mask",
        "modality": "XR", "anatomy": "chest",
        "layout": {"images": ["img/*.png"], "masks": "seg/{stem}_seg.png",
                   "label_map": {1: "opacity"}, "view": "frontal",
                   "pixel_spacing_mm": [0.5, 0.5]},
    }])
    out = tmp_path / "out"
    record = build(recipe, out, executor="local", log=lambda m: None)
    q = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert len(q) == 1 and q[0]["file"] == "img/broken.png" and q[0]["stage"] == "ingest"
    assert q[0]["error"] == "IngestError" and "not readable" in q[0]["message"]
    assert record["counts"]["quarantine"] == 1
    m = pl.read_parquet(out / "manifest.parquet")
    assert m.height == 3
    roi = m["rois"][0][0]
    assert roi["label"] == "opacity" and roi["laterality"] == "left"
    assert roi["area_mm2"] == pytest.approx(200 * 0.25)


def test_fresh_starts_over_and_blank_images_are_filtered(tmp_path, write_recipe):
    import numpy as np
    from PIL import Image
    root = tmp_path / "imgs"
    root.mkdir()
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(root / "blank.png")
    Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)).save(
        root / "noise.png")
    recipe = write_recipe([{"name": "f", "path": str(root), "format": "image_mask",
                            "modality": "XR", "layout": {"images": ["*.png"]}}])
    out = tmp_path / "out"
    build(recipe, out, executor="local", log=lambda m: None)
    again = build(recipe, out, executor="local", fresh=True, log=lambda m: None)
    assert again["counts"]["units_run"] == 2
    dropped = pl.read_parquet(out / "filtered.parquet")
    assert dropped.height == 1
    assert dropped["quality"][0]["reasons"][0].startswith("blank")


def test_missing_source_folder_is_reported(tmp_path, write_recipe):
    from curate.model.errors import CurateError
    source = {"name": "gone", "path": str(tmp_path / "nope"), "format": "nifti",
              "layout": {"images": ["*.nii.gz"]}}
    lines = []
    with pytest.raises(CurateError, match="(?s)required source.*missing.*gone: no folder"):
        build(write_recipe([source]), tmp_path / "out", executor="local", log=lines.append)
    assert "gone: skipped (no folder" in lines[0]
    with pytest.raises(CurateError, match="nothing to build"):  # optional: skipped
        build(write_recipe([{**source, "optional": True}]), tmp_path / "out",
              executor="local", log=lines.append)


def test_a_source_that_cannot_be_planned_is_skipped_not_fatal(tmp_path, mask_folder,
                                                              write_recipe):
    recipe = write_recipe([
        {"name": "good", "path": str(mask_folder), "format": "image_mask",
         "layout": {"images": ["img/p*.png"], "masks": "seg/{stem}_seg.png"}},
        {"name": "no-box-table", "path": str(mask_folder), "format": "image_boxes",
         "layout": {"images": ["img/*.png"], "boxes": {"file": "missing.csv"}}},
    ])
    record = build(recipe, tmp_path / "out", executor="local", log=lambda m: None)
    assert "no-box-table" in record["sources_missing"]
    assert "missing.csv" in record["sources_missing"]["no-box-table"]
    assert record["counts"]["filter"]["kept"] == 3


def test_duplicates_dropped_and_shards_roll_over(tmp_path, write_recipe):
    import numpy as np
    from PIL import Image
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray((rng.random((24, 24)) * 255).astype(np.uint8)).save(root / f"i{i}.png")
    (root / "copy.png").write_bytes((root / "i0.png").read_bytes())
    recipe = write_recipe([{"name": "d", "path": str(root), "format": "image_mask",
                            "layout": {"images": ["*.png"]}}],
                          split={"train": 1.0, "val": 0.0, "test": 0.0},
                          shard={"max_samples": 2})
    out = tmp_path / "out"
    record = build(recipe, out, executor="local", log=lambda m: None)
    assert record["counts"]["filter"] == {"kept": 5, "dropped": 1, "reasons": {"duplicate": 1}}
    # 6 candidates / 2 per shard: 3 shards, filled by a seeded hash of the sample id
    shards = sorted(p.name for p in (out / "shards").glob("*.tar"))
    assert 2 <= len(shards) <= 3 and all(s.startswith("train-") for s in shards)
    m = pl.read_parquet(out / "manifest.parquet")
    counts = m["shard"].value_counts()
    assert counts["count"].sum() == 5 and set(counts["shard"]) == set(shards)
    index = json.loads((out / "shards" / "train.wids.json").read_text())
    assert {s["url"]: s["nsamples"] for s in index["shardlist"]} == dict(
        zip(counts["shard"], counts["count"], strict=True))


@pytest.mark.slow
def test_verify_passes_then_catches_a_corrupt_shard(demo, tmp_path):
    import shutil

    from click.testing import CliRunner

    from curate.cli import main
    out, *_ = demo
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("units", "kb", "phantoms"))
    ok = CliRunner().invoke(main, ["verify", str(copy)])
    assert ok.exit_code == 0, ok.output
    shard = sorted((copy / "shards").glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF  # flip a byte inside the first member
    shard.write_bytes(bytes(data))
    bad = CliRunner().invoke(main, ["verify", str(copy), "--shallow"])
    assert bad.exit_code != 0 and "checksum differs" in bad.output


def test_a_worker_failure_outside_the_pipeline_is_quarantined(tmp_path, mask_folder,
                                                              write_recipe, monkeypatch):
    """A failure the pipeline cannot catch itself (here: the unit's commit) costs one unit."""
    from curate.unit import store as store_mod
    recipe = write_recipe([{"name": "f", "path": str(mask_folder), "format": "image_mask",
                            "layout": {"images": ["img/p*.png"], "masks": "seg/{stem}_seg.png"}}],
                          run={"units_per_part": 1})
    real_commit = store_mod.UnitStore.commit

    def flaky(self, source, result):
        if result.samples and result.samples[0]["unit_id"] == first_unit[0]:
            raise OSError("disk full")
        return real_commit(self, source, result)

    first_unit = []
    from curate.unit import pipeline
    real_process = pipeline.process_unit

    def remember(spec, root, unit, *a, **k):
        first_unit.append(unit.unit_id) if not first_unit else None
        return real_process(spec, root, unit, *a, **k)

    monkeypatch.setattr(store_mod.UnitStore, "commit", flaky)
    monkeypatch.setattr("curate.runner.process_unit", remember)
    record = build(recipe, tmp_path / "out", executor="local", log=lambda m: None)
    q = pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist()
    assert [(r["stage"], r["error"]) for r in q] == [("worker", "OSError")]
    assert record["counts"]["filter"]["kept"] == 2


@pytest.mark.slow
def test_every_pydicom_test_file_is_read_or_reported(tmp_path, write_recipe):
    """All of pydicom's test files (and its DICOMDIR folders) through one build: each file
    ends as samples, a filter decision or a quarantine row with a reason; ids stay unique."""
    recipe = write_recipe([{"name": "all", "path": "pkg:pydicom/data/test_files",
                            "format": "dicom", "layout": {
                                "images": ["*.dcm", "dicomdirtests/**/*"],
                                "exclude": ["dicomdirtests/DICOMDIR*"]}}])
    out = tmp_path / "out"
    record = build(recipe, out, executor="local", log=lambda m: None)
    q = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert all(r["message"] for r in q)
    errors = {r["file"]: r["error"] for r in q}
    assert "JPEG-lossy.dcm" not in errors  # 12-bit JPEG Extended, through GDCM
    assert errors["reportsi.dcm"] == "NotAnImage"
    assert "MR_small.dcm" not in errors  # its truncated twin is a duplicate, not its fault
    assert record["counts"]["filter"]["kept"] >= 50
    assert record["counts"]["validation"]["success"]


@pytest.mark.slow
def test_data_card_has_a_contact_sheet(demo):
    from PIL import Image
    out, *_ = demo
    sheet = out / "figures" / "samples.png"
    assert "figures/samples.png" in (out / "DATACARD.md").read_text()
    with Image.open(sheet) as im:
        assert im.width >= 4 * 256  # four tiles across: several sources are shown


@pytest.mark.slow
def test_figures_read_the_same_members_from_the_parquet_export_as_from_the_shards(demo,
                                                                                 tmp_path):
    import shutil

    import pyarrow.parquet as pq

    from curate.report.figures import read_members
    out, *_ = demo
    rows = pq.read_table(out / "manifest.parquet", columns=["sample_id", "shard"]).to_pylist()
    picked = rows[:2] + rows[-2:]
    from_parquet = read_members(out / "shards", picked)
    shutil.copytree(out / "shards", tmp_path / "shards")  # no data/ beside: the tar path
    from_tars = read_members(tmp_path / "shards", picked)
    assert len(from_parquet) == 2 * len(picked)  # each sample's png and masks member
    assert from_parquet == from_tars


@pytest.mark.slow
def test_croissant_metadata_loads_the_manifest(demo):
    import itertools

    import mlcroissant as mlc
    out, first, *_ = demo
    ds = mlc.Dataset(jsonld=str(out / "croissant.json"))
    rows = list(itertools.islice(ds.records("samples"), 100))
    assert len(rows) == first["counts"]["filter"]["kept"]
    assert {r["samples/source"].decode() for r in rows} >= {"phantom-ct-lesion"}
