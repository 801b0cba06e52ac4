"""Benchmark decontamination by perceptual hash."""

import json

import numpy as np
import polars as pl
from click.testing import CliRunner
from PIL import Image

from curate.build import build
from curate.cli import main
from curate.dataset.decontam import HashIndex


def test_index_finds_hashes_within_the_distance_only():
    index = HashIndex(max_distance=4)
    base = 0x0123456789ABCDEF
    index.add(f"{base:016x}", "vqa-rad-test")
    near = base ^ 0b1011  # 3 bits differ
    far = base ^ 0b11111  # 5 bits differ
    assert index.match(f"{near:016x}") == "vqa-rad-test"
    assert index.match(f"{far:016x}") is None


def test_benchmark_images_are_dropped_even_resized(tmp_path, write_recipe):
    data, bench = tmp_path / "data", tmp_path / "bench"
    data.mkdir()
    bench.mkdir()
    yy, xx = np.mgrid[:96, :96]
    for i in range(4):  # smooth, distinct images (pHash needs structure, not noise)
        img = (127 + 100 * np.sin(xx / (6 + 3 * i)) * np.cos(yy / (5 + 2 * i))).astype(np.uint8)
        Image.fromarray(img).save(data / f"i{i}.png")
    # the benchmark holds image 2, re-encoded as JPEG at another size
    Image.open(data / "i2.png").resize((150, 150)).save(bench / "test_0001.jpg", quality=90)
    result = CliRunner().invoke(main, ["hashes", str(bench), "--out", str(tmp_path / "b.jsonl")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b.jsonl").read_text())["path"] == "test_0001.jpg"
    recipe = write_recipe([{"name": "d", "path": str(data), "format": "image_mask",
                            "layout": {"images": ["*.png"]}}],
                          decontaminate={"lists": ["b.jsonl"]})
    out = tmp_path / "out"
    record = build(recipe, out, executor="local", log=lambda m: None)
    assert record["counts"]["filter"]["reasons"] == {"benchmark": 1}
    dropped = pl.read_parquet(out / "filtered.parquet")
    assert "listed in b" in dropped["quality"][0]["reasons"][0]


def test_cross_case_near_duplicates_are_dropped_when_asked(tmp_path, write_recipe):
    """The same scan in two sources (LiTS inside MSD Task03, say) must not land in two
    splits; near-identical images of one case stay."""
    yy, xx = np.mgrid[:96, :96]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    base = (127 + 100 * np.sin(xx / 7) * np.cos(yy / 9)).astype(np.uint8)
    other = (127 + 100 * np.sin(xx / 13) * np.cos(yy / 4)).astype(np.uint8)
    Image.fromarray(base).save(a / "p1_s1.png")
    Image.fromarray(np.clip(base.astype(int) + 2, 0, 255).astype(np.uint8)).save(a / "p1_s2.png")
    Image.fromarray(other).save(a / "p2_s1.png")
    Image.fromarray(base).resize((120, 120)).save(b / "copy.png")  # republished elsewhere
    sources = [{"name": "a", "path": str(a), "format": "image_mask",
                "layout": {"images": ["*.png"], "patient_id": r"(p\d)_"}},
               {"name": "b", "path": str(b), "format": "image_mask",
                "layout": {"images": ["*.png"]}}]
    off = build(write_recipe(sources), tmp_path / "off", executor="local", log=lambda m: None)
    assert off["counts"]["filter"]["kept"] == 4
    on = build(write_recipe(sources, filters={"cross_case_duplicate_bits": 4}),
               tmp_path / "on", executor="local", log=lambda m: None)
    assert on["counts"]["filter"] == {"kept": 3, "dropped": 1,
                                      "reasons": {"near_duplicate": 1}}
