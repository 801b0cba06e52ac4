"""`curate export`: each format loads with the tool its users use and maps back to the manifest."""

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from curate.build import build
from curate.export import export_build
from curate.export.turns import CAPTION_PROMPTS, question_text, turns
from curate.model.errors import CurateError

datasets = pytest.importorskip("datasets")

SOURCES = [
    {"name": "xr", "format": "image_boxes", "modality": "XR", "anatomy": "chest",
     "findings": {"nodule": "nodule"}, "generate": {"kind": "xray_boxes", "cases": 4, "seed": 2},
     "layout": {"images": ["images/*.png"], "boxes": {"file": "boxes.csv"}, "view": "frontal",
                "pixel_spacing_mm": [0.7, 0.7]}},
    {"name": "skin", "format": "image_mask", "modality": "dermoscopy", "anatomy": "skin",
     "findings": {"lesion": "pigmented_lesion"}, "generate": {"kind": "rgb_mask", "cases": 4,
                                                               "seed": 3},
     "layout": {"images": ["images/*.png"], "masks": "masks/{stem}_mask.png",
                "label_map": {255: "lesion"}, "view": "none"}},
]
JSON_FILES = {"llava": "json", "sharegpt": "json", "swift": "jsonl"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A phantom build with a train and a val split, several train shards."""
    import yaml

    root = tmp_path_factory.mktemp("export")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "phx", "seed": 0, "salt": "export-test",
                                      "sources": SOURCES,
                                      "split": {"train": 0.6, "val": 0.4, "test": 0.0},
                                      "shard": {"max_samples": 3}}))
    build(recipe, root / "build", executor="local", log=lambda m: None)
    return root / "build"


@pytest.fixture(scope="module")
def exported(built, tmp_path_factory):
    """Every format into one folder (the JSON formats share images/)."""
    out = tmp_path_factory.mktemp("x") / "export"
    summaries = {fmt: export_build(built, fmt, out, log=lambda m: None)
                 for fmt in ("llava", "sharegpt", "swift", "hf")}
    return out, summaries


@pytest.fixture(scope="module")
def manifest(built):
    rows = pq.read_table(built / "manifest.parquet").to_pylist()
    assert {r["split"] for r in rows} == {"train", "val"}
    return {r["sample_id"]: r for r in rows}


def split_counts(manifest):
    counts = {}
    for r in manifest.values():
        counts[r["split"]] = counts.get(r["split"], 0) + 1
    return counts


def load_json(out: Path, fmt: str, cache: Path):
    ext = JSON_FILES[fmt]
    files = {s: str(out / f"{fmt}-{s}.{ext}") for s in ("train", "val")}
    return datasets.load_dataset("json", data_files=files, cache_dir=str(cache))


def expected_turns(row):
    """What the manifest says the conversation holds: (question, answer) per turn."""
    return [(q, a) for q, a in turns(row)]


def test_turns_put_the_caption_first_and_show_choice_options():
    record = {"sample_id": "ab", "caption": "A chest X-ray.", "vqa": [
        {"question": "Which modality? Choose one.", "answer": "XR", "type": "choice",
         "options": ["CT", "XR"]},
        {"question": "Is it brighter or darker?", "answer": "darker", "type": "closed",
         "options": ["brighter", "darker"]},
        {"question": "Empty answer?", "answer": "", "type": "open", "options": []}]}
    got = turns(record)
    assert got[0][0] in CAPTION_PROMPTS and got[0][1] == "A chest X-ray."
    assert got[1] == ("Which modality? Choose one.\nOptions: CT; XR", "XR")
    assert got[2] == ("Is it brighter or darker?", "darker")  # already named: not repeated
    assert len(got) == 3  # an item without an answer is no turn
    assert turns(record, prompt="Report.")[0][0] == "Report."
    assert turns({"sample_id": "x", "caption": "", "vqa": []}) == []
    assert question_text({"question": "Side?", "options": ["left", "right"]}) == \
        "Side?\nOptions: left; right"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["llava", "sharegpt", "swift"])
def test_json_formats_load_with_datasets_and_round_trip(exported, manifest, fmt, tmp_path):
    out, summaries = exported
    ds = load_json(out, fmt, tmp_path)
    want = split_counts(manifest)
    assert {s: ds[s].num_rows for s in ds} == want
    assert {s: c["exported"] for s, c in summaries[fmt]["splits"].items()} == want
    for split in ("train", "val"):
        item = ds[split][0]
        image = item["image"] if fmt == "llava" else item["images"][0]
        path = Path(image) if Path(image).is_absolute() else out / image
        sid = path.stem
        row = manifest[sid]
        assert row["split"] == split
        # the image file is the shipped PNG: its hash is the manifest's
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["image_sha256"]
        if fmt == "swift":
            assert Path(image).is_absolute()  # ms-swift resolves relative paths from its cwd
            msgs = [(m["role"], m["content"]) for m in item["messages"]]
            users, bots = ["user"], ["assistant"]
        else:
            assert not Path(image).is_absolute()
            msgs = [(m["from"], m["value"]) for m in item["conversations"]]
            users, bots = ["human"], ["gpt"]
        assert [r for r, _ in msgs] == (users + bots) * (len(msgs) // 2)
        assert msgs[0][1].startswith("<image>\n")
        assert sum("<image>" in t for _, t in msgs) == 1
        pairs = [(msgs[i][1].removeprefix("<image>\n"), msgs[i + 1][1])
                 for i in range(0, len(msgs), 2)]
        assert pairs == expected_turns(row)
        assert pairs[0][1] == row["caption"]
        assert [a for _, a in pairs[1:]] == [q["answer"] for q in row["vqa"]]
        if fmt == "llava":
            assert item["id"] == sid


@pytest.mark.slow
def test_sharegpt_writes_the_dataset_info_llama_factory_reads(exported):
    out, _ = exported
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {"phx_train", "phx_val"}
    entry = info["phx_train"]
    assert entry["formatting"] == "sharegpt"
    assert entry["columns"] == {"messages": "conversations", "images": "images"}
    assert (out / entry["file_name"]).is_file()


@pytest.mark.slow
def test_hf_parquet_decodes_images_and_round_trips(exported, manifest, built, tmp_path):
    out, summaries = exported
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path))  # README configs
    want = split_counts(manifest)
    assert {s: ds[s].num_rows for s in ds} == {"train": want["train"], "validation": want["val"]}
    assert isinstance(ds["train"].features["image"], datasets.Image)
    row = ds["validation"][0]
    m = manifest[row["id"]]
    assert m["split"] == "val"
    for key in ("caption", "source", "modality", "anatomy", "license", "findings", "width",
                "height", "levels", "rois", "vqa"):
        assert row[key] == m[key], key
    image = row["image"]  # a PIL image, decoded by datasets
    assert image.size == (m["width"], m["height"])
    raw = pq.read_table(out / "data" / m["shard"].replace(".tar", ".parquet"))
    png = raw.column("image").to_pylist()[raw.column("id").to_pylist().index(row["id"])]
    assert hashlib.sha256(png["bytes"]).hexdigest() == m["image_sha256"]
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(io.BytesIO(png["bytes"]))))
    parquet = datasets.load_dataset("parquet", data_files=str(out / "data" / "train-*.parquet"),
                                    cache_dir=str(tmp_path / "p"))
    assert parquet["train"].num_rows == want["train"]
    assert isinstance(parquet["train"].features["image"], datasets.Image)
    assert summaries["hf"]["files"] == {"train": "data/train-*.parquet",
                                        "val": "data/val-*.parquet"}


@pytest.mark.slow
def test_export_again_keeps_images_and_filters_splits(built, exported):
    out, summaries = exported
    again = export_build(built, "llava", out, splits=["val"], prompt="Report.",
                         log=lambda m: None)
    val = again["splits"]["val"]
    assert set(again["splits"]) == {"val"} and not (out / "llava-train.json").exists()
    assert val.get("images_written", 0) == 0 and val["images_kept"] == val["exported"]
    items = json.loads((out / "llava-val.json").read_text())
    assert all(i["conversations"][0]["value"] == "<image>\nReport." for i in items)
    assert not (out / ".export-parts").exists()


@pytest.mark.slow
def test_export_errors_are_clear(built, tmp_path):
    with pytest.raises(CurateError, match="no shards of split"):
        export_build(built, "llava", tmp_path / "a", splits=["test"], log=lambda m: None)
    with pytest.raises(CurateError, match="inside the build"):
        export_build(built, "llava", built / "export", log=lambda m: None)
    with pytest.raises(CurateError, match="not a finished curate build"):
        export_build(tmp_path, "hf", tmp_path / "b", log=lambda m: None)
    with pytest.raises(CurateError, match="unknown export format"):
        export_build(built, "alpaca", tmp_path / "c", log=lambda m: None)


@pytest.mark.slow
def test_cli_export(built, tmp_path):
    from curate.cli import main

    runner = CliRunner()
    assert "llava" in runner.invoke(main, ["export", "--help"]).output
    result = runner.invoke(main, ["export", str(built), "--to", "swift", "--out",
                                  str(tmp_path / "s"), "--executor", "local",
                                  "--image-root", "/data/x", "--no-vqa"])
    assert result.exit_code == 0, result.output
    first = json.loads((tmp_path / "s" / "swift-train.jsonl").read_text().splitlines()[0])
    assert first["images"][0].startswith("/data/x/images/")
    assert len(first["messages"]) == 2  # the caption turn only
    bad = runner.invoke(main, ["export", str(built), "--to", "hf", "--out", str(tmp_path / "h"),
                               "--executor", "local", "--split", "test"])
    assert bad.exit_code != 0 and "no shards of split" in bad.output


@pytest.mark.slow
def test_export_on_ray_writes_the_same_bytes(built, tmp_path):
    ray = pytest.importorskip("ray")
    from tests.conftest import tree_bytes

    for fmt in ("llava", "hf"):
        export_build(built, fmt, tmp_path / "local", log=lambda m: None)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for fmt in ("llava", "hf"):
            export_build(built, fmt, tmp_path / "ray", executor="ray", log=lambda m: None)
    finally:
        ray.shutdown()
    for name in ("llava-train.json", "llava-val.json", "data", "images"):
        want = tree_bytes(tmp_path / "local" / name)
        assert want and tree_bytes(tmp_path / "ray" / name) == want, name
