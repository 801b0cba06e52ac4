"""Build a knowledge-base index from a corpus folder, open it and query it.

The index folder holds `kb.json` (format version, the embedding model's identity and
spec, chunking settings, corpus fingerprint, counts) and the vector table
(`chunks.lance/` or `chunks.parquet`). `kb.json` has no clock or host in it, so the same
corpus and model always give the same file. Opening is cheap; the embedding model is
loaded on the first query, and a query embedder that is not the model the index was
built with is refused with `ModelMismatch`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curate.kb.chunk import MAX_WORDS, MIN_WORDS, OVERLAP_WORDS, TARGET_WORDS, chunk_document
from curate.kb.embed import Embedder, get_embedder, same_model
from curate.kb.errors import CorpusError, KnowledgeBaseError, ModelMismatch
from curate.kb.ingest import TAG_KEYS, Document, corpus_files, iter_corpus, read_corpus
from curate.kb.store import (
    ParquetStore,
    Store,
    all_rows,
    check_filters,
    make_table,
    open_store,
    resolve_backend,
    schema,
    write_store_batches,
)

FORMAT_VERSION = 1
META_FILE = "kb.json"
PACKAGED_CORPUS_LICENSE = "Apache-2.0"  # curate/data/corpus is written for curate, under its licence
ANN_MIN_ROWS = 200_000  # LanceDB tables this large get an IVF-PQ index (exact search below)


def default_corpus_dir() -> Path:
    """The corpus shipped with curate (curate/data/corpus)."""
    return Path(str(resources.files("curate").joinpath("data", "corpus")))


@dataclass
class Passage:
    """One retrieved chunk with the document it came from and its citations."""

    id: str
    doc_id: str
    title: str
    text: str
    score: float
    references: list[str] = field(default_factory=list)
    heading: str = ""
    source: str = ""
    tags: dict[str, list[str]] = field(default_factory=dict)

    def to_ref(self) -> dict[str, Any]:
        """A compact record for a sample's `knowledge_refs` (no passage text)."""
        return {"doc_id": self.doc_id, "chunk_id": self.id, "title": self.title,
                "score": round(self.score, 4), "references": list(self.references)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def embed_text(title: str, heading: str, text: str) -> str:
    """What is embedded for a chunk: its document title and heading give a short
    passage the context that says what it is about."""
    head = f"{title}. {heading}." if heading and heading.lower() != title.lower() else f"{title}."
    return f"{head}\n{text}"


def _doc_rows(doc: Document, **chunking: int) -> list[dict[str, Any]]:
    meta = json.dumps(doc.metadata, sort_keys=True, default=str)
    return [{"chunk_id": c.chunk_id, "doc_id": c.doc_id, "chunk_index": c.index,
             "title": doc.title, "heading": c.heading, "text": c.text, "source": doc.source,
             "format": doc.format, "references": list(doc.references),
             **{k: doc.tags(k) for k in TAG_KEYS}, "metadata": meta}
            for c in chunk_document(doc, **chunking)]


def _rows(docs: list[Document], **chunking: int) -> list[dict[str, Any]]:
    return [r for d in docs for r in _doc_rows(d, **chunking)]


def _fingerprint_update(h: Any, r: dict[str, Any]) -> None:
    h.update(json.dumps([r["chunk_id"], r["title"], r["heading"], r["text"], r["metadata"]],
                        sort_keys=True).encode())


def _corpus_fingerprint(rows: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for r in rows:
        _fingerprint_update(h, r)
    return h.hexdigest()[:16]


def _embed_corpus(corpus_dir: Path, embedder: Embedder, chunking: dict[str, int]
                  ) -> tuple[list[dict[str, Any]], np.ndarray, dict[str, Any]]:
    """The whole corpus chunked and embedded in memory (KnowledgeBase.from_corpus only)."""
    docs, skipped = read_corpus(corpus_dir)
    if not docs:
        raise KnowledgeBaseError(f"no documents in {corpus_dir} (.md, .jsonl or .txt files)")
    rows = _rows(docs, **chunking)
    if not rows:
        raise KnowledgeBaseError(f"the documents in {corpus_dir} hold no text to index")
    vectors = embedder.embed_documents([embed_text(r["title"], r["heading"], r["text"]) for r in rows])
    stats = {"documents": len(docs), "chunks": len(rows),
             "words": sum(len(r["text"].split()) for r in rows), "skipped_files": skipped}
    return rows, vectors, stats


class _Streamer:
    """Documents -> embedded Arrow tables of `batch_size` chunks, counting as it goes.

    Holds one batch of chunks at a time; what grows with the corpus is 8 bytes per
    document (a hash of its id, for the duplicate-id check at the end)."""

    def __init__(self, docs: Iterator[Document], embedder: Embedder, chunking: dict[str, int],
                 batch_size: int, progress: Callable[[dict[str, Any]], None] | None):
        self.docs, self.embedder, self.chunking = docs, embedder, chunking
        self.batch_size, self.progress = batch_size, progress
        self.counts = {"documents": 0, "chunks": 0, "words": 0}
        self.fingerprint = hashlib.sha256()
        self.id_hashes: list[np.ndarray] = []
        self._ids: list[int] = []

    def _embed(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], np.ndarray]:
        return rows, self.embedder.embed_documents(
            [embed_text(r["title"], r["heading"], r["text"]) for r in rows])

    def _table(self, done: Future) -> pa.Table:
        rows, vectors = done.result()
        self.counts["chunks"] += len(rows)
        if self.progress:
            self.progress(dict(self.counts))
        return make_table(rows, vectors)

    def tables(self) -> Iterator[pa.Table]:
        """Embedded tables in corpus order. One batch is embedded in a worker thread
        while the next is read and chunked (models release the GIL), so at most two
        batches are in memory."""
        rows: list[dict[str, Any]] = []
        pending: Future | None = None
        with ThreadPoolExecutor(max_workers=1) as pool:
            for doc in self.docs:
                self.counts["documents"] += 1
                self._ids.append(int.from_bytes(
                    hashlib.blake2b(doc.doc_id.encode(), digest_size=8).digest(), "little"))
                if len(self._ids) >= 65536:
                    self.id_hashes.append(np.array(self._ids, np.uint64))
                    self._ids = []
                for r in _doc_rows(doc, **self.chunking):
                    _fingerprint_update(self.fingerprint, r)
                    self.counts["words"] += len(r["text"].split())
                    rows.append(r)
                if len(rows) >= self.batch_size:
                    if pending is not None:
                        yield self._table(pending)
                    pending, rows = pool.submit(self._embed, rows), []
            if pending is not None:
                yield self._table(pending)
            if rows:
                yield self._table(pool.submit(self._embed, rows))

    def duplicate_ids(self) -> int:
        ids = np.concatenate(self.id_hashes + [np.array(self._ids, np.uint64)])
        ids.sort()
        return int((ids[1:] == ids[:-1]).sum()) if len(ids) > 1 else 0


def build_kb(corpus_dir: Path, out: Path, model: str | Path | Embedder | None = None,
             backend: str = "auto", min_words: int = MIN_WORDS, target_words: int = TARGET_WORDS,
             max_words: int = MAX_WORDS, overlap_words: int = OVERLAP_WORDS,
             license: str | None = None, corpus_name: str | None = None,
             batch_size: int = 2048, ann_min_rows: int | None = ANN_MIN_ROWS,
             progress: Callable[[dict[str, Any]], None] | None = None,
             device: str = "cpu") -> dict[str, Any]:
    """Read, chunk and embed every document of `corpus_dir` (a folder, or one .jsonl,
    .md or .txt file) and write the index to `out` (replacing an index already there).

    Streams: documents are read one at a time (a JSONL file line by line), chunked,
    embedded `batch_size` chunks at a time and appended to the table, so memory stays
    flat however large the corpus. `license` (SPDX id or a name with its terms) is the
    corpus's licence, recorded in kb.json for the data card. `device` is where the
    embedding model runs ("cuda" on a GPU machine). Returns counts and timings.
    """
    t0 = time.perf_counter()
    corpus_dir, out = Path(corpus_dir), Path(out)
    if license is None and corpus_dir.resolve() == default_corpus_dir().resolve():
        license = PACKAGED_CORPUS_LICENSE
    if out.exists() and any(out.iterdir()) and not (out / META_FILE).is_file():
        raise KnowledgeBaseError(f"{out} exists and is not a knowledge base; refusing to "
                                 f"write into it (choose an empty or new folder)")
    backend = resolve_backend(backend)
    files, skipped = corpus_files(corpus_dir)
    if not files:
        raise KnowledgeBaseError(f"no documents in {corpus_dir} (.md, .jsonl or .txt files)")
    embedder = get_embedder(model, device)
    chunking = {"min_words": min_words, "target_words": target_words, "max_words": max_words,
                "overlap_words": overlap_words}
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)  # an interrupted build leaves no valid index
    stream = _Streamer(iter_corpus(files), embedder, chunking, batch_size, progress)
    written = write_store_batches(out, stream.tables(), schema(embedder.dim), backend,
                                  ann_min_rows if backend == "lance" else None)
    if not written["rows"]:
        raise KnowledgeBaseError(f"the documents in {corpus_dir} hold no text to index")
    dups = stream.duplicate_ids()
    if dups:
        raise CorpusError(f"{dups} duplicate document id(s) in {corpus_dir}: the index reports "
                          f"hits by document id, so every document needs its own 'id'")
    meta = {
        "format_version": FORMAT_VERSION, "backend": backend,
        "model": {"name": embedder.name, "dim": embedder.dim, "fingerprint": embedder.fingerprint,
                  "spec": embedder.spec},
        "chunking": chunking, "corpus_fingerprint": stream.fingerprint.hexdigest()[:16],
        "counts": stream.counts, "ann_index": written["ann_index"],
        "corpus": {"name": corpus_name or corpus_dir.name, "license": license},
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return {**stream.counts, "skipped_files": skipped, "model": embedder.name,
            "dim": embedder.dim, "backend": backend, "path": str(out), "license": license,
            "ann_index": written["ann_index"], "seconds": round(time.perf_counter() - t0, 2)}


def corpus_info(path: str | Path) -> dict[str, Any]:
    """What a data card says about the knowledge base at `path`: the corpus's name and
    licence (None when the build was not told), counts and the embedding model."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise KnowledgeBaseError(f"{path} is not a knowledge base (no {META_FILE})")
    meta = json.loads(meta_path.read_text())
    corpus = meta.get("corpus") or {}
    return {"name": corpus.get("name"), "license": corpus.get("license"),
            "documents": meta["counts"]["documents"], "chunks": meta["counts"]["chunks"],
            "model": meta["model"]["name"]}


class KnowledgeBase:
    """An opened index. Use `KnowledgeBase.open(path)` for a built index or
    `KnowledgeBase.from_corpus(folder)` for an in-memory one (nothing written)."""

    def __init__(self, store: Store, meta: dict[str, Any], embedder: Embedder | None = None,
                 path: Path | None = None):
        self.store = store
        self.meta = meta
        self.path = path
        self._embedder: Embedder | None = None
        if embedder is not None:
            self._set_embedder(embedder)

    @classmethod
    def open(cls, path: str | Path, model: str | Path | Embedder | None = None) -> KnowledgeBase:
        """Open the index at `path`. `model` overrides how the query embedder is loaded
        (e.g. the same model from another folder); it must be the same model."""
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise KnowledgeBaseError(f"{path} is not a knowledge base (no {META_FILE}); "
                                     f"build one with build_kb / `curate kb build`")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise KnowledgeBaseError(f"{path} has index format {meta.get('format_version')}, this "
                                     f"curate reads format {FORMAT_VERSION}: rebuild the index")
        store = open_store(path, meta["backend"])
        return cls(store, meta, get_embedder(model) if model is not None else None, path)

    @classmethod
    def from_corpus(cls, corpus_dir: str | Path | None = None,
                    model: str | Path | Embedder | None = None) -> KnowledgeBase:
        """Embed a corpus into memory (exact numpy search); for the packaged corpus this
        takes seconds, so a process that only needs a few queries need not build first."""
        embedder = get_embedder(model)
        chunking = {"min_words": MIN_WORDS, "target_words": TARGET_WORDS, "max_words": MAX_WORDS,
                    "overlap_words": OVERLAP_WORDS}
        rows, vectors, stats = _embed_corpus(Path(corpus_dir or default_corpus_dir()), embedder,
                                             chunking)
        meta = {"format_version": FORMAT_VERSION, "backend": "memory",
                "model": {"name": embedder.name, "dim": embedder.dim,
                          "fingerprint": embedder.fingerprint, "spec": embedder.spec},
                "chunking": chunking, "corpus_fingerprint": _corpus_fingerprint(rows),
                "counts": {k: stats[k] for k in ("documents", "chunks", "words")}}
        return cls(ParquetStore(make_table(rows, vectors)), meta, embedder)

    def _set_embedder(self, embedder: Embedder) -> None:
        why = same_model(self.meta["model"], embedder)
        if why:
            raise ModelMismatch(f"cannot query this knowledge base with another embedding model: "
                                f"{why}. Query with the model it was built with, or rebuild the "
                                f"index with the new model")
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._set_embedder(get_embedder(self.meta["model"]["spec"]))
        assert self._embedder is not None
        return self._embedder

    @property
    def model_name(self) -> str:
        return str(self.meta["model"]["name"])

    def __len__(self) -> int:
        return self.store.count()

    def documents(self) -> dict[str, str]:
        """doc_id -> title of every indexed document."""
        return {r["doc_id"]: r["title"] for r in all_rows(self.store, ["doc_id", "title"])}

    def _passage(self, row: dict[str, Any], score: float) -> Passage:
        return Passage(id=row["chunk_id"], doc_id=row["doc_id"], title=row["title"],
                       text=row["text"], score=score, references=list(row["references"] or []),
                       heading=row["heading"], source=row["source"],
                       tags={k: list(row[k] or []) for k in TAG_KEYS})

    def search_vector(self, vector: np.ndarray, k: int = 5, filters: dict | None = None,
                      unique_docs: bool = False) -> list[Passage]:
        """Passages nearest to an already embedded query (cosine, best first)."""
        flt = check_filters(filters)
        fetch = k * 4 if unique_docs else k
        hits = self.store.search(vector, fetch, flt)
        out: list[Passage] = []
        seen: set[str] = set()
        for row, score in hits:
            if unique_docs and row["doc_id"] in seen:
                continue
            seen.add(row["doc_id"])
            out.append(self._passage(row, score))
        return out[:k]

    def query(self, text: str, k: int = 5, filters: dict | None = None,
              unique_docs: bool = False) -> list[Passage]:
        """The k passages most similar to `text`. `filters` keeps only passages whose
        doc_id/format is, or whose modality/anatomy/findings/topics tags include, one
        of the given values (e.g. {"findings": "pneumothorax"}); `unique_docs` returns
        at most one passage (the best) per document."""
        if not text or not text.strip():
            raise KnowledgeBaseError("empty query")
        return self.search_vector(self.embedder.embed_queries([text])[0], k, filters, unique_docs)

    def query_many(self, texts: list[str], k: int = 5, filters: dict | None = None,
                   unique_docs: bool = False) -> list[list[Passage]]:
        """`query` for many texts, embedded in one batch."""
        vectors = self.embedder.embed_queries(list(texts))
        return [self.search_vector(v, k, filters, unique_docs) for v in vectors]

    def query_for_sample(self, ctx: dict, k: int = 3) -> list[Passage]:
        from curate.kb.sample import retrieve_for_sample

        return retrieve_for_sample(self, ctx, k)
