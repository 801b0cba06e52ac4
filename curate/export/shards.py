"""Read a finished build one shard at a time: its manifest part beside its tar.

`shards/<split>-N.tar` and `manifest.parquet/<split>-N.parquet` are written together by
the same shard writer, in the same order, so a shard is read as a stream of batches of
manifest rows (typed Arrow: nested ROIs and VQA keep their schema) zipped with the
samples' PNG bytes from the tar. Memory is one batch, never the shard or the dataset.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.model.errors import CurateError

SHARD = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d+)\.tar$")


def shard_list(build_dir: Path, splits: list[str] | None = None) -> list[dict]:
    """[{shard, split}] for every shard of the wanted splits, each checked to have its
    manifest part."""
    build_dir = Path(build_dir)
    if not (build_dir / "shards").is_dir() or not (build_dir / "manifest.parquet").exists():
        raise CurateError(f"{build_dir} is not a finished curate build (no shards/ or "
                          "manifest.parquet/); run `curate build` first")
    jobs = []
    for path in sorted((build_dir / "shards").glob("*.tar")):
        m = SHARD.match(path.name)
        if not m or (splits and m["split"] not in splits):
            continue
        if not manifest_part(build_dir, path.name).is_file():
            raise CurateError(f"{path.name} has no manifest part in {build_dir}/manifest.parquet/"
                              "; run `curate verify` on the build")
        jobs.append({"shard": path.name, "split": m["split"]})
    if not jobs:
        found = sorted({m["split"] for p in (build_dir / "shards").glob("*.tar")
                        if (m := SHARD.match(p.name))})
        wanted = f" of split(s) {', '.join(splits)}" if splits else ""
        raise CurateError(f"no shards{wanted} under {build_dir}/shards (found: "
                          f"{', '.join(found) or 'none'})")
    return jobs


def manifest_part(build_dir: Path, shard: str) -> Path:
    return Path(build_dir) / "manifest.parquet" / shard.replace(".tar", ".parquet")


def read_shard(build_dir: Path, shard: str, batch_size: int = 256
               ) -> Iterator[tuple[pa.RecordBatch, list[bytes]]]:
    """(manifest rows, their PNG bytes) in batches, in the shard's order."""
    import webdataset as wds

    build_dir = Path(build_dir)
    tar = wds.DataPipeline(wds.SimpleShardList([str(build_dir / "shards" / shard)]),
                           wds.tarfile_to_samples())
    samples = iter(tar)
    for batch in pq.ParquetFile(manifest_part(build_dir, shard)).iter_batches(batch_size):
        pngs = []
        for sid in batch.column("sample_id").to_pylist():
            sample = next(samples, None)
            if sample is None or sample["__key__"] != sid or "png" not in sample:
                got = "the end of the tar" if sample is None else sample["__key__"]
                raise CurateError(f"{shard}: the manifest part lists {sid} where the tar has "
                                  f"{got}; the build is damaged (run `curate verify`)")
            pngs.append(sample["png"])
        yield batch, pngs
    extra = next(samples, None)
    if extra is not None:
        raise CurateError(f"{shard}: sample {extra['__key__']} is in the tar but not in its "
                          "manifest part; the build is damaged (run `curate verify`)")
