"""Committed parts on disk: a part is done when its marker exists.

A part is a deterministic run of one source's work units (curate.plan), processed and
committed together, so a 25M-sample build writes thousands of files, not millions, and a
resumed build redoes only the parts that have no marker.

units/<source>/<part_id>.parquet    samples (with image and mask bytes)
units/<source>/<part_id>.q.parquet  quarantine rows (absent when there are none)
units/<source>/<part_id>.json       marker: counts and timings, written last (atomic rename)

The API names a part by (source, id); `unit_id` in a result is the part's id.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.model.records import QUARANTINE, SAMPLE, to_table
from curate.workdir import fault_point


class UnitStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _base(self, source: str, unit_id: str) -> Path:
        return self.root / source / unit_id

    def is_done(self, source: str, unit_id: str) -> bool:
        return self._base(source, unit_id).with_suffix(".json").exists()

    def _write(self, base: Path, suffix: str, table: pa.Table) -> str | None:
        """Write base+suffix atomically (temporary name, fsync, rename); returns the
        file's sha256, or None when there is no file (no quarantine rows)."""
        target = base.with_name(base.name + suffix)
        if table.num_rows == 0 and suffix.endswith(".q.parquet"):
            target.unlink(missing_ok=True)  # a redone unit must not keep old rows
            return None
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        tmp = base.with_name(f"{base.name}{suffix}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        return hashlib.sha256(data).hexdigest()

    def verify(self, source: str, unit_id: str) -> str | None:
        """Why a committed part cannot be reused (marker or file damaged), or None."""
        base = self._base(source, unit_id)
        try:
            summary = json.loads(base.with_suffix(".json").read_text())
        except (OSError, ValueError) as exc:
            return f"marker unreadable ({exc.__class__.__name__})"
        for suffix, want in (summary.get("files") or {}).items():
            path = base.with_name(base.name + suffix)
            try:
                with open(path, "rb") as f:
                    got = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError:
                return f"{path.name} missing"
            if got != want:
                return f"{path.name} differs from the sha256 recorded when it was committed"
        return None

    def commit(self, source: str, result) -> dict:
        """Commit a part (a curate.unit.pipeline.UnitResult whose unit_id is the part id)."""
        base = self._base(source, result.unit_id)
        base.parent.mkdir(parents=True, exist_ok=True)
        samples = to_table(result.samples, SAMPLE)
        files = {".parquet": self._write(base, ".parquet", samples),
                 ".q.parquet": self._write(base, ".q.parquet",
                                           to_table(result.quarantine, QUARANTINE))}
        summary = {"unit_id": result.unit_id, "source": source, "counts": dict(result.counts),
                   "files": {k: v for k, v in files.items() if v},
                   "seconds": dict(result.seconds), "run": getattr(result, "run", None),
                   "bytes": samples.column("image").nbytes + samples.column("roi_masks").nbytes
                   if samples.num_rows else 0}
        fault_point("units")
        tmp = base.with_name(f"{base.name}.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(summary, sort_keys=True))
        os.replace(tmp, base.with_suffix(".json"))  # the marker comes last
        return summary

    def has_variant(self, source: str, unit_id: str, key: str) -> bool:
        """A later stage's variant is committed and its files still have the sha256 its
        marker recorded (a damaged one is redone, with a notice)."""
        base = self._base(source, unit_id)
        try:
            text = base.with_name(f"{unit_id}.{key}.done").read_text()
        except OSError:
            return False
        try:
            files = json.loads(text)["files"] if text else {}  # "" from older versions
        except (ValueError, KeyError, TypeError):
            files = {f".{key}.parquet": "marker unreadable"}
        for suffix, want in files.items():
            try:
                with open(base.with_name(base.name + suffix), "rb") as f:
                    got = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError:
                got = None
            if got != want:
                print(f"curate: redoing {key} of part {source}/{unit_id}: {unit_id}{suffix} "
                      "is damaged or missing", flush=True)
                return False
        return True

    def commit_variant(self, source: str, unit_id: str, key: str, samples: pa.Table,
                       quarantine: pa.Table) -> None:
        """Samples rewritten by a later stage (e.g. describe), committed like a unit."""
        base = self._base(source, unit_id)
        files = {f".{key}.parquet": self._write(base, f".{key}.parquet", samples),
                 f".{key}.q.parquet": self._write(base, f".{key}.q.parquet", quarantine)}
        fault_point("describe")
        done = base.with_name(f"{unit_id}.{key}.done")
        tmp = done.with_name(f"{done.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({"files": {k: v for k, v in files.items() if v}}))
        os.replace(tmp, done)  # the marker comes last

    def path(self, source: str, unit_id: str, variant: str | None = None,
             quarantine: bool = False) -> Path:
        suffix = (f".{variant}" if variant else "") + (".q.parquet" if quarantine else ".parquet")
        return self._base(source, unit_id).with_name(unit_id + suffix)

    def summary(self, source: str, unit_id: str) -> dict:
        return json.loads(self._base(source, unit_id).with_suffix(".json").read_text())

    def load(self, units: list[tuple[str, str]] = (), quarantine: bool = False,
             variant: str | None = None, key: tuple[str, str] | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """Committed rows of `units` (or one `key`), optionally a later stage's variant and
        only some columns (reading only those from disk)."""
        suffix, schema = (".q.parquet", QUARANTINE) if quarantine else (".parquet", SAMPLE)
        if variant:
            suffix = f".{variant}{suffix}"
        if columns:
            schema = pa.schema([schema.field(c) for c in columns])
        units = [key] if key is not None else list(units)
        paths = [self._base(s, u).with_name(u + suffix) for s, u in units]
        if quarantine:
            paths = [p for p in paths if p.exists()]
        tables = [pq.read_table(p, schema=schema, columns=columns) for p in paths]
        return pa.concat_tables(tables) if tables else schema.empty_table()
