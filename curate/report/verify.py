"""`curate verify DIR`: do a build's shards still hold exactly what its manifest says?

Checks the shard checksums, that every manifest row is in its shard with its image, its
record and a mask for every mask ROI, that the record matches the manifest row, and that
no shard holds a sample the manifest does not list.

The manifest is read one shard's rows at a time (only the columns checked), so memory
stays bounded by the largest shard; manifest.parquet may be one file (older builds) or a
folder of Parquet parts.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
from PIL import Image

from curate.dataset.ship import checksums

COLUMNS = ["sample_id", "shard", "rois", "caption", "case_id", "split", "modality", "width",
           "height"]


def _parts(manifest: Path) -> list[Path]:
    return sorted(manifest.glob("*.parquet")) if manifest.is_dir() else [manifest]


def _rows(parts: list[Path], where) -> dict[str, dict]:
    """sample_id -> row of the manifest rows matching an Arrow filter expression."""
    if not parts:
        return {}
    table = ds.dataset(parts, format="parquet").to_table(columns=COLUMNS, filter=where)
    return {r["sample_id"]: r for r in table.to_pylist()}


def _shard_index(parts: list[Path]) -> dict[str, list[Path]]:
    """shard name -> the manifest parts that hold rows of it (one each in a new build)."""
    index: dict[str, list[Path]] = {}
    for part in parts:
        names: set[str] = set()
        for batch in ds.dataset(part, format="parquet").to_batches(columns=["shard"]):
            names.update(pc.unique(batch.column("shard")).to_pylist())
        for name in names:
            index.setdefault(name, []).append(part)
    return index


def verify(out: Path, deep: bool = True) -> list[str]:
    """Problems found (empty when the build verifies)."""
    out = Path(out)
    problems: list[str] = []
    sums_file = out / "shards" / "SHA256SUMS"
    if not sums_file.is_file() or not (out / "manifest.parquet").exists():
        return [f"{out} is not a curate build (no manifest.parquet or shards/SHA256SUMS)"]
    declared = dict(line.split()[::-1] for line in sums_file.read_text().splitlines() if line)
    actual = checksums(out / "shards")
    for name in sorted(set(declared) | set(actual)):
        if declared.get(name) != actual.get(name):
            problems.append(f"{name}: checksum {'missing' if name not in actual else 'differs'}")
    parts = _parts(out / "manifest.parquet")
    index = _shard_index(parts)
    tars = sorted((out / "shards").glob("*.tar"))
    missing: set[str] = set()  # rows not in the shard they name
    misplaced: set[str] = set()  # ... found in another shard instead
    for name in sorted(set(index) - {p.name for p in tars}, key=str):
        missing.update(_rows(index[name], pc.field("shard").is_null() if name is None
                             else pc.field("shard") == name))
    for tar_path in tars:
        rows = _rows(index.get(tar_path.name, []), pc.field("shard") == tar_path.name)
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                key, _, ext = m.name.partition(".")
                members.setdefault(key, {})[ext] = tar.extractfile(m).read() if deep else b""
        missing.update(set(rows) - set(members))
        unknown = sorted(set(members) - set(rows))
        elsewhere = _rows(parts, pc.field("sample_id").isin(unknown)) if unknown else {}
        misplaced.update(elsewhere)
        for key, found in members.items():
            row = rows.get(key) or elsewhere.get(key)
            if row is None:
                problems.append(f"{tar_path.name}: {key} is not in the manifest")
                continue
            problems += _check(key, row, found, tar_path.name, deep)
    for key in sorted(missing - misplaced):
        problems.append(f"{key}: in the manifest but in no shard")
    return problems


def _check(key: str, row: dict, parts: dict[str, bytes], tar_name: str, deep: bool) -> list[str]:
    """What differs between one sample's shard members and its manifest row."""
    problems = []
    if row["shard"] != tar_name:
        problems.append(f"{key}: manifest says {row['shard']}, found in {tar_name}")
    if "png" not in parts or "json" not in parts:
        return problems + [f"{key}: image or record missing"]
    wanted = {f"roi_{i:03d}.png" for i, r in enumerate(row["rois"]) if r["area_kind"] == "mask"}
    if not wanted <= set(parts):
        problems.append(f"{key}: missing masks {sorted(wanted - set(parts))}")
    if deep:
        record = json.loads(parts["json"])
        for field in ("caption", "case_id", "split", "modality"):
            if record.get(field) != row[field]:
                problems.append(f"{key}: record {field} differs from the manifest")
        size = Image.open(io.BytesIO(parts["png"])).size
        if size != (row["width"], row["height"]):
            problems.append(f"{key}: image is {size}, manifest says "
                            f"{(row['width'], row['height'])}")
    return problems
