"""The data card: the hub's README.md (front matter the hub accepts, a body in words and
tables), card.html in headless Chromium, distribution plots, and `curate card DIR`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from curate.model.records import MANIFEST, to_table
from tests.conftest import ROOT
from tests.test_reports import halves, manifest, png, row, sharded, write_build

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def spec(name, spdx="CC-BY-4.0", commercial=True, citation=None, generate=False):
    from curate.model.source import SourceSpec

    return SourceSpec.model_validate({
        "name": name, "title": f"Source {name}", "format": "image_mask",
        "layout": {"images": ["*.png"]}, "citation": citation,
        "license": {"spdx": spdx, "name": f"{spdx or 'custom'} licence",
                    "commercial_use": commercial},
        **({"generate": {"kind": "rgb_mask"}} if generate else {})})


def record(specs, shards=("train-000000.tar", "val-000001.tar", "test-000002.tar")):
    return {"curate_version": "0", "pipeline_version": "1", "recipe_file": "r.yaml",
            "sources_missing": {}, "shards": {s: "0" * 64 for s in shards},
            "sources": [s.model_dump(mode="json", exclude_none=True) for s in specs],
            "recipe": {"name": "t", "description": "a test build",
                       "describe": {"knowledge": {"k": 3, "kb": "kb"}},
                       "normalize": {"mr_percentiles": [1, 99]}},
            "counts": {"units_planned": 50, "shard": {"shards": len(shards)}, "describe": {}}}


def front_matter(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def prose(body: str) -> str:
    """The body without its code blocks."""
    return re.sub(r"```.*?```", "", body, flags=re.S)


def hub_parquet(out: Path, table: pa.Table) -> None:
    """The Parquet export a build writes (curate.dataset.hub), one part per shard."""
    import numpy as np

    from curate.dataset.hub import write_parquet_part
    from curate.model.masks import pack

    for shard in sorted(set(table.column("shard").to_pylist())):
        rows = table.filter(pa.compute.equal(table.column("shard"), shard))
        sizes = list(zip(rows.column("width").to_pylist(), rows.column("height").to_pylist(),
                         strict=True))
        rows = rows.append_column("image", pa.array([png(w, h) for w, h in sizes], pa.binary()))
        masks = [pack(np.ones((len(r), h, w), np.uint8))
                 for r, (w, h) in zip(rows.column("rois").to_pylist(), sizes, strict=True)]
        write_parquet_part(rows, masks, out / "data" / shard.replace(".tar", ".parquet"))


def synthetic_build(out: Path, specs, parquet: bool = False) -> tuple[dict, dict, dict]:
    from curate.model.records import QUARANTINE
    from curate.report.datacard import card_stats, dropped_stats, quarantine_stats

    table = sharded()
    write_build(out, table)
    if parquet:
        hub_parquet(out, table)
    dropped = to_table([row(99, keep=False, reasons=["blank: std 0"], split="val"),
                        row(98, keep=False, reasons=["blank", "duplicate: x"], split="train")],
                       MANIFEST)
    quarantine = to_table([{"source": "a", "unit_id": "u", "file": "f", "stage": "ingest",
                            "error": "IngestError", "message": "m"}], QUARANTINE)
    for name, t in (("filtered.parquet", dropped), ("quarantine.parquet", quarantine)):
        (out / name).mkdir()
        pq.write_table(t, out / name / "part-0.parquet")
    (out / "run.json").write_text(json.dumps(record(specs)))
    return card_stats(table), dropped_stats(dropped), quarantine_stats(quarantine)


def test_card_stats_histograms_count_every_roi_caption_and_pair():
    from curate.report.datacard import card_stats, merge_stats

    whole = manifest()
    a, b = halves(whole, 1)
    s = merge_stats(card_stats(a), card_stats(b))
    assert s == card_stats(whole)
    rois = sum(len(r) for r in whole.column("rois").to_pylist())
    assert sum(s["roi_area_frac_log2"].values()) == rois == 60
    assert s["roi_diameter_mm_log2"] == {"": 60}  # no spacing in the fixture
    assert s["roi_area_frac_log2"] == {"-7": 60}  # area_frac 0.01 -> [2^-7, 2^-6)
    assert s["roi_kinds"] == {"mask": 40, "box": 20}
    assert sum(s["caption_chars"]["hist"].values()) == 40
    assert sum(s["vqa_categories"].values()) == sum(s["vqa_origins"].values()) == 39
    assert s["per_source_modality"]["c"] == {"": 13}
    assert s["roi_origins_by_source"]["a"] == {"annotation": 14, "expert:x": 7}


def test_card_is_a_hub_readme_in_words_and_tables(tmp_path):
    from huggingface_hub import DatasetCard

    from curate.report.card import write_reports

    specs = [spec("a", citation="Doe J. The A dataset. J Imaging 1 (2020)."),
             spec("b", "CC-BY-NC-4.0", commercial=False), spec("c", None, "unknown")]
    out = tmp_path / "b"
    kept, dropped, quarantine = synthetic_build(out, specs)
    write_reports(out, record(specs), kept, dropped, quarantine, specs)
    text = (out / "README.md").read_text()
    assert (out / "DATACARD.md").read_text() == text
    meta, body = front_matter(text)
    card = DatasetCard(text)  # the hub's own parser and validation
    assert card.data.license == "other" and meta["license_link"] == "LICENSE.md"
    assert meta["license_name"] == "per-source: CC-BY-4.0, CC-BY-NC-4.0, custom licence"
    assert "| b | 13 | CC-BY-NC-4.0 licence | no |" in (out / "LICENSE.md").read_text()
    assert meta["size_categories"] == ["n<1K"] and meta["language"] == ["en"]
    assert {"image-to-text", "visual-question-answering", "image-segmentation",
            "object-detection"} == set(meta["task_categories"])
    assert meta["annotations_creators"] == ["expert-generated", "machine-generated"]
    assert meta["source_datasets"] == ["extended|a", "extended|b", "extended|c"]
    # no Parquet export here: the shards are the only config, typed as curate writes them
    assert meta["configs"] == [{"config_name": "webdataset", "default": True, "data_files": [
        {"split": "train", "path": "shards/train-*.tar"},
        {"split": "validation", "path": "shards/val-*.tar"},
        {"split": "test", "path": "shards/test-*.tar"}]}]
    assert meta["dataset_info"][0]["config_name"] == "webdataset"
    assert [f["name"] for f in meta["dataset_info"][0]["features"]][:3] == [
        "png", "json", "masks.npz"]
    # the body: funnel per split, citation, units, licences in words, no Python reprs
    assert "| dropped: blank | 1 | 1 | 0 | 2 |" in body  # train, val, test, all
    assert "| **kept** | 14 | 14 | 12 | 40 |" in body
    assert "| files quarantined (unreadable or refused) | – | – | – | 1 |" in body
    assert "Doe J. The A dataset. J Imaging 1 (2020)." in body
    assert "the source declares no citation; cite it as Source b" in body
    assert "| rois.intensity_inside | number | HU for CT; source units otherwise |" in body
    assert "| a | Source a | 14 | 10 CT and 4 MR | CC-BY-4.0 | yes |" in body
    text_only = prose(body)
    for raw in ("{'", "['", "True", "False", "None", "{\""):
        assert raw not in text_only, raw
    for figure in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", body):
        assert (out / figure).is_file(), figure
    assert {"figures/samples.png", "figures/example.png", "figures/sources.png",
            "figures/rois.png", "figures/captions.png", "figures/vqa.png",
            "figures/splits.png"} <= set(re.findall(r"\]\((figures/[^)]+)\)", body))


def test_a_shared_licence_is_the_hub_id_and_parquet_is_the_default_config(tmp_path):
    from datasets import Features, load_dataset
    from huggingface_hub import DatasetCard

    from curate.report.card import write_reports

    specs = [spec(n, "CC0-1.0", generate=True) for n in "abc"]
    out = tmp_path / "b"
    kept, dropped, quarantine = synthetic_build(out, specs, parquet=True)
    write_reports(out, record(specs), kept, dropped, quarantine, specs)
    text = (out / "README.md").read_text()
    meta, body = front_matter(text)
    card = DatasetCard(text)
    assert card.data.license == "cc0-1.0" and "license_name" not in meta
    # datasets' own readers of the card: configs and dataset_info parse as the hub reads them
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs

    assert list(MetadataConfigs.from_dataset_card_data(card.data)) == ["default"]
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    assert infos["default"].splits["validation"].num_examples == 14
    assert not (out / "LICENSE.md").exists()
    assert meta["annotations_creators"] == ["machine-generated"]  # generated sources only
    assert meta["configs"] == [{"config_name": "default", "default": True, "data_files": [
        {"split": "train", "path": "data/train-*.parquet"},
        {"split": "validation", "path": "data/val-*.parquet"},
        {"split": "test", "path": "data/test-*.parquet"}]}]
    [info] = meta["dataset_info"]
    declared = Features._from_yaml_list(info["features"])
    written = Features.from_arrow_schema(pq.read_schema(out / "data" / "train-000000.parquet"))
    assert declared == written and declared["image"].__class__.__name__ == "Image"
    assert [(x["name"], x["num_examples"]) for x in info["splits"]] == [
        ("train", 14), ("validation", 14), ("test", 12)]
    assert "| image | image | PNG |" in body
    ds = load_dataset(str(out), split="validation")  # the hub's auto-detection, via configs
    assert ds.num_rows == 14 and ds[0]["image"].size == (32, 24)


def test_a_build_that_kept_nothing_still_gets_a_valid_card(tmp_path):
    from huggingface_hub import DatasetCard

    from curate.report.card import write_reports

    specs = [spec("a"), spec("b")]
    (tmp_path / "shards").mkdir()
    write_reports(tmp_path, record(specs, shards=()), {}, {}, {}, specs)
    text = (tmp_path / "README.md").read_text()
    meta, body = front_matter(text)
    assert DatasetCard(text).data.license == "cc-by-4.0"
    assert "configs" not in meta and "dataset_info" not in meta  # no files to point at
    assert "- Splits: none, no sample was kept." in body
    assert "No file was quarantined." in body and (tmp_path / "card.html").is_file()


def test_field_table_describes_every_manifest_field():
    from curate.report.card_fields import field_rows

    missing = [path for path, _, _, meaning in field_rows(MANIFEST) if not meaning]
    assert missing == []


def check_page(html_path: Path, tmp_path: Path) -> dict:
    """Load a page in headless Chromium at a 1280-pixel viewport; a script added to a copy
    reports each image's naturalWidth and every element wider than its box or the viewport."""
    probe = """<script>window.addEventListener('load', () => {
      const vw = document.documentElement.clientWidth;
      const out = document.createElement('pre'); out.id = 'card-check';
      out.textContent = JSON.stringify({viewport: vw,
        images: [...document.images].map(i => ({alt: i.alt, width: i.naturalWidth})),
        wide: [...document.querySelectorAll('body, body *')].filter(e =>
            e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).display !== 'inline'
            || e.getBoundingClientRect().right > vw + 1)
          .map(e => `${e.tagName} ${e.scrollWidth}>${e.clientWidth}`)});
      document.body.appendChild(out);});</script>"""
    page = tmp_path / f"probe-{html_path.name}"
    page.write_text(html_path.read_text().replace("</body>", probe + "</body>"))
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1280,900", "--virtual-time-budget=10000", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="card-check">(.*?)</pre>', dom, re.S)
    assert found, "the page did not finish loading in Chromium"
    import html

    return json.loads(html.unescape(found.group(1)))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt install chromium)")
