"""`curate verify DIR`: do a build's shards still hold exactly what its manifest says?

Checks the shard checksums, that every manifest row is in its shard with its image, its
record and a mask for every mask ROI, that the record matches the manifest row, and that
no shard holds a sample the manifest does not list.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from curate.shard import checksums


def verify(out: Path, deep: bool = True) -> list[str]:
    """Problems found (empty when the build verifies)."""
    out = Path(out)
    problems: list[str] = []
    sums_file = out / "shards" / "SHA256SUMS"
    if not sums_file.is_file() or not (out / "manifest.parquet").is_file():
        return [f"{out} is not a curate build (no manifest.parquet or shards/SHA256SUMS)"]
    declared = dict(line.split()[::-1] for line in sums_file.read_text().splitlines() if line)
    actual = checksums(out / "shards")
    for name in sorted(set(declared) | set(actual)):
        if declared.get(name) != actual.get(name):
            problems.append(f"{name}: checksum {'missing' if name not in actual else 'differs'}")
    rows = {r["sample_id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    seen: set[str] = set()
    for tar_path in sorted((out / "shards").glob("*.tar")):
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                key, _, ext = m.name.partition(".")
                members.setdefault(key, {})[ext] = tar.extractfile(m).read() if deep else b""
        for key, parts in members.items():
            row = rows.get(key)
            if row is None:
                problems.append(f"{tar_path.name}: {key} is not in the manifest")
                continue
            seen.add(key)
            if row["shard"] != tar_path.name:
                problems.append(f"{key}: manifest says {row['shard']}, found in {tar_path.name}")
            if "png" not in parts or "json" not in parts:
                problems.append(f"{key}: image or record missing")
                continue
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
    for key in sorted(set(rows) - seen):
        problems.append(f"{key}: in the manifest but in no shard")
    return problems
