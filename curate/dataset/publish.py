"""Publish a finished build to a `pyarrow.fs` URI (s3://, gs://, hdfs://...), by workers.

Work state (parts, plan records, the answer cache, the knowledge index) needs renames and
SQLite, so a build whose `--out` is a URI runs in a work folder that every node sees
(`--work`), and its outputs (whatever the build switched into place: the names in the
work folder's `.curate-outputs`) are then copied to the URI one file per task on the
executor, so the bytes never pass through the driver. An object store has no rename, so
run.json marks a complete upload: it is deleted first and written last. The old outputs
(named by the URI's own `.curate-outputs`, or the fixed names of older builds) are removed
before the new list is written, so a killed upload leaves nothing the next one misses.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa

from curate.workdir import LAST, LEGACY_OUTPUTS, OUTPUTS, outputs_in_place


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
    """Every file of the build's outputs in the work folder, run.json aside."""
    files = []
    for name in outputs_in_place(local):
        path = local / name
        if name == LAST:
            continue
        if path.is_dir():
            files += [str(p.relative_to(local)) for p in sorted(path.rglob("*")) if p.is_file()]
        elif path.is_file():
            files.append(name)
    return files


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
    """Remove the outputs of an earlier build under the URI (not other files): run.json
    first, so the URI no longer claims a complete build."""
    from pyarrow import fs

    dst, root = destination(uri)
    dst.create_dir(root, recursive=True)
    names = list(LEGACY_OUTPUTS)
    listed = dst.get_file_info(f"{root}/{OUTPUTS}")
    if listed.type == fs.FileType.File:
        try:
            with dst.open_input_stream(listed.path) as f:
                old = json.loads(f.read())
            names += [n for n in old if isinstance(n, str) and n and "/" not in n
                      and n not in (".", "..")]
        except (OSError, ValueError, pa.ArrowException):
            pass  # unreadable: the fixed names at least
    for name in dict.fromkeys([LAST, *names, OUTPUTS]):
        info = dst.get_file_info(f"{root}/{name}")
        if info.type == fs.FileType.File:
            dst.delete_file(info.path)
        elif info.type == fs.FileType.Directory:
            dst.delete_dir(info.path)


def publish_to_uri(ex, local: Path, uri: str, log=print) -> int:
    """Copy a finished build's outputs from `local` to `uri` on the executor."""
    clear(uri)
    copy_batch(pa.table({"path": [OUTPUTS]}), str(local), uri)  # first: what to clear next time
    files = output_files(local)
    frame = ex.frame(pa.table({"path": pa.array(files, pa.string())}),
                     blocks=min(len(files), 4 * ex.cpus))
    total = 0
    for t in frame.map_batches(copy_batch, args=(str(local), uri)).tables_iter():
        total += sum(t.column("bytes").to_pylist())
    copy_batch(pa.table({"path": [LAST]}), str(local), uri)  # last: the upload is complete
    log(f"published {len(files) + 2} files ({total / 1e6:.1f} MB) to {uri.split('?')[0]}")
    return total
