"""Vector storage: a LanceDB table, or a Parquet file searched exactly with numpy.

LanceDB is the default when it is installed: an embedded, serverless columnar store that
keeps vectors beside the text and tags, filters with SQL before the vector search, and
can later take an ANN index when a corpus grows past what exact search handles. Without
it the same table is written as Parquet (vectors as fixed-size lists) and searched by an
exact dot product in numpy, which for a corpus of thousands of passages is as fast and
gives the same ranking. Both return the same rows and cosine scores.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.kb.errors import KnowledgeBaseError
from curate.kb.ingest import TAG_KEYS
from curate.model.errors import MissingDependency

TABLE = "chunks"
SCALAR_FILTERS = ("doc_id", "format", "chunk_id")
LIST_FILTERS = TAG_KEYS
BACKENDS = ("auto", "lance", "parquet")
COLUMNS = ["chunk_id", "doc_id", "chunk_index", "title", "heading", "text", "source", "format",
           "references", *TAG_KEYS, "metadata"]


def schema(dim: int) -> pa.Schema:
    strings = pa.list_(pa.string())
    return pa.schema([
        ("chunk_id", pa.string()), ("doc_id", pa.string()), ("chunk_index", pa.int32()),
        ("title", pa.string()), ("heading", pa.string()), ("text", pa.string()),
        ("source", pa.string()), ("format", pa.string()), ("references", strings),
        *[(k, strings) for k in TAG_KEYS], ("metadata", pa.string()),
        ("vector", pa.list_(pa.float32(), dim)),
    ])


def make_table(rows: list[dict[str, Any]], vectors: np.ndarray) -> pa.Table:
    dim = int(vectors.shape[1])
    cols: dict[str, Any] = {c: [r[c] for r in rows] for c in COLUMNS}
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    cols["vector"] = pa.FixedSizeListArray.from_arrays(flat, dim)
    return pa.table(cols, schema=schema(dim))


def lance_available() -> bool:
    return importlib.util.find_spec("lancedb") is not None


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise KnowledgeBaseError(f"unknown index backend {backend!r}; use one of {BACKENDS}")
    if backend == "auto":
        return "lance" if lance_available() else "parquet"
    if backend == "lance" and not lance_available():
        raise MissingDependency("lancedb")
    return backend


def _values(key: str, value: Any) -> list[str]:
    items = value if isinstance(value, list | tuple | set) else [value]
    vals = [str(v) for v in items]
    return [v.lower() for v in vals] if key in LIST_FILTERS else vals


def check_filters(filters: dict[str, Any] | None) -> dict[str, list[str]]:
    """Filters as key -> accepted values. A row passes when, for every key, its value
    (or, for tag lists, any of its tags) is among the accepted values."""
    out: dict[str, list[str]] = {}
    for key, value in (filters or {}).items():
        if key not in SCALAR_FILTERS and key not in LIST_FILTERS:
            raise KnowledgeBaseError(f"unknown filter {key!r}; filter on one of "
                                     f"{', '.join(SCALAR_FILTERS + LIST_FILTERS)}")
        out[key] = _values(key, value)
    return out


def _sql(filters: dict[str, list[str]]) -> str | None:
    def lit(v: str) -> str:
        return "'" + v.replace("'", "''") + "'"

    parts = []
    for key, vals in filters.items():
        if not vals:
            return "false"
        joined = ", ".join(lit(v) for v in vals)
        parts.append(f"array_has_any({key}, [{joined}])" if key in LIST_FILTERS
                     else f"{key} IN ({joined})")
    return " AND ".join(parts) or None


class Store(Protocol):
    def search(self, vector: np.ndarray, k: int,
               filters: dict[str, list[str]]) -> list[tuple[dict[str, Any], float]]: ...

    def count(self) -> int: ...


class ParquetStore:
    """The whole table in memory; exact cosine search by one matrix-vector product."""

    def __init__(self, table: pa.Table):
        self.rows = table.select(COLUMNS).to_pylist()
        vec = table.column("vector").combine_chunks()
        dim = vec.type.list_size
        self.vectors = vec.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)

    @classmethod
    def open(cls, path: Path) -> ParquetStore:
        return cls(pq.read_table(path / f"{TABLE}.parquet"))

    def count(self) -> int:
        return len(self.rows)

    def _mask(self, filters: dict[str, list[str]]) -> np.ndarray:
        mask = np.ones(len(self.rows), bool)
        for key, vals in filters.items():
            accepted = set(vals)
            for i, row in enumerate(self.rows):
                have = row[key] if key in LIST_FILTERS else [row[key]]
                if mask[i] and not accepted.intersection(have):
                    mask[i] = False
        return mask

    def search(self, vector: np.ndarray, k: int,
               filters: dict[str, list[str]]) -> list[tuple[dict[str, Any], float]]:
        idx = np.nonzero(self._mask(filters))[0]
        if not len(idx) or k <= 0:
            return []
        scores = self.vectors[idx] @ np.asarray(vector, np.float32)
        # ties broken by chunk id so that rankings are reproducible
        order = sorted(range(len(idx)), key=lambda j: (-float(scores[j]), self.rows[idx[j]]["chunk_id"]))
        return [(self.rows[idx[j]], float(scores[j])) for j in order[:k]]


class LanceStore:
    """A LanceDB table; the filter runs as SQL before the (exact, unindexed) search."""

    def __init__(self, table: Any):
        self.table = table

    @classmethod
    def open(cls, path: Path) -> LanceStore:
        try:
            import lancedb
        except ImportError as exc:
            raise MissingDependency("lancedb") from exc
        return cls(lancedb.connect(str(path)).open_table(TABLE))

    def count(self) -> int:
        return int(self.table.count_rows())

    def search(self, vector: np.ndarray, k: int,
               filters: dict[str, list[str]]) -> list[tuple[dict[str, Any], float]]:
        if k <= 0:
            return []
        q = self.table.search(np.asarray(vector, np.float32))
        q = q.distance_type("cosine") if hasattr(q, "distance_type") else q.metric("cosine")
        where = _sql(filters)
        if where:
            q = q.where(where, prefilter=True)
        res = q.select([*COLUMNS, "_distance"]).limit(k).to_arrow().to_pylist()
        hits = [({c: r[c] for c in COLUMNS}, 1.0 - float(r["_distance"])) for r in res]
        hits.sort(key=lambda h: (-round(h[1], 6), h[0]["chunk_id"]))
        return hits


def _remove_old(out: Path) -> None:
    for old in (out / f"{TABLE}.lance", out / f"{TABLE}.parquet"):
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()


def write_store(out: Path, table: pa.Table, backend: str) -> None:
    """Write the table (replacing an earlier one of either backend)."""
    write_store_batches(out, iter([table]), table.schema, backend)


def write_store_batches(out: Path, tables: Iterator[pa.Table], table_schema: pa.Schema,
                        backend: str, ann_min_rows: int | None = None) -> dict[str, Any]:
    """Write tables as they come (replacing an earlier index of either backend): only
    one batch is in memory at a time. Parquet gets one row group per batch; LanceDB
    reads the batches as a stream, and a table of at least `ann_min_rows` rows gets an
    IVF-PQ vector index (cosine) so that queries stay fast at millions of rows.
    Returns what was built ({"rows": n, "ann_index": bool})."""
    _remove_old(out)
    rows = 0

    def counted() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        for t in tables:
            rows += t.num_rows
            yield from t.to_batches()

    if backend == "lance":
        import lancedb

        reader = pa.RecordBatchReader.from_batches(table_schema, counted())
        table = lancedb.connect(str(out)).create_table(TABLE, data=reader, mode="overwrite")
        ann = bool(ann_min_rows and rows >= ann_min_rows)
        if ann:
            dim = table_schema.field("vector").type.list_size
            table.create_index(metric="cosine", vector_column_name="vector",
                               num_partitions=max(1, int(rows ** 0.5) // 4),
                               num_sub_vectors=max(1, dim // 16))
        return {"rows": rows, "ann_index": ann}
    with pq.ParquetWriter(out / f"{TABLE}.parquet", table_schema) as writer:
        for batch in counted():
            writer.write_batch(batch)
    return {"rows": rows, "ann_index": False}


def open_store(path: Path, backend: str) -> Store:
    if backend == "lance":
        return LanceStore.open(path)
    if backend == "parquet":
        return ParquetStore.open(path)
    raise KnowledgeBaseError(f"index at {path} names an unknown backend {backend!r}")


def all_rows(store: Store, columns: list[str] | None = None) -> Iterable[dict[str, Any]]:
    """Every row without vectors, streamed batch by batch from LanceDB (for listing
    documents; `columns` reads only those)."""
    cols = columns or COLUMNS
    if isinstance(store, ParquetStore):
        return ({c: r[c] for c in cols} for r in store.rows)
    reader = store.table.search().select(cols).limit(None).to_batches()  # type: ignore[attr-defined]
    return (row for batch in reader for row in batch.to_pylist())
