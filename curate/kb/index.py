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
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from curate.kb.chunk import MAX_WORDS, MIN_WORDS, OVERLAP_WORDS, TARGET_WORDS, chunk_documents
from curate.kb.embed import Embedder, get_embedder, same_model
from curate.kb.errors import KnowledgeBaseError, ModelMismatch
from curate.kb.ingest import TAG_KEYS, Document, read_corpus
from curate.kb.store import (
    ParquetStore,
    Store,
    all_rows,
    check_filters,
    make_table,
    open_store,
    resolve_backend,
    write_store,
)

FORMAT_VERSION = 1
META_FILE = "kb.json"


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


def _rows(docs: list[Document], **chunking: int) -> list[dict[str, Any]]:
    by_id = {d.doc_id: d for d in docs}
    rows = []
    for c in chunk_documents(docs, **chunking):
        d = by_id[c.doc_id]
        rows.append({
            "chunk_id": c.chunk_id, "doc_id": c.doc_id, "chunk_index": c.index,
            "title": d.title, "heading": c.heading, "text": c.text, "source": d.source,
            "format": d.format, "references": list(d.references),
            **{k: d.tags(k) for k in TAG_KEYS},
            "metadata": json.dumps(d.metadata, sort_keys=True, default=str),
        })
    return rows


def _corpus_fingerprint(rows: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r["chunk_id"], r["title"], r["heading"], r["text"], r["metadata"]],
                            sort_keys=True).encode())
    return h.hexdigest()[:16]


def _embed_corpus(corpus_dir: Path, embedder: Embedder, chunking: dict[str, int]
                  ) -> tuple[list[dict[str, Any]], np.ndarray, dict[str, Any]]:
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


def build_kb(corpus_dir: Path, out: Path, model: str | Path | Embedder | None = None,
             backend: str = "auto", min_words: int = MIN_WORDS, target_words: int = TARGET_WORDS,
             max_words: int = MAX_WORDS, overlap_words: int = OVERLAP_WORDS) -> dict[str, Any]:
    """Read, chunk and embed every document under `corpus_dir` and write the index to
    `out` (replacing an index already there). Returns counts and timings."""
    t0 = time.perf_counter()
    corpus_dir, out = Path(corpus_dir), Path(out)
    if out.exists() and any(out.iterdir()) and not (out / META_FILE).is_file():
        raise KnowledgeBaseError(f"{out} exists and is not a knowledge base; refusing to "
                                 f"write into it (choose an empty or new folder)")
    backend = resolve_backend(backend)
    embedder = get_embedder(model)
    chunking = {"min_words": min_words, "target_words": target_words, "max_words": max_words,
                "overlap_words": overlap_words}
    rows, vectors, stats = _embed_corpus(corpus_dir, embedder, chunking)
    out.mkdir(parents=True, exist_ok=True)
    write_store(out, make_table(rows, vectors), backend)
    meta = {
        "format_version": FORMAT_VERSION, "backend": backend,
        "model": {"name": embedder.name, "dim": embedder.dim, "fingerprint": embedder.fingerprint,
                  "spec": embedder.spec},
        "chunking": chunking, "corpus_fingerprint": _corpus_fingerprint(rows),
        "counts": {k: stats[k] for k in ("documents", "chunks", "words")},
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return {**stats, "model": embedder.name, "dim": embedder.dim, "backend": backend,
            "path": str(out), "seconds": round(time.perf_counter() - t0, 2)}


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
        return {r["doc_id"]: r["title"] for r in all_rows(self.store)}

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
