"""Publish a finished build to a `pyarrow.fs` URI (s3://, gs://, hdfs://...), by workers.

Work state (parts, plan records, the answer cache, the knowledge index) needs renames and
SQLite, so a build whose `--out` is a URI runs in a work folder that every node sees
(`--work`), and its outputs are then copied to the URI one file per task on the
executor, so the bytes never pass through the driver. Old outputs under the URI are
removed first; run.json goes last, so its presence marks a complete upload.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa

OUTPUT_DIRS = ["shards", "manifest.parquet", "filtered.parquet", "quarantine.parquet",
               "figures"]
OUTPUT_FILES = ["validation.json", "DATACARD.md", "croissant.json"]
LAST = "run.json"


def is_uri(out) -> bool:
    text = str(out)
    return "://" in text and not text.startswith("file://")


def default_work(uri: str) -> Path:
    """A per-URI work folder under ~/.cache/curate (set --work to a shared folder on a
    cluster)."""
    key = hashlib.sha256(uri.split("?")[0].encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "curate" / "work" / key


def destination(uri: str):
    """(filesystem, root path) for a URI; options such as endpoint_override ride in its
    query string (s3://bucket/prefix?endpoint_override=host:port&scheme=http)."""
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(uri)
    return filesystem, root.rstrip("/")


def output_files(local: Path) -> list[str]:
    files = [str(p.relative_to(local)) for d in OUTPUT_DIRS if (local / d).is_dir()
             for p in sorted((local / d).rglob("*")) if p.is_file()]
    return files + [f for f in OUTPUT_FILES if (local / f).is_file()]


def copy_batch(batch: pa.Table, local: str, uri: str) -> pa.Table:
    """Copy each listed file from the work folder to the URI; returns bytes copied."""
    from pyarrow import fs

    dst, root = destination(uri)
    total = 0
    for rel in batch.column("path").to_pylist():
        src = Path(local) / rel
        dst.create_dir(str(Path(root) / rel).rsplit("/", 1)[0], recursive=True)
        fs.copy_files(str(src), f"{root}/{rel}", destination_filesystem=dst)
        total += src.stat().st_size
    return pa.table({"bytes": pa.array([total], pa.int64())})


def clear(uri: str) -> None:
    """Remove the outputs of an earlier build under the URI (not other files)."""
    from pyarrow import fs

    dst, root = destination(uri)
    dst.create_dir(root, recursive=True)
    for name in [LAST, *OUTPUT_FILES]:
        if dst.get_file_info(f"{root}/{name}").type == fs.FileType.File:
            dst.delete_file(f"{root}/{name}")
    for name in OUTPUT_DIRS:
        if dst.get_file_info(f"{root}/{name}").type == fs.FileType.Directory:
            dst.delete_dir(f"{root}/{name}")


def publish_to_uri(ex, local: Path, uri: str, log=print) -> int:
    """Copy a finished build's outputs from `local` to `uri` on the executor."""
    clear(uri)
    files = output_files(local)
    frame = ex.frame(pa.table({"path": pa.array(files, pa.string())}),
                     blocks=min(len(files), 4 * ex.cpus))
    total = 0
    for t in frame.map_batches(copy_batch, args=(str(local), uri)).tables_iter():
        total += sum(t.column("bytes").to_pylist())
    copy_batch(pa.table({"path": [LAST]}), str(local), uri)  # last: the upload is complete
    log(f"published {len(files) + 1} files ({total / 1e6:.1f} MB) to {uri.split('?')[0]}")
    return total
