"""--out as a pyarrow.fs URI: a build published to an S3-compatible server on loopback."""

from __future__ import annotations

import json
import socket

import pyarrow.parquet as pq
import pytest

from curate.build import build
from tests.conftest import tree_bytes


@pytest.fixture
def s3(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"
                       }.items():
        monkeypatch.setenv(key, value)
    from pyarrow import fs
    options = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    s3fs = fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http",
                           region="us-east-1", allow_bucket_creation=True)
    s3fs.create_dir("bucket")
    yield s3fs, options
    server.stop()


def test_a_build_is_published_to_an_s3_uri(tmp_path, mask_folder, write_recipe, s3):
    s3fs, options = s3
    recipe = write_recipe([{"name": "f", "path": str(mask_folder), "format": "image_mask",
                            "layout": {"images": ["img/*.png"], "masks": "seg/{stem}_seg.png"}}])
    uri = f"s3://bucket/builds/demo?{options}"
    work = tmp_path / "work"
    record = build(recipe, uri, executor="local", work=work, log=lambda m: None)
    assert record["counts"]["filter"]["kept"] == 3
    from pyarrow import fs
    listed = {i.path.removeprefix("bucket/builds/demo/")
              for i in s3fs.get_file_info(fs.FileSelector("bucket/builds/demo", recursive=True))
              if i.type == fs.FileType.File}
    local = {name for d in ("shards", "manifest.parquet", "quarantine.parquet")
             for name in (f"{d}/{k}" for k in tree_bytes(work / d))}
    assert local <= listed and {"run.json", "DATACARD.md", "croissant.json"} <= listed
    for name in local:
        with s3fs.open_input_file(f"bucket/builds/demo/{name}") as f:
            assert f.read() == (work / name).read_bytes(), name
    manifest = pq.read_table("bucket/builds/demo/manifest.parquet", filesystem=s3fs)
    assert manifest.num_rows == 3
    from curate.dataset.publish import output_files
    named = json.loads(work.joinpath(".curate-outputs").read_text())
    assert "shards" in named and "run.json" in named
    assert {f.split("/")[0] for f in output_files(work)} | {"run.json", ".curate-outputs"} <= \
        {n.split("/")[0] for n in listed}
    # a second build replaces the outputs, it does not pile up old shards, nor outputs an
    # earlier build listed that this one does not write; other files stay
    s3fs.open_output_stream("bucket/builds/demo/shards/train-999999.tar").close()
    for name, data in (("old-card.html", b"x"), ("notes.txt", b"mine"),
                       (".curate-outputs", json.dumps(["old-card.html", "run.json"]).encode())):
        with s3fs.open_output_stream(f"bucket/builds/demo/{name}") as f:
            f.write(data)
    build(recipe, uri, executor="local", work=work, log=lambda m: None)
    for gone in ("shards/train-999999.tar", "old-card.html"):
        assert s3fs.get_file_info(f"bucket/builds/demo/{gone}").type == fs.FileType.NotFound
    assert s3fs.get_file_info("bucket/builds/demo/notes.txt").type == fs.FileType.File
    assert s3fs.get_file_info("bucket/builds/demo/run.json").type == fs.FileType.File
