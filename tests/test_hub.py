"""The build as its users load it: Hugging Face `datasets` (the Parquet export, the build
folder as the hub reads it, the shards), pyarrow, mlcroissant; one demo build."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import shutil
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from curate.build import build
from curate.dataset import hub
from curate.model.masks import from_arrays, pack, unpack
from curate.model.records import MANIFEST
from tests.conftest import ROOT

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    build(ROOT / "recipes" / "demo.yaml", out, executor="local", log=lambda m: None)
    return out


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "hf-cache")  # never the user's ~/.cache


def manifest_rows(out):
    return {r["sample_id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}


@pytest.mark.parametrize("shape", [(0, 5, 7), (1, 4, 4), (3, 9, 13)])
def test_masks_round_trip_for_any_number_of_rois(shape):
    masks = np.random.default_rng(0).integers(0, 2, shape).astype(np.uint8)
    back = unpack(pack(masks))
    assert back.dtype == bool and back.shape == shape and (back == masks.astype(bool)).all()
    with np.load(io.BytesIO(pack(masks))) as z:  # plain NumPy reads it too
        assert (from_arrays(z["shape"], z["packed"]) == back).all()


def test_masks_member_keeps_its_type_when_the_first_sample_has_no_roi(tmp_path, cache):
    """datasets infers a split's types from its first samples: a sample without ROIs
    first must not make the masks a list of nulls that later samples fail to cast into."""
    shard = tmp_path / "train-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for i, r in enumerate([0, 2, 1]):
            for ext, data in {"png": png(8, 6), "masks.npz": pack(np.ones((r, 6, 8)))}.items():
                info = tarfile.TarInfo(f"s{i}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    hub.webdataset_features()  # the shipped form names the same two arrays
    ds = datasets.load_dataset("webdataset", data_files={"train": str(shard)},
                               cache_dir=cache)["train"]
    shapes = [tuple(from_arrays(m["shape"], m["packed"]).shape) for m in ds["masks.npz"]]
    assert shapes == [(0, 6, 8), (2, 6, 8), (1, 6, 8)]


def png(width, height):
    buf = io.BytesIO()
    Image.new("L", (width, height), 7).save(buf, format="PNG")
    return buf.getvalue()


def test_row_groups_hold_at_most_256_rows_and_about_100_mb():
    def table(n, size):
        return pa.table({"b": pa.array([b"x" * size] * n, pa.binary())})

    assert hub.group_rows(table(10, 1000)) == hub.ROW_GROUP
    assert hub.group_rows(table(10, (1 << 20) - 8)) == 100  # ~1 MB rows: 100 per group
    assert hub.group_rows(table(2, 300 << 20)) == 1


def test_features_are_the_ones_datasets_derives():
    assert datasets.Features.from_dict(hub.features_of(MANIFEST)) == \
        datasets.Features.from_arrow_schema(MANIFEST)
    for features in (hub.parquet_features(), hub.webdataset_features()):
        f = datasets.Features.from_dict(features)
        assert hub.yaml_features(features) == f._to_yaml_list()
    assert datasets.Features.from_dict(hub.parquet_features()).arrow_schema == \
        hub.PARQUET.remove_metadata()


@pytest.mark.slow
def test_parquet_export_has_every_row_with_its_image_and_masks(demo):
    rows = manifest_rows(demo)
    parts = sorted((demo / "data").glob("*.parquet"))
    assert [p.name for p in parts] == sorted(p.name for p in
                                             (demo / "manifest.parquet").glob("*.parquet"))
    seen = []
    for part in parts:
        f = pq.ParquetFile(part)
        meta = json.loads(f.schema_arrow.metadata[b"huggingface"])
        assert meta["info"]["features"]["image"] == {"_type": "Image"}
        assert all(f.metadata.row_group(i).num_rows <= hub.ROW_GROUP
                   for i in range(f.metadata.num_row_groups))
        t = f.read()
        assert t.schema.remove_metadata() == hub.PARQUET
        # the same rows, in the same order, as the shard's manifest part
        assert t.column("sample_id").to_pylist() == pq.read_table(
            demo / "manifest.parquet" / part.name, columns=["sample_id"]).column(
            "sample_id").to_pylist()
        for r in t.to_pylist():
            want = rows[r["sample_id"]]
            assert hashlib.sha256(r["image"]["bytes"]).hexdigest() == want["image_sha256"]
            assert r["image"]["path"] == f"{r['sample_id']}.png"
            assert unpack(r["masks"]).shape == (len(want["rois"]), want["height"], want["width"])
            assert r["caption"] == want["caption"] and r["split"] in part.name
            seen.append(r["sample_id"])
    assert sorted(seen) == sorted(rows)
    assert hub.verify_parquet(demo) == []


@pytest.mark.slow
def test_datasets_loads_the_parquet_export_and_the_build_folder(demo, cache):
    rows = manifest_rows(demo)
    per_split = {s: sum(r["split"] == s for r in rows.values()) for s in ("train", "val")}
    files = {"train": str(demo / "data" / "train-*.parquet"),
             "validation": str(demo / "data" / "val-*.parquet")}
    by_files = datasets.load_dataset("parquet", data_files=files, cache_dir=cache)
    # the hub's way: the card's `configs` and `dataset_info` in the build's README.md
    assert (demo / "README.md").is_file()
    by_folder = datasets.load_dataset(str(demo), cache_dir=cache)
    for ds in (by_files, by_folder):
        assert {k: len(v) for k, v in ds.items() if k != "test"} == \
            {"train": per_split["train"], "validation": per_split["val"]}
        for split in ("train", "validation"):
            r = ds[split][0]
            assert isinstance(r["image"], Image.Image)
            want = rows[r["sample_id"]]
            assert r["image"].size == (want["width"], want["height"])
            assert unpack(r["masks"]).shape == (len(want["rois"]), want["height"],
                                                want["width"])
            assert r["levels"] == want["levels"] and r["vqa"] == want["vqa"]


@pytest.mark.slow
def test_datasets_loads_the_shards_with_the_shipped_features(demo, cache, tmp_path):
    rows = manifest_rows(demo)
    files = {"train": str(demo / "shards" / "train-*.tar"),
             "validation": str(demo / "shards" / "val-*.tar")}
    by_files = datasets.load_dataset("webdataset", data_files=files, cache_dir=cache,
                                     features=hub.webdataset_features_of_datasets())
    # a build without the Parquet export: the card declares the shards' features
    shards_only = tmp_path / "shards-only"
    shutil.copytree(demo / "shards", shards_only / "shards")
    per_split = {s: sum(r["split"] == s for r in rows.values()) for s in ("train", "val")}
    front = {"configs": [{"config_name": "webdataset", "default": True, "data_files": [
        {"split": "train", "path": "shards/train-*.tar"},
        {"split": "validation", "path": "shards/val-*.tar"}]}],
        "dataset_info": hub.card_dataset_info(shards_only, per_split)}
    (shards_only / "README.md").write_text(  # key order matters to datasets
        f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n# shards\n")
    by_folder = datasets.load_dataset(str(shards_only), cache_dir=cache)
    for ds in (by_files, by_folder):
        assert len(ds["train"]) == per_split["train"]
        assert len(ds["validation"]) == per_split["val"]
        for split in ("train", "validation"):
            for r in itertools.islice(ds[split], 3):
                want = rows[r["__key__"]]
                assert isinstance(r["png"], Image.Image)
                assert r["json"]["caption"] == want["caption"]
                assert r["json"]["rois"] == want["rois"]
                masks = from_arrays(r["masks.npz"]["shape"], r["masks.npz"]["packed"])
                assert masks.shape == (len(want["rois"]), want["height"], want["width"])


@pytest.mark.slow
def test_verify_names_a_damaged_or_missing_parquet_part(demo, tmp_path):
    from curate.report.verify import verify

    out = tmp_path / "b"
    shutil.copytree(demo, out, ignore=shutil.ignore_patterns("units", "plan", "kb", "*.lance"))
    part = sorted((out / "data").glob("train-*.parquet"))[0]
    t = pq.read_table(part)
    images = t.column("image").to_pylist()
    images[0] = {"bytes": png(3, 3), "path": images[0]["path"]}
    bad = t.set_column(t.schema.get_field_index("image"), "image",
                       pa.array(images, hub.IMAGE)).replace_schema_metadata(t.schema.metadata)
    pq.write_table(bad, part)
    problems = hub.verify_parquet(out)
    assert problems == [f"data/{part.name}: {images[0]['path'][:-4]} image sha256 differs "
                        "from the manifest"]
    assert problems[0] in verify(out)  # `curate verify` reports it
    assert hub.verify_parquet(out, deep=False) == []
    pq.write_table(bad.slice(1), part)
    assert "rows, the manifest part has" in hub.verify_parquet(out)[0]
    part.unlink()
    assert hub.verify_parquet(out) == [f"data/{part.name}: missing (the manifest has this part)"]


@pytest.mark.slow
def test_croissant_reads_images_rois_levels_and_vqa_from_the_export(demo):
    import mlcroissant as mlc

    from curate.report.croissant import write_croissant

    rows = manifest_rows(demo)
    text = (demo / "croissant.json").read_text()  # no clock in it
    assert not re.search(r'"date[A-Z]|\d{4}-\d\d-\d\d', text)
    record = json.loads((demo / "run.json").read_text())
    first = write_croissant(demo, record, ["MIT"]).read_text()
    assert write_croissant(demo, record, ["MIT"]).read_text() == first
    got = list(mlc.Dataset(jsonld=str(demo / "croissant.json")).records("samples"))
    assert len(got) == len(rows)
    with_rois = 0
    for r in got:
        want = rows[r["samples/sample_id"].decode()]
        image = r["samples/image"]
        assert isinstance(image, Image.Image) and image.size == (want["width"], want["height"])
        assert r["samples/levels"]["samples/levels/organ"].decode() == want["levels"]["organ"]
        assert [list(x["samples/rois/bbox"]) for x in r["samples/rois"]] == \
            [list(x["bbox"]) for x in want["rois"]]
        assert [q["samples/vqa/answer"].decode() for q in r["samples/vqa"]] == \
            [q["answer"] for q in want["vqa"]]
        with_rois += bool(want["rois"])
    assert with_rois  # the demo has annotated samples


@pytest.mark.slow
def test_write_shard_writes_the_export_only_when_asked(demo, tmp_path, monkeypatch):
    from curate.dataset.ship import KEPT, write_shard
    from curate.model.recipe import ShardConfig

    assert ShardConfig().parquet_images and not ShardConfig(parquet_images=False).parquet_images
    part = sorted((demo / "data").glob("train-*.parquet"))[0]
    t = pq.read_table(part)
    n = t.num_rows
    rows = t.drop_columns(["image", "masks"]).append_column(
        "image", pa.array([r["bytes"] for r in t.column("image").to_pylist()], pa.binary()))
    rows = rows.append_column("roi_masks", pa.array(  # box-filled masks: no PNG per ROI
        [[None] * len(r) for r in t.column("rois").to_pylist()], pa.list_(pa.binary())))
    rows = rows.append_column("_order", pa.array([f"{i:06d}" for i in range(n)])).cast(KEPT)
    write_shard(rows, tmp_path / "off", parquet_images=False)
    assert (tmp_path / "off" / "shards" / part.name.replace(".parquet", ".tar")).is_file()
    assert not (tmp_path / "off" / "data").exists()
    monkeypatch.setattr(hub, "ROW_GROUP", 4)  # several row groups, written one by one
    write_shard(rows, tmp_path / "on")
    assert sorted(p.name for p in (tmp_path / "on" / "data").iterdir()) == [part.name]
    f = pq.ParquetFile(tmp_path / "on" / "data" / part.name)
    assert f.metadata.num_row_groups == -(-n // 4)
    again = f.read()
    assert again.column("image").to_pylist() == t.column("image").to_pylist()
    assert again.schema.equals(t.schema, check_metadata=True)  # features in the metadata
