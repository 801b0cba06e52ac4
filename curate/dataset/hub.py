"""The build as Hugging Face `datasets` reads it: the Parquet export and the feature types.

`data/{split}-NNNNNN.parquet` holds, one part per shard, the manifest columns plus
`image` (the PNG, as the `Image` feature's struct{bytes, path}) and `masks` (the shard's
`masks.npz` member, `curate.model.masks.unpack` reads it), with the `datasets` feature
types in the Parquet schema metadata (key `huggingface`), so `load_dataset("parquet")`,
`load_dataset(BUILD_DIR)` and the hub's viewer decode `image` as a PIL image; plain
pyarrow reads the same file as columns.

The feature types are written from the Arrow schemas here, without importing `datasets`
(a test extra only): `datasets.Features.from_dict` reads them back and a test checks
they equal what `datasets` itself derives.

Why the shards' features are shipped, not inferred: `datasets`' webdataset loader infers
the types of every split from the first five samples of one shard (the last split's
first), and JSON cannot say the type of a null or an empty list (a sample without ROIs,
an unknown pixel spacing), so a later sample that has one fails to cast ("Couldn't cast
array of type list<item: double> to null"). `load_dataset("webdataset", data_files=...,
features=webdataset_features_of_datasets())` loads the shards from anywhere; a card
without the Parquet export declares them for its `webdataset` config
(`card_dataset_info`). The `masks.npz` member needs none of this (curate.model.masks).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.model.masks import unpack
from curate.model.records import MANIFEST

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets' Image storage
PARQUET = pa.schema(list(MANIFEST) + [pa.field("image", IMAGE), pa.field("masks", pa.binary())])
# a row group holds at most ROW_GROUP rows and about GROUP_BYTES (datasets' own limit for
# the Parquet it writes), so a streaming reader or the hub's viewer holds one group
ROW_GROUP = 256
GROUP_BYTES = 100 << 20
DATA = "data"  # the Parquet export's folder in the build
HUB_SPLITS = {"val": "validation"}  # recipe split -> the hub's name; others keep theirs

_VALUES = {  # Arrow type -> datasets Value dtype
    pa.string(): "string", pa.large_string(): "large_string", pa.binary(): "binary",
    pa.large_binary(): "large_binary", pa.bool_(): "bool", pa.int8(): "int8",
    pa.int16(): "int16", pa.int32(): "int32", pa.int64(): "int64", pa.uint8(): "uint8",
    pa.uint16(): "uint16", pa.uint32(): "uint32", pa.uint64(): "uint64",
    pa.float16(): "float16", pa.float32(): "float32", pa.float64(): "float64",
}


def feature_of(t: pa.DataType) -> dict:
    """The `datasets` feature (its JSON dict form) that stores Arrow type `t`."""
    if t in _VALUES:
        return {"dtype": _VALUES[t], "_type": "Value"}
    if pa.types.is_struct(t):
        return {t.field(i).name: feature_of(t.field(i).type) for i in range(t.num_fields)}
    if pa.types.is_fixed_size_list(t):
        return {"feature": feature_of(t.value_type), "length": t.list_size, "_type": "List"}
    if pa.types.is_list(t):
        return {"feature": feature_of(t.value_type), "_type": "List"}
    if pa.types.is_large_list(t):
        return {"feature": feature_of(t.value_type), "_type": "LargeList"}
    raise TypeError(f"no datasets feature for Arrow type {t}")


def features_of(schema: pa.Schema) -> dict:
    return {f.name: feature_of(f.type) for f in schema}


def parquet_features() -> dict:
    """The Parquet export's features: the manifest's, `image` an Image, `masks` bytes."""
    out = features_of(pa.schema(MANIFEST))
    out["image"] = {"_type": "Image"}
    out["masks"] = {"dtype": "binary", "_type": "Value"}
    return out


def webdataset_features() -> dict:
    """The features of a shard sample as `datasets`' webdataset loader yields it: the
    `png` member an Image, `json` the manifest record, `masks.npz` its two arrays."""
    return {
        "png": {"_type": "Image"},
        "json": features_of(pa.schema(MANIFEST)),
        "masks.npz": {"packed": feature_of(pa.list_(pa.uint8())),
                      "shape": feature_of(pa.list_(pa.int32()))},
        "__key__": feature_of(pa.string()),
        "__url__": feature_of(pa.string()),
    }


def webdataset_features_of_datasets():
    """`datasets.Features` for `load_dataset("webdataset", ..., features=...)`."""
    from curate.model.errors import MissingDependency

    try:
        from datasets import Features
    except ImportError as exc:
        raise MissingDependency("datasets") from exc
    return Features.from_dict(webdataset_features())


def yaml_features(features: dict) -> list:
    """The list form a dataset card's `dataset_info.features` takes (as `datasets`'
    Features._to_yaml_list writes it) from the JSON dict form."""
    def inner(feature: dict) -> dict | str | list:
        kind = feature.get("_type")
        if kind == "Value":
            return {"dtype": feature["dtype"]}
        if kind == "Image":
            return {"dtype": "image"}
        if kind in ("List", "LargeList"):
            item = inner(feature["feature"])
            if isinstance(item, dict) and list(item) == ["dtype"]:
                item = item["dtype"]
            elif isinstance(item, dict) and list(item) == ["struct"]:
                item = item["struct"]
            out = {"list" if kind == "List" else "large_list": item}
            if "length" in feature:
                out["length"] = feature["length"]
            return out
        if kind is None:  # a struct: a plain dict of named features
            return {"struct": [{"name": k, **inner(v)} for k, v in feature.items()]}
        raise TypeError(f"no YAML form for feature type {kind}")

    return [{"name": k, **inner(v)} for k, v in features.items()]


# the export's schema metadata: the features `datasets` reads back
METADATA = {b"huggingface": json.dumps({"info": {"features": parquet_features()}}).encode()}


def parquet_table(rows: pa.Table, masks: list[bytes]) -> pa.Table:
    """Rows (in shard order, with `image`) and their masks members as the Parquet export's
    table, the features in its schema metadata."""
    names = rows.column("sample_id").to_pylist()
    image = pa.StructArray.from_arrays(
        [rows.column("image").combine_chunks().cast(pa.binary()),
         pa.array([f"{n}.png" for n in names], pa.string())], fields=list(IMAGE))
    table = rows.select(MANIFEST.names).cast(MANIFEST)
    table = table.append_column(PARQUET.field("image"), image).append_column(
        PARQUET.field("masks"), pa.array(masks, pa.binary()))
    return table.cast(PARQUET).replace_schema_metadata(METADATA)


def group_rows(table: pa.Table) -> int:
    """Rows per row group: ROW_GROUP, fewer when that many rows exceed GROUP_BYTES."""
    per_row = table.nbytes / max(1, table.num_rows)
    return max(1, min(ROW_GROUP, int(GROUP_BYTES // max(1.0, per_row))))


def write_parquet_part(rows: pa.Table, masks: list[bytes], path: Path) -> None:
    """A shard's Parquet export part, written atomically (a temporary name, then a
    rename) one row group at a time, so no column of the shard is ever one array (a
    binary array holds at most 2 GB) and the export adds one group's bytes to memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    step = group_rows(rows.select(["image"]))
    with pq.ParquetWriter(tmp, PARQUET.with_metadata(METADATA), compression="zstd") as w:
        for at in range(0, rows.num_rows, step):
            part = parquet_table(rows.slice(at, step), masks[at:at + step])
            w.write_table(part, row_group_size=part.num_rows)
    os.replace(tmp, path)


