"""Benchmark decontamination by perceptual hash."""

import json

import numpy as np
import polars as pl
from click.testing import CliRunner
from PIL import Image

from curate.build import build
from curate.cli import main
from curate.decontam import HashIndex


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