def test_card_html_shows_every_figure_and_nothing_is_cut_off_in_chromium(tmp_path):
    from curate.report.card import write_reports

    specs = [spec("a", citation="A " * 200), spec("b"), spec("c")]  # a very long citation
    out = tmp_path / "b"
    kept, dropped, quarantine = synthetic_build(out, specs)
    write_reports(out, record(specs), kept, dropped, quarantine, specs)
    page = (out / "card.html").read_text()
    assert 'src="figures/' not in page and page.count('src="data:image/png;base64,') == 7
    result = check_page(out / "card.html", tmp_path)
    assert result["viewport"] == 1280
    assert len(result["images"]) == 7 and all(i["width"] > 0 for i in result["images"])
    assert result["wide"] == []
    # the probe itself sees a broken image and an element wider than the page
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("</body>", '<img alt="gone" src="figures/none.png">'
                                   '<pre style="white-space:pre">' + "x" * 400 + "</pre></body>"))
    bad = check_page(broken, tmp_path)
    assert [i for i in bad["images"] if i["width"] == 0] == [{"alt": "gone", "width": 0}]
    assert any(w.startswith("PRE") for w in bad["wide"])


def test_curate_card_writes_the_same_card_again_from_the_build(tmp_path):
    from curate.cli import main
    from curate.report.card import write_reports

    specs = [spec("a"), spec("b", "MIT"), spec("c")]
    out = tmp_path / "b"
    kept, dropped, quarantine = synthetic_build(out, specs)
    write_reports(out, record(specs), kept, dropped, quarantine, specs)
    names = ["README.md", "DATACARD.md", "card.html", "LICENSE.md", "croissant.json",
             "figures/sources.png", "figures/samples.png"]
    before = {n: (out / n).read_bytes() for n in names}
    for n in names:
        (out / n).unlink()
    (out / ".curate-outputs").write_text(json.dumps(["manifest.parquet", "shards", "run.json"]))
    result = CliRunner().invoke(main, ["card", str(out)])
    assert result.exit_code == 0, result.output
    assert {n: (out / n).read_bytes() for n in names} == before
    assert json.loads((out / ".curate-outputs").read_text()) == [  # the next switch sees them
        "DATACARD.md", "LICENSE.md", "README.md", "card.html", "croissant.json", "figures",
        "manifest.parquet", "shards", "run.json"]
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["card", str(empty)])
    assert result.exit_code != 0 and "no run.json" in result.output
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from curate.build import build

    out = tmp_path_factory.mktemp("demo")
    build(ROOT / "recipes" / "demo.yaml", out, executor="local", log=lambda m: None)
    return out


