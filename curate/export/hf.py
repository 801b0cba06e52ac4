"""Parquet with the image embedded, as the Hugging Face `Image` feature, MedTrinity-25M-like.

OUT/data/<split>-N.parquet, one file per shard, rows in the shard's order, row groups of
100 rows (what the hub's viewer reads well for images). Columns:

    id          the sample id (also the image's name)
    image       struct {bytes: the PNG, path: "<id>.png"}: `datasets` decodes it to a
                PIL image because the schema metadata declares the column an `Image`
    caption     the caption
    source, modality, anatomy, license, findings, width, height
    levels      the multigranular description (modality, organ, roi, texture, relations)
    rois        the manifest's ROIs (label, finding, bbox, bbox_norm, area, location, ...)
    vqa         the VQA items (question, answer, type, category, options, origin)

Only the `image` column is declared in the `huggingface` schema metadata; `datasets`
infers the rest from the Arrow types, so the file reads the same in any version.
OUT/README.md carries the `configs:` that map splits to files (val -> validation), so
`load_dataset(OUT)` and the hub find them; the build's data card follows it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.export.shards import read_shard

ROWS_PER_GROUP = 100
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
META = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()}
CARRIED = ["caption", "source", "modality", "anatomy", "license", "findings", "width", "height",
           "levels", "rois", "vqa"]
HF_SPLIT = {"train": "train", "val": "validation", "test": "test"}


def schema(manifest: pa.Schema) -> pa.Schema:
    fields = [pa.field("id", pa.string()), pa.field("image", IMAGE)]
    fields += [manifest.field(name) for name in CARRIED]
    return pa.schema(fields, metadata=META)


def table(batch: pa.RecordBatch, pngs: list[bytes], target: pa.Schema) -> pa.Table:
    ids = batch.column("sample_id")
    image = pa.StructArray.from_arrays(
        [pa.array(pngs, pa.binary()), pa.array([f"{i}.png" for i in ids.to_pylist()])],
        fields=list(IMAGE))
    columns = [ids, image] + [batch.column(name) for name in CARRIED]
    return pa.Table.from_arrays(columns, schema=target)


def parquet_path(out: Path, shard: str) -> Path:
    return out / "data" / shard.replace(".tar", ".parquet")


def export_shard(build_dir: Path, shard: str, out: Path, opts: dict) -> dict:
    dest = parquet_path(out, shard)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    writer, rows = None, 0
    try:
        for batch, pngs in read_shard(build_dir, shard, batch_size=ROWS_PER_GROUP):
            if writer is None:
                target = schema(batch.schema)
                writer = pq.ParquetWriter(tmp, target)
            writer.write_table(table(batch, pngs, target), row_group_size=ROWS_PER_GROUP)
            rows += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # an empty shard: nothing to write
        return {"samples": 0, "exported": 0}
    os.replace(tmp, dest)
    return {"samples": rows, "exported": rows}


def write_readme(out: Path, name: str, splits: list[str], card: str | None) -> Path:
    """The build's data card with `configs:` (each split to its Parquet files) added to its
    YAML header, or a short card when the build has none."""
    import yaml

    header, body = {"pretty_name": name, "license": "other"}, ""
    if card and card.startswith("---\n") and "\n---\n" in card[4:]:
        front, body = card[4:].split("\n---\n", 1)
        header = yaml.safe_load(front) or header
        header.pop("dataset_info", None)  # the card's own Parquet columns are not these
    elif card:
        body = card
    header["configs"] = [{"config_name": "default", "data_files": [
        {"split": HF_SPLIT.get(s, s), "path": f"data/{s}-*.parquet"} for s in splits]}]
    note = ("> Exported by `curate export --to hf`: one row per sample with the columns id, "
            "image (the PNG, decoded by `datasets`), caption, source, modality, anatomy, "
            "license, findings, width, height, levels, rois and vqa, as in the build's "
            "manifest. Licences differ by source: see the `license` column. The build's data "
            "card follows.\n")
    text = "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + note
    path = out / "README.md"
    path.write_text(text + ("\n" + body.lstrip("\n") if body else ""))
    return path
