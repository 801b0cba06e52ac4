"""The demo's describe stage against an OpenAI-compatible server on loopback."""

import json

import polars as pl
import pyarrow.parquet as pq
import pytest

from curate.build import build
from tests.conftest import ROOT, tree_bytes
from tests.llm_server import FakeLLMServer


@pytest.fixture
def small_recipe(tmp_path, write_recipe):
    return write_recipe([
        {"name": "phantom-ct", "format": "nifti", "modality": "CT", "anatomy": "abdomen",
         "generate": {"kind": "ct_lesion", "cases": 1, "seed": 1},
         "layout": {"images": ["images/*.nii.gz"], "masks": "labels/{name}",
                    "label_map": {1: "lesion"}}},
        {"name": "phantom-skin", "format": "image_mask", "modality": "dermoscopy",
         "generate": {"kind": "rgb_mask", "cases": 2, "seed": 3},
         "layout": {"images": ["images/*.png"], "masks": "masks/{stem}_mask.png",
                    "label_map": {255: "lesion"}}},
    ], normalize={"roi_slices": 2, "normal_slices": 1})


def test_llm_endpoint_describes_caches_and_quarantines(tmp_path, small_recipe):
    import yaml
    recipe = yaml.safe_load(small_recipe.read_text())
    recipe["describe"] = {"backend": "openai", "options": {"max_retries": 0, "concurrency": 4}}
    small_recipe.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    with FakeLLMServer() as server:
        server.script("ermoscopy", "bad_json")  # one of the two skin images, no retry left
        llm = {"base_url": server.base_url, "model": "fake-vlm"}
        first = build(small_recipe, out, executor="local", llm=llm, log=lambda m: None)
        sent = len(server.requests)
        assert sent > 0
        # the clean image and the ROI-marked copy travel as image parts
        from tests.llm_server import facts_of, image_parts
        with_roi = [r["body"] for r in server.requests if facts_of(r["body"])[1]]
        assert with_roi and all(len(image_parts(b)) == 2 for b in with_roi)
        # nothing identifying: only facts and metadata are sent
        assert not any("case000" in json.dumps(r["body"]) for r in server.requests)
        # a second run repeats no call and gives the same manifest
        manifest = tree_bytes(out / "manifest.parquet")
        second = build(small_recipe, out, executor="local", llm=llm, log=lambda m: None)
        assert len(server.requests) == sent
        assert tree_bytes(out / "manifest.parquet") == manifest
    m = pl.read_parquet(out / "manifest.parquet")
    assert set(m["generation"].struct.field("backend")) == {"openai-chat"}
    assert all(m["caption"].str.len_chars() > 0)
    q = pq.read_table(out / "quarantine.parquet").to_pylist()
    failed = [r for r in q if r["stage"] == "describe"]
    assert len(failed) == 1 and failed[0]["error"] == "malformed"
    assert first["counts"]["describe"]["stage"]["generator"]["requests"] == sent
    assert second["counts"]["describe"]["stage"]["units"] == 0


def test_grounded_demo_retrieves_knowledge(tmp_path, small_recipe):
    import yaml
    recipe = yaml.safe_load(small_recipe.read_text())
    recipe["describe"] = {"knowledge": {"k": 2}}
    small_recipe.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    build(small_recipe, out, executor="local", log=lambda m: None)
    m = pl.read_parquet(out / "manifest.parquet")
    refs = m["knowledge_refs"].to_list()
    assert all(len(r) == 2 for r in refs)
    assert set(m["generation"].struct.field("backend")) == {"grounded-template"}


def test_llm_flags_need_each_other(tmp_path):
    from click.testing import CliRunner

    from curate.cli import main
    result = CliRunner().invoke(main, ["build", str(ROOT / "recipes" / "demo.yaml"), "--out",
                                       str(tmp_path), "--llm-endpoint", "http://127.0.0.1:1/v1"])
    assert result.exit_code != 0 and "go together" in result.output


def test_an_unreachable_endpoint_stops_with_a_clear_message(tmp_path, small_recipe):
    import socket

    from curate.model.errors import CurateError
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import yaml
    recipe = yaml.safe_load(small_recipe.read_text())
    recipe["describe"] = {"backend": "openai", "options": {"max_retries": 0}}
    small_recipe.write_text(yaml.safe_dump(recipe))
    llm = {"base_url": f"http://127.0.0.1:{port}/v1", "model": "x"}
    with pytest.raises(CurateError, match="no answer from http://127.0.0.1"):
        build(small_recipe, tmp_path / "out", executor="local", llm=llm, log=lambda m: None)


def test_colour_overlays_travel_as_jpeg_grey_as_png():
    import io

    import numpy as np
    from PIL import Image

    from curate.describe.backends.prompt import data_url, roi_overlay_png

    def png(arr):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        return buf.getvalue()

    rois = [{"bbox": [2, 2, 10, 10]}]
    colour = roi_overlay_png(png(np.full((32, 32, 3), 120, np.uint8)), rois)
    grey = roi_overlay_png(png(np.full((32, 32), 120, np.uint8)), rois)
    assert data_url(colour).startswith("data:image/jpeg;base64,")
    assert data_url(grey).startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(colour)).size == (32, 32)