def card_dataset_info(dest: Path, per_split: dict[str, int]) -> list[dict]:
    """The card's `dataset_info` (YAML form) for the config `load_dataset(BUILD_DIR)`
    uses: `default`, the Parquet export, when `dest` has one, else `webdataset`, the
    shards. Split sizes by hub name; num_bytes (which `datasets` requires of a YAML split)
    is the size of the split's files.

    Only one format per card: `datasets` (5.x, and the hub's viewer with it) picks one
    builder for every config of a repository from the first config's files, so a
    `webdataset` config beside a Parquet `default` is read by the Parquet builder and
    fails; the shards then load with `load_dataset("webdataset", data_files=...,
    features=webdataset_features_of_datasets())`."""
    parquet = any((dest / DATA).glob("*.parquet"))
    folder, ext = (DATA, "parquet") if parquet else ("shards", "tar")
    splits = [{"name": HUB_SPLITS.get(s, s), "num_bytes": sum(
        p.stat().st_size for p in (dest / folder).glob(f"{s}-*.{ext}")), "num_examples": n}
        for s, n in per_split.items()]
    features = parquet_features() if parquet else webdataset_features()
    return [{"config_name": "default" if parquet else "webdataset",
             "features": yaml_features(features), "splits": splits}]


def verify_parquet(out: Path, deep: bool = True) -> list[str]:
    """Problems of the Parquet export against the manifest (empty without an export):
    each part has its manifest part's rows, ids in the same order, and (unless shallow)
    every image's sha256 is the manifest's `image_sha256` and its masks decode to one
    plane per ROI at the image's size. Read one row group at a time; damage is a line."""
    folder = out / DATA
    if not folder.is_dir():
        return []
    problems: list[str] = []
    manifests = {p.name for p in (out / "manifest.parquet").glob("*.parquet")} \
        if (out / "manifest.parquet").is_dir() else set()
    parts = {p.name for p in folder.glob("*.parquet")}
    for name in sorted(manifests - parts):
        problems.append(f"{DATA}/{name}: missing (the manifest has this part)")
    for name in sorted(parts - manifests):
        problems.append(f"{DATA}/{name}: no manifest part of that name")
    columns = ["sample_id", "image_sha256", "rois", "width", "height"]
    for name in sorted(parts & manifests):
        try:
            want = pq.read_table(out / "manifest.parquet" / name, columns=columns)
            f = pq.ParquetFile(folder / name)
            if f.metadata.num_rows != want.num_rows:
                problems.append(f"{DATA}/{name}: {f.metadata.num_rows} rows, the manifest "
                                f"part has {want.num_rows}")
                continue
            at = 0
            read = ["sample_id", "image", "masks"] if deep else ["sample_id"]
            for batch in f.iter_batches(columns=read, batch_size=ROW_GROUP):
                rows = want.slice(at, batch.num_rows).to_pylist()
                at += batch.num_rows
                got = batch.to_pylist()
                for w, g in zip(rows, got, strict=True):
                    problems += _row_problems(name, w, g, deep)
        except Exception as exc:  # noqa: BLE001 - damage must be a line, never a traceback
            problems.append(f"{DATA}/{name}: cannot be read ({type(exc).__name__}: "
                            f"{str(exc)[:200]})")
    return problems


def _row_problems(name: str, want: dict, got: dict, deep: bool) -> list[str]:
    key = want["sample_id"]
    if got["sample_id"] != key:
        return [f"{DATA}/{name}: holds {got['sample_id']} where the manifest has {key}"]
    if not deep:
        return []
    out = []
    image = (got.get("image") or {}).get("bytes")
    if image is None or hashlib.sha256(image).hexdigest() != want["image_sha256"]:
        out.append(f"{DATA}/{name}: {key} image sha256 differs from the manifest")
    shape = (len(want["rois"] or []), want["height"], want["width"])
    try:
        masks = tuple(unpack(got["masks"]).shape)
    except Exception as exc:  # noqa: BLE001
        out.append(f"{DATA}/{name}: {key} masks do not decode ({type(exc).__name__})")
    else:
        if masks != shape:
            out.append(f"{DATA}/{name}: {key} masks hold {masks}, manifest says {shape}")
    return out