@pytest.mark.slow
def test_demo_card_loads_as_the_hub_would_and_its_snippets_run(demo):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    text = (demo / "README.md").read_text()
    assert (demo / "DATACARD.md").read_text() == text
    # the knowledge corpus the text drew on, with its licence (the packaged one: Apache-2.0)
    assert "Knowledge corpus:" in text and "licence: Apache-2.0" in text
    card = DatasetCard(text)
    assert card.data.pretty_name == "demo" and card.data.license == "other"
    meta, body = front_matter(text)
    [info] = meta["dataset_info"]
    assert [(x["name"], x["num_examples"]) for x in info["splits"]] == [
        ("train", 14), ("validation", 1)]
    assert load_dataset(str(demo), split="validation").num_rows == 1  # as the hub reads it
    # every snippet of the card, run against this build
    blocks = [b.replace("path/to/demo", str(demo))
              for b in re.findall(r"```python\n(.*?)```", body, re.S)]
    assert len(blocks) == 3
    scope: dict = {}
    exec(compile(blocks[0], "datasets-snippet", "exec"), scope)  # noqa: S102
    assert scope["ds"]["train"].num_rows == 14 and scope["sample"]["image"].size[0] > 0
    if "shards" in scope:
        assert scope["shards"]["train"].num_rows == 14
    wds_block = blocks[1]
    scope = {}
    exec(compile("seen = []\n" + wds_block + "    seen.append((masks.shape, record['rois']))\n",
                 "webdataset-snippet", "exec"), scope)  # noqa: S102
    assert len(scope["seen"]) == 14
    assert all(shape[0] == len(rois) for shape, rois in scope["seen"])
    assert any(rois for _, rois in scope["seen"])
    feed = blocks[2].replace("    ...", "    seen.append((image.shape, masks.shape, record))")
    scope = {}
    exec(compile("seen = []\n" + feed, "feed-snippet", "exec"), scope)  # noqa: S102
    assert len(scope["seen"]) == 14
    assert all(m[0] == len(r["rois"]) and m[1:] == i[1:] for i, m, r in scope["seen"])


@pytest.mark.slow
def test_a_build_without_parquet_export_loads_from_its_shards_by_the_card(demo, tmp_path):
    from datasets import load_dataset

    from curate.report.card import regenerate

    copy = tmp_path / "shards-only"
    shutil.copytree(demo, copy, ignore=shutil.ignore_patterns("data", "units", "kb",
                                                               "phantoms", ".curate-lock"))
    regenerate(copy)
    meta, body = front_matter((copy / "README.md").read_text())
    assert [c["config_name"] for c in meta["configs"]] == ["webdataset"]
    assert "this build has no Parquet export" in body
    ds = load_dataset(str(copy), split="train")
    assert ds.num_rows == 14 and ds[0]["png"].size[0] > 0
    assert len(ds[0]["json"]["rois"]) == ds[0]["masks.npz"]["shape"][0]

